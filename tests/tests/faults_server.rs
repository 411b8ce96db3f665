//! docs/faults.md scenarios 6–11, 17 and 18: the Redis server misbehaving (connections
//! killed, the server asleep or frozen, scripts flushed, memory full, an evicting policy, the
//! server down at start) and cancellation and fan-out under load. Each test starts a
//! `redis-server` of its own (`am2z_tests::fault`) and runs a client and workers as
//! `RedisRuntime`s in this process, counts what it submitted and what came back, and judges:
//! every acknowledged submission reaches one awaitable terminal outcome, nothing is lost,
//! nothing is left half-written, and a stopped session leaves zero keys.
//!
//! `AM2Z_FAULT_PROFILE=long` runs the long variants (longer chaos, more iterations).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use am2z::{
    Error, EventKind, RedisConfig, RedisRuntime, RunHandle, RunId, Runtime, SessionId, processor,
    workflow,
};
use am2z_tests::fault::{RedisServer, ServerSpec};
use am2z_tests::layout::Layout;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Whether the long profile was asked for (`AM2Z_FAULT_PROFILE=long`).
fn long_profile() -> bool {
    std::env::var("AM2Z_FAULT_PROFILE").is_ok_and(|p| p == "long")
}

/// `short` in the default profile, `long` under `AM2Z_FAULT_PROFILE=long`.
fn profile<T>(short: T, long: T) -> T {
    if long_profile() { long } else { short }
}

/// The response timeout of the runtimes in the scenarios that assert call bounds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Slack on top of a promised bound: the machine is shared and loaded.
const MARGIN: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// What the workers run, and the ledger of executions.

/// One unit of work: sleep `ms`, return `id`. Ids are unique across this binary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    id: u64,
    ms: u64,
}

impl Job {
    fn new(ms: u64) -> Job {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Job {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            ms,
        }
    }
}

/// When each job id's executions started.
fn ledger() -> MutexGuard<'static, HashMap<u64, Vec<Instant>>> {
    static LEDGER: OnceLock<Mutex<HashMap<u64, Vec<Instant>>>> = OnceLock::new();
    LEDGER
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// How many times `id` was executed.
fn executions(id: u64) -> usize {
    ledger().get(&id).map_or(0, Vec::len)
}

/// Records an execution of `job`, then works.
#[processor(timeout = "30s")]
pub async fn work(job: Job) -> Result<u64, Error> {
    let started = Instant::now();
    ledger().entry(job.id).or_default().push(started);
    if job.ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.ms)).await;
    }
    Ok(job.id)
}

/// How many times [`tally`] ran, per first id of the list it tallied.
fn tallies() -> MutexGuard<'static, HashMap<u64, u32>> {
    static TALLIES: OnceLock<Mutex<HashMap<u64, u32>>> = OnceLock::new();
    TALLIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The fan-in: how many children succeeded, and the ids they returned, in order.
#[processor]
pub async fn tally(results: Vec<Result<u64, Error>>) -> Result<Vec<u64>, Error> {
    let ids: Vec<u64> = results.into_iter().filter_map(Result::ok).collect();
    *tallies()
        .entry(ids.first().copied().unwrap_or(0))
        .or_default() += 1;
    Ok(ids)
}

workflow! {
    /// Many slow-ish children, eight at a time.
    pub FanOut(Vec<Job>) -> Vec<Result<u64, Error>> {
        map![work, concurrency = 8]
    }

    /// A wide fan-out with a fan-in step.
    pub Wide(Vec<Job>) -> Vec<u64> {
        chain![map![work, concurrency = 256], tally]
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet: a server of the test's own, a client and workers.

fn settings(server: &RedisServer, prefix: &str) -> RedisConfig {
    RedisConfig::new(server.url())
        .prefix(prefix)
        .worker_concurrency(16)
        .lease(Duration::from_secs(2))
        .sweep_every(Duration::from_millis(250))
        .idle_poll(Duration::from_millis(50))
        .redelivery_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .session_ttl(Duration::from_secs(600))
        .result_ttl(Duration::from_secs(600))
        .start_timeout(Duration::ZERO)
}

struct Fleet {
    server: RedisServer,
    prefix: String,
    client: RedisRuntime,
    workers: Vec<RedisRuntime>,
}

/// A worker runtime serving this file's processors (not started).
fn worker(config: RedisConfig) -> RedisRuntime {
    let runtime = RedisRuntime::new(config);
    runtime.serve(Work);
    runtime.serve(FanOut);
    runtime.serve(Wide);
    runtime
}

impl Fleet {
    async fn start(
        server: RedisServer,
        workers: usize,
        tune: fn(RedisConfig) -> RedisConfig,
    ) -> Fleet {
        let prefix = format!("faults-{}", RunId::generate());
        let client = RedisRuntime::new(tune(settings(&server, &prefix)).worker(false));
        client.start().await.expect("the client starts");
        let mut fleet = Fleet {
            server,
            prefix,
            client,
            workers: Vec::new(),
        };
        for _ in 0..workers {
            let runtime = worker(tune(settings(&fleet.server, &fleet.prefix)));
            runtime.start().await.expect("a worker starts");
            fleet.workers.push(runtime);
        }
        fleet
    }

    /// Every key of `session`.
    fn session_keys(&self, session: &SessionId) -> Vec<String> {
        self.server
            .keys(&format!("{}:{{{}}}:*", self.prefix, session.as_str()))
    }

    /// Every job left (queued, leased, waiting or half-written), as `<jobs key>/<job id>`.
    fn job_keys(&self) -> Vec<String> {
        let mut jobs = Vec::new();
        for key in self.server.keys(&format!("{}:*:jobs", self.prefix)) {
            for job in self.server.cli(&["HKEYS", &key]).lines() {
                if !job.is_empty() {
                    jobs.push(format!("{key}/{job}"));
                }
            }
        }
        jobs
    }

    /// Polls until no job is left (every submission that reached Redis is terminal), for at
    /// most `limit`; returns how long it took.
    async fn quiesce(&self, limit: Duration) -> Duration {
        let begin = Instant::now();
        loop {
            let left = self.job_keys();
            if left.is_empty() {
                return begin.elapsed();
            }
            assert!(
                begin.elapsed() < limit,
                "{} jobs still not terminal after {limit:?}: {:?}",
                left.len(),
                &left[..left.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops `sessions` and checks that none left a key.
    async fn stop_sessions(&self, sessions: &[&SessionId]) {
        for session in sessions {
            self.client
                .stop_session(session)
                .await
                .expect("stop_session");
            assert_eq!(
                self.session_keys(session),
                Vec::<String>::new(),
                "{session}"
            );
        }
    }

    async fn shut_down(self) {
        self.client.stop().await.expect("the client stops");
        for worker in &self.workers {
            worker.stop().await.expect("a worker stops");
        }
        let left = self.server.keys(&format!("{}:*", self.prefix));
        let sessions: Vec<&String> = left
            .iter()
            .filter(|k| k.contains(":{") && !k.contains(":{:"))
            .collect();
        assert!(sessions.is_empty(), "session keys left: {sessions:?}");
    }

    fn commits(&self) -> (u64, u64) {
        self.workers.iter().fold((0, 0), |(ok, refused), w| {
            (ok + w.committed_runs(), refused + w.refused_commits())
        })
    }
}

fn session(test: &str) -> SessionId {
    SessionId::new(format!("{test}-{}", RunId::generate())).expect("a valid session id")
}

/// Runs `redis-cli` off the async threads.
async fn cli(server: &RedisServer, args: &[&str]) -> String {
    let port = server.port();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(&args)
            .stderr(std::process::Stdio::null())
            .output();
        output
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    })
    .await
    .expect("redis-cli ran")
}

// ---------------------------------------------------------------------------------------------
// Steady load, and the judge.

/// What a load run saw.
#[derive(Default)]
struct Record {
    /// Acknowledged submissions.
    ok: Vec<(Job, RunHandle)>,
    /// Submissions that got an error: unknown (they may or may not have reached Redis).
    refused: Vec<Error>,
    /// Terminal outcomes by job id.
    outcomes: HashMap<u64, Result<u64, Error>>,
    /// Errors from `wait` that are not outcomes (timeouts, Redis unreachable): re-awaited.
    wait_errors: Vec<Error>,
    /// When each outcome arrived, and how long after its submission.
    completions: Vec<(Instant, Duration)>,
}

/// Steady load: `tasks` loops of submit + wait in `session` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: RedisRuntime,
}

impl Load {
    fn start(client: &RedisRuntime, session: &SessionId, tasks: usize, ms: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let tasks = (0..tasks)
            .map(|_| {
                let (client, session) = (client.clone(), session.clone());
                let (stop, record) = (Arc::clone(&stop), Arc::clone(&record));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let job = Job::new(ms);
                        let begin = Instant::now();
                        let handle = match client.submit(&session, &Work, job.clone()).await {
                            Ok(handle) => handle,
                            Err(error) => {
                                record
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .refused
                                    .push(error);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                        };
                        record
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .ok
                            .push((job.clone(), handle.clone()));
                        let outcome = client
                            .wait::<u64>(&handle, Some(Duration::from_secs(5)))
                            .await;
                        let mut record = record.lock().unwrap_or_else(PoisonError::into_inner);
                        match outcome {
                            Ok(result) => {
                                record.outcomes.insert(job.id, Ok(result.output));
                                record.completions.push((Instant::now(), begin.elapsed()));
                            }
                            Err(failure) => match failure.error {
                                error @ (Error::Timeout { .. } | Error::Unavailable { .. }) => {
                                    record.wait_errors.push(error);
                                }
                                error => {
                                    record.outcomes.insert(job.id, Err(error));
                                }
                            },
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            record,
            tasks,
            client: client.clone(),
        }
    }

    fn completed_between(&self, from: Instant, to: Instant) -> usize {
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record
            .completions
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .count()
    }

    fn completed(&self) -> usize {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .completions
            .len()
    }

    /// Stops the load and awaits every acknowledged run that has no outcome yet.
    async fn finish(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a load task");
        }
        let mut record = Arc::try_unwrap(self.record)
            .ok()
            .expect("the tasks are done")
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let pending: Vec<(Job, RunHandle)> = record
            .ok
            .iter()
            .filter(|(job, _)| !record.outcomes.contains_key(&job.id))
            .cloned()
            .collect();
        for (job, handle) in pending {
            let outcome = self
                .client
                .wait::<u64>(&handle, Some(Duration::from_secs(30)))
                .await;
            record
                .outcomes
                .insert(job.id, outcome.map(|r| r.output).map_err(|f| f.error));
        }
        record
    }
}

/// What the judge found.
struct Verdict {
    submitted: usize,
    refused: usize,
    ok: usize,
    failed: usize,
    lost: usize,
    duplicates: usize,
}

impl Verdict {
    fn line(&self) -> String {
        format!(
            "submitted ok {} / refused {} / outcomes ok {} failed {} / lost {} / duplicate executions {}",
            self.submitted, self.refused, self.ok, self.failed, self.lost, self.duplicates
        )
    }
}

/// Judges a load run: every acknowledged submission has exactly one outcome, the right one.
fn judge(record: &Record) -> Verdict {
    let mut verdict = Verdict {
        submitted: record.ok.len(),
        refused: record.refused.len(),
        ok: 0,
        failed: 0,
        lost: 0,
        duplicates: 0,
    };
    let mut seen = BTreeSet::new();
    for (job, _) in &record.ok {
        assert!(seen.insert(job.id), "job {} acknowledged twice", job.id);
        match record.outcomes.get(&job.id) {
            Some(Ok(id)) => {
                assert_eq!(*id, job.id, "the outcome of job {} is another's", job.id);
                verdict.ok += 1;
                assert!(
                    executions(job.id) >= 1,
                    "job {} completed unexecuted",
                    job.id
                );
            }
            Some(Err(error)) => {
                eprintln!("job {} failed: {error}", job.id);
                verdict.failed += 1;
            }
            None => verdict.lost += 1,
        }
        verdict.duplicates += executions(job.id).saturating_sub(1);
    }
    verdict
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// 6: CLIENT KILL every 500 ms.

/// Connections killed every 500 ms (command and pub/sub connections alike) during steady load:
/// the runtimes reconnect by themselves, the subscriber and waiters resume, load keeps
/// completing during and after, and every acknowledged run ends with its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_are_re_established_without_a_wedge() {
    let fleet = Fleet::start(RedisServer::start(), 2, |c| c).await;
    let s = session("kill");
    let mut events = fleet.client.subscribe_session(&s);
    let load = Load::start(&fleet.client, &s, 8, 5);
    let warm = Instant::now();
    while load.completed() < 20 {
        assert!(warm.elapsed() < Duration::from_secs(20), "the load started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let chaos = Duration::from_secs(profile(10, 30));
    let chaos_start = Instant::now();
    let mut kills = 0;
    while chaos_start.elapsed() < chaos {
        cli(&fleet.server, &["CLIENT", "KILL", "TYPE", "normal"]).await;
        cli(&fleet.server, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        kills += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let chaos_end = Instant::now();
    let chaos_end_wall = SystemTime::now();

    // Throughput after the chaos: the first completion, then a couple of seconds of load.
    let mut recovery = None;
    while recovery.is_none() {
        if load.completed_between(chaos_end, Instant::now() + Duration::from_secs(1)) > 0 {
            recovery = Some(chaos_end.elapsed());
        }
        assert!(
            chaos_end.elapsed() < Duration::from_secs(15),
            "load resumed after the chaos"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = load.completed_between(chaos_start + chaos / 2, chaos_end);
    let after = load.completed_between(chaos_end, Instant::now());

    // The subscriber resumed: it sees a run finish after the chaos.
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            if matches!(event.kind, EventKind::RunCompleted { .. }) && event.at > chaos_end_wall {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(heard, Ok(true), "the subscriber hears runs after the chaos");

    let record = load.finish().await;
    let verdict = judge(&record);
    let settled = fleet.quiesce(Duration::from_secs(30)).await;
    let (commits, refused_commits) = fleet.commits();
    eprintln!(
        "scenario 6 (CLIENT KILL x{kills} over {chaos:?}): {}; completions in the chaos' second half {during}, in 2 s after it {after}; recovery {:?}; commits {commits}, refused {refused_commits}; wait errors {}; all jobs terminal {settled:?} after",
        verdict.line(),
        recovery.unwrap_or_default(),
        record.wait_errors.len(),
    );
    assert_eq!(verdict.lost, 0, "nothing acknowledged is lost");
    assert_eq!(
        verdict.failed, 0,
        "no run fails because a connection was killed"
    );
    assert!(during > 0, "load kept completing during the chaos");
    assert!(after > 0, "load kept completing after the chaos");
    assert!(
        commits as usize <= verdict.ok + record.refused.len(),
        "no more commits than runs"
    );
    for error in &record.refused {
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    }
    fleet.stop_sessions(&[&s]).await;
    fleet.shut_down().await;
}

/// A submission whose scheduling was lost (its connection killed between queueing the job and
/// scheduling the session, which are two calls) is still run: the sweeper's full pass puts a
/// session with queued jobs back on the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_schedule_is_restored_by_the_sweeper() {
    let fleet = Fleet::start(RedisServer::start(), 0, |c| c).await;
    let s = session("unscheduled");
    let job = Job::new(0);
    let handle = fleet.client.submit(&s, &Work, job.clone()).await.unwrap();
    // What a connection killed right after `submit.lua` leaves behind.
    let sched = format!("{}:{{:registry}}:sched", fleet.prefix);
    assert_eq!(cli(&fleet.server, &["ZREM", &sched, s.as_str()]).await, "1");
    let worker = worker(settings(&fleet.server, &fleet.prefix));
    worker.start().await.unwrap();
    let begin = Instant::now();
    let outcome = fleet
        .client
        .wait::<u64>(&handle, Some(Duration::from_secs(15)))
        .await
        .expect("the unscheduled run is run");
    assert_eq!(outcome.output, job.id);
    let recovery = begin.elapsed();
    eprintln!(
        "scenario 6 (a lost schedule): the queued run ran {recovery:?} after a worker started"
    );
    fleet.stop_sessions(&[&s]).await;
    worker.stop().await.unwrap();
    fleet.shut_down().await;
}

// ---------------------------------------------------------------------------------------------
// 7: Redis asleep or frozen.

enum Stall {
    DebugSleep,
    Freeze,
}

/// Whether the server answers a PING within 200 ms.
async fn answers(server: &RedisServer) -> bool {
    let port = server.port();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok()
    })
    .await
    .unwrap_or(false)
}

/// Runs `call`, timing it.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> (Duration, T) {
    let begin = Instant::now();
    let result = call.await;
    (begin.elapsed(), result)
}

/// Every call made while Redis does not answer returns a typed error within the response
/// timeout (plus a margin) and never hangs; afterwards everything recovers without a restart.
async fn stalled(stall: Stall) {
    let fleet = Fleet::start(RedisServer::start(), 1, |c| {
        c.response_timeout(RESPONSE_TIMEOUT)
    })
    .await;
    let (s, other) = (session("stall"), session("stall-other"));
    let first = fleet
        .client
        .submit(&other, &Work, Job::new(0))
        .await
        .expect("submit");
    fleet
        .client
        .wait::<u64>(&first, Some(Duration::from_secs(10)))
        .await
        .expect("a run");
    let before_job = Job::new(300);
    let before = fleet
        .client
        .submit(&s, &Work, before_job.clone())
        .await
        .expect("submit");

    let length = Duration::from_secs(profile(6, 10));
    let (name, sleeper) = match stall {
        Stall::DebugSleep => {
            let port = fleet.server.port();
            let secs = length.as_secs().to_string();
            let sleeper = tokio::task::spawn_blocking(move || {
                std::process::Command::new("redis-cli")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "DEBUG",
                        "SLEEP",
                        &secs,
                    ])
                    .output()
                    .expect("redis-cli runs");
            });
            ("DEBUG SLEEP", Some(sleeper))
        }
        Stall::Freeze => {
            fleet.server.freeze();
            ("kill -STOP", None)
        }
    };
    let stalled_at = Instant::now();
    while answers(&fleet.server).await {
        assert!(
            stalled_at.elapsed() < Duration::from_secs(5),
            "the server stalled"
        );
    }

    // Rounds of calls, all at once, during the stall (until it is about to end).
    let bound = RESPONSE_TIMEOUT + MARGIN;
    let mut slowest: HashMap<&str, Duration> = HashMap::new();
    let mut calls = 0;
    let mut unknown_submissions = 0;
    while stalled_at.elapsed() + Duration::from_millis(500) + bound < length {
        let client = &fleet.client;
        let (submitted, waited, stats, session_stats, sessions, stopped) = tokio::join!(
            timed(client.submit(&s, &Work, Job::new(0))),
            timed(client.wait::<u64>(&before, Some(Duration::from_millis(500)))),
            timed(client.stats()),
            timed(client.session_stats(&s)),
            timed(client.active_sessions()),
            timed(client.stop_session(&other)),
        );
        unknown_submissions += 1;
        let typed = |error: &Error| matches!(error, Error::Unavailable { .. });
        let results = [
            ("submit", submitted.0, submitted.1.err(), bound),
            (
                "wait(500ms)",
                waited.0,
                waited.1.err().map(|f| f.error),
                bound + Duration::from_millis(500),
            ),
            ("stats", stats.0, stats.1.err(), bound),
            (
                "session_stats",
                session_stats.0,
                session_stats.1.err(),
                bound,
            ),
            ("active_sessions", sessions.0, sessions.1.err(), bound),
            ("stop_session", stopped.0, stopped.1.err(), bound),
        ];
        for (name, took, error, limit) in results {
            let error = error.unwrap_or_else(|| panic!("{name} succeeded on a stalled server"));
            let expected = typed(&error)
                || (name.starts_with("wait") && matches!(error, Error::Timeout { .. }));
            assert!(expected, "{name}: {error:?}");
            assert!(took < limit, "{name} took {took:?}");
            let slot = slowest.entry(name).or_default();
            *slot = (*slot).max(took);
            calls += 1;
        }
    }
    assert!(calls >= 6, "calls were made during the stall");

    match sleeper {
        Some(sleeper) => sleeper.await.expect("DEBUG SLEEP returned"),
        None => {
            while stalled_at.elapsed() < length {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            fleet.server.thaw();
        }
    }
    let ended = Instant::now();
    let recovery = loop {
        let job = Job::new(0);
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let handle = fleet.client.submit(&s, &Work, job.clone()).await?;
            fleet
                .client
                .wait::<u64>(&handle, Some(Duration::from_secs(5)))
                .await
                .map_err(|f| f.error)
        })
        .await
        .expect("a call never hangs");
        match outcome {
            Ok(result) => {
                assert_eq!(result.output, job.id);
                break ended.elapsed();
            }
            Err(error) => {
                assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
                assert!(
                    ended.elapsed() < Duration::from_secs(20),
                    "recovered after the stall"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let outcome = fleet
        .client
        .wait::<u64>(&before, Some(Duration::from_secs(30)))
        .await
        .expect("the run in flight during the stall completes");
    assert_eq!(outcome.output, before_job.id);
    let settled = fleet.quiesce(Duration::from_secs(30)).await;
    let (commits, refused) = fleet.commits();
    let mut slowest: Vec<_> = slowest.into_iter().collect();
    slowest.sort();
    eprintln!(
        "scenario 7 ({name} {length:?}): {calls} calls during the stall, all typed errors; slowest {slowest:?} (bound {bound:?}); {unknown_submissions} unknown submissions; run in flight completed after {} executions; recovery {recovery:?}; commits {commits}, refused {refused}; lost 0; all jobs terminal {settled:?} after",
        executions(before_job.id),
    );
    fleet.stop_sessions(&[&s, &other]).await;
    fleet.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debug_sleep_gives_typed_errors_in_time_then_recovers() {
    stalled(Stall::DebugSleep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_redis_gives_typed_errors_in_time_then_recovers() {
    stalled(Stall::Freeze).await;
}

// ---------------------------------------------------------------------------------------------
// 8: SCRIPT FLUSH during load.

/// Scripts flushed every 25 ms during load are reloaded transparently: no error reaches a
/// caller, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_flush_during_load_is_transparent() {
    let fleet = Fleet::start(RedisServer::start(), 2, |c| c).await;
    let s = session("flush");
    // Every run's events reach a live subscriber: no `event.lua` call is lost either.
    let heard = Arc::new(Mutex::new((BTreeSet::new(), 0)));
    let listener = {
        let mut events = fleet.client.subscribe_session(&s);
        let heard = Arc::clone(&heard);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let mut heard = heard.lock().unwrap_or_else(PoisonError::into_inner);
                heard.1 = events.missed();
                if let (EventKind::RunCompleted { .. }, Some(run)) = (&event.kind, event.run_id) {
                    heard.0.insert(run);
                }
            }
        })
    };
    let load = Load::start(&fleet.client, &s, 8, 2);
    let length = Duration::from_secs(profile(4, 20));
    let begin = Instant::now();
    let mut flushes = 0;
    while begin.elapsed() < length {
        assert_eq!(cli(&fleet.server, &["SCRIPT", "FLUSH"]).await, "OK");
        flushes += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let record = load.finish().await;
    let verdict = judge(&record);
    let settled = fleet.quiesce(Duration::from_secs(30)).await;
    let runs: BTreeSet<RunId> = record.ok.iter().map(|(_, h)| h.run_id).collect();
    let quiet = Instant::now();
    let (events_heard, missed) = loop {
        let (heard, missed) = {
            let heard = heard.lock().unwrap_or_else(PoisonError::into_inner);
            (heard.0.intersection(&runs).count(), heard.1)
        };
        if heard == runs.len() || quiet.elapsed() > Duration::from_secs(5) {
            break (heard, missed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    listener.abort();
    eprintln!(
        "scenario 8 (SCRIPT FLUSH x{flushes} over {length:?}): {}; wait errors {}; completion events heard {events_heard} (subscriber skipped {missed}); all jobs terminal {settled:?} after",
        verdict.line(),
        record.wait_errors.len()
    );
    if missed == 0 {
        assert_eq!(
            events_heard,
            runs.len(),
            "every run's completion event arrived"
        );
    }
    assert!(
        record.refused.is_empty(),
        "no submission failed: {:?}",
        record.refused
    );
    assert!(
        record.wait_errors.is_empty(),
        "no wait failed: {:?}",
        record.wait_errors
    );
    assert_eq!(verdict.lost, 0);
    assert_eq!(verdict.failed, 0);
    assert!(verdict.ok > 0);
    fleet.stop_sessions(&[&s]).await;
    fleet.shut_down().await;
}

// ---------------------------------------------------------------------------------------------
// 9: Redis at maxmemory.

/// A server at `maxmemory` (noeviction) refuses submissions whole with a typed resource error:
/// every job written is complete and queued. A worker still drains the queue (commits free
/// memory), and then submissions succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_server_refuses_submissions_whole_then_recovers() {
    let fleet = Fleet::start(RedisServer::start(), 0, |c| c).await;
    let s = session("full");
    let used: u64 = fleet
        .server
        .info("used_memory")
        .and_then(|v| v.parse().ok())
        .expect("used_memory");
    let limit = (used + (2 << 20)).to_string();
    assert_eq!(
        cli(&fleet.server, &["CONFIG", "SET", "maxmemory", &limit]).await,
        "OK"
    );

    let big = 256 * 1024;
    let mut accepted = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..64 {
        let job = Job::new(0);
        // A big job: the id in front, padding behind (`work` ignores the rest).
        let padded = PaddedJob {
            id: job.id,
            ms: 0,
            pad: "z".repeat(big),
        };
        match fleet.client.submit(&s, &Padded, padded).await {
            Ok(handle) => accepted.push((job, handle)),
            Err(error) => {
                refusals.push(error);
                if refusals.len() == 5 {
                    break;
                }
            }
        }
    }
    assert!(!refusals.is_empty(), "the server filled up");
    for error in &refusals {
        assert!(matches!(error, Error::Resource { .. }), "{error:?}");
    }
    // No partial transition: every job is whole (header and body) and queued.
    let layout = Layout::new(&fleet.server.url(), &fleet.prefix, s.as_str());
    let jobs = layout.jobs();
    assert_eq!(
        jobs.len(),
        accepted.len(),
        "one job per accepted submission"
    );
    let queued: usize = cli(&fleet.server, &["ZCARD", &layout.key("queue")])
        .await
        .parse()
        .unwrap();
    assert_eq!(queued, accepted.len(), "every job written is queued");
    for job in &jobs {
        assert!(layout.header(job).is_some(), "{job}'s header is whole");
        assert!(layout.body_meta(job).is_some(), "{job} has its body");
        assert_eq!(layout.state(job), "queued", "{job} is queued");
    }

    // A worker drains the full server; its commits free the memory.
    let drained_at = Instant::now();
    let worker = worker(settings(&fleet.server, &fleet.prefix));
    worker.serve(Padded);
    worker
        .start()
        .await
        .expect("a worker starts on a full server");
    for (job, handle) in &accepted {
        let outcome = fleet
            .client
            .wait::<u64>(handle, Some(Duration::from_secs(30)))
            .await
            .expect("an accepted run completes");
        assert_eq!(outcome.output, job.id);
    }
    let recovery = loop {
        match fleet.client.submit(&s, &Work, Job::new(0)).await {
            Ok(handle) => {
                fleet
                    .client
                    .wait::<u64>(&handle, Some(Duration::from_secs(10)))
                    .await
                    .expect("a run after the drain");
                break drained_at.elapsed();
            }
            Err(error) => {
                assert!(matches!(error, Error::Resource { .. }), "{error:?}");
                assert!(
                    drained_at.elapsed() < Duration::from_secs(20),
                    "memory freed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!(
        "scenario 9 (maxmemory {limit} B, {big} B inputs): accepted {}, refused {} (all Resource), partial 0, lost 0; submissions succeed {recovery:?} after a worker started draining",
        accepted.len(),
        refusals.len()
    );
    fleet.quiesce(Duration::from_secs(10)).await;
    fleet.stop_sessions(&[&s]).await;
    worker.stop().await.unwrap();
    fleet.shut_down().await;
}

/// A job with a big padding field, for filling memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaddedJob {
    id: u64,
    ms: u64,
    pad: String,
}

/// Returns the padded job's id.
#[processor]
pub async fn padded(job: PaddedJob) -> Result<u64, Error> {
    let started = Instant::now();
    ledger().entry(job.id).or_default().push(started);
    Ok(job.id)
}

// ---------------------------------------------------------------------------------------------
// 10: an evicting policy.

/// The runtime refuses to start on a server that evicts keys, whatever the evicting policy,
/// with a message naming the policy and the fix, at once and without writing anything.
#[tokio::test]
async fn refuses_every_evicting_policy() {
    let server = RedisServer::start();
    let policies = [
        "allkeys-lru",
        "volatile-lru",
        "allkeys-lfu",
        "volatile-lfu",
        "allkeys-random",
        "volatile-random",
        "volatile-ttl",
    ];
    for policy in policies {
        assert_eq!(
            server.cli(&["CONFIG", "SET", "maxmemory-policy", policy]),
            "OK"
        );
        let runtime = worker(settings(&server, "evicting").start_timeout(Duration::from_secs(30)));
        let begin = Instant::now();
        let error = runtime.start().await.expect_err("refused");
        assert!(
            matches!(&error, Error::Configuration { message }
                if message.contains(policy) && message.contains("maxmemory-policy noeviction")),
            "{error:?}"
        );
        assert!(
            begin.elapsed() < Duration::from_secs(2),
            "refused at once, not retried"
        );
        assert!(!runtime.is_running());
    }
    assert_eq!(server.keys("*"), Vec::<String>::new(), "nothing written");
    eprintln!(
        "scenario 10: refused {} evicting policies with a configuration error naming each",
        policies.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 11: Redis down when workers start.

/// A worker started while Redis is down waits and begins serving when Redis comes up; a
/// producer's submit fails fast with a typed error while Redis is down; a worker told not to
/// wait fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_wait_for_redis_and_producers_fail_fast() {
    let mut server = RedisServer::start();
    let prefix = format!("faults-{}", RunId::generate());
    let producer = RedisRuntime::new(
        settings(&server, &prefix)
            .worker(false)
            .response_timeout(RESPONSE_TIMEOUT),
    );
    producer.start().await.expect("the producer starts");
    server.kill_9();

    let s = session("down");
    let bound = Duration::from_secs(3);
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let begin = Instant::now();
        let submitted = producer.submit(&s, &Work, Job::new(0)).await;
        let took = begin.elapsed();
        assert!(
            matches!(submitted, Err(Error::Unavailable { .. })),
            "{submitted:?}"
        );
        slowest = slowest.max(took);
    }
    assert!(slowest < bound, "submit failed in {slowest:?}");

    let impatient = worker(settings(&server, &prefix));
    let begin = Instant::now();
    let error = impatient.start().await.expect_err("Redis is down");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(begin.elapsed() < bound, "an impatient start fails fast");

    let waiting = worker(
        settings(&server, &prefix)
            .start_timeout(Duration::from_secs(60))
            .response_timeout(RESPONSE_TIMEOUT),
    );
    let starting = {
        let waiting = waiting.clone();
        tokio::spawn(async move { waiting.start().await })
    };
    let down_since = Instant::now();
    while down_since.elapsed() < Duration::from_secs(2) {
        assert!(!starting.is_finished(), "start waits while Redis is down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.restart();
    let up = Instant::now();
    starting
        .await
        .expect("start ran")
        .expect("the worker starts once Redis is up");
    let started_after = up.elapsed();

    let job = Job::new(0);
    let handle = loop {
        match producer.submit(&s, &Work, job.clone()).await {
            Ok(handle) => break handle,
            Err(error) => {
                assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
                assert!(
                    up.elapsed() < Duration::from_secs(20),
                    "the producer reconnected"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let outcome = producer
        .wait::<u64>(&handle, Some(Duration::from_secs(20)))
        .await
        .expect("the run completes on the worker that waited");
    assert_eq!(outcome.output, job.id);
    // The producer hears the outcome from the commit's `done` message, which may reach it
    // before the worker has read the commit's reply: let the worker read it.
    let answered = Instant::now();
    while waiting.committed_runs() == 0 && answered.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(waiting.committed_runs(), 1, "the waiting worker ran it");
    eprintln!(
        "scenario 11: submit while Redis was down failed (Unavailable) in at most {slowest:?}; an impatient start failed; a waiting worker started {started_after:?} after Redis came up and ran the next run; recovery {:?}",
        up.elapsed()
    );
    producer.stop_session(&s).await.unwrap();
    assert!(
        server
            .keys(&format!("{prefix}:{{{}}}:*", s.as_str()))
            .is_empty()
    );
    producer.stop().await.unwrap();
    waiting.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 17: stop_session during a fan-out, and cancel racing the final commit.

/// `stop_session` during fan-outs: no child starts after the stop returns, the session's runs
/// end with `SessionStopped`, no key of it is left, and a session beside it is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_session_during_a_fan_out_stops_it_whole() {
    let fleet = Fleet::start(RedisServer::start(), 2, |c| c).await;
    let (s, beside) = (session("fan"), session("beside"));
    let mut stopped_ids = BTreeSet::new();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let children: Vec<Job> = (0..200).map(|_| Job::new(20)).collect();
        stopped_ids.extend(children.iter().map(|j| j.id));
        handles.push(fleet.client.submit(&s, &FanOut, children).await.unwrap());
    }
    let mut beside_runs = Vec::new();
    for _ in 0..4 {
        let children: Vec<Job> = (0..40).map(|_| Job::new(20)).collect();
        let ids: Vec<u64> = children.iter().map(|j| j.id).collect();
        beside_runs.push((
            ids,
            fleet
                .client
                .submit(&beside, &FanOut, children)
                .await
                .unwrap(),
        ));
    }
    let started = |ids: &BTreeSet<u64>| ids.iter().filter(|id| executions(**id) > 0).count();
    let begin = Instant::now();
    while started(&stopped_ids) < 100 {
        assert!(
            begin.elapsed() < Duration::from_secs(30),
            "the fan-out started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fleet.client.stop_session(&s).await.expect("stop_session");
    let stop_returned = Instant::now();
    let at_stop = started(&stopped_ids);

    for handle in &handles {
        let outcome = fleet
            .client
            .wait::<Vec<Result<u64, Error>>>(handle, Some(Duration::from_secs(10)))
            .await;
        match outcome {
            Err(failure) => assert!(
                matches!(failure.error, Error::SessionStopped { .. }),
                "{failure:?}"
            ),
            Ok(result) => panic!(
                "a stopped fan-out completed: {} results",
                result.output.len()
            ),
        }
    }
    for (ids, handle) in &beside_runs {
        let outcome = fleet
            .client
            .wait::<Vec<Result<u64, Error>>>(handle, Some(Duration::from_secs(30)))
            .await
            .expect("the session beside completes");
        let got: Vec<u64> = outcome.output.into_iter().map(Result::unwrap).collect();
        assert_eq!(&got, ids);
    }
    // Quiet for a while: no child of the stopped session starts any more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late: Vec<Duration> = {
        let ledger = ledger();
        stopped_ids
            .iter()
            .filter_map(|id| ledger.get(id))
            .flatten()
            .filter(|at| **at > stop_returned)
            .map(|at| *at - stop_returned)
            .collect()
    };
    let (commits, refused) = fleet.commits();
    eprintln!(
        "scenario 17 (stop during fan-out): {} of {} children started before the stop, {} after it returned {:?}; 4 runs ended SessionStopped; beside: 4 runs of 40 completed; commits {commits}, refused {refused}",
        at_stop,
        stopped_ids.len(),
        late.len(),
        late.iter().max(),
    );
    assert!(
        late.is_empty(),
        "children started after stop_session returned: {late:?}"
    );
    assert_eq!(
        fleet.session_keys(&s),
        Vec::<String>::new(),
        "the stopped session left keys"
    );
    assert!(
        !fleet.session_keys(&beside).is_empty(),
        "the session beside is untouched"
    );
    fleet.stop_sessions(&[&beside]).await;
    fleet.shut_down().await;
}

/// A short run and `stop_session` at nearly the same moment, many times: each run ends in
/// exactly one terminal state (completed or stopped), and no key is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_racing_the_final_commit_ends_each_run_once() {
    let fleet = Fleet::start(RedisServer::start(), 2, |c| c).await;
    let iterations: u64 = profile(200, 1000);
    let (mut completed, mut stopped) = (0, 0);
    let mut sessions = Vec::new();
    let mut ids = Vec::new();
    let begin = Instant::now();
    for i in 0..iterations {
        let s = session("race");
        let job = Job::new(0);
        let handle = fleet.client.submit(&s, &Work, job.clone()).await.unwrap();
        let stopper = {
            let (client, s) = (fleet.client.clone(), s.clone());
            // From at once to a few ms later: around the run's commit.
            let delay = Duration::from_micros((i % 16) * 400);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                client.stop_session(&s).await.map(|()| Instant::now())
            })
        };
        let outcome = fleet
            .client
            .wait::<u64>(&handle, Some(Duration::from_secs(10)))
            .await;
        let stop_returned = stopper.await.unwrap().expect("stop_session");
        match outcome {
            Ok(result) => {
                assert_eq!(result.output, job.id);
                completed += 1;
            }
            Err(failure) => {
                assert!(
                    matches!(failure.error, Error::SessionStopped { .. }),
                    "iteration {i}: {failure:?}"
                );
                stopped += 1;
            }
        }
        // The outcome is stable: asking again gives the stop (the session is gone).
        let again = fleet
            .client
            .wait::<u64>(&handle, Some(Duration::from_secs(5)))
            .await;
        assert!(
            matches!(&again, Err(f) if matches!(f.error, Error::SessionStopped { .. })),
            "iteration {i}: {again:?}"
        );
        sessions.push(s);
        ids.push((job.id, stop_returned));
    }
    let took = begin.elapsed();
    // Workers finishing a run of a stopped session are refused; give them a moment to try.
    fleet.quiesce(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = fleet.server.keys(&format!("{}:{{race-*", fleet.prefix));
    let registered = cli(
        &fleet.server,
        &["SCARD", &format!("{}:{{:registry}}:sessions", fleet.prefix)],
    )
    .await;
    let (commits, refused) = fleet.commits();
    let duplicates: usize = ids
        .iter()
        .map(|(id, _)| executions(*id).saturating_sub(1))
        .sum();
    let started_late = {
        let ledger = ledger();
        ids.iter()
            .filter(|(id, stopped)| {
                ledger
                    .get(id)
                    .is_some_and(|starts| starts.iter().any(|at| at > stopped))
            })
            .count()
    };
    eprintln!(
        "scenario 17 (stop racing the commit x{iterations} in {took:?}): completed {completed}, stopped {stopped}, neither 0, both 0; started after the stop returned {started_late}; keys left {}; commits {commits}, refused {refused}; duplicates {duplicates}",
        left.len()
    );
    assert_eq!(completed + stopped, iterations);
    assert_eq!(started_late, 0, "runs started after stop_session returned");
    assert_eq!(left, Vec::<String>::new(), "stopped sessions left keys");
    assert_eq!(registered, "0", "stopped sessions left the registry");
    fleet.shut_down().await;
}

// ---------------------------------------------------------------------------------------------
// 18: a fan-out of 10 000 children beside light load.

/// A fan-out of 10 000 children (and 100 000 in the long profile) with a fan-in, while another
/// session runs light load: the fan-in runs once with every child's result, no Redis command
/// takes over 100 ms, and the other session's runs keep completing with a bounded latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wide_fan_out_does_not_block_its_neighbours() {
    wide_fan_out(10_000).await;
    if long_profile() {
        wide_fan_out(100_000).await;
    }
}

async fn wide_fan_out(width: usize) {
    let server = ServerSpec::default()
        .arg("slowlog-log-slower-than", "100000")
        .start();
    let fleet = Fleet::start(server, 2, |c| c).await;
    assert_eq!(cli(&fleet.server, &["SLOWLOG", "RESET"]).await, "OK");
    let (wide, light) = (session("wide"), session("light"));
    let load = Load::start(&fleet.client, &light, 2, 0);
    let warm = Instant::now();
    while load.completed() < 10 {
        assert!(
            warm.elapsed() < Duration::from_secs(20),
            "the light load started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let children: Vec<Job> = (0..width).map(|_| Job::new(0)).collect();
    let ids: Vec<u64> = children.iter().map(|j| j.id).collect();
    let begin = Instant::now();
    let handle = fleet
        .client
        .submit(&wide, &Wide, children)
        .await
        .expect("submit");
    // A deadline for completion, not a speed bound (that is the benchmark's): each child is a
    // job of its own, committed in Redis, a few ms apiece in a debug build on 2 cores.
    let bound = Duration::from_secs(300).max(Duration::from_millis(5 * width as u64));
    let outcome = fleet
        .client
        .wait::<Vec<u64>>(&handle, Some(bound))
        .await
        .expect("the fan-out completes");
    let took = begin.elapsed();
    let end = Instant::now();
    assert_eq!(
        outcome.output, ids,
        "the fan-in got every child's result, in order"
    );
    assert_eq!(
        tallies().get(&ids[0]).copied(),
        Some(1),
        "the fan-in ran once"
    );
    let during = load.completed_between(begin, end);
    let record = load.finish().await;
    let verdict = judge(&record);
    let mut latencies: Vec<Duration> = record
        .completions
        .iter()
        .filter(|(at, _)| *at >= begin && *at < end)
        .map(|(_, latency)| *latency)
        .collect();
    let p99_during = p99(&mut latencies);
    let max_during = latencies.last().copied().unwrap_or_default();
    let child_duplicates: usize = ids.iter().map(|id| executions(*id).saturating_sub(1)).sum();
    fleet.stop_sessions(&[&wide, &light]).await;
    let slowlog = cli(&fleet.server, &["SLOWLOG", "GET", "16"]).await;
    let slow = cli(&fleet.server, &["SLOWLOG", "LEN"]).await;
    eprintln!(
        "scenario 18 ({width} children + fan-in in {took:?}): fan-in ran once; light session: {}; {during} completed during the fan-out, p99 {p99_during:?}, max {max_during:?}; child duplicates {child_duplicates}; slowlog entries over 100 ms: {slow}",
        verdict.line()
    );
    assert_eq!(slow, "0", "commands over 100 ms: {slowlog}");
    assert_eq!(verdict.lost, 0);
    assert_eq!(verdict.failed, 0);
    assert!(
        during > 0,
        "the light session kept completing during the fan-out"
    );
    assert!(p99_during < Duration::from_secs(2), "p99 {p99_during:?}");
    fleet.shut_down().await;
}
