//! The Redis runtime on a Redis Cluster of the test's own (3 masters, 1 replica each, on
//! loopback ports; `am2z_tests::fault::RedisCluster`): the conformance suite unchanged,
//! sessions spread over every master, and the connections a process keeps per node. The
//! cluster's faults (a slot migrated mid-run, a master killed, a worker killed) are in
//! `cluster_faults.rs`.
//!
//! The tests of this file take turns (`TURN`): each starts six `redis-server`s, and the
//! machine the suite runs on may have two cores.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use am2z::{Executes, RedisConfig, RedisRuntime, RunId, Runtime, SessionId};
use am2z_tests::fault::{ClusterSpec, RedisCluster};
use am2z_tests::flows::Arith;
use am2z_tests::processors::AddOne;
use am2z_tests::suite::{Harness, session};

/// One cluster test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The seeds of the cluster the conformance suite runs on.
static SEEDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

async fn cluster() -> RedisCluster {
    tokio::task::spawn_blocking(|| ClusterSpec::default().start())
        .await
        .expect("the cluster starts")
}

fn config(seeds: Vec<String>, prefix: &str) -> RedisConfig {
    RedisConfig::cluster(seeds)
        .prefix(prefix)
        .worker_concurrency(64)
        .idle_poll(Duration::from_millis(50))
        .session_ttl(Duration::from_secs(120))
        .result_ttl(Duration::from_secs(120))
}

fn fresh_prefix() -> String {
    format!("am2z-test-{}", RunId::generate())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_through_a_cluster_from_another_process() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    let prefix = fresh_prefix();
    let worker = RedisRuntime::new(config(cluster.seeds(), &prefix));
    worker.serve(AddOne);
    worker.start().await.expect("the worker starts");
    let client = RedisRuntime::new(config(cluster.seeds(), &prefix).worker(false));
    client.start().await.expect("the client starts");
    let s = session("smoke");
    let here = worker
        .execute_in_session(&s, &AddOne, 1)
        .await
        .expect("runs");
    assert_eq!(here.output, 2);
    let there = client
        .execute_in_session(&s, &AddOne, 2)
        .await
        .expect("runs");
    assert_eq!(there.output, 3);
    client.stop_session(&s).await.expect("stops the session");
    assert!(
        cluster
            .keys_per_master(&format!("{prefix}:{{{s}}}:*"))
            .values()
            .all(Vec::is_empty),
        "stop_session left keys of the session"
    );
    client.stop().await.expect("the client stops");
    worker.stop().await.expect("the worker stops");
}

/// The suite's runtimes, each with a prefix of its own, on the cluster in [`SEEDS`].
struct OnCluster;

impl Harness for OnCluster {
    type Runtime = RedisRuntime;
    const SLACK: Duration = Duration::from_millis(250);
    async fn runtime() -> RedisRuntime {
        let seeds = SEEDS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(!seeds.is_empty(), "the cluster is started before the suite");
        let runtime = RedisRuntime::new(config(seeds, &fresh_prefix()));
        runtime.serve(AddOne);
        runtime.serve(Arith);
        runtime
    }
}

/// Every behaviour of the conformance suite, unchanged, on one cluster (in order: they share
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_a_cluster() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    *SEEDS.lock().unwrap_or_else(|p| p.into_inner()) = cluster.seeds();
    am2z_tests::conformance_suite!(in sequence OnCluster);
}

/// The inspection suite (`inspect_suite`), unchanged, on one cluster: listings, details,
/// retries and cancels where each session's keys live on its own slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspection_suite_passes_on_a_cluster() {
    use am2z_tests::inspect_suite as suite;
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    *SEEDS.lock().unwrap_or_else(|p| p.into_inner()) = cluster.seeds();
    suite::sessions_are_listed_with_their_counts::<OnCluster>().await;
    suite::runs_are_listed_by_state::<OnCluster>().await;
    suite::runs_page_without_duplicates_or_gaps::<OnCluster>().await;
    suite::run_detail_shows_plan_steps_output_and_error::<OnCluster>().await;
    suite::retry_resubmits_a_failed_run_once::<OnCluster>().await;
    suite::cancel_ends_a_live_run::<OnCluster>().await;
    suite::unknown_runs_are_not_found::<OnCluster>().await;
    suite::redacted_processors_hide_their_data::<OnCluster>().await;
    suite::stop_session_leaves_nothing_listed::<OnCluster>().await;
}

/// The clients connected to `port` that are neither replication links nor the connection
/// asking.
fn clients(cluster: &RedisCluster, port: u16) -> usize {
    cluster
        .cli(port, &["CLIENT", "LIST"])
        .lines()
        .filter(|line| {
            let flags = line
                .split(' ')
                .find_map(|field| field.strip_prefix("flags="))
                .unwrap_or("");
            !flags.contains('S') && !flags.contains('M') && !line.contains("cmd=client|list")
        })
        .count()
}

/// 100 sessions spread over all three masters (one slot per session), and one process
/// serving all of them keeps at most two connections per node (commands, and the sharded
/// subscriber).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_every_master_on_two_connections_per_node() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    let nodes: Vec<u16> = cluster.nodes().iter().map(|node| node.port).collect();
    let before: BTreeMap<u16, usize> = nodes.iter().map(|&p| (p, clients(&cluster, p))).collect();

    let processed = |port: u16| -> u64 {
        cluster
            .cli(port, &["INFO", "stats"])
            .lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let masters = cluster.masters();
    let commands_before: Vec<u64> = masters.iter().map(|&p| processed(p)).collect();

    let prefix = fresh_prefix();
    let runtime = RedisRuntime::new(config(cluster.seeds(), &prefix));
    runtime.serve(AddOne);
    runtime.start().await.expect("the runtime starts");
    let sessions: Vec<SessionId> = (0..100).map(|i| session(&format!("tenant{i}"))).collect();
    let runs = futures::future::join_all(
        sessions
            .iter()
            .enumerate()
            .map(|(i, s)| runtime.execute_in_session(s, &AddOne, i as i64)),
    )
    .await;
    for (i, run) in runs.into_iter().enumerate() {
        assert_eq!(run.expect("every run completes").output, i as i64 + 1);
    }

    let per_master: BTreeMap<u16, usize> = cluster
        .keys_per_master(&format!("{prefix}:{{*}}:meta"))
        .into_iter()
        .map(|(port, keys)| (port, keys.len()))
        .collect();
    assert_eq!(per_master.len(), 3, "three masters: {per_master:?}");
    assert_eq!(per_master.values().sum::<usize>(), 100, "{per_master:?}");
    assert!(
        per_master.values().all(|&n| n > 0),
        "every master holds sessions: {per_master:?}"
    );

    // The load spread (README "Scaling out"): commands each master served for these runs.
    for (i, &port) in masters.iter().enumerate() {
        eprintln!(
            "master {port}: {} sessions, {} commands",
            per_master.get(&port).copied().unwrap_or(0),
            processed(port).saturating_sub(commands_before[i])
        );
    }
    for &port in &nodes {
        let ours = clients(&cluster, port).saturating_sub(before[&port]);
        assert!(
            ours <= 2,
            "node {port}: this process holds {ours} connections (at most 2)"
        );
    }
    for s in &sessions {
        runtime.stop_session(s).await.expect("stops the session");
    }
    runtime.stop().await.expect("the runtime stops");
}

/// Durable writes on a cluster: each submission and commit waits for a replica (`WAIT 1`),
/// and runs complete as without. The cost is printed (median submit-to-outcome latency of
/// one-step runs one after the other, each setting on the same cluster); nothing is timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_complete_runs_and_report_their_cost() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    let mut medians = Vec::new();
    for durable in [0, 1] {
        let runtime =
            RedisRuntime::new(config(cluster.seeds(), &fresh_prefix()).durable_writes(durable));
        runtime.serve(AddOne);
        runtime.start().await.expect("the runtime starts");
        let s = session("durable");
        let mut took = Vec::new();
        for i in 0..300_i64 {
            let began = std::time::Instant::now();
            let run = runtime
                .execute_in_session(&s, &AddOne, i)
                .await
                .expect("runs");
            took.push(began.elapsed());
            assert_eq!(run.output, i + 1);
        }
        took.sort();
        medians.push(took[took.len() / 2]);
        runtime.stop_session(&s).await.expect("stops the session");
        runtime.stop().await.expect("the runtime stops");
    }
    eprintln!(
        "one-step run p50 on the cluster: {:?} without durable writes, {:?} with durable_writes(1)",
        medians[0], medians[1]
    );
}
