//! The Redis runtime across real processes: workers and an awaiter are `fault_worker`
//! processes (`am2z_tests::fault`), on a Redis server of the test's own. The process-fault
//! scenarios (`kill -9`, `kill -STOP`, SIGTERM, ...) live in `faults_processes.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use am2z_tests::fault::work::{StepA, Work};
use am2z_tests::fault::{Fleet, Knobs};

/// A run submitted by this process is executed by two worker processes and awaited by a
/// fourth process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_here_executed_by_two_workers_awaited_by_another_process() {
    let mut fleet = Fleet::start("relay", Knobs::default().concurrency(4), 2).await;
    let session = &fleet.sessions(1, "relay")[0];
    let mut handles = Vec::new();
    for id in 0..24 {
        let handle = fleet.submit(session, &StepA, Work::new(id, 40)).await;
        handles.push(handle.expect("submitted"));
    }
    let mut awaiter = fleet.awaiter(&handles);
    let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for id in 0..24 {
        let line = awaiter.expect_line(&["done ", "failed "], Duration::from_secs(30));
        let mut parts = line.split(' ');
        assert_eq!(parts.next(), Some("done"), "{line}");
        assert_eq!(parts.next(), Some(id.to_string().as_str()), "{line}");
        let pid: u32 = parts.next().expect("a pid").parse().expect("a pid");
        *by_pid.entry(pid).or_default() += 1;
    }
    assert!(awaiter.wait_exit(Duration::from_secs(10)).is_some());
    let mut workers = vec![fleet.worker(0).pid(), fleet.worker(1).pid()];
    workers.sort_unstable();
    assert_eq!(by_pid.keys().copied().collect::<Vec<_>>(), workers);
    let report = fleet.check("relay", Duration::from_secs(20)).await;
    eprintln!("{report}");
    report.assert_invariants();
    fleet.stop().await;
}
