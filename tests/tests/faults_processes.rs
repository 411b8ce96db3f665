//! docs/faults.md's process faults, with real worker processes (the `fault_worker` binary)
//! and a Redis server of each test's own: `kill -9`, chaos, `kill -STOP`, SIGTERM, a Redis
//! crash, a job that kills its process, contracts no worker (or only an older one) serves,
//! and clock skew. Each scenario is judged by the checker (`am2z_tests::fault::checker`) and
//! prints its one-line report; `AM2Z_FAULT_PROFILE=long` runs the bigger variants.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use am2z::{Error, RunHandle, SessionId};
use am2z_tests::fault::work::{AbortAlways, Chain3, FanOut, NobodyServes, StepA, Versioned, Work};
use am2z_tests::fault::worker::CONTRACT_VAR;
use am2z_tests::fault::{Fleet, Knobs, Report, Submitter, faketime_env, long_profile};
use am2z_tests::layout::Layout;

/// Slack on every time bound: the machine is shared and the workers are debug builds.
const MARGIN: Duration = Duration::from_secs(3);

/// Submits run `id`: a three-step chain, a fan-out (when `fan_outs`), or a single step.
async fn submit_mixed(
    submitter: &Submitter,
    sessions: &[SessionId],
    id: u64,
    ms: u64,
    fan_outs: bool,
) {
    let session = &sessions[id as usize % sessions.len()];
    let work = Work::new(id, ms);
    match id % 3 {
        0 => submitter.submit(session, &Chain3, work).await,
        1 if fan_outs => submitter.submit(session, &FanOut, work).await,
        _ => submitter.submit(session, &StepA, work).await,
    };
}

/// The promise: work held by a dead or frozen worker is re-leased within a lease and one sweep.
fn recovery_bound(knobs: &Knobs) -> Duration {
    knobs.lease + knobs.sweep + MARGIN
}

fn print(report: &Report) {
    eprintln!("{report}");
}

/// Scenario 1: `kill -9` two of four workers with ~1 000 short runs in flight across 10
/// sessions, then restart them: every run completes, one commit each, and only runs the killed
/// workers held ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_kill_9_of_two_of_four_workers_loses_nothing() {
    let knobs = Knobs::default().concurrency(16);
    let mut fleet = Fleet::start("s01", knobs.clone(), 4).await;
    let sessions = fleet.sessions(10, "s01");
    let runs: u64 = if long_profile() { 5_000 } else { 1_000 };
    let submitter = fleet.submitter();
    for id in 0..runs {
        submit_mixed(&submitter, &sessions, id, 60, false).await;
    }
    let victims = [fleet.worker(0).pid(), fleet.worker(1).pid()];
    fleet
        .until("the victims are working", Duration::from_secs(30), |f| {
            let ledger = f.ledger();
            victims.iter().all(|&pid| ledger.count_by(pid) >= 10)
        })
        .await;
    let fault = SystemTime::now();
    fleet.kill_9(0);
    fleet.kill_9(1);
    fleet.restart(0);
    fleet.restart(1);

    let mut report = fleet
        .check("s01 kill -9 2/4", Duration::from_secs(60))
        .await;
    let ledger = fleet.ledger();
    report.faults = 2;
    report.recovery = ledger.recovery(&victims, fault);
    report.first_commit = fleet
        .commits()
        .first_after(&ledger.orphaned(&victims, fault), fault);
    print(&report);
    report.assert_invariants();
    assert_eq!(report.completed as u64, runs, "{report}");
    let held: BTreeSet<String> = victims.iter().flat_map(|&p| ledger.runs_by(p)).collect();
    let duplicated = ledger.duplicated_runs();
    assert!(
        !duplicated.is_empty(),
        "the kills hit runs in flight: {report}"
    );
    assert!(
        duplicated.is_subset(&held),
        "only runs the killed workers held ran twice: {report}"
    );
    // A run's steps may run on different workers (a commit hands the next step to its own
    // worker only while no other session waits): each step that ran twice first ran on a
    // victim.
    for ((run, step, attempt), executions) in ledger.duplicates() {
        assert!(
            victims.contains(&executions[0].pid),
            "{run} step {step} attempt {attempt} first ran on a victim: {executions:?}"
        );
    }
    assert!(
        duplicated.len() <= 2 * knobs.concurrency,
        "at most the victims' slots re-ran: {report}"
    );
    let recovery = report.recovery.expect("orphaned runs were re-leased");
    assert!(recovery <= recovery_bound(&knobs), "{report}");
    fleet.stop().await;
}

/// A small deterministic generator for the chaos schedule (no dependency for one test).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// Scenario 2: chaos. A random worker is killed (and restarted, as a supervisor would) every
/// 1–3 s while mixed runs (chains, fan-outs, single steps) are submitted: the invariants hold,
/// and nothing is active two leases after the chaos stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_chaos_of_random_kills_keeps_every_invariant() {
    let (chaos, runs) = if long_profile() {
        (Duration::from_secs(60), 10_000)
    } else {
        (Duration::from_secs(8), 300)
    };
    // Redeliveries are not the point here: a run unlucky enough to be hit on several workers
    // must still complete.
    let knobs = Knobs::default().concurrency(16).max_deliveries(50);
    let mut fleet = Fleet::start("s02", knobs.clone(), 4).await;
    let sessions = fleet.sessions(10, "s02");
    let seed = ledger_seed();
    let mut dice = Dice(seed);
    // Submissions spread over the first three quarters of the chaos, on a schedule (a slow
    // call does not push the rest past the chaos), by four submitters.
    const SUBMITTERS: u32 = 4;
    let pace = chaos * 3 / 4 / runs;
    let start = tokio::time::Instant::now();
    let submitting: Vec<_> = (0..SUBMITTERS)
        .map(|first| {
            let (submitter, sessions) = (fleet.submitter(), sessions.clone());
            tokio::spawn(async move {
                for id in (first..runs).step_by(SUBMITTERS as usize) {
                    tokio::time::sleep_until(start + pace * id).await;
                    submit_mixed(&submitter, &sessions, u64::from(id), 30, true).await;
                }
            })
        })
        .collect();
    let begin = Instant::now();
    let mut kills: Vec<(u32, SystemTime)> = Vec::new();
    loop {
        let pause = Duration::from_millis(1_000 + dice.roll(2_000));
        if begin.elapsed() + pause >= chaos {
            tokio::time::sleep(chaos.saturating_sub(begin.elapsed())).await;
            break;
        }
        tokio::time::sleep(pause).await;
        let slot = dice.roll(fleet.len() as u64) as usize;
        let at = SystemTime::now();
        kills.push((fleet.kill_9(slot), at));
        fleet.restart(slot);
    }
    let calm = Instant::now();
    for submitter in submitting {
        submitter.await.expect("a submitter");
    }
    // Nothing active (leased, queued or delayed) within two leases after the chaos.
    let idle_within = knobs.lease * 2 + MARGIN;
    fleet
        .until("idle after the chaos", idle_within + MARGIN, |f| {
            busy(f, &sessions) == 0
        })
        .await;
    let idle_after = calm.elapsed();

    let mut report = fleet.check("s02 chaos", Duration::from_secs(60)).await;
    let ledger = fleet.ledger();
    report.faults = kills.len();
    report.recovery = kills
        .iter()
        .filter_map(|&(pid, at)| ledger.recovery(&[pid], at))
        .max();
    report.first_commit = kills
        .iter()
        .filter_map(|&(pid, at)| {
            fleet
                .commits()
                .first_after(&ledger.orphaned(&[pid], at), at)
        })
        .max();
    let first_deliveries = kills
        .iter()
        .filter_map(|&(pid, at)| ledger.first_delivery_recovery(&[pid], at))
        .max();
    print(&report);
    eprintln!(
        "[s02 chaos] seed {seed}, {:?} of chaos, idle {:.2}s after it, recovery of first deliveries {:.2}s (later ones add the redelivery backoff)",
        chaos,
        idle_after.as_secs_f64(),
        first_deliveries.map_or(0.0, |d| d.as_secs_f64()),
    );
    report.assert_invariants();
    assert_eq!(report.completed, runs as usize, "{report}");
    assert!(idle_after <= idle_within, "idle {idle_after:?}: {report}");
    let victims: Vec<u32> = kills.iter().map(|&(pid, _)| pid).collect();
    let held: BTreeSet<String> = victims.iter().flat_map(|&p| ledger.runs_by(p)).collect();
    assert!(
        ledger.duplicated_runs().is_subset(&held),
        "only runs killed workers held ran twice: {report}"
    );
    if let Some(recovery) = first_deliveries {
        assert!(recovery <= recovery_bound(&knobs), "{recovery:?}: {report}");
    }
    fleet.stop().await;
}

fn ledger_seed() -> u64 {
    std::env::var("AM2Z_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

/// Jobs queued, delayed or leased in `sessions` (finite scores: `leases` also holds a member
/// scored +inf while the session is live, which keeps it a skip list).
fn busy(fleet: &Fleet, sessions: &[SessionId]) -> usize {
    sessions
        .iter()
        .flat_map(|s| {
            ["queue", "delayed", "leases"].map(|set| format!("{}:{{{s}}}:{set}", fleet.prefix()))
        })
        .map(|key| {
            let jobs = fleet.server().cli(&["ZCOUNT", &key, "-inf", "(+inf"]);
            jobs.parse().unwrap_or(0)
        })
        .sum()
}

/// Scenario 3's set-up: one worker (lease 600 ms, sweep 200 ms) starts a `ms`-long step and is
/// frozen (`kill -STOP`) in it; a second worker is started to take the run over.
struct FrozenMidRun {
    fleet: Fleet,
    knobs: Knobs,
    handle: RunHandle,
    frozen: u32,
    other: u32,
    fault: SystemTime,
}

async fn freeze_mid_run(name: &str, ms: u64) -> FrozenMidRun {
    let knobs = Knobs::default()
        .concurrency(1)
        .lease(Duration::from_millis(600))
        .sweep(Duration::from_millis(200));
    let mut fleet = Fleet::start(name, knobs.clone(), 1).await;
    let session = &fleet.sessions(1, name)[0];
    let handle = fleet
        .submit(session, &StepA, Work::new(7, ms))
        .await
        .expect("submitted");
    fleet
        .until("the run started", Duration::from_secs(20), |f| {
            !f.ledger().is_empty()
        })
        .await;
    let frozen = fleet.worker(0).pid();
    let fault = SystemTime::now();
    fleet.worker(0).stop();
    let other = fleet.spawn();
    let other = fleet.worker(other).pid();
    FrozenMidRun {
        fleet,
        knobs,
        handle,
        frozen,
        other,
        fault,
    }
}

impl FrozenMidRun {
    /// The checker's report, with the freeze as the one fault and recovery measured from it.
    async fn report(&self, scenario: &str) -> Report {
        let mut report = self.fleet.check(scenario, Duration::from_secs(20)).await;
        let ledger = self.fleet.ledger();
        report.faults = 1;
        report.recovery = ledger.recovery(&[self.frozen], self.fault);
        report.first_commit = self
            .fleet
            .commits()
            .first_after(&ledger.orphaned(&[self.frozen], self.fault), self.fault);
        print(&report);
        report.assert_invariants();
        report
    }
}

/// Scenario 3: a worker frozen (`kill -STOP`) past its lease loses the run to another worker;
/// thawed, its late commit is refused and counted, and the outcome stays the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_a_frozen_worker_cannot_overwrite_a_newer_attempt() {
    let run = freeze_mid_run("s03", 1_500).await;
    let fleet = &run.fleet;
    let done = fleet
        .client()
        .wait::<Work>(&run.handle, Some(Duration::from_secs(20)))
        .await
        .expect("another worker completes it");
    assert_eq!(done.output.pid, run.other);
    fleet.worker(0).cont();
    fleet
        .until("the late commit is refused", Duration::from_secs(10), |f| {
            f.worker(0).counts().refused >= 1
        })
        .await;
    let again = fleet
        .client()
        .wait::<Work>(&run.handle, Some(Duration::from_secs(5)))
        .await
        .expect("the outcome is still there");
    assert_eq!(
        again.output.pid, run.other,
        "the late commit changed nothing"
    );

    let report = run.report("s03 kill -STOP").await;
    let pids: Vec<u32> = fleet
        .ledger()
        .of_run(&run.handle.run_id.to_string())
        .map(|e| e.pid)
        .collect();
    assert_eq!(pids, vec![run.frozen, run.other], "{report}");
    assert_eq!(report.refused_commits, 1, "{report}");
    assert_eq!(report.duplicate_executions, 1, "{report}");
    assert!(
        report.recovery.expect("re-leased") <= recovery_bound(&run.knobs),
        "{report}"
    );
    fleet.stop().await;
}

/// Scenario 4: SIGTERM mid-step. The worker claims nothing new, commits what finishes within
/// its drain timeout, releases the rest at once (not after its 60 s lease), and exits in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_sigterm_drains_commits_finished_runs_and_releases_the_rest() {
    let knobs = Knobs::default()
        .concurrency(4)
        .lease(Duration::from_secs(60))
        .drain(Duration::from_secs(1));
    let mut fleet = Fleet::start("s04", knobs.clone(), 1).await;
    let session = &fleet.sessions(1, "s04")[0];
    let mut handles = Vec::new();
    for (id, ms) in [(0, 200), (1, 200), (2, 4_000), (3, 4_000)] {
        let handle = fleet.submit(session, &StepA, Work::new(id, ms)).await;
        handles.push(handle.expect("submitted"));
    }
    fleet
        .until("all four started", Duration::from_secs(20), |f| {
            f.ledger().len() == 4
        })
        .await;
    let draining = fleet.worker(0).pid();
    let fault = SystemTime::now();
    let begin = Instant::now();
    fleet.worker(0).sigterm();
    // Submitted after the signal: a draining worker must not claim them.
    for id in [4, 5] {
        fleet.submit(session, &StepA, Work::new(id, 50)).await;
    }
    let exit = fleet
        .worker_mut(0)
        .wait_exit(knobs.drain + MARGIN)
        .expect("the worker exits within its drain timeout");
    let exited_in = begin.elapsed();
    assert!(exit.success(), "{exit:?}");
    let counts = fleet.worker(0).counts();
    assert!(counts.exited, "it drained and said so: {counts:?}");
    assert_eq!(
        counts.committed, 2,
        "the finished runs committed: {counts:?}"
    );
    for handle in &handles[..2] {
        let done = fleet
            .client()
            .wait::<Work>(handle, Some(Duration::from_secs(5)))
            .await
            .expect("finished runs were committed");
        assert_eq!(done.output.pid, draining);
    }
    // The released runs and the new ones go to a new worker at once.
    let taker = fleet.spawn();
    let taker_pid = fleet.worker(taker).pid();
    fleet
        .until(
            "released runs taken at once",
            Duration::from_secs(10),
            |f| f.ledger().count_by(taker_pid) >= 4,
        )
        .await;

    let mut report = fleet.check("s04 SIGTERM", Duration::from_secs(20)).await;
    let ledger = fleet.ledger();
    report.faults = 1;
    report.recovery = ledger.recovery(&[draining], fault);
    report.first_commit = fleet
        .commits()
        .first_after(&ledger.orphaned(&[draining], fault), fault);
    print(&report);
    eprintln!(
        "[s04 SIGTERM] exited {:.2}s after the signal",
        exited_in.as_secs_f64()
    );
    report.assert_invariants();
    assert_eq!(report.completed, 6, "{report}");
    assert_eq!(
        ledger.count_by(draining),
        4,
        "no claim after SIGTERM: {report}"
    );
    // Released, not swept: far sooner than the 60 s lease.
    let recovery = report.recovery.expect("the released runs ran again");
    assert!(recovery <= knobs.drain + MARGIN, "{report}");
    fleet.stop().await;
}

/// Scenario 5: `kill -9` of Redis mid-run (`appendfsync always`), restarted on the same
/// directory: clients and workers reconnect by themselves and no acknowledged run is lost
/// (the checker would tell "Redis forgot" from "the runtime dropped it").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_redis_kill_9_and_restart_loses_no_acknowledged_run() {
    let knobs = Knobs::default();
    let mut fleet = Fleet::start("s05", knobs.clone(), 2).await;
    let sessions = fleet.sessions(4, "s05");
    let runs: u64 = if long_profile() { 3_000 } else { 300 };
    let submitter = fleet.submitter();
    let submitting = {
        let sessions = sessions.clone();
        tokio::spawn(async move {
            for id in 0..runs {
                submit_mixed(&submitter, &sessions, id, 40, true).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    fleet
        .until("runs in flight", Duration::from_secs(30), |f| {
            f.checker().ok().len() >= 100 && f.ledger().len() >= 50
        })
        .await;
    fleet.server_mut().kill_9();
    // The outage itself (not a synchronisation): Redis stays down this long.
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.server_mut().restart();
    let restarted = SystemTime::now();
    submitting.await.expect("the submitter");

    let mut report = fleet
        .check("s05 redis kill -9", Duration::from_secs(60))
        .await;
    report.faults = 1;
    // Here recovery is from the restart to the first step started, and to the first commit.
    report.recovery = fleet.ledger().first_after(&[], restarted);
    let runs = fleet
        .checker()
        .ok()
        .iter()
        .map(|h| h.run_id.to_string())
        .collect();
    report.first_commit = fleet.commits().first_after(&runs, restarted);
    print(&report);
    assert_eq!(
        report.redis_forgot, 0,
        "appendfsync always forgets nothing: {report}"
    );
    report.assert_invariants();
    assert_eq!(report.completed, report.ok, "{report}");
    assert!(
        report.recovery.expect("work resumed") <= recovery_bound(&knobs) + MARGIN,
        "{report}"
    );
    fleet.stop().await;
}

/// Scenario 13: a job that kills its process every time it runs is dead-lettered after
/// `max_deliveries` process deaths with a typed error; the supervised fleet does not
/// crash-loop, and other runs complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s13_a_job_that_kills_its_worker_is_dead_lettered() {
    let knobs = Knobs::default()
        .concurrency(4)
        .lease(Duration::from_secs(1))
        .sweep(Duration::from_millis(200))
        .max_deliveries(3);
    let mut fleet = Fleet::start("s13", knobs.clone(), 3).await;
    let sessions = fleet.sessions(2, "s13");
    let poison = fleet
        .submit(&sessions[0], &AbortAlways, Work::new(0, 0))
        .await
        .expect("submitted");
    for id in 1..=30 {
        fleet.submit(&sessions[1], &StepA, Work::new(id, 20)).await;
    }
    let waiting = {
        let client = fleet.client().clone();
        let poison = poison.clone();
        tokio::spawn(async move {
            client
                .wait::<Work>(&poison, Some(Duration::from_secs(60)))
                .await
        })
    };
    // The supervisor: restart every worker that died, until the poison run is settled.
    let mut restarts = 0;
    while !waiting.is_finished() {
        restarts += fleet.restart_exited();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failure = waiting
        .await
        .expect("the waiter")
        .expect_err("the poison run fails");
    assert!(
        matches!(&failure.error, Error::Unavailable { message, .. } if message.contains("dead-lettered")),
        "{}",
        failure.error
    );
    restarts += fleet.restart_exited();

    let mut report = fleet.check("s13 poison job", Duration::from_secs(30)).await;
    report.faults = restarts;
    print(&report);
    report.assert_invariants();
    let executions = fleet.ledger().of_run(&poison.run_id.to_string()).count();
    assert_eq!(executions, 3, "one execution per delivery: {report}");
    assert_eq!(
        restarts, 3,
        "one process death per delivery, no crash loop: {report}"
    );
    assert_eq!(report.completed, 30, "{report}");
    assert_eq!(report.terminal_failures, 1, "{report}");
    fleet.stop().await;
}

/// Scenario 14a: a processor no live worker serves fails with a typed `NotFound` once the
/// unserved grace period is over; served runs beside it complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_an_unknown_processor_fails_typed_after_the_grace_period() {
    let grace = Duration::from_secs(1);
    let knobs = Knobs::default()
        .sweep(Duration::from_millis(200))
        .unserved_grace(Some(grace));
    let fleet = Fleet::start("s14a", knobs.clone(), 1).await;
    let session = &fleet.sessions(1, "s14a")[0];
    let begin = Instant::now();
    let unknown = fleet
        .submit(session, &NobodyServes, Work::new(1, 0))
        .await
        .expect("submitted");
    fleet.submit(session, &StepA, Work::new(2, 0)).await;
    let failure = fleet
        .client()
        .wait::<Work>(&unknown, Some(Duration::from_secs(30)))
        .await
        .expect_err("an unserved run fails");
    let failed_in = begin.elapsed();
    assert!(
        matches!(&failure.error, Error::NotFound { name, .. } if name == "nobody_serves"),
        "{}",
        failure.error
    );
    // The sweeper's full pass (every tenth sweep) fails unserved jobs.
    assert!(
        failed_in <= grace + knobs.sweep * 10 + MARGIN,
        "failed after {failed_in:?}"
    );

    let report = fleet
        .check("s14a unknown processor", Duration::from_secs(20))
        .await;
    print(&report);
    eprintln!(
        "[s14a unknown processor] typed failure after {:.2}s",
        failed_in.as_secs_f64()
    );
    report.assert_invariants();
    assert_eq!(
        (report.completed, report.terminal_failures),
        (1, 1),
        "{report}"
    );
    assert!(
        fleet
            .ledger()
            .of_run(&unknown.run_id.to_string())
            .next()
            .is_none()
    );
    fleet.stop().await;
}

/// Scenario 14b: an older worker binary (same processor name, older input type) never
/// consumes a job of the newer contract, not even a delivery; a current worker started later
/// completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_an_older_worker_never_consumes_a_newer_contract() {
    let knobs = Knobs::default();
    let mut fleet = Fleet::start("s14b", knobs.clone(), 0).await;
    let old = fleet.spawn_with(&knobs, &[(CONTRACT_VAR, "old".to_owned())]);
    let old_pid = fleet.worker(old).pid();
    let session = &fleet.sessions(1, "s14b")[0];
    let newer = fleet
        .submit(session, &Versioned, Work::new(1, 0))
        .await
        .expect("submitted");
    // Queued behind the newer job: when the old worker has run this, its claims have looked
    // at the newer job and skipped it.
    let behind = fleet
        .submit(session, &StepA, Work::new(2, 0))
        .await
        .expect("submitted");
    let done = fleet
        .client()
        .wait::<Work>(&behind, Some(Duration::from_secs(20)))
        .await
        .expect("the old worker runs what it can decode");
    assert_eq!(done.output.pid, old_pid);
    let layout = Layout::new(&fleet.server().url(), fleet.prefix(), session.as_str());
    let job = newer.run_id.to_string();
    assert_eq!(
        layout.header(&job).expect("queued").deliveries,
        0,
        "no delivery consumed"
    );
    assert_eq!(layout.state(&job), "queued");

    let current = fleet.spawn();
    let current_pid = fleet.worker(current).pid();
    let done = fleet
        .client()
        .wait::<Work>(&newer, Some(Duration::from_secs(20)))
        .await
        .expect("a current worker completes it");
    assert_eq!(done.output.pid, current_pid);

    let report = fleet
        .check("s14b older worker", Duration::from_secs(20))
        .await;
    print(&report);
    report.assert_invariants();
    let pids: Vec<u32> = fleet
        .ledger()
        .of_run(&newer.run_id.to_string())
        .map(|e| e.pid)
        .collect();
    assert_eq!(pids, vec![current_pid], "{report}");
    fleet.stop().await;
}

/// Scenario 24: clock skew. Workers whose clocks run 30 s ahead and 30 s behind (libfaketime)
/// work beside a normal one: leases follow Redis' clock, so no run shorter than its lease is
/// reclaimed early (no duplicate execution).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s24_clock_skew_between_workers_reclaims_nothing_early() {
    let (ahead, behind) = (faketime_env("+30s"), faketime_env("-30s"));
    let (Some(ahead), Some(behind)) = (ahead, behind) else {
        panic!("libfaketime is not installed (apt-get install -y faketime)");
    };
    let knobs = Knobs::default().concurrency(8);
    let mut fleet = Fleet::start("s24", knobs.clone(), 1).await;
    let fast = fleet.spawn_with(&knobs, &ahead);
    let slow = fleet.spawn_with(&knobs, &behind);
    let (fast, slow) = (fleet.worker(fast).pid(), fleet.worker(slow).pid());
    let sessions = fleet.sessions(3, "s24");
    let runs: u64 = if long_profile() { 2_000 } else { 200 };
    let submitter = fleet.submitter();
    for id in 0..runs {
        // Each run takes a fifth of its lease (a chain: three steps of that).
        submit_mixed(&submitter, &sessions, id, 100, true).await;
    }

    let report = fleet.check("s24 clock skew", Duration::from_secs(60)).await;
    print(&report);
    report.assert_invariants();
    assert_eq!(report.completed as u64, runs, "{report}");
    assert_eq!(
        report.duplicate_executions, 0,
        "no premature reclaim: {report}"
    );
    let ledger = fleet.ledger();
    assert!(
        ledger.count_by(fast) > 0 && ledger.count_by(slow) > 0,
        "{report}"
    );
    // The skew was real: the ledger lines of the skewed workers carry their clocks.
    let now = am2z_tests::fault::ledger::unix_nanos(SystemTime::now());
    let last_fast = ledger
        .executions()
        .iter()
        .filter(|e| e.pid == fast)
        .map(|e| e.at)
        .max();
    assert!(
        last_fast.is_some_and(|at| at > now + 20_000_000_000),
        "the clock ran ahead"
    );
    fleet.stop().await;
}

/// Scenario 3, thawed mid-step: the thawed worker's renewer finds the lease gone before the
/// step ends, so the run is abandoned at once (no late commit is even tried); the fenced
/// attempt is counted all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_a_worker_thawed_mid_step_abandons_the_lost_run() {
    let run = freeze_mid_run("s03b", 3_000).await;
    let fleet = &run.fleet;
    let other = run.other;
    fleet
        .until(
            "another worker took the run",
            Duration::from_secs(20),
            |f| f.ledger().count_by(other) == 1,
        )
        .await;
    fleet.worker(0).cont();
    fleet
        .until(
            "the lost attempt is counted",
            Duration::from_secs(10),
            |f| f.worker(0).counts().refused == 1,
        )
        .await;
    let done = fleet
        .client()
        .wait::<Work>(&run.handle, Some(Duration::from_secs(20)))
        .await
        .expect("the other worker completes it");
    assert_eq!(done.output.pid, other);

    let report = run.report("s03b thawed mid-step").await;
    assert_eq!(fleet.worker(0).counts().committed, 0, "{report}");
    assert_eq!(report.refused_commits, 1, "{report}");
    assert!(
        report.recovery.expect("re-leased") <= recovery_bound(&run.knobs),
        "{report}"
    );
    fleet.stop().await;
}

/// The checker catches what it claims to: a run the runtime dropped (its job deleted behind
/// its back, though the append-only file has it), a second terminal transition, a job hash in
/// no queue, and a key outside the scene.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_losses_double_commits_half_writes_and_stray_keys() {
    let fleet = Fleet::start("checker", Knobs::default(), 0).await;
    let session = &fleet.sessions(1, "checker")[0];
    let dropped = fleet
        .submit(session, &StepA, Work::new(1, 0))
        .await
        .expect("submitted");
    let server = fleet.server();
    let layout = Layout::new(&server.url(), fleet.prefix(), session.as_str());
    let run = dropped.run_id.to_string();
    let header = layout.header(&run).expect("queued");
    for part in ["jobs", "bodies"] {
        server.cli(&["HDEL", &layout.key(part), &run]);
    }
    for set in ["queue", "runs"] {
        server.cli(&["ZREM", &layout.key(set), &run]);
    }
    // A job with a header but in no queue, lease or delay set.
    layout.set_header(&"0".repeat(32), &header);
    server.cli(&["SET", "not-the-scene:key", "1"]);
    let done = format!("{}:done", fleet.prefix());
    for _ in 0..2 {
        server.cli(&["PUBLISH", &done, &format!("{session} {}", "f".repeat(32))]);
    }

    let report = fleet
        .check("checker self-test", Duration::from_secs(2))
        .await;
    print(&report);
    assert_eq!((report.lost, report.redis_forgot), (1, 0), "{report}");
    assert_eq!(report.double_commits, 1, "{report}");
    assert_eq!(report.half_written, 1, "{report}");
    assert_eq!(
        report.stray_keys,
        vec!["not-the-scene:key".to_owned()],
        "{report}"
    );
    fleet.stop().await;
}

/// Scenario 1, recovery under load: a session whose claims never stop (a run every 5 ms)
/// still has a dead worker's lease swept within a lease and one sweep. (Each claim used to
/// replace the session's due sweep time with its own new deadline, so a busy session's
/// expired lease waited for the sweeper's full pass, ten sweeps later.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_a_busy_sessions_claims_do_not_postpone_recovery() {
    let knobs = Knobs::default()
        .concurrency(4)
        .lease(Duration::from_secs(1))
        .sweep(Duration::from_secs(1));
    let mut fleet = Fleet::start("s01b", knobs.clone(), 1).await;
    let session = &fleet.sessions(1, "s01b")[0];
    let long = fleet
        .submit(session, &StepA, Work::new(0, 1_000))
        .await
        .expect("submitted");
    fleet
        .until(
            "the victim took the long run",
            Duration::from_secs(20),
            |f| !f.ledger().is_empty(),
        )
        .await;
    let victim = fleet.worker(0).pid();
    let survivor = fleet.spawn();
    let survivor_pid = fleet.worker(survivor).pid();
    let streaming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let stream = {
        let (submitter, session) = (fleet.submitter(), session.clone());
        let streaming = std::sync::Arc::clone(&streaming);
        tokio::spawn(async move {
            let mut id = 1;
            while streaming.load(std::sync::atomic::Ordering::SeqCst) {
                submitter.submit(&session, &StepA, Work::new(id, 1)).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                id += 1;
            }
        })
    };
    let fault = SystemTime::now();
    fleet.kill_9(0);
    let run = long.run_id.to_string();
    fleet
        .until("the long run re-leased", Duration::from_secs(20), |f| {
            f.ledger().of_run(&run).any(|e| e.pid == survivor_pid)
        })
        .await;
    streaming.store(false, std::sync::atomic::Ordering::SeqCst);
    stream.await.expect("the stream");

    let mut report = fleet
        .check("s01b busy session", Duration::from_secs(30))
        .await;
    report.faults = 1;
    let ledger = fleet.ledger();
    report.recovery = ledger.recovery(&[victim], fault);
    report.first_commit = fleet
        .commits()
        .first_after(&ledger.orphaned(&[victim], fault), fault);
    print(&report);
    report.assert_invariants();
    assert!(
        report.recovery.expect("re-leased") <= recovery_bound(&knobs),
        "{report}"
    );
    fleet.stop().await;
}

/// A submitter that died between queueing its run and scheduling the session (two calls; the
/// state is made by unscheduling the session by hand): the sweeper's full pass schedules the
/// session, so the run is not stranded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_submitter_died_before_scheduling_it_still_runs() {
    let knobs = Knobs::default().sweep(Duration::from_millis(200));
    let mut fleet = Fleet::start("unscheduled", knobs.clone(), 0).await;
    let session = &fleet.sessions(1, "unscheduled")[0];
    let handle = fleet
        .submit(session, &StepA, Work::new(1, 0))
        .await
        .expect("submitted");
    let sched = format!("{}:{{:registry}}:sched", fleet.prefix());
    assert_eq!(fleet.server().cli(&["ZREM", &sched, session.as_str()]), "1");
    let begin = Instant::now();
    fleet.spawn();
    fleet
        .client()
        .wait::<Work>(&handle, Some(Duration::from_secs(20)))
        .await
        .expect("the run is found and completed");
    let found_in = begin.elapsed();

    let report = fleet
        .check("unscheduled run", Duration::from_secs(20))
        .await;
    print(&report);
    eprintln!(
        "[unscheduled run] completed {:.2}s after a worker started",
        found_in.as_secs_f64()
    );
    report.assert_invariants();
    // Within the sweeper's full pass (every tenth sweep), from the worker's start.
    assert!(found_in <= knobs.sweep * 10 + MARGIN, "{found_in:?}");
    fleet.stop().await;
}

/// Scenario 24, delays: only skewed workers (30 s ahead, 30 s behind) redeliver a job that
/// kills its worker every time. The redelivery backoff (500 ms, then 1 s) is kept on Redis'
/// clock: no redelivery comes early (as a promoter reading its own fast clock would make it)
/// and none waits the skew out (as a slow clock would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s24_redelivery_delays_follow_redis_clock_under_skew() {
    let (Some(ahead), Some(behind)) = (faketime_env("+30s"), faketime_env("-30s")) else {
        panic!("libfaketime is not installed (apt-get install -y faketime)");
    };
    let knobs = Knobs::default()
        .concurrency(1)
        .lease(Duration::from_secs(1))
        .sweep(Duration::from_millis(200))
        .max_deliveries(4);
    let mut fleet = Fleet::start("s24b", knobs.clone(), 0).await;
    fleet.spawn_with(&knobs, &ahead);
    fleet.spawn_with(&knobs, &behind);
    let session = &fleet.sessions(1, "s24b")[0];
    let poison = fleet
        .submit(session, &AbortAlways, Work::new(0, 0))
        .await
        .expect("submitted");
    let waiting = {
        let (client, poison) = (fleet.client().clone(), poison.clone());
        tokio::spawn(async move {
            client
                .wait::<Work>(&poison, Some(Duration::from_secs(60)))
                .await
        })
    };
    // The supervisor restarts each dead worker with its skew; the deaths are the deliveries.
    let mut deaths: Vec<Instant> = Vec::new();
    while !waiting.is_finished() {
        for slot in 0..fleet.len() {
            if fleet.worker_mut(slot).try_exit().is_some() {
                deaths.push(Instant::now());
                let env = if slot == 0 { &ahead } else { &behind };
                fleet.restart_with(slot, &knobs, env);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failure = waiting
        .await
        .expect("the waiter")
        .expect_err("dead-lettered");
    assert!(
        matches!(failure.error, Error::Unavailable { .. }),
        "{}",
        failure.error
    );

    let mut report = fleet
        .check("s24b skewed redelivery", Duration::from_secs(20))
        .await;
    report.faults = deaths.len();
    print(&report);
    let gaps: Vec<Duration> = deaths.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("[s24b skewed redelivery] gaps between deliveries {gaps:?}");
    report.assert_invariants();
    assert_eq!(deaths.len(), 4, "{deaths:?}");
    // After delivery n the job waits out its lease, then 0, 500 ms, 1 s of backoff.
    let backoffs = [0, 500, 1_000].map(Duration::from_millis);
    for (gap, backoff) in gaps.iter().zip(backoffs) {
        let early = knobs.lease + backoff;
        assert!(
            // 300 ms of slack for when this loop and the workers noticed and died; a clock
            // read in the wrong process would make redeliveries 500 ms and 1 s early.
            *gap + Duration::from_millis(300) >= early,
            "redelivered early: {gap:?} < {early:?}"
        );
        assert!(
            *gap <= early + knobs.sweep + MARGIN,
            "redelivered late: {gap:?}"
        );
    }
    fleet.stop().await;
}
