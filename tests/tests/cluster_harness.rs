//! The cluster harness (`am2z_tests::fault::cluster`) proved on its own, without the runtime:
//! a Redis Cluster of 3 masters with 1 replica each forms with every slot covered; keys with
//! 100 hash tags spread over the three masters; a slot holding keys moves to another master,
//! whole, and another one is stopped half-way (traffic sees `ASK` and `TRYAGAIN`) and then
//! finished, with every key still there and reachable, and a third moves while another thread
//! increments its keys, none lost nor doubled; a master killed with `kill -9` is
//! replaced by its replica with the data written before, and rejoins as a replica when
//! restarted; a frozen node is left out of the harness's checks until thawed, and a frozen
//! master is failed over and demoted when thawed; and after the drop no process of the
//! cluster is left, nor any directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use am2z_tests::fault::{RedisCluster, Role};
use am2z_tests::resp::Reply;

/// The value the harness test writes under `key`.
fn value(key: &str) -> String {
    format!("v-{key}")
}

/// Writes every key through one `redis-cli -c` (redirections followed).
fn write<'a>(cluster: &RedisCluster, keys: impl IntoIterator<Item = &'a String>) {
    let keys: Vec<&String> = keys.into_iter().collect();
    let commands = keys
        .iter()
        .map(|k| ["SET".to_owned(), (*k).clone(), value(k)]);
    let replies = cluster.cli_cluster_batch(commands);
    assert_eq!(replies, vec!["OK"; keys.len()], "SET {keys:?}");
}

/// Every key is readable through `redis-cli -c` with the value written.
fn assert_readable<'a>(cluster: &RedisCluster, keys: impl IntoIterator<Item = &'a String>) {
    let keys: Vec<&String> = keys.into_iter().collect();
    let replies = cluster.cli_cluster_batch(keys.iter().map(|k| ["GET", k.as_str()]));
    let values: Vec<String> = keys.iter().map(|k| value(k)).collect();
    assert_eq!(replies, values, "GET {keys:?}");
}

/// `count` keys sharing the hash tag `tag`, so one slot.
fn keys_with_tag(tag: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("harness:{{{tag}}}:{i}"))
        .collect()
}

/// Whether the process `pid` is still the `redis-server` on `port` (the pid may have been
/// reused by then, by anything).
fn still_running(pid: u32, port: u16) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&format!(":{port}")))
}

/// The cluster can be shared (`Arc<RedisCluster>`) between a thread that injects faults and
/// one that checks.
#[test]
fn the_cluster_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<RedisCluster>();
}

#[test]
fn a_cluster_forms_spreads_migrates_fails_over_and_leaves_nothing_after_drop() {
    let begin = Instant::now();
    let cluster = RedisCluster::start();
    let formed = begin.elapsed();

    // Three masters with one replica each; the masters' slots cover 0..16384 exactly once.
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6, "{nodes:#?}");
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{nodes:#?}");
    for &master in &masters {
        assert_eq!(cluster.replicas_of(master).len(), 1, "{nodes:#?}");
    }
    let mut owners = vec![0_u32; 16384];
    for node in &nodes {
        assert!(node.pid.is_some(), "{node:?}");
        assert_eq!(node.id.len(), 40, "{node:?}");
        assert_ne!(node.role, Role::Down, "{node:?}");
        for &(a, b) in &node.slots {
            for slot in a..=b {
                owners[usize::from(slot)] += 1;
            }
        }
    }
    assert!(
        owners.iter().all(|&n| n == 1),
        "every slot on exactly one master"
    );
    let ids: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids.len(), 6);
    let seeds = cluster.seeds();
    let expected: Vec<String> = masters
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    assert_eq!(seeds, expected);

    // Keys with 100 hash tags spread over the three masters, each on its slot's owner.
    let mut written: BTreeSet<String> = (0..100)
        .map(|session| format!("harness:{{session-{session}}}:state"))
        .collect();
    write(&cluster, &written);
    let spread = cluster.keys_per_master("harness:*");
    assert_eq!(spread.len(), 3);
    for (master, keys) in &spread {
        assert!(
            !keys.is_empty(),
            "master {master} holds none of 100 sessions"
        );
        for key in keys {
            assert_eq!(cluster.master_of_key(key), *master, "{key}");
        }
    }
    let total: usize = spread.values().map(Vec::len).sum();
    assert_eq!(total, 100, "{spread:?}");

    // A whole migration: a slot with 20 keys moves to another master.
    let moving = keys_with_tag("moving", 20);
    write(&cluster, &moving);
    written.extend(moving.iter().cloned());
    let slot = cluster.keyslot(&moving[0]);
    let from = cluster.master_of_slot(slot);
    let to = masters
        .iter()
        .copied()
        .find(|&m| m != from)
        .expect("another master");
    let started = Instant::now();
    cluster.migrate_slot(slot, to);
    let migrated = started.elapsed();
    assert_eq!(cluster.master_of_slot(slot), to);
    let mut expected: Vec<String> = moving.clone();
    expected.sort();
    assert_eq!(cluster.keys_in_slot(to, slot), expected);
    assert!(cluster.keys_in_slot(from, slot).is_empty());
    assert_readable(&cluster, &moving);

    // A migration stopped half-way: 10 of 30 keys moved, the slot MIGRATING on its owner and
    // IMPORTING on the target; traffic runs, and then the migration is finished.
    let halfway = keys_with_tag("halfway", 30);
    write(&cluster, &halfway);
    written.extend(halfway.iter().cloned());
    let slot = cluster.keyslot(&halfway[0]);
    let from = cluster.master_of_slot(slot);
    let to = masters
        .iter()
        .copied()
        .find(|&m| m != from)
        .expect("another master");
    let migration = cluster.begin_migration(slot, to);
    assert_eq!(
        (migration.slot, migration.from, migration.to),
        (slot, from, to)
    );
    // Before any key has moved, a script over an existing key and a missing one of the slot
    // is refused whole (`TRYAGAIN`): the source cannot tell where the missing one lives.
    let script = "return redis.call('SET', KEYS[2], redis.call('GET', KEYS[1]))";
    let missing = "harness:{halfway}:missing";
    let reply = cluster.command(from, &["EVAL", script, "2", &halfway[0], missing]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("TRYAGAIN")),
        "a script over an existing and a missing key of a migrating slot: {reply:?}"
    );
    assert_eq!(cluster.move_keys(&migration, 10), 10);
    let on_target = cluster.keys_in_slot(to, slot);
    let on_source = cluster.keys_in_slot(from, slot);
    assert_eq!((on_target.len(), on_source.len()), (10, 20));
    assert_eq!(
        cluster.master_of_slot(slot),
        from,
        "the source owns the slot until the end"
    );
    // Every key is reachable: the source serves those it has, `ASK`s for the others.
    assert_readable(&cluster, &halfway);
    let moved = &on_target[0];
    let reply = cluster.command(from, &["GET", moved]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("ASK ")),
        "GET of a moved key on the source: {reply:?}"
    );
    // A script whose keys are split between the two ends is refused whole, to be retried.
    let script = "return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}";
    let reply = cluster.command(from, &["EVAL", script, "2", moved, &on_source[0]]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("TRYAGAIN")),
        "a script over a split slot: {reply:?}"
    );
    // A key created during the migration lands on the target.
    let fresh = "harness:{halfway}:fresh".to_owned();
    write(&cluster, [&fresh]);
    assert_eq!(cluster.keys_in_slot(to, slot).len(), 11);
    written.insert(fresh.clone());
    cluster.finish_migration(migration);
    assert_eq!(cluster.master_of_slot(slot), to);
    assert_eq!(cluster.keys_in_slot(to, slot).len(), 31);
    assert!(cluster.keys_in_slot(from, slot).is_empty());
    assert_readable(&cluster, halfway.iter().chain([&fresh]));
    let total: usize = cluster
        .keys_per_master("harness:*")
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(total, written.len());

    // Traffic during a migration, from another thread: a slot of 10 counters moves (5 keys,
    // then the rest) while they are incremented; every acknowledged increment is there once.
    let counters: Vec<String> = (0..10).map(|i| format!("busy:{{traffic}}:{i}")).collect();
    let slot = cluster.keyslot(&counters[0]);
    let from = cluster.master_of_slot(slot);
    let to = masters
        .iter()
        .copied()
        .find(|&m| m != from)
        .expect("another master");
    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    let acknowledged = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| {
            let mut acknowledged = vec![0_i64; counters.len()];
            while !stop.load(Ordering::SeqCst) {
                let replies = cluster.cli_cluster_batch(counters.iter().map(|k| ["INCR", k]));
                assert_eq!(replies.len(), counters.len(), "{replies:?}");
                for (count, reply) in acknowledged.iter_mut().zip(&replies) {
                    let value: i64 = reply.parse().expect("INCR replies a number");
                    assert_eq!(value, *count + 1, "every acknowledged INCR counted once");
                    *count = value;
                }
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            acknowledged
        });
        let after_rounds = |more: usize| {
            let target = rounds.load(Ordering::SeqCst) + more;
            let begin = Instant::now();
            while rounds.load(Ordering::SeqCst) < target {
                assert!(!traffic.is_finished(), "the traffic thread stopped");
                assert!(begin.elapsed() < Duration::from_secs(30), "traffic flows");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        after_rounds(3);
        let migration = cluster.begin_migration(slot, to);
        after_rounds(3);
        assert_eq!(cluster.move_keys(&migration, 5), 5);
        after_rounds(3);
        cluster.finish_migration(migration);
        after_rounds(3);
        stop.store(true, Ordering::SeqCst);
        traffic.join().expect("the traffic thread")
    });
    assert_eq!(cluster.master_of_slot(slot), to);
    assert_eq!(cluster.keys_in_slot(to, slot).len(), counters.len());
    let stored = cluster.cli_cluster_batch(counters.iter().map(|k| ["GET", k]));
    let expected: Vec<String> = acknowledged.iter().map(ToString::to_string).collect();
    assert_eq!(stored, expected);

    // A master killed with `kill -9`: its replica is promoted, with everything written before.
    let victim = masters[0];
    let replica = cluster.replicas_of(victim)[0];
    let victim_pid = cluster.pid(victim).expect("the victim runs");
    let victim_keys = cluster.keys_per_master("harness:*")[&victim].clone();
    assert!(!victim_keys.is_empty());
    cluster.wait_replicated();
    cluster.kill_master(victim);
    let killed = Instant::now();
    assert!(!still_running(victim_pid, victim));
    let promoted = cluster.wait_failover(victim);
    let failover = killed.elapsed();
    assert_eq!(promoted, replica);
    let masters_now: BTreeSet<u16> = cluster.masters().into_iter().collect();
    let expected: BTreeSet<u16> = masters
        .iter()
        .map(|&m| if m == victim { replica } else { m })
        .collect();
    assert_eq!(masters_now, expected);
    assert!(
        !cluster
            .seeds()
            .contains(&format!("redis://127.0.0.1:{victim}"))
    );
    assert_eq!(cluster.keys_per_master("harness:*")[&promoted], victim_keys);
    assert_readable(&cluster, &written);
    let down = cluster.nodes().into_iter().find(|n| n.port == victim);
    assert!(matches!(down, Some(n) if n.role == Role::Down && n.pid.is_none()));

    // Restarted on its own data and nodes.conf, the old master rejoins as a replica of its
    // successor and has synced.
    let restart = Instant::now();
    cluster.restart_node(victim);
    let rejoined = restart.elapsed();
    let back = cluster.nodes().into_iter().find(|n| n.port == victim);
    assert!(
        matches!(&back, Some(n) if n.role == Role::Replica { master: promoted }),
        "{back:?}"
    );
    assert!(
        cluster
            .log_tail(victim, 100)
            .contains("Cluster state changed: ok"),
        "the node's log is in its directory"
    );
    cluster.wait_replicated();
    let replicated: BTreeMap<u16, Vec<String>> = [victim, promoted]
        .into_iter()
        .map(|port| (port, cluster.keys(port, "harness:*")))
        .collect();
    assert_eq!(replicated[&victim], replicated[&promoted]);
    assert_readable(&cluster, &written);

    // A frozen replica is down to the harness and left out of its checks; thawed, it is back.
    cluster.freeze(victim);
    let frozen = cluster.nodes().into_iter().find(|n| n.port == victim);
    assert!(matches!(&frozen, Some(n) if n.role == Role::Down && n.pid.is_some()));
    cluster.wait_healthy();
    assert_readable(&cluster, &written);
    cluster.thaw(victim);
    cluster.wait_healthy();
    let thawed = cluster.nodes().into_iter().find(|n| n.port == victim);
    assert!(matches!(&thawed, Some(n) if n.role == Role::Replica { master: promoted }));

    // A master frozen (`kill -STOP`): its replica (the old master) is promoted; thawed, it
    // finds itself a replica of it.
    let freeze = Instant::now();
    cluster.freeze(promoted);
    assert_eq!(cluster.wait_failover(promoted), victim);
    let frozen_failover = freeze.elapsed();
    cluster.thaw(promoted);
    cluster.wait_healthy();
    let thawed = cluster.nodes().into_iter().find(|n| n.port == promoted);
    assert!(
        matches!(&thawed, Some(n) if n.role == Role::Replica { master: victim }),
        "{thawed:?}"
    );
    assert_readable(&cluster, &written);

    // Dropped, with a node frozen: every server it started is gone, and every directory.
    let running: Vec<(u32, u16)> = cluster
        .nodes()
        .iter()
        .map(|n| (n.pid.expect("every node runs"), n.port))
        .collect();
    assert_eq!(running.len(), 6);
    cluster.freeze(promoted);
    let dirs: Vec<PathBuf> = running
        .iter()
        .map(|&(_, port)| cluster.dir(port).to_owned())
        .collect();
    assert!(dirs.iter().all(|d| d.join("nodes.conf").exists()));
    drop(cluster);
    for (pid, port) in running {
        assert!(
            !still_running(pid, port),
            "redis-server {pid} on {port} is gone"
        );
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} is removed", dir.display());
    }
    eprintln!(
        "cluster harness: formed in {formed:?}, a slot of 20 keys migrated in {migrated:?}, \
         {} rounds of 10 INCRs during a migration, failover in {failover:?}, restart and \
         rejoin in {rejoined:?}, failover of a frozen master in {frozen_failover:?}, all in \
         {:?}",
        rounds.load(Ordering::SeqCst),
        begin.elapsed()
    );
}
