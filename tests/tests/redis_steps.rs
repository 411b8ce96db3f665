//! Step jobs on Redis (architecture.md, "Phase 2, built: step jobs in Redis"): a served
//! workflow runs one job per step, so recovery re-runs only the steps in flight (in a chain,
//! a map, a fan-in), one run's steps spread over workers, a fan-in joins once, a map's
//! `concurrency` and a processor's hold across workers, a stopped session leaves nothing
//! behind, a workflow's timeout spans its steps, a poisoned step dead-letters its run, a long
//! step keeps its lease, a fail-fast parallel drops its siblings, outcomes and events read as
//! on the local runtime, session quotas count runs, and `step_jobs(false)` /
//! `AM2Z_STEP_JOBS=0` keep the whole-run job.
//!
//! Where process ids matter (a kill, the spread over workers, bounds measured from the ledger)
//! the workers are real `fault_worker` processes on a Redis server of the test's own (the
//! fault harness, `am2z_tests::fault`); elsewhere they are `RedisRuntime`s in the test process
//! against the shared Redis (127.0.0.1:6379 or `AM2Z_TEST_REDIS_URL`), each test under its own
//! prefix, whose keys it deletes at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use am2z::{
    Ctx, Error, Processor, RedisConfig, RedisRuntime, RunHandle, RunId, Runtime, SessionId,
    processor, workflow,
};
use am2z_tests::fault::work::{
    Fan3, Gate, GateChain, PairedMap, PoisonChain, PoisonFan, SlowMiddle, SpreadMap, TrackedMap,
    Work,
};
use am2z_tests::fault::{Execution, Fleet, Knobs, Ledger, redis_cli, scan_keys};
use am2z_tests::layout::Layout;

/// Slack on every time bound: the machine is shared and the workers are debug builds.
const MARGIN: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// In-process scenes: several `RedisRuntime` workers and a client in this process.

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A scene in this process: `workers` worker runtimes serving what `serve` names, and a client
/// that only submits and waits, all under one fresh prefix on the shared Redis.
struct Scene {
    url: String,
    prefix: String,
    client: RedisRuntime,
    workers: Vec<RedisRuntime>,
}

impl Scene {
    async fn start(
        tag: &str,
        workers: usize,
        concurrency: usize,
        configure: impl Fn(RedisConfig) -> RedisConfig,
        serve: impl Fn(&RedisRuntime),
    ) -> Scene {
        let url = redis_url();
        let prefix = format!("am2z-steps-{tag}-{}", RunId::generate());
        let config = || {
            RedisConfig::new(url.clone())
                .prefix(prefix.clone())
                .worker_concurrency(concurrency)
                .idle_poll(Duration::from_millis(50))
                .session_ttl(Duration::from_secs(120))
                .result_ttl(Duration::from_secs(120))
        };
        let client = RedisRuntime::new(configure(config()).worker(false));
        client.start().await.expect("the client starts");
        let mut started = Vec::new();
        for _ in 0..workers {
            let worker = RedisRuntime::new(configure(config()));
            serve(&worker);
            worker.start().await.expect("a worker starts");
            started.push(worker);
        }
        Scene {
            url,
            prefix,
            client,
            workers: started,
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        redis_cli(&self.url, args)
    }

    /// Every key matching `pattern`, sorted.
    fn keys(&self, pattern: &str) -> Vec<String> {
        scan_keys(&self.url, pattern)
    }

    /// `<prefix>:{<session>}:`, the start of every key of the session.
    fn tag(&self, session: &SessionId) -> String {
        format!("{}:{{{session}}}:", self.prefix)
    }

    fn session(&self, name: &str) -> SessionId {
        SessionId::new(format!("{name}-{}", RunId::generate())).expect("a valid session id")
    }

    /// Waits until no worker runs a job any more.
    async fn until_idle(&self, within: Duration) {
        let begin = Instant::now();
        while self.workers.iter().any(|w| w.runs_in_flight() > 0) {
            assert!(begin.elapsed() < within, "workers idle within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the sessions and every runtime, deletes every key of the prefix, and checks that
    /// nothing is left.
    async fn finish(self, sessions: &[&SessionId]) {
        for session in sessions {
            self.client
                .stop_session(session)
                .await
                .expect("stop_session");
        }
        for worker in &self.workers {
            worker.stop().await.expect("a worker stops");
        }
        self.client.stop().await.expect("the client stops");
        for key in self.keys(&format!("{}:*", self.prefix)) {
            self.cli(&["DEL", &key]);
        }
        assert_eq!(
            self.keys(&format!("{}:*", self.prefix)),
            Vec::<String>::new()
        );
    }
}

/// A fresh path in the temp directory for a flag file.
fn flag_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("am2z-steps-{tag}-{}", RunId::generate()))
}

/// Waits (polling) until `path` exists.
async fn until_file(path: &Path, within: Duration) {
    let begin = Instant::now();
    while !path.exists() {
        assert!(
            begin.elapsed() < within,
            "{} within {within:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn entered(flag: &Path) -> PathBuf {
    PathBuf::from(format!("{}.entered", flag.display()))
}

/// Whether `key` is `<tag>job:<run>.<16 hex digits>`: a step job of `run`.
/// Whether `job` is a later job of `run`: `<run>.<16 hex>`.
fn is_step_job_of(job: &str, run: &str) -> bool {
    job.strip_prefix(&format!("{run}."))
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------------------------
// 1. Per-step recovery.

/// `kill -9` of the worker running the slow middle step of a three-step chain: the run
/// completes on the other worker, which re-runs that step only. With one job per run the
/// first step would run again too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_chain_reruns_only_the_step_in_flight() {
    let knobs = Knobs::default().concurrency(2);
    let mut fleet = Fleet::start("steps-recovery", knobs.clone(), 2).await;
    let session = fleet.sessions(1, "recovery").remove(0);
    let handle = fleet
        .submit(&session, &SlowMiddle, Work::new(7, 1_500))
        .await
        .expect("submitted");
    let run = handle.run_id.to_string();
    fleet
        .until("the slow step started", Duration::from_secs(20), |f| {
            f.ledger().of_run(&run).any(|e| e.step == "slow_step")
        })
        .await;
    let victim = fleet
        .ledger()
        .of_run(&run)
        .find(|e| e.step == "slow_step")
        .expect("the slow step's execution")
        .pid;
    let slot = (0..fleet.len())
        .find(|&slot| fleet.worker(slot).pid() == victim)
        .expect("the slow step ran on a worker of the scene");
    let survivor = fleet.worker(1 - slot).pid();
    fleet.kill_9(slot);

    let outcome = fleet
        .client()
        .wait::<Work>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the run completes after the kill");
    assert_eq!(outcome.output.id, 7);
    assert_eq!(
        outcome.output.pid, survivor,
        "the survivor ran the last step"
    );

    let ledger = fleet.ledger();
    let by_step = executions_by_step(&ledger, &run);
    let pids = |step: &str| -> Vec<u32> {
        by_step
            .get(step)
            .map(|e| e.iter().map(|e| e.pid).collect())
            .unwrap_or_default()
    };
    eprintln!(
        "[steps recovery] victim {victim}, survivor {survivor}, executions {:?}",
        ledger.of_run(&run).collect::<Vec<_>>()
    );
    assert_eq!(
        pids("enter_step").len(),
        1,
        "the committed first step did not run again: {by_step:?}"
    );
    assert_eq!(
        pids("slow_step"),
        [victim, survivor],
        "the step in flight ran once per delivery: {by_step:?}"
    );
    assert_eq!(pids("exit_step"), [survivor], "{by_step:?}");
    assert_eq!(ledger.of_run(&run).count(), 4, "{by_step:?}");

    let report = fleet.check("steps recovery", Duration::from_secs(30)).await;
    eprintln!("{report}");
    report.assert_invariants();
    assert_eq!(report.completed, 1, "{report}");
    fleet.stop().await;
}

/// `kill -9` of a worker in the middle of a 16-item map on two workers of 4 slots: only
/// the items it was running run again (on the survivor), the map joins once, and its output
/// has every item in place. With one job per run every item would run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_map_reruns_only_the_items_in_flight() {
    const ITEMS: u64 = 16;
    let knobs = Knobs::default().concurrency(4);
    let mut fleet = Fleet::start("steps-mapkill", knobs.clone(), 2).await;
    let session = fleet.sessions(1, "mapkill").remove(0);
    let items: Vec<Work> = (0..ITEMS).map(|i| Work::new(i, 600)).collect();
    let handle = fleet
        .submit(&session, &TrackedMap, items)
        .await
        .expect("submitted");
    let run = handle.run_id.to_string();
    let (victim, survivor) = (fleet.worker(0).pid(), fleet.worker(1).pid());
    fleet
        .until("both workers run items", Duration::from_secs(20), |f| {
            let ledger = f.ledger();
            let pids: BTreeSet<u32> = ledger.of_run(&run).map(|e| e.pid).collect();
            pids.len() == 2
        })
        .await;
    // After the process is reaped: every execution of the victim's is before this.
    fleet.kill_9(0);
    let fault = ledger_now();

    let outcome = fleet
        .client()
        .wait::<Vec<Result<Work, Error>>>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the map completes after the kill");
    assert_eq!(outcome.output.len(), ITEMS as usize);
    for (i, item) in outcome.output.iter().enumerate() {
        let item = item.as_ref().expect("every item succeeded");
        assert_eq!(item.id, i as u64, "item {i} in its place");
    }
    let ledger = fleet.ledger();
    let by_item = executions_by_step(&ledger, &run);
    let mut rerun = Vec::new();
    for i in 0..ITEMS {
        let runs = by_item
            .get(&format!("tracked_item#{i}"))
            .cloned()
            .unwrap_or_default();
        let pids: Vec<u32> = runs.iter().map(|e| e.pid).collect();
        match runs.as_slice() {
            [_] => {}
            [first, again] => {
                let detail = format!(
                    "victim {victim}, survivor {survivor}, runs (pid, ms after the kill) {:?}",
                    runs.iter()
                        .map(|e| (e.pid, (e.at as i128 - fault as i128) / 1_000_000))
                        .collect::<Vec<_>>()
                );
                assert!(
                    first.pid == victim && first.at < fault,
                    "item {i} first ran on the victim before the kill: {detail}"
                );
                assert!(
                    again.pid == survivor && again.at >= fault,
                    "item {i} ran again on the survivor: {detail}"
                );
                rerun.push(i);
            }
            _ => panic!("item {i} ran once, or twice if the kill hit it: {pids:?}"),
        }
    }
    eprintln!("[steps map kill] victim {victim}, survivor {survivor}, items run again: {rerun:?}");
    assert!(!rerun.is_empty(), "the kill hit items in flight");
    assert!(
        rerun.len() <= knobs.concurrency,
        "only the victim's items in flight ran again: {rerun:?}"
    );
    let report = fleet.check("steps map kill", Duration::from_secs(30)).await;
    eprintln!("{report}");
    report.assert_invariants();
    assert_eq!(report.completed, 1, "{report}");
    assert_eq!(report.commits_seen, 1, "one terminal outcome: {report}");
    fleet.stop().await;
}

/// Now, as the ledger writes it (ns since the Unix epoch).
fn ledger_now() -> u128 {
    am2z_tests::fault::ledger::unix_nanos(std::time::SystemTime::now())
}

fn executions_by_step(ledger: &Ledger, run: &str) -> BTreeMap<String, Vec<Execution>> {
    let mut by_step: BTreeMap<String, Vec<Execution>> = BTreeMap::new();
    for e in ledger.of_run(run) {
        by_step.entry(e.step.clone()).or_default().push(e.clone());
    }
    by_step
}

// ---------------------------------------------------------------------------------------------
// 2. One run's steps on several workers.

/// A map of six 200 ms items on two workers that each run one job at a time: both workers
/// execute items of the same run, and the output is every item, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_of_one_run_spread_across_workers() {
    let knobs = Knobs::default().concurrency(1);
    let fleet = Fleet::start("steps-spread", knobs, 2).await;
    let session = fleet.sessions(1, "spread").remove(0);
    let items: Vec<Work> = (0..6).map(|i| Work::new(i, 200)).collect();
    let handle = fleet
        .submit(&session, &SpreadMap, items)
        .await
        .expect("submitted");
    let run = handle.run_id.to_string();
    let outcome = fleet
        .client()
        .wait::<Vec<Result<Work, Error>>>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the map completes");
    let workers: BTreeSet<u32> = (0..fleet.len()).map(|s| fleet.worker(s).pid()).collect();
    let mut output_pids = BTreeSet::new();
    assert_eq!(outcome.output.len(), 6);
    for (i, item) in outcome.output.iter().enumerate() {
        let item = item.as_ref().expect("every item succeeded");
        assert_eq!((item.id, item.ms), (i as u64, 200), "item {i} in its place");
        output_pids.insert(item.pid);
    }
    let ledger = fleet.ledger();
    let items: Vec<&Execution> = ledger
        .of_run(&run)
        .filter(|e| e.step == "map_item")
        .collect();
    let ledger_pids: BTreeSet<u32> = items.iter().map(|e| e.pid).collect();
    eprintln!(
        "[steps spread] workers {workers:?}, items by pid {:?}",
        items.iter().map(|e| e.pid).collect::<Vec<_>>()
    );
    assert_eq!(items.len(), 6, "each item ran once: {items:?}");
    assert_eq!(
        ledger_pids, workers,
        "both workers ran items of the same run"
    );
    assert_eq!(output_pids, workers, "the output shows both workers");
    let report = fleet.check("steps spread", Duration::from_secs(30)).await;
    report.assert_invariants();
    fleet.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Each step is a job in Redis.

/// While the second step of a chain runs, Redis holds that step's job (`<run>.<16 hex>` in the
/// session's `jobs` hash, with the workflow's name, leased and renewed), the run among the
/// session's live runs, and the run hash; once the run completes, none of them exists and
/// the outcome is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_is_a_job_in_redis() {
    const LEASE: Duration = Duration::from_millis(600);
    let scene = Scene::start("jobs", 2, 4, |c| c.lease(LEASE), |w| w.serve(GateChain)).await;
    let session = scene.session("jobs");
    let layout = Layout::new(&scene.url, &scene.prefix, session.as_str());
    let flag = flag_path("jobs");
    let handle = scene
        .client
        .submit(
            &session,
            &GateChain,
            Gate {
                flag: flag.display().to_string(),
                n: 4,
            },
        )
        .await
        .expect("submitted");
    let run = handle.run_id.to_string();
    until_file(&entered(&flag), Duration::from_secs(20)).await;

    let jobs = layout.jobs();
    assert_eq!(jobs.len(), 1, "one job: the second step's ({jobs:?})");
    let job = &jobs[0];
    assert!(is_step_job_of(job, &run), "{job} is `{run}.<16 hex>`");
    assert_eq!(
        layout.header(job).expect("a header").name,
        GateChain.name(),
        "a step job carries the workflow's name"
    );
    assert!(
        layout.body_meta(job).expect("a body")["step"].is_object(),
        "a step job's body holds its position"
    );
    let run_hash = layout.key(&format!("run:{run}"));
    assert_eq!(
        scene.cli(&["EXISTS", &run_hash]),
        "1",
        "the run hash exists"
    );
    assert!(
        !scene.cli(&["ZSCORE", &layout.key("runs"), &run]).is_empty(),
        "the run is live"
    );
    // The running step's job is leased, held by one worker, and its lease renewed.
    let held: usize = scene.workers.iter().map(RedisRuntime::runs_in_flight).sum();
    assert_eq!(held, 1, "one worker holds the running step's lease");
    assert_eq!(layout.state(job), "leased");
    let leases = layout.key("leases");
    let deadline = scene.cli(&["ZSCORE", &leases, job]);
    let begin = Instant::now();
    while scene.cli(&["ZSCORE", &leases, job]) == deadline {
        assert!(
            begin.elapsed() < LEASE * 2,
            "the running step's lease is renewed (every third of the lease)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    std::fs::write(&flag, b"open").expect("the flag");
    let outcome = scene
        .client
        .wait::<Gate>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the chain completes");
    assert_eq!(outcome.output.n, (4 + 1) * 10 + 3);
    assert_eq!(layout.jobs(), Vec::<String>::new(), "no job left");
    assert_eq!(
        scene.cli(&["EXISTS", &run_hash]),
        "0",
        "the run hash is gone"
    );
    assert!(
        scene.cli(&["ZSCORE", &layout.key("runs"), &run]).is_empty(),
        "the run is no longer live"
    );
    assert!(
        !scene
            .cli(&["HGET", &layout.key("results"), &run])
            .is_empty(),
        "its outcome is stored"
    );

    let _ = std::fs::remove_file(&flag);
    let _ = std::fs::remove_file(entered(&flag));
    scene.finish(&[&session]).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Fan-in exactly once.

/// 50 runs of a three-branch parallel on two workers: every output sums each branch once,
/// the ledger has one execution per branch per run, and each run has one terminal outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_joins_exactly_once_per_run() {
    const RUNS: u64 = 50;
    let fleet = Fleet::start("steps-fanin", Knobs::default(), 2).await;
    let sessions = fleet.sessions(2, "fanin");
    let mut handles: Vec<(u64, RunHandle)> = Vec::new();
    for id in 0..RUNS {
        let session = &sessions[id as usize % sessions.len()];
        let handle = fleet
            .submit(session, &Fan3, Work::new(id, 20))
            .await
            .expect("submitted");
        handles.push((id, handle));
    }
    for (id, handle) in &handles {
        let outcome = fleet
            .client()
            .wait::<Work>(handle, Some(Duration::from_secs(30)))
            .await
            .expect("the parallel completes");
        assert_eq!(
            outcome.output.id,
            3 * id + 111,
            "run {id}: each branch counted once"
        );
    }
    let report = fleet.check("steps fan-in", Duration::from_secs(30)).await;
    eprintln!("{report}");
    report.assert_invariants();
    assert_eq!(report.completed as u64, RUNS, "{report}");

    let ledger = fleet.ledger();
    // A `done` message is `<session> <run>`, with the outcome after the run when it is small.
    let mut commits: BTreeMap<String, usize> = BTreeMap::new();
    for (message, n) in fleet.commits().counts() {
        let run = message.split(' ').next().unwrap_or_default().to_owned();
        *commits.entry(run).or_default() += n;
    }
    let mut pids = BTreeSet::new();
    for (id, handle) in &handles {
        let run = handle.run_id.to_string();
        let steps: Vec<&str> = {
            let mut steps: Vec<&str> = ledger.of_run(&run).map(|e| e.step.as_str()).collect();
            steps.sort_unstable();
            steps
        };
        assert_eq!(
            steps,
            ["branch_x", "branch_y", "branch_z"],
            "run {id}: one execution per branch"
        );
        pids.extend(ledger.of_run(&run).map(|e| e.pid));
        assert_eq!(
            commits.get(&run).copied(),
            Some(1),
            "run {id}: one terminal outcome"
        );
    }
    eprintln!("[steps fan-in] branches ran on {pids:?}");
    fleet.stop().await;
}

/// `kill -9` of one of three workers while 30 three-branch parallels run: every run still
/// completes with each branch counted once in its output and one terminal outcome, and only
/// branches the victim was running ran again, on another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_joins_once_across_a_kill() {
    const RUNS: u64 = 30;
    let knobs = Knobs::default().concurrency(4);
    let mut fleet = Fleet::start("steps-fankill", knobs.clone(), 3).await;
    let sessions = fleet.sessions(3, "fankill");
    let mut handles: Vec<(u64, RunHandle)> = Vec::new();
    for id in 0..RUNS {
        let session = &sessions[id as usize % sessions.len()];
        let handle = fleet
            .submit(session, &Fan3, Work::new(id, 300))
            .await
            .expect("submitted");
        handles.push((id, handle));
    }
    let victim = fleet.worker(0).pid();
    fleet
        .until("the victim runs branches", Duration::from_secs(20), |f| {
            f.ledger().count_by(victim) >= 3
        })
        .await;
    // After the process is reaped: every execution of the victim's is before this.
    fleet.kill_9(0);
    let fault = ledger_now();
    for (id, handle) in &handles {
        let outcome = fleet
            .client()
            .wait::<Work>(handle, Some(Duration::from_secs(30)))
            .await
            .expect("the parallel completes");
        assert_eq!(
            outcome.output.id,
            3 * id + 111,
            "run {id}: each branch counted once"
        );
    }
    let report = fleet
        .check("steps fan-in kill", Duration::from_secs(30))
        .await;
    eprintln!("{report}");
    report.assert_invariants();
    assert_eq!(report.completed as u64, RUNS, "{report}");
    let mut commits: BTreeMap<String, usize> = BTreeMap::new();
    for (message, n) in fleet.commits().counts() {
        let run = message.split(' ').next().unwrap_or_default().to_owned();
        *commits.entry(run).or_default() += n;
    }
    let ledger = fleet.ledger();
    let mut again = 0;
    for (id, handle) in &handles {
        let run = handle.run_id.to_string();
        assert_eq!(commits.get(&run).copied(), Some(1), "run {id}: one outcome");
        for (step, runs) in executions_by_step(&ledger, &run) {
            let pids: Vec<u32> = runs.iter().map(|e| e.pid).collect();
            match runs.as_slice() {
                [_] => {}
                [first, second] => {
                    assert!(
                        first.pid == victim && first.at < fault,
                        "run {id} {step}: first on the victim before the kill ({pids:?})"
                    );
                    assert!(
                        second.pid != victim && second.at >= fault,
                        "run {id} {step}: again elsewhere after it ({pids:?})"
                    );
                    again += 1;
                }
                _ => panic!("run {id} {step}: ran {pids:?}"),
            }
        }
        let steps: BTreeSet<String> = ledger.of_run(&run).map(|e| e.step.clone()).collect();
        assert_eq!(steps.len(), 3, "run {id}: every branch ran ({steps:?})");
    }
    eprintln!("[steps fan-in kill] victim {victim}, branches run again: {again}");
    assert!(again >= 1, "the kill hit branches in flight");
    assert!(
        again <= knobs.concurrency,
        "only the victim's branches in flight ran again ({again})"
    );
    fleet.stop().await;
}

/// Submits `processor` (a workflow with a step that kills its process every time) on a
/// fleet of 2 workers with `max_deliveries = 3`, restarting dead workers as a supervisor
/// would: the run is dead-lettered with a typed failure after 3 deliveries of that step, no
/// step of it starts after that, it has one terminal outcome, and its session holds no job
/// or run hash. Returns the run's ledger.
async fn dead_letters_a_poisoned_step<P>(name: &str, processor: &P, ms: u64) -> Vec<Execution>
where
    P: Processor<Input = Work, Output = Work>,
{
    let knobs = Knobs::default()
        .concurrency(4)
        .lease(Duration::from_secs(1))
        .sweep(Duration::from_millis(200))
        .max_deliveries(3);
    let mut fleet = Fleet::start(name, knobs, 2).await;
    let session = fleet.sessions(1, name).remove(0);
    let tag = format!("{}:{{{session}}}:", fleet.prefix());
    let handle = fleet
        .submit(&session, processor, Work::new(1, ms))
        .await
        .expect("submitted");
    let waiting = {
        let (client, handle) = (fleet.client().clone(), handle.clone());
        tokio::spawn(async move {
            client
                .wait::<Work>(&handle, Some(Duration::from_secs(60)))
                .await
        })
    };
    let mut restarts = 0;
    while !waiting.is_finished() {
        restarts += fleet.restart_exited();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed_at = ledger_now();
    let failure = waiting
        .await
        .expect("the waiter")
        .expect_err("the poisoned run fails");
    assert!(
        matches!(&failure.error, Error::Unavailable { message, .. } if message.contains("dead-lettered")),
        "{}",
        failure.error
    );
    restarts += fleet.restart_exited();
    let server = fleet.server();
    let busy = |server: &am2z_tests::fault::RedisServer| {
        ["queue", "delayed", "leases"]
            .iter()
            .map(|set| server.cli(&["ZCOUNT", &format!("{tag}{set}"), "-inf", "(+inf"]))
            .any(|n| n != "0")
    };
    let begin = Instant::now();
    while busy(server) {
        assert!(
            begin.elapsed() < Duration::from_secs(20),
            "the session went idle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.keys(&format!("{tag}job:*")),
        Vec::<String>::new(),
        "no job of the dead run left"
    );
    assert_eq!(
        server.keys(&format!("{tag}run:*")),
        Vec::<String>::new(),
        "its run hash is gone"
    );
    let report = fleet.check(name, Duration::from_secs(30)).await;
    eprintln!("{report}");
    report.assert_invariants();
    assert_eq!(report.terminal_failures, 1, "{report}");
    assert_eq!(report.commits_seen, 1, "one terminal outcome: {report}");
    let run = handle.run_id.to_string();
    let executions: Vec<Execution> = fleet.ledger().of_run(&run).cloned().collect();
    eprintln!(
        "[{name}] {restarts} process deaths; executions: {:?}",
        executions
            .iter()
            .map(|e| (e.step.as_str(), e.pid))
            .collect::<Vec<_>>()
    );
    let late: Vec<&Execution> = executions.iter().filter(|e| e.at > failed_at).collect();
    assert!(
        late.is_empty(),
        "no step of the dead run started after it: {late:?}"
    );
    let aborts = executions
        .iter()
        .filter(|e| e.step == "abort_always")
        .count();
    assert_eq!(aborts, 3, "one execution of the poisoned step per delivery");
    fleet.stop().await;
    executions
}

/// A chain whose middle step kills its worker: dead-lettered after 3 deliveries of that
/// step; its first step ran once, its last never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_step_dead_letters_its_run() {
    let executions = dead_letters_a_poisoned_step("steps-poison-chain", &PoisonChain, 0).await;
    let count = |step: &str| executions.iter().filter(|e| e.step == step).count();
    assert_eq!(
        count("enter_step"),
        1,
        "the committed first step did not run again"
    );
    assert_eq!(count("exit_step"), 0, "the last step never ran");
}

/// A parallel whose middle branch kills its worker: dead-lettered after 3 deliveries of
/// that branch; its other branches (killed with it, or not) run no more after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_branch_dead_letters_its_run() {
    let executions = dead_letters_a_poisoned_step("steps-poison-fan", &PoisonFan, 300).await;
    for step in ["branch_x", "branch_z"] {
        let n = executions.iter().filter(|e| e.step == step).count();
        assert!(
            (1..=3).contains(&n),
            "{step} ran once per delivery at most ({n})"
        );
    }
}

/// A step four times longer than the lease keeps its lease (the renewer renews step jobs):
/// each step of the chain runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_longer_than_the_lease_is_renewed_not_redelivered() {
    let knobs = Knobs::default()
        .lease(Duration::from_millis(600))
        .sweep(Duration::from_millis(100));
    let fleet = Fleet::start("steps-renew", knobs, 2).await;
    let session = fleet.sessions(1, "renew").remove(0);
    let handle = fleet
        .submit(&session, &SlowMiddle, Work::new(3, 2_400))
        .await
        .expect("submitted");
    let outcome = fleet
        .client()
        .wait::<Work>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the run completes");
    assert_eq!(outcome.output.id, 3);
    let (ledger, run) = (fleet.ledger(), handle.run_id.to_string());
    let steps: Vec<&str> = ledger.of_run(&run).map(|e| e.step.as_str()).collect();
    assert_eq!(
        steps,
        ["enter_step", "slow_step", "exit_step"],
        "each step once"
    );
    let report = fleet.check("steps renew", Duration::from_secs(30)).await;
    report.assert_invariants();
    assert_eq!(report.refused_commits, 0, "{report}");
    fleet.stop().await;
}

/// A started run finishes before new runs start: on one worker of one slot, every item of a
/// map runs before the runs submitted after it, whose entry jobs were queued first. (The
/// queue's order: a worker that leases ahead runs what it leased ahead first, so this holds
/// for a worker that leases only what it runs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_run_finishes_before_new_runs_start() {
    let knobs = Knobs::default().concurrency(1).lease_ahead(0);
    let fleet = Fleet::start("steps-order", knobs, 1).await;
    let session = fleet.sessions(1, "order").remove(0);
    let map = fleet
        .submit(
            &session,
            &SpreadMap,
            (0..4).map(|i| Work::new(i, 100)).collect(),
        )
        .await
        .expect("submitted");
    let mut later = Vec::new();
    for id in 0..3 {
        later.push(
            fleet
                .submit(&session, &Fan3, Work::new(id, 10))
                .await
                .expect("submitted"),
        );
    }
    for handle in later.iter().chain([&map]) {
        fleet
            .client()
            .wait::<serde_json::Value>(handle, Some(Duration::from_secs(30)))
            .await
            .expect("the run completes");
    }
    let ledger = fleet.ledger();
    let map_run = map.run_id.to_string();
    let last_item = ledger
        .of_run(&map_run)
        .map(|e| e.at)
        .max()
        .expect("the map's items ran");
    let order: Vec<String> = ledger
        .executions()
        .iter()
        .map(|e| {
            if e.run == map_run {
                e.step.clone()
            } else {
                format!("{}:{}", &e.run[..6], e.step)
            }
        })
        .collect();
    for handle in &later {
        let first = ledger
            .of_run(&handle.run_id.to_string())
            .map(|e| e.at)
            .min()
            .expect("the later run ran");
        assert!(
            first > last_item,
            "the map's items ran before later runs' steps: {order:?}"
        );
    }
    fleet.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. A map's concurrency across workers.

/// A map with `concurrency = 2` over 8 items of 150 ms, on two workers of 4 slots: at most
/// 2 items of the run are in flight at once, and 2 are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_concurrency_holds_across_workers() {
    const ITEM_MS: u64 = 150;
    let knobs = Knobs::default().concurrency(4);
    let fleet = Fleet::start("steps-mapbound", knobs, 2).await;
    let session = fleet.sessions(1, "mapbound").remove(0);
    let items: Vec<Work> = (0..8).map(|i| Work::new(i, ITEM_MS)).collect();
    let handle = fleet
        .submit(&session, &PairedMap, items)
        .await
        .expect("submitted");
    let run = handle.run_id.to_string();
    let outcome = fleet
        .client()
        .wait::<Vec<Result<Work, Error>>>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the map completes");
    assert_eq!(outcome.output.len(), 8);
    for (i, item) in outcome.output.iter().enumerate() {
        let item = item.as_ref().expect("every item succeeded");
        assert_eq!(item.id, i as u64, "item {i} in its place");
    }
    let ledger = fleet.ledger();
    let starts: Vec<&Execution> = ledger
        .of_run(&run)
        .filter(|e| e.step == "map_item")
        .collect();
    assert_eq!(starts.len(), 8, "each item ran once: {starts:?}");
    // An item is in flight at least from its start to the end of its sleep, so these
    // intervals are inside the real ones: more than 2 of them overlapping is a breach.
    let item = u128::from(ITEM_MS) * 1_000_000;
    let most = starts
        .iter()
        .map(|a| {
            starts
                .iter()
                .filter(|b| b.at <= a.at && a.at < b.at + item)
                .count()
        })
        .max()
        .unwrap_or(0);
    let first = starts.iter().map(|e| e.at).min().unwrap_or(0);
    eprintln!(
        "[steps map bound] item starts (ms after the first, pid): {:?}",
        starts
            .iter()
            .map(|e| ((e.at - first) / 1_000_000, e.pid))
            .collect::<Vec<_>>()
    );
    assert!(most <= 2, "at most 2 items in flight at once, saw {most}");
    assert_eq!(most, 2, "the bound is used: 2 items ran at once");
    let report = fleet
        .check("steps map bound", Duration::from_secs(30))
        .await;
    report.assert_invariants();
    fleet.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Stop mid-fan-out.

/// The starts of `tick`, by item.
static TICKS: Mutex<Vec<(u64, Instant)>> = Mutex::new(Vec::new());

fn ticks_started(items: std::ops::Range<u64>) -> usize {
    TICKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(item, _)| items.contains(item))
        .count()
}

fn ticks_started_after(items: std::ops::Range<u64>, at: Instant) -> usize {
    TICKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(item, started)| items.contains(item) && *started > at)
        .count()
}

/// The ends of `tick`'s 50 ms, by item.
static TICK_ENDS: Mutex<Vec<(u64, Instant)>> = Mutex::new(Vec::new());

/// An item of [`Ticks`]: 50 ms, doubles it.
#[processor]
async fn tick(item: u64, ctx: &Ctx) -> Result<u64, Error> {
    TICKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((item, Instant::now()));
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(50)) => {
            TICK_ENDS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((item, Instant::now()));
            Ok(item * 2)
        }
        () = ctx.cancellation_token().cancelled() => Err(Error::Cancelled {
            reason: "tick cancelled".to_owned(),
        }),
    }
}

workflow! {
    /// `tick` over every item, 8 at once.
    Ticks(Vec<u64>) -> Vec<Result<u64, Error>> {
        map![tick, concurrency = 8]
    }
}

/// `stop_session` while a 200-item map runs: the run ends stopped, no key of the session is
/// left (even after the workers' last commits), no item starts after the stop, and a session
/// beside it completes normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_session_mid_fan_out_leaves_nothing() {
    const DOOMED: std::ops::Range<u64> = 0..200;
    const BESIDE: std::ops::Range<u64> = 1_000..1_030;
    let scene = Scene::start("stop", 2, 8, |c| c, |w| w.serve(Ticks)).await;
    let (doomed, beside) = (scene.session("doomed"), scene.session("beside"));
    let doomed_run = scene
        .client
        .submit(&doomed, &Ticks, DOOMED.collect())
        .await
        .expect("submitted");
    let begin = Instant::now();
    while ticks_started(DOOMED) < 20 {
        assert!(begin.elapsed() < Duration::from_secs(20), "the map started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let beside_run = scene
        .client
        .submit(&beside, &Ticks, BESIDE.collect())
        .await
        .expect("submitted");
    let stopping = Instant::now();
    let at_stop = ticks_started(DOOMED);
    scene.client.stop_session(&doomed).await.expect("stopped");
    let stopped = Instant::now();
    let started_before = ticks_started(DOOMED);
    eprintln!(
        "[steps stop] stop_session took {:?}; {at_stop} items had started when it was called",
        stopped - stopping
    );
    assert!(
        started_before < DOOMED.count(),
        "the stop came mid-fan-out ({started_before} items started)"
    );

    let failure = scene
        .client
        .wait::<Vec<Result<u64, Error>>>(&doomed_run, Some(Duration::from_secs(10)))
        .await
        .expect_err("the stopped run does not complete");
    assert!(
        matches!(failure.error, Error::SessionStopped { .. }),
        "{failure:?}"
    );
    let outcome = scene
        .client
        .wait::<Vec<Result<u64, Error>>>(&beside_run, Some(Duration::from_secs(30)))
        .await
        .expect("the session beside completes");
    let expected: Vec<u64> = BESIDE.map(|i| i * 2).collect();
    let got: Vec<u64> = outcome
        .output
        .iter()
        .map(|r| *r.as_ref().expect("every item succeeded"))
        .collect();
    assert_eq!(got, expected);

    scene.until_idle(Duration::from_secs(10)).await;
    let left = scene.keys(&format!("{}*", scene.tag(&doomed)));
    assert_eq!(left, Vec::<String>::new(), "no key of the stopped session");
    let late = ticks_started_after(DOOMED, stopped);
    eprintln!(
        "[steps stop] {started_before} of {} items started before the stop, {late} after",
        DOOMED.count()
    );
    assert_eq!(late, 0, "no item of the stopped run started after the stop");
    let ran_on: Vec<u64> = TICK_ENDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(item, ended)| DOOMED.contains(item) && *ended > stopped)
        .map(|(item, _)| *item)
        .collect();
    assert!(
        ran_on.is_empty(),
        "the stop dropped the running items: {ran_on:?} ran to their end after it"
    );
    assert!(
        !scene.keys(&format!("{}*", scene.tag(&beside))).is_empty(),
        "the session beside keeps its keys"
    );
    scene.finish(&[&beside]).await;
}

/// [`Held`]'s middle step: entered, let go, ran to its end.
static HELD: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

/// The first step of [`Held`].
#[processor]
async fn held_first(x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

/// The middle step of [`Held`]: waits (up to 10 s) to be let go, then counts its end.
#[processor]
async fn held_middle(x: u64) -> Result<u64, Error> {
    HELD[0].fetch_add(1, Ordering::SeqCst);
    let begin = Instant::now();
    while HELD[1].load(Ordering::SeqCst) == 0 && begin.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    HELD[2].fetch_add(1, Ordering::SeqCst);
    Ok(x)
}

workflow! {
    /// A step, one held until the test lets it go, a step.
    Held(u64) -> u64 {
        chain![held_first, held_middle, plus_two]
    }
}

/// `stop_session` while the second step of a chain runs: the step, which ignores its token, is
/// dropped once the cancel grace (zero here) ran out (let go after the stop, it does not run
/// to its end), and no key of the session is left. (A step that watches its token gets the
/// grace to return: `tests/lifecycle_redis.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_session_drops_a_running_step() {
    let scene = Scene::start(
        "stopstep",
        2,
        4,
        |c| c.cancel_grace(Duration::ZERO),
        |w| w.serve(Held),
    )
    .await;
    let session = scene.session("stopstep");
    let handle = scene
        .client
        .submit(&session, &Held, 1)
        .await
        .expect("submitted");
    let begin = Instant::now();
    while HELD[0].load(Ordering::SeqCst) == 0 {
        assert!(
            begin.elapsed() < Duration::from_secs(20),
            "the middle step started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    scene.client.stop_session(&session).await.expect("stopped");
    HELD[1].store(1, Ordering::SeqCst);
    let failure = scene
        .client
        .wait::<u64>(&handle, Some(Duration::from_secs(10)))
        .await
        .expect_err("the stopped run does not complete");
    assert!(
        matches!(failure.error, Error::SessionStopped { .. }),
        "{failure:?}"
    );
    // The step polls every 5 ms: had it survived the stop, it would end at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        HELD[2].load(Ordering::SeqCst),
        0,
        "the stop dropped the running step (it did not run to its end)"
    );
    scene.until_idle(Duration::from_secs(10)).await;
    assert_eq!(
        scene.keys(&format!("{}*", scene.tag(&session))),
        Vec::<String>::new(),
        "no key of the stopped session"
    );
    scene.finish(&[]).await;
}

// ---------------------------------------------------------------------------------------------
// 7. A workflow's timeout across steps.

static NAPS: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

async fn nap(which: usize, ms: u64) -> Result<u64, Error> {
    NAPS[which].fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

/// The first step of [`Deadline`].
#[processor]
async fn nap_one(ms: u64) -> Result<u64, Error> {
    nap(0, ms).await
}

/// The second step of [`Deadline`].
#[processor]
async fn nap_two(ms: u64) -> Result<u64, Error> {
    nap(1, ms).await
}

/// The third step of [`Deadline`].
#[processor]
async fn nap_three(ms: u64) -> Result<u64, Error> {
    nap(2, ms).await
}

workflow! {
    /// Three naps under a total timeout of 1 s.
    Deadline(u64) -> u64 {
        timeout = "1s";
        chain![nap_one, nap_two, nap_three]
    }
}

/// A chain of three 600 ms steps under a 1 s workflow timeout fails with `Timeout` naming
/// the workflow, at about 1 s, and its third step never starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_timeout_spans_steps() {
    const LIMIT: Duration = Duration::from_secs(1);
    let scene = Scene::start("deadline", 2, 4, |c| c, |w| w.serve(Deadline)).await;
    let session = scene.session("deadline");
    let begin = Instant::now();
    let handle = scene
        .client
        .submit(&session, &Deadline, 600)
        .await
        .expect("submitted");
    let failure = scene
        .client
        .wait::<u64>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect_err("the workflow times out");
    let took = begin.elapsed();
    eprintln!("[steps deadline] failed after {took:?}: {}", failure.error);
    match &failure.error {
        Error::Timeout { processor, limit } => {
            assert_eq!(processor, Deadline.name(), "the workflow is named");
            assert_eq!(*limit, LIMIT);
        }
        other => panic!("expected Error::Timeout naming the workflow, got {other:?}"),
    }
    assert!(took < LIMIT + MARGIN, "failed at about the limit: {took:?}");
    assert!(
        took >= LIMIT - Duration::from_millis(100),
        "not before the limit: {took:?}"
    );
    let naps: Vec<usize> = NAPS.iter().map(|n| n.load(Ordering::SeqCst)).collect();
    assert_eq!(naps, [1, 1, 0], "the third step never started");
    scene.until_idle(Duration::from_secs(10)).await;
    scene.finish(&[&session]).await;
}

/// The items of [`MapDeadline`] that started.
static DEADLINE_ITEMS: AtomicUsize = AtomicUsize::new(0);

/// An item of [`MapDeadline`]: 400 ms.
#[processor]
async fn deadline_item(x: u64) -> Result<u64, Error> {
    DEADLINE_ITEMS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    Ok(x)
}

/// 400 ms, the first step of [`Inner`].
#[processor]
async fn inner_nap_a(x: u64) -> Result<u64, Error> {
    tokio::time::sleep(Duration::from_millis(400)).await;
    Ok(x + 1)
}

/// 400 ms, the second step of [`Inner`].
#[processor]
async fn inner_nap_b(x: u64) -> Result<u64, Error> {
    tokio::time::sleep(Duration::from_millis(400)).await;
    Ok(x + 1)
}

workflow! {
    /// Eight 400 ms items two at a time (1.6 s) under a 1 s timeout.
    MapDeadline(Vec<u64>) -> Vec<Result<u64, Error>> {
        timeout = "1s";
        map![deadline_item, concurrency = 2]
    }

    /// Two 400 ms steps under a 500 ms timeout.
    Inner(u64) -> u64 {
        timeout = "500ms";
        chain![inner_nap_a, inner_nap_b]
    }

    /// A step, the timed-out inner workflow, a step.
    Outer(u64) -> u64 {
        chain![times_three, Inner, times_five]
    }
}

/// A workflow timeout over a map: the deadline passes to the items, the run fails with
/// `Timeout` naming the workflow at about the limit, and the items due after it never start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_timeout_spans_a_fan_out() {
    const LIMIT: Duration = Duration::from_secs(1);
    let scene = Scene::start("mapdeadline", 2, 4, |c| c, |w| w.serve(MapDeadline)).await;
    let session = scene.session("mapdeadline");
    let begin = Instant::now();
    let handle = scene
        .client
        .submit(&session, &MapDeadline, (0..8).collect())
        .await
        .expect("submitted");
    let failure = scene
        .client
        .wait::<Vec<Result<u64, Error>>>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect_err("the workflow times out");
    let took = begin.elapsed();
    scene.until_idle(Duration::from_secs(10)).await;
    let started = DEADLINE_ITEMS.load(Ordering::SeqCst);
    eprintln!(
        "[steps map deadline] failed after {took:?} with {started} of 8 items started: {}",
        failure.error
    );
    match &failure.error {
        Error::Timeout { processor, limit } => {
            assert_eq!(processor, MapDeadline.name(), "the workflow is named");
            assert_eq!(*limit, LIMIT);
        }
        other => panic!("expected Error::Timeout naming the workflow, got {other:?}"),
    }
    assert!(took < LIMIT + MARGIN, "failed at about the limit: {took:?}");
    assert!(
        took >= LIMIT - Duration::from_millis(100),
        "not before the limit: {took:?}"
    );
    assert!(
        started <= 6,
        "no item due after the deadline started ({started})"
    );
    scene.finish(&[&session]).await;
}

/// A workflow that times out inside another one's chain fails the run as it does on the
/// local runtime (the outer chain names the inner workflow's step), at about its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_workflow_timeout_fails_as_on_the_local_runtime() {
    let local = am2z::LocalRuntime::new();
    local.start().await.expect("the local runtime starts");
    let expected = Outer::run(&local, 2)
        .await
        .expect_err("the inner workflow times out locally")
        .error;
    local.stop().await.expect("the local runtime stops");

    let scene = Scene::start("nested", 2, 4, |c| c, |w| w.serve(Outer)).await;
    let session = scene.session("nested");
    let begin = Instant::now();
    let handle = scene
        .client
        .submit(&session, &Outer, 2)
        .await
        .expect("submitted");
    let failure = scene
        .client
        .wait::<u64>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect_err("the inner workflow times out");
    let took = begin.elapsed();
    eprintln!(
        "[steps nested deadline] failed after {took:?}: {}",
        failure.error
    );
    assert_eq!(failure.error, expected, "the local runtime's error");
    assert!(
        took < Duration::from_millis(500) + MARGIN,
        "failed at about the inner limit: {took:?}"
    );
    scene.until_idle(Duration::from_secs(10)).await;
    scene.finish(&[&session]).await;
}

// ---------------------------------------------------------------------------------------------
// A fail-fast parallel.

/// How long the long branches of [`FailFast`] sleep.
const LONG_NAP: Duration = Duration::from_secs(2);

/// The long branches of [`FailFast`]: started, finished their nap, saw their token fire.
static LONG: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

async fn long_nap(ctx: &Ctx) -> Result<u64, Error> {
    LONG[0].fetch_add(1, Ordering::SeqCst);
    tokio::select! {
        () = tokio::time::sleep(LONG_NAP) => {
            LONG[1].fetch_add(1, Ordering::SeqCst);
            Ok(5)
        }
        () = ctx.cancellation_token().cancelled() => {
            LONG[2].fetch_add(1, Ordering::SeqCst);
            Err(Error::Cancelled { reason: "long nap cancelled".to_owned() })
        }
    }
}

/// A long branch of [`FailFast`].
#[processor]
async fn long_nap_a(_x: u64, ctx: &Ctx) -> Result<u64, Error> {
    long_nap(ctx).await
}

/// Another long branch of [`FailFast`].
#[processor]
async fn long_nap_b(_x: u64, ctx: &Ctx) -> Result<u64, Error> {
    long_nap(ctx).await
}

/// The branch of [`FailFast`] that fails after 50 ms.
#[processor]
async fn quick_fail(x: u64) -> Result<u64, Error> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    Err(Error::validation("x", format!("{x} refused")))
}

workflow! {
    /// Two long branches around one that fails at once.
    FailFast(u64) -> (u64, u64, u64) {
        parallel![long_nap_a, quick_fail, long_nap_b]
    }
}

/// An all-or-nothing parallel whose middle branch fails: the run fails at once with the
/// local runtime's error, the long branches are dropped (the workers go idle long before
/// they would have finished), and no job or run hash of the run is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_parallel_fails_once_and_drops_its_siblings() {
    let local = am2z::LocalRuntime::new();
    local.start().await.expect("the local runtime starts");
    let expected = FailFast::run(&local, 9)
        .await
        .expect_err("the parallel fails locally")
        .error;
    local.stop().await.expect("the local runtime stops");
    let local_long = LONG
        .iter()
        .map(|n| n.load(Ordering::SeqCst))
        .collect::<Vec<_>>();
    eprintln!(
        "[steps fail fast] locally: long branches (started, finished, saw cancel) {local_long:?}"
    );
    for counter in &LONG {
        counter.store(0, Ordering::SeqCst);
    }

    let scene = Scene::start("failfast", 2, 4, |c| c, |w| w.serve(FailFast)).await;
    let session = scene.session("failfast");
    let tag = scene.tag(&session);
    let begin = Instant::now();
    let handle = scene
        .client
        .submit(&session, &FailFast, 9)
        .await
        .expect("submitted");
    let failure = scene
        .client
        .wait::<(u64, u64, u64)>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect_err("the parallel fails");
    let failed_after = begin.elapsed();
    scene.until_idle(Duration::from_secs(10)).await;
    let idle_after = begin.elapsed();
    let long = LONG
        .iter()
        .map(|n| n.load(Ordering::SeqCst))
        .collect::<Vec<_>>();
    eprintln!(
        "[steps fail fast] failed after {failed_after:?}, idle after {idle_after:?}, long branches (started, finished, saw cancel) {long:?}: {}",
        failure.error
    );
    assert_eq!(failure.error, expected, "the local runtime's error");
    assert!(
        failed_after < LONG_NAP / 2,
        "failed at once: {failed_after:?}"
    );
    assert!(
        idle_after < LONG_NAP * 3 / 4,
        "the long branches were dropped, not run to their end: {idle_after:?}"
    );
    // Nothing signals that a dropped branch will never finish: watch past its end.
    tokio::time::sleep_until((begin + LONG_NAP + Duration::from_millis(300)).into()).await;
    assert_eq!(
        LONG[1].load(Ordering::SeqCst),
        0,
        "no long branch ran to its end"
    );
    let run = handle.run_id.to_string();
    assert_eq!(
        scene.keys(&format!("{tag}job:{run}*")),
        Vec::<String>::new(),
        "no job of the run left"
    );
    assert_eq!(scene.cli(&["EXISTS", &format!("{tag}run:{run}")]), "0");
    let ends: Vec<am2z::EventKind> = scene
        .client
        .replay(&session, None, 10_000)
        .await
        .expect("the session's events")
        .into_iter()
        .map(|(_, event)| event)
        .filter(|e| e.run_id == Some(handle.run_id))
        .map(|e| e.kind)
        .filter(|k| {
            matches!(
                k,
                am2z::EventKind::RunFailed { .. } | am2z::EventKind::RunCompleted { .. }
            )
        })
        .collect();
    assert_eq!(
        ends,
        [am2z::EventKind::RunFailed { error: expected }],
        "one RunFailed event, with the run's error"
    );
    scene.finish(&[&session]).await;
}

// ---------------------------------------------------------------------------------------------
// The outcome's metadata and the session's events, as on the local runtime.

/// Fails its first attempt, then adds one.
#[processor(retries = 2, backoff = fixed("10ms"))]
async fn flaky_once(x: u64, ctx: &Ctx) -> Result<u64, Error> {
    if ctx.attempt() == 1 {
        return Err(Error::execution("flaky_once", "the first attempt fails"));
    }
    Ok(x + 1)
}

/// × 3.
#[processor]
async fn times_three(x: u64) -> Result<u64, Error> {
    Ok(x * 3)
}

/// × 5.
#[processor]
async fn times_five(x: u64) -> Result<u64, Error> {
    Ok(x * 5)
}

/// + 2.
#[processor]
async fn plus_two(x: u64) -> Result<u64, Error> {
    Ok(x + 2)
}

fn add_pair(a: u64, b: u64) -> u64 {
    a + b
}

workflow! {
    /// A retried step, a merged parallel, a last step: x → ((x + 1) × 8) + 2.
    Mixed(u64) -> u64 {
        chain![flaky_once, parallel![times_three, times_five] => add_pair, plus_two]
    }
}

/// A run of steps with a retry and a fan-out reports what the local runtime reports (output,
/// attempts summed over its steps, version), and the session's stream holds each step's
/// events once, the run's start once and before them, and its completion once and after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_runs_report_as_the_local_runtime_does() {
    use am2z::EventKind;
    let local = am2z::LocalRuntime::new();
    local.start().await.expect("the local runtime starts");
    let expected = Mixed::run(&local, 4).await.expect("the local run");
    local.stop().await.expect("the local runtime stops");

    let scene = Scene::start("report", 2, 4, |c| c, |w| w.serve(Mixed)).await;
    let session = scene.session("report");
    let handle = scene
        .client
        .submit(&session, &Mixed, 4)
        .await
        .expect("submitted");
    let result = scene
        .client
        .wait::<u64>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the run completes");
    assert_eq!(result.output, (4 + 1) * 8 + 2);
    assert_eq!(result.output, expected.output);
    assert_eq!(
        (result.attempts, result.meta.version),
        (expected.attempts, expected.meta.version),
        "attempts and version as on the local runtime"
    );
    assert_eq!(result.meta.run_id, handle.run_id);

    let events: Vec<am2z::Event> = scene
        .client
        .replay(&session, None, 10_000)
        .await
        .expect("the session's events")
        .into_iter()
        .map(|(_, event)| event)
        .filter(|event| event.run_id == Some(handle.run_id))
        .collect();
    let count = |step: &str, kind: fn(&EventKind) -> bool| {
        events
            .iter()
            .filter(|e| e.processor.as_deref() == Some(step) && kind(&e.kind))
            .count()
    };
    let started = |k: &EventKind| matches!(k, EventKind::StepStarted { .. });
    let completed = |k: &EventKind| matches!(k, EventKind::StepCompleted { .. });
    let summary: Vec<String> = events
        .iter()
        .map(|e| format!("{}:{:?}", e.processor.as_deref().unwrap_or("-"), e.kind))
        .collect();
    assert_eq!(count("flaky_once", started), 2, "{summary:#?}");
    for step in ["flaky_once", "times_three", "times_five", "plus_two"] {
        assert_eq!(
            count(step, completed),
            1,
            "{step} completed once: {summary:#?}"
        );
    }
    for step in ["times_three", "times_five", "plus_two"] {
        assert_eq!(count(step, started), 1, "{step} started once: {summary:#?}");
    }
    let run_completed: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, EventKind::RunCompleted { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(run_completed.len(), 1, "one RunCompleted: {summary:#?}");
    // Started once, by its entry job, before any step: not again when that job resumes after
    // `flaky_once`'s backoff, nor by the later step jobs.
    assert!(
        matches!(events.first().map(|e| &e.kind), Some(EventKind::RunStarted)),
        "the run's first event is its start: {summary:#?}"
    );
    assert_eq!(
        events[0].processor.as_deref(),
        Some(handle.processor.as_str()),
        "named by the workflow"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::RunStarted))
            .count(),
        1,
        "one RunStarted: {summary:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::RunFailed { .. })),
        "{summary:#?}"
    );
    let step_events = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::StepStarted { .. } | EventKind::StepCompleted { .. }
            )
        })
        .count();
    assert_eq!(step_events, 2 + 1 + 2 + 2 + 2, "{summary:#?}");
    assert!(
        events[run_completed[0] + 1..].iter().all(|e| !matches!(
            e.kind,
            EventKind::StepStarted { .. } | EventKind::StepCompleted { .. }
        )),
        "the run's completion comes after its steps' events: {summary:#?}"
    );
    scene.finish(&[&session]).await;
}

// ---------------------------------------------------------------------------------------------
// A processor's concurrency holds across workers.

/// Items of [`SoloMap`] running now, and the most at once.
static SOLO: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// One at a time across every worker: 100 ms.
#[processor(concurrency = 1)]
async fn solo_item(x: u64) -> Result<u64, Error> {
    let now = SOLO[0].fetch_add(1, Ordering::SeqCst) + 1;
    SOLO[1].fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    SOLO[0].fetch_sub(1, Ordering::SeqCst);
    Ok(x + 1)
}

workflow! {
    /// `solo_item` over the items, the map allowing 8 at once.
    SoloMap(Vec<u64>) -> Vec<Result<u64, Error>> {
        map![solo_item, concurrency = 8]
    }
}

/// A map whose item processor has `concurrency = 1`, its items spread over two workers as
/// step jobs: one item runs at a time across both (the cluster gate holds for step jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_concurrency_holds_for_step_jobs_across_workers() {
    let scene = Scene::start("solo", 2, 4, |c| c, |w| w.serve(SoloMap)).await;
    let session = scene.session("solo");
    let handle = scene
        .client
        .submit(&session, &SoloMap, (0..6).collect())
        .await
        .expect("submitted");
    let outcome = scene
        .client
        .wait::<Vec<Result<u64, Error>>>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the map completes");
    let got: Vec<u64> = outcome
        .output
        .iter()
        .map(|r| *r.as_ref().expect("every item succeeded"))
        .collect();
    assert_eq!(got, [1, 2, 3, 4, 5, 6]);
    assert_eq!(SOLO[1].load(Ordering::SeqCst), 1, "one item at a time");
    scene.finish(&[&session]).await;
}

// ---------------------------------------------------------------------------------------------
// Session quotas count jobs.

/// The items of [`QuotaMap`] that started.
static QUOTA_ITEMS: AtomicUsize = AtomicUsize::new(0);

/// An item of [`QuotaMap`]: 200 ms.
#[processor]
async fn quota_item(x: u64) -> Result<u64, Error> {
    QUOTA_ITEMS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(x)
}

workflow! {
    /// `quota_item` over the items, up to 16 at once.
    QuotaMap(Vec<u64>) -> Vec<Result<u64, Error>> {
        map![quota_item, concurrency = 16]
    }
}

/// `max_queued_per_session` counts queued jobs, a run's waiting steps included (as the design's
/// "queued steps" and a BullMQ queue do): a map whose item jobs wait in the queue takes the
/// session to its quota, so the next submission is refused with a typed error; the map itself
/// is never cut short, and once its items drained the session accepts runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_quota_counts_queued_step_jobs() {
    let scene = Scene::start(
        "quota",
        1,
        1,
        // A worker that leases only what it runs: jobs leased ahead are not queued, so
        // they would leave the quota (tested here) with nothing to count.
        |c| c.max_queued_per_session(4).lease_ahead(0),
        |w| w.serve(QuotaMap),
    )
    .await;
    let session = scene.session("quota");
    let tag = scene.tag(&session);
    let map = scene
        .client
        .submit(&session, &QuotaMap, (0..12).collect())
        .await
        .expect("submitted");
    let begin = Instant::now();
    while QUOTA_ITEMS.load(Ordering::SeqCst) == 0 {
        assert!(begin.elapsed() < Duration::from_secs(20), "the map started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued: usize = scene
        .cli(&["ZCARD", &format!("{tag}queue")])
        .parse()
        .expect("a count");
    assert!(
        queued >= 4,
        "the map's item jobs wait in the queue ({queued})"
    );
    let second = scene.client.submit(&session, &QuotaMap, vec![100]).await;
    assert!(
        matches!(&second, Err(Error::Resource { message, .. }) if message.contains("4 jobs are already queued")),
        "{second:?}"
    );
    let done = scene
        .client
        .wait::<Vec<Result<u64, Error>>>(&map, Some(Duration::from_secs(30)))
        .await
        .expect("the map completes");
    assert_eq!(done.output.len(), 12, "the fan-out was not cut short");
    let third = scene
        .client
        .submit(&session, &QuotaMap, vec![100])
        .await
        .expect("accepted once the queue drained");
    scene
        .client
        .wait::<Vec<Result<u64, Error>>>(&third, Some(Duration::from_secs(30)))
        .await
        .expect("the run completes");
    scene.finish(&[&session]).await;
}

/// When each item of [`GatedMap`] ran: (run, start, end).
static GATED: Mutex<Vec<(RunId, Instant, Instant)>> = Mutex::new(Vec::new());

/// An item of [`GatedMap`]: 150 ms.
#[processor]
async fn gated_item(x: u64, ctx: &Ctx) -> Result<u64, Error> {
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(150)).await;
    GATED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((ctx.run_id(), start, Instant::now()));
    Ok(x)
}

workflow! {
    /// `gated_item` over the items, up to 16 at once.
    GatedMap(Vec<u64>) -> Vec<Result<u64, Error>> {
        map![gated_item, concurrency = 16]
    }
}

/// `session_concurrency` bounds the session's jobs executing at once, across workers: with 1
/// and two runs of a 3-item map on two workers of 4 slots, no two items of the session ever
/// ran at once, and both runs complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_concurrency_bounds_the_sessions_steps_in_flight() {
    let scene = Scene::start(
        "sessionquota",
        2,
        4,
        |c| c.session_concurrency(1),
        |w| w.serve(GatedMap),
    )
    .await;
    let session = scene.session("sessionquota");
    let mut handles = Vec::new();
    for _ in 0..2 {
        handles.push(
            scene
                .client
                .submit(&session, &GatedMap, (0..3).collect())
                .await
                .expect("submitted"),
        );
    }
    for handle in &handles {
        scene
            .client
            .wait::<Vec<Result<u64, Error>>>(handle, Some(Duration::from_secs(30)))
            .await
            .expect("the run completes");
    }
    let mut items = GATED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(items.len(), 6, "every item ran once");
    items.sort_by_key(|(_, start, _)| *start);
    for pair in items.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "two items of the session ran at once: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    scene.finish(&[&session]).await;
}

// ---------------------------------------------------------------------------------------------
// 8. Step jobs off.

/// With `AM2Z_STEP_JOBS=0` in the workers' environment the chain runs as one whole-run job:
/// held at its second step, Redis has the run's entry job `<run>` and no step job nor run
/// hash, and the chain completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_jobs_off_in_the_environment_keeps_the_whole_run_job() {
    let knobs = Knobs::default();
    let mut fleet = Fleet::start("steps-off", knobs.clone(), 0).await;
    for _ in 0..2 {
        fleet.spawn_with(&knobs, &[("AM2Z_STEP_JOBS", "0".to_owned())]);
    }
    let session = fleet.sessions(1, "off").remove(0);
    let layout = Layout::new(&fleet.server().url(), fleet.prefix(), session.as_str());
    let flag = flag_path("off");
    let handle = fleet
        .submit(
            &session,
            &GateChain,
            Gate {
                flag: flag.display().to_string(),
                n: 2,
            },
        )
        .await
        .expect("submitted");
    let run = handle.run_id.to_string();
    until_file(&entered(&flag), Duration::from_secs(20)).await;

    assert_eq!(
        layout.jobs(),
        vec![run.clone()],
        "the whole-run job only, no step job"
    );
    assert_eq!(
        fleet
            .server()
            .cli(&["EXISTS", &layout.key(&format!("run:{run}"))]),
        "0",
        "no run hash"
    );

    std::fs::write(&flag, b"open").expect("the flag");
    let outcome = fleet
        .client()
        .wait::<Gate>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the chain completes");
    assert_eq!(outcome.output.n, (2 + 1) * 10 + 3);
    let report = fleet.check("steps off", Duration::from_secs(30)).await;
    report.assert_invariants();
    let _ = std::fs::remove_file(&flag);
    let _ = std::fs::remove_file(entered(&flag));
    fleet.stop().await;
}

/// With `RedisConfig::step_jobs(false)` the chain runs as one whole-run job: held at its
/// second step, Redis has the run's entry job `<run>` and no step job nor run hash, and the
/// chain completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_jobs_off_in_the_config_keeps_the_whole_run_job() {
    let scene = Scene::start("off", 2, 4, |c| c.step_jobs(false), |w| w.serve(GateChain)).await;
    let session = scene.session("off");
    let layout = Layout::new(&scene.url, &scene.prefix, session.as_str());
    let flag = flag_path("off-config");
    let handle = scene
        .client
        .submit(
            &session,
            &GateChain,
            Gate {
                flag: flag.display().to_string(),
                n: 5,
            },
        )
        .await
        .expect("submitted");
    let run = handle.run_id.to_string();
    until_file(&entered(&flag), Duration::from_secs(20)).await;
    assert_eq!(
        layout.jobs(),
        vec![run.clone()],
        "the whole-run job only, no step job"
    );
    assert_eq!(
        scene.cli(&["EXISTS", &layout.key(&format!("run:{run}"))]),
        "0",
        "no run hash"
    );
    std::fs::write(&flag, b"open").expect("the flag");
    let outcome = scene
        .client
        .wait::<Gate>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the chain completes");
    assert_eq!(outcome.output.n, (5 + 1) * 10 + 3);
    let _ = std::fs::remove_file(&flag);
    let _ = std::fs::remove_file(entered(&flag));
    scene.finish(&[&session]).await;
}
