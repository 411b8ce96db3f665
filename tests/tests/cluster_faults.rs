//! The Redis runtime through a Redis Cluster's faults (3 masters, 1 replica each, on loopback
//! ports): a busy session's slot migrated to another master mid-run, `kill -9` of the master
//! holding a session with and without durable writes, and `kill -9` of a worker process.
//! `AM2Z_FAULT_PROFILE=long` runs the bigger variants.
//!
//! The tests take turns (`TURN`): each starts six `redis-server`s, and the failover timings
//! must not depend on how many clusters share two cores.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use am2z::{Error, RedisConfig, RedisRuntime, RunHandle, RunId, Runtime, SessionId};
use am2z_tests::fault::work::{Chain3, Work};
use am2z_tests::fault::{ClusterSpec, Knobs, Ledger, RedisCluster, WorkerProcess, long_profile};
use am2z_tests::suite::session;

/// One cluster test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long an acknowledged run may take to end once the fault is over (debug builds, a
/// shared machine).
const SETTLE: Duration = Duration::from_secs(60);

async fn cluster() -> Arc<RedisCluster> {
    Arc::new(
        tokio::task::spawn_blocking(|| ClusterSpec::default().start())
            .await
            .expect("the cluster starts"),
    )
}

/// Runs a blocking harness call (a migration, a kill, a wait for a failover) off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the harness call")
}

fn config(cluster: &RedisCluster, prefix: &str) -> RedisConfig {
    RedisConfig::cluster(cluster.seeds())
        .prefix(prefix)
        .worker_concurrency(32)
        .idle_poll(Duration::from_millis(50))
        .lease(Duration::from_secs(2))
        .sweep_every(Duration::from_millis(250))
        .session_ttl(Duration::from_secs(600))
        .result_ttl(Duration::from_secs(600))
}

/// A worker runtime and a client runtime (in this process) on `cluster` under one new prefix.
async fn runtimes(cluster: &RedisCluster, durable: u32) -> (String, RedisRuntime, RedisRuntime) {
    let prefix = format!("am2z-test-{}", RunId::generate());
    let worker = RedisRuntime::new(config(cluster, &prefix).durable_writes(durable));
    worker.serve(Chain3);
    worker.start().await.expect("the worker starts");
    let client = RedisRuntime::new(
        config(cluster, &prefix)
            .durable_writes(durable)
            .worker(false),
    );
    client.start().await.expect("the client starts");
    (prefix, worker, client)
}

/// The slot of `session` under `prefix`, and the master holding it.
fn slot_of(cluster: &RedisCluster, prefix: &str, session: &SessionId) -> (u16, u16) {
    let slot = cluster.keyslot(&format!("{prefix}:{{{session}}}:meta"));
    (slot, cluster.master_of_slot(slot))
}

/// What a submitter got: the acknowledged runs (with their ids), and the refusals.
type Submitted = (Vec<(u64, RunHandle)>, Vec<Error>);

/// Submits `runs` three-step runs to `session` one after the other (each `ms` per step),
/// counting the acknowledged ones in `acknowledged`, until done or `stop`; a submission
/// refused while the cluster is failing over is not acknowledged and is not retried (the
/// caller would see the error).
fn submit_runs(
    client: RedisRuntime,
    session: SessionId,
    runs: u64,
    ms: u64,
    acknowledged: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Submitted> {
    tokio::spawn(async move {
        let mut handles = Vec::new();
        let mut refused = Vec::new();
        for id in 0..runs {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            match client.submit(&session, &Chain3, Work::new(id, ms)).await {
                Ok(handle) => {
                    handles.push((id, handle));
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                Err(error) => refused.push(error),
            }
        }
        (handles, refused)
    })
}

/// Waits (polling) until `counter` reaches `n`.
async fn until_at_least(counter: &AtomicUsize, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "{what}: stuck at {counter:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The outcome of every acknowledged run: the ids that completed with their own work, and the
/// errors of the others.
async fn outcomes(
    client: &RedisRuntime,
    handles: &[(u64, RunHandle)],
) -> (BTreeSet<u64>, Vec<(u64, Error)>) {
    let waits = handles
        .iter()
        .map(|(id, handle)| async move { (*id, client.wait::<Work>(handle, Some(SETTLE)).await) });
    let mut completed = BTreeSet::new();
    let mut failed = Vec::new();
    for (id, outcome) in futures::future::join_all(waits).await {
        match outcome {
            Ok(result) => {
                assert_eq!(result.output.id, id, "run {id} returned another run's work");
                completed.insert(id);
            }
            Err(failure) => failed.push((id, failure.error)),
        }
    }
    (completed, failed)
}

/// How many times each of the chain's steps was committed in `session`.
async fn commits(client: &RedisRuntime, session: &SessionId) -> Vec<(String, u64)> {
    let stats = client.session_stats(session).await.expect("session stats");
    ["step_a", "step_b", "step_c"]
        .into_iter()
        .map(|name| {
            let completed = stats.processors.get(name).map_or(0, |q| q.completed);
            (name.to_owned(), completed)
        })
        .collect()
}

/// A busy session's slot moves to another master while its runs are submitted, leased,
/// advanced and committed: scripts whose keys are split (`TRYAGAIN`) or gone (`ASK`) are sent
/// again whole, so every submission is acknowledged, every run completes once, and each step
/// is committed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_mid_run_loses_nothing_and_commits_once() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    let (prefix, worker, client) = runtimes(&cluster, 0).await;
    let s = session("migrated");
    let (slot, from) = slot_of(&cluster, &prefix, &s);
    let to = *cluster
        .masters()
        .iter()
        .find(|&&port| port != from)
        .expect("another master");
    let runs: u64 = if long_profile() { 2_000 } else { 300 };

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let submitting = submit_runs(
        client.clone(),
        s.clone(),
        runs,
        2,
        Arc::clone(&acknowledged),
        Arc::new(AtomicBool::new(false)),
    );
    until_at_least(
        &acknowledged,
        runs as usize / 5,
        "submissions before the move",
    )
    .await;
    let migrating = Arc::clone(&cluster);
    let moved = blocking(move || {
        let migration = migrating.begin_migration(slot, to);
        // The keys move a few at a time while the traffic goes on: scripts meet a slot that
        // is half here, half there.
        let mut moved = 0;
        for _ in 0..10 {
            moved += migrating.move_keys(&migration, 3);
            std::thread::sleep(Duration::from_millis(20));
        }
        migrating.finish_migration(migration);
        moved
    })
    .await;
    let (handles, refused) = submitting.await.expect("the submitter");
    assert!(moved > 0, "keys moved while the session was busy");
    assert!(refused.is_empty(), "submissions refused: {refused:?}");
    assert_eq!(handles.len() as u64, runs);
    assert_eq!(cluster.master_of_slot(slot), to, "the slot moved");

    let (completed, failed) = outcomes(&client, &handles).await;
    assert!(failed.is_empty(), "runs failed: {failed:?}");
    assert_eq!(completed.len() as u64, runs);
    for (step, count) in commits(&client, &s).await {
        assert_eq!(
            count, runs,
            "{step} committed {count} times for {runs} runs"
        );
    }
    client.stop_session(&s).await.expect("stops the session");
    client.stop().await.expect("the client stops");
    worker.stop().await.expect("the worker stops");
}

/// What a master's `kill -9` cost: acknowledged runs, and those that never completed.
struct FailoverLoss {
    acknowledged: usize,
    lost: Vec<(u64, Error)>,
    refused: usize,
}

/// Kills the master of a busy session with runs in flight, waits for its replica's promotion,
/// and waits for every acknowledged run.
async fn kill_master_mid_run(durable: u32) -> FailoverLoss {
    let cluster = cluster().await;
    let (prefix, worker, client) = runtimes(&cluster, durable).await;
    let s = session("failover");
    let (_, master) = slot_of(&cluster, &prefix, &s);
    let runs: u64 = if long_profile() { 3_000 } else { 600 };

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let submitting = submit_runs(
        client.clone(),
        s.clone(),
        runs,
        5,
        Arc::clone(&acknowledged),
        Arc::clone(&stop),
    );
    until_at_least(&acknowledged, 100, "submissions before the kill").await;
    let killer = Arc::clone(&cluster);
    let promoted = blocking(move || {
        killer.kill_master(master);
        let promoted = killer.wait_failover(master);
        // The operator's part: the dead master comes back, as the new master's replica (until
        // then, a durable write has no replica to wait for and is refused).
        killer.restart_node(master);
        killer.wait_replicated();
        promoted
    })
    .await;
    assert_ne!(promoted, master);
    // Some more after the failover, then the submitter stops. A quick submitter may have
    // submitted all its runs already, some refused while the cluster failed over: those are
    // never acknowledged, so it is done then.
    let after = (acknowledged.load(Ordering::SeqCst) + 50).min(runs as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::SeqCst) < after && !submitting.is_finished() {
        assert!(
            Instant::now() < deadline,
            "submissions after the failover: stuck at {acknowledged:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut handles, refused) = submitting.await.expect("the submitter");
    // A quick submitter may have sent every run before the failover ended: the rest of the 50
    // go now, after it, and each must be acknowledged.
    let short = after.saturating_sub(acknowledged.load(Ordering::SeqCst));
    for id in runs..runs + short as u64 {
        let handle = client
            .submit(&s, &Chain3, Work::new(id, 5))
            .await
            .expect("a submission after the failover is acknowledged");
        handles.push((id, handle));
    }

    let (_, lost) = outcomes(&client, &handles).await;
    client.stop().await.expect("the client stops");
    worker.stop().await.expect("the worker stops");
    FailoverLoss {
        acknowledged: handles.len(),
        lost,
        refused: refused.len(),
    }
}

/// With `durable_writes(1)`, a submission and a commit are acknowledged only once a replica
/// has them: the replica promoted after the master's `kill -9` has every acknowledged run, and
/// each completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_loses_no_acknowledged_run_with_durable_writes() {
    let _turn = TURN.lock().await;
    let loss = kill_master_mid_run(1).await;
    eprintln!(
        "failover with durable_writes(1): {} acknowledged, {} lost, {} refused while failing over",
        loss.acknowledged,
        loss.lost.len(),
        loss.refused
    );
    assert!(
        loss.lost.is_empty(),
        "acknowledged runs lost: {:?}",
        loss.lost
    );
}

/// Without durable writes the replica may miss the master's last writes (asynchronous
/// replication): acknowledged runs can vanish with it. Measured (printed, and the README's
/// figure); what is asserted is that a lost run is reported to its waiter with a typed error,
/// never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_without_durable_writes_reports_what_it_lost() {
    let _turn = TURN.lock().await;
    let loss = kill_master_mid_run(0).await;
    eprintln!(
        "failover without durable writes: {} acknowledged, {} lost, {} refused while failing over",
        loss.acknowledged,
        loss.lost.len(),
        loss.refused
    );
    for (id, error) in &loss.lost {
        assert!(
            matches!(error, Error::NotFound { .. }),
            "run {id} ended with {error:?}, not a typed NotFound"
        );
    }
}

/// `kill -9` of one of two worker processes with runs in flight: its leases lapse and the
/// other worker takes the runs over; every run completes, and only runs the victim held ran
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_on_a_cluster_loses_nothing() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    let prefix = format!("am2z-test-{}", RunId::generate());
    let knobs = Knobs::default().concurrency(16);
    let dir = std::env::temp_dir().join(format!("am2z-cluster-worker-{}", RunId::generate()));
    std::fs::create_dir_all(&dir).expect("the ledger directory");
    let env = [("AM2Z_REDIS_CLUSTER", cluster.seeds().join(","))];
    let seed = cluster.seeds()[0].clone();
    let mut workers: Vec<WorkerProcess> = (0..2)
        .map(|i| {
            let ledger = dir.join(format!("worker-{i}.log"));
            WorkerProcess::spawn(&seed, &prefix, &knobs, &ledger, &env)
        })
        .collect();
    let client = RedisRuntime::new(
        RedisConfig::cluster(cluster.seeds())
            .prefix(&prefix)
            .worker(false)
            .lease(knobs.lease)
            .sweep_every(knobs.sweep)
            .idle_poll(Duration::from_millis(50))
            .session_ttl(Duration::from_secs(600))
            .result_ttl(Duration::from_secs(600)),
    );
    client.start().await.expect("the client starts");
    let sessions: Vec<SessionId> = (0..4)
        .map(|i| session(&format!("worker-kill{i}")))
        .collect();
    let runs: u64 = if long_profile() { 2_000 } else { 400 };
    let mut handles = Vec::new();
    for id in 0..runs {
        let s = &sessions[id as usize % sessions.len()];
        let handle = client
            .submit(s, &Chain3, Work::new(id, 20))
            .await
            .expect("submitted");
        handles.push((id, handle));
    }
    let victim = workers[0].pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Ledger::read(&dir).count_by(victim) < 20 {
        assert!(Instant::now() < deadline, "the victim never worked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    workers[0].kill_9();

    let (completed, failed) = outcomes(&client, &handles).await;
    assert!(failed.is_empty(), "runs failed: {failed:?}");
    assert_eq!(completed.len() as u64, runs);
    let ledger = Ledger::read(&dir);
    let held = ledger.runs_by(victim);
    let duplicated = ledger.duplicated_runs();
    assert!(
        duplicated.is_subset(&held),
        "only runs the killed worker held ran twice: {duplicated:?}"
    );
    for s in &sessions {
        for (step, count) in commits(&client, s).await {
            let expected = (0..runs)
                .filter(|id| sessions[*id as usize % sessions.len()] == *s)
                .count() as u64;
            assert_eq!(count, expected, "{step} in {s}: committed {count} times");
        }
        client.stop_session(s).await.expect("stops the session");
    }
    client.stop().await.expect("the client stops");
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
}
