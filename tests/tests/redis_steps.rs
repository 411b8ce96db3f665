//! Step jobs on Redis (architecture.md, "Phase 2, built: step jobs in Redis"): a served
//! workflow runs one job per step, so recovery re-runs only the step in flight, one run's steps
//! spread over workers, a fan-in joins once, a map's `concurrency` holds across workers, a
//! stopped session leaves nothing behind, a workflow's timeout spans its steps, and
//! `AM2Z_STEP_JOBS=0` keeps the whole-run job.
//!
//! Where process ids matter (a kill, the spread over workers, bounds measured from the ledger)
//! the workers are real `fault_worker` processes on a Redis server of the test's own (the
//! fault harness, `am2z_tests::fault`); elsewhere they are `RedisRuntime`s in the test process
//! against the shared Redis (127.0.0.1:6379 or `AM2Z_TEST_REDIS_URL`), each test under its own
//! prefix, whose keys it deletes at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use am2z::{
    Ctx, Error, Processor, RedisConfig, RedisRuntime, RunHandle, RunId, Runtime, SessionId,
    processor, workflow,
};
use am2z_tests::fault::work::{Fan3, Gate, GateChain, PairedMap, SlowMiddle, SpreadMap, Work};
use am2z_tests::fault::{Execution, Fleet, Knobs, Ledger};

/// Slack on every time bound: the machine is shared and the workers are debug builds.
const MARGIN: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// In-process scenes: several `RedisRuntime` workers and a client in this process.

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `redis-cli` against the server at `url` (host and port only).
fn redis_cli(url: &str, args: &[&str]) -> String {
    let address = url.trim_start_matches("redis://");
    let address = address.rsplit('@').next().unwrap_or(address);
    let address = address.split('/').next().unwrap_or(address);
    let (host, port) = address.split_once(':').unwrap_or((address, "6379"));
    let output = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(output.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
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

    /// Every key matching `pattern`, sorted (a test may scan; the runtime never does).
    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["--scan", "--pattern", pattern])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
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
fn is_step_job_of(key: &str, tag: &str, run: &str) -> bool {
    key.strip_prefix(&format!("{tag}job:{run}."))
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

/// While the second step of a chain runs, Redis holds that step's job (`job:<run>.<h>`, with
/// its `run` field) and the run hash, both in the session's index; once the run completes,
/// neither exists and the index holds no job or run key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_is_a_job_in_redis() {
    let scene = Scene::start("jobs", 2, 4, |c| c, |w| w.serve(GateChain)).await;
    let session = scene.session("jobs");
    let tag = scene.tag(&session);
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

    let jobs = scene.keys(&format!("{tag}job:*"));
    assert_eq!(jobs.len(), 1, "one job: the second step's ({jobs:?})");
    let job = &jobs[0];
    assert!(
        is_step_job_of(job, &tag, &run),
        "{job} is `{tag}job:{run}.<16 hex>`"
    );
    assert_eq!(
        scene.cli(&["HGET", job, "run"]),
        run,
        "the job names its run"
    );
    assert_eq!(
        scene.cli(&["HGET", job, "name"]),
        GateChain.name(),
        "a step job carries the workflow's name"
    );
    let run_hash = format!("{tag}run:{run}");
    assert_eq!(
        scene.cli(&["EXISTS", &run_hash]),
        "1",
        "the run hash exists"
    );
    let index = scene.cli(&["SMEMBERS", &format!("{tag}index")]);
    let index: BTreeSet<&str> = index.lines().collect();
    assert!(index.contains(job.as_str()), "{job} in the index {index:?}");
    assert!(
        index.contains(run_hash.as_str()),
        "{run_hash} in the index {index:?}"
    );

    std::fs::write(&flag, b"open").expect("the flag");
    let outcome = scene
        .client
        .wait::<Gate>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the chain completes");
    assert_eq!(outcome.output.n, (4 + 1) * 10 + 3);
    assert_eq!(
        scene.keys(&format!("{tag}job:*")),
        Vec::<String>::new(),
        "no job left"
    );
    assert_eq!(
        scene.cli(&["EXISTS", &run_hash]),
        "0",
        "the run hash is gone"
    );
    let index = scene.cli(&["SMEMBERS", &format!("{tag}index")]);
    let stale: Vec<&str> = index
        .lines()
        .filter(|k| k.contains(":job:") || k.contains(":run:"))
        .collect();
    assert!(
        stale.is_empty(),
        "the index holds no job or run key: {stale:?}"
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

/// An item of [`Ticks`]: 20 ms, doubles it.
#[processor]
async fn tick(item: u64, ctx: &Ctx) -> Result<u64, Error> {
    TICKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((item, Instant::now()));
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(20)) => Ok(item * 2),
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
    assert!(
        !scene.keys(&format!("{}*", scene.tag(&beside))).is_empty(),
        "the session beside keeps its keys"
    );
    scene.finish(&[&beside]).await;
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

// ---------------------------------------------------------------------------------------------
// 8. Step jobs off.

/// With `AM2Z_STEP_JOBS=0` in the workers' environment the chain runs as one whole-run job:
/// held at its second step, Redis has the run's `job:<run>` and no step job nor run hash, and
/// the chain completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_jobs_off_in_the_environment_keeps_the_whole_run_job() {
    let knobs = Knobs::default();
    let mut fleet = Fleet::start("steps-off", knobs.clone(), 0).await;
    for _ in 0..2 {
        fleet.spawn_with(&knobs, &[("AM2Z_STEP_JOBS", "0".to_owned())]);
    }
    let session = fleet.sessions(1, "off").remove(0);
    let tag = format!("{}:{{{session}}}:", fleet.prefix());
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

    let server = fleet.server();
    let jobs = server.keys(&format!("{tag}job:*"));
    assert_eq!(
        jobs,
        [format!("{tag}job:{run}")],
        "the whole-run job only, no step job"
    );
    assert!(
        server.keys(&format!("{tag}run:*")).is_empty(),
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
/// second step, Redis has the run's `job:<run>` and no step job nor run hash, and the chain
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_jobs_off_in_the_config_keeps_the_whole_run_job() {
    let scene = Scene::start("off", 2, 4, |c| c.step_jobs(false), |w| w.serve(GateChain)).await;
    let session = scene.session("off");
    let tag = scene.tag(&session);
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
        scene.keys(&format!("{tag}job:*")),
        [format!("{tag}job:{run}")],
        "the whole-run job only, no step job"
    );
    assert_eq!(
        scene.keys(&format!("{tag}run:*")),
        Vec::<String>::new(),
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
