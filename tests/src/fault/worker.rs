//! Real worker processes (the `fault_worker` binary) and the [`Fleet`] a scenario runs: its
//! own Redis server, a key prefix, N workers, their ledger directory, a client runtime, and the
//! [`Checker`] that judges what happened. Everything is stopped and removed when the fleet is
//! dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use am2z::{Error, Processor, RedisConfig, RedisRuntime, RunHandle, RunId, Runtime, SessionId};
use serde::Serialize;

use super::checker::{Checker, CommitWatch, Report};
use super::ledger::{LEDGER_VAR, Ledger};
use super::server::RedisServer;

/// The worker binary's role: `worker` (default) or `awaiter` (waits for [`HANDLES_VAR`]).
pub const ROLE_VAR: &str = "AM2Z_FAULT_ROLE";
/// The handles an awaiter waits for (JSON).
pub const HANDLES_VAR: &str = "AM2Z_FAULT_HANDLES";
/// A comma-separated list of processor names: the worker serves only those (default: all).
pub const SERVES_VAR: &str = "AM2Z_FAULT_SERVES";
/// `old`: serve the previous contract of `versioned` (an older worker binary).
pub const CONTRACT_VAR: &str = "AM2Z_FAULT_CONTRACT";
const LEASE_VAR: &str = "AM2Z_FAULT_LEASE_MS";
const SWEEP_VAR: &str = "AM2Z_FAULT_SWEEP_MS";
const DELIVERIES_VAR: &str = "AM2Z_FAULT_MAX_DELIVERIES";
const GRACE_VAR: &str = "AM2Z_FAULT_UNSERVED_GRACE_MS";
const DRAIN_VAR: &str = "AM2Z_FAULT_DRAIN_MS";
/// Empty: the runtime's default.
const AHEAD_VAR: &str = "AM2Z_FAULT_LEASE_AHEAD";

/// Where the `libfaketime` preload library lives (Debian/Ubuntu `faketime` package).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How long a submission may take before the checker calls it unknown.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a worker may take to print `ready`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The settings of a scene's workers (and of its client, which shares the lease and sweep):
/// short by default, so each scenario takes seconds. The lease is renewed every third of it.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Runs a worker executes at once.
    pub concurrency: usize,
    /// Lease time (renewed every third).
    pub lease: Duration,
    /// Sweep interval.
    pub sweep: Duration,
    /// Leases before a job is dead-lettered.
    pub max_deliveries: u32,
    /// How long a job no live worker serves waits before failing (`None`: forever).
    pub unserved_grace: Option<Duration>,
    /// How long a worker asked to stop (SIGTERM) lets in-flight runs finish.
    pub drain: Duration,
    /// Jobs a worker leases beyond those it runs (`None`: the runtime's default).
    pub lease_ahead: Option<usize>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            concurrency: 8,
            lease: Duration::from_millis(1_500),
            sweep: Duration::from_millis(250),
            max_deliveries: 5,
            unserved_grace: None,
            drain: Duration::from_secs(1),
            lease_ahead: None,
        }
    }
}

impl Knobs {
    /// Runs a worker executes at once.
    #[must_use]
    pub fn concurrency(mut self, runs: usize) -> Self {
        self.concurrency = runs;
        self
    }

    /// Lease time.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sweep interval.
    #[must_use]
    pub fn sweep(mut self, every: Duration) -> Self {
        self.sweep = every;
        self
    }

    /// Leases before dead-lettering.
    #[must_use]
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries;
        self
    }

    /// The unserved grace period.
    #[must_use]
    pub fn unserved_grace(mut self, grace: Option<Duration>) -> Self {
        self.unserved_grace = grace;
        self
    }

    /// The drain timeout on SIGTERM.
    #[must_use]
    pub fn drain(mut self, timeout: Duration) -> Self {
        self.drain = timeout;
        self
    }

    /// Jobs a worker leases beyond those it runs.
    #[must_use]
    pub fn lease_ahead(mut self, jobs: usize) -> Self {
        self.lease_ahead = Some(jobs);
        self
    }

    /// The runtime settings these knobs make, on `url` under `prefix`.
    pub fn config(&self, url: &str, prefix: &str) -> RedisConfig {
        let config = RedisConfig::new(url)
            .prefix(prefix)
            .worker_concurrency(self.concurrency)
            .lease(self.lease)
            .sweep_every(self.sweep)
            .idle_poll(Duration::from_millis(50))
            .max_deliveries(self.max_deliveries)
            .unserved_grace(self.unserved_grace)
            .session_ttl(Duration::from_secs(600))
            .result_ttl(Duration::from_secs(600));
        match self.lease_ahead {
            Some(jobs) => config.lease_ahead(jobs),
            None => config,
        }
    }

    /// The knobs a worker process was started with (defaults for what is not set).
    pub fn from_env() -> Knobs {
        let ms = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        let defaults = Knobs::default();
        Knobs {
            concurrency: std::env::var("AM2Z_WORKER_CONCURRENCY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.concurrency),
            lease: ms(LEASE_VAR).unwrap_or(defaults.lease),
            sweep: ms(SWEEP_VAR).unwrap_or(defaults.sweep),
            max_deliveries: std::env::var(DELIVERIES_VAR)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.max_deliveries),
            unserved_grace: ms(GRACE_VAR).filter(|g| !g.is_zero()),
            drain: ms(DRAIN_VAR).unwrap_or(defaults.drain),
            lease_ahead: std::env::var(AHEAD_VAR).ok().and_then(|v| v.parse().ok()),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        vec![
            ("AM2Z_WORKER_CONCURRENCY", self.concurrency.to_string()),
            (LEASE_VAR, ms(self.lease)),
            (SWEEP_VAR, ms(self.sweep)),
            (DELIVERIES_VAR, self.max_deliveries.to_string()),
            (
                GRACE_VAR,
                self.unserved_grace.map_or_else(|| "0".to_owned(), ms),
            ),
            (DRAIN_VAR, ms(self.drain)),
            (
                AHEAD_VAR,
                self.lease_ahead.map_or_else(String::new, |n| n.to_string()),
            ),
        ]
    }
}

/// The environment that runs a process under `libfaketime` with its clock moved by `offset`
/// (`"+30s"`, `"-30s"`), or `None` when the library is not installed.
pub fn faketime_env(offset: &str) -> Option<Vec<(&'static str, String)>> {
    Path::new(FAKETIME_LIB).exists().then(|| {
        vec![
            ("LD_PRELOAD", FAKETIME_LIB.to_owned()),
            ("FAKETIME", offset.to_owned()),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
        ]
    })
}

/// What a worker process last said about its commits (`counts` lines, and `exit` at the end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Runs it committed.
    pub committed: u64,
    /// Late commits (or releases) Redis refused because the lease had moved on.
    pub refused: u64,
    /// Whether it printed its `exit` line (it drained and stopped in order).
    pub exited: bool,
}

/// A `fault_worker` process. Dropping it thaws, kills and reaps it.
pub struct WorkerProcess {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    counts: Arc<Mutex<Counts>>,
    exit: Option<ExitStatus>,
}

impl WorkerProcess {
    /// Starts the worker binary with `env` (on top of the knobs') and waits for its `ready`.
    pub fn spawn(
        url: &str,
        prefix: &str,
        knobs: &Knobs,
        ledger: &Path,
        env: &[(&str, String)],
    ) -> WorkerProcess {
        let mut command = Command::new(worker_binary());
        command
            .env("AM2Z_REDIS_URL", url)
            .env("AM2Z_QUEUE_PREFIX", prefix)
            .env(LEDGER_VAR, ledger)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in knobs.env() {
            command.env(name, value);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the fault worker starts");
        let stdout = child.stdout.take().expect("its stdout");
        let counts = Arc::new(Mutex::new(Counts::default()));
        let (sender, lines) = channel();
        let seen = Arc::clone(&counts);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(parsed) = parse_counts(&line) {
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = parsed;
                }
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut worker = WorkerProcess {
            pid: child.id(),
            stdin: child.stdin.take(),
            child,
            lines,
            counts,
            exit: None,
        };
        worker.expect_line(&["ready "], READY_WITHIN);
        worker
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What it last reported about its commits.
    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next line of its stdout containing one of `markers`, from that marker on.
    ///
    /// # Panics
    /// When no such line comes `within`.
    pub fn expect_line(&mut self, markers: &[&str], within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = markers.iter().filter_map(|m| line.find(m)).min() {
                        return line[at..].to_owned();
                    }
                }
                Err(_) => panic!("no {markers:?} line from worker {}", self.pid),
            }
        }
    }

    /// `kill -9`: no drain, no release, leases left to expire.
    pub fn kill_9(&mut self) {
        self.cont();
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }

    /// `kill -STOP`: the process freezes, its leases stop being renewed.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// `kill -CONT`.
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    /// `kill -TERM`: the worker drains (stops claiming, finishes within its drain timeout,
    /// releases the rest) and exits.
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Closes its stdin, which a worker takes like SIGTERM.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                // Let the reader thread take the last lines (its `exit` counts).
                std::thread::sleep(Duration::from_millis(20));
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    fn signal(&self, signal: &str) {
        if self.exit.is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill_9();
        }
    }
}

fn parse_counts(line: &str) -> Option<Counts> {
    let at = line.find("counts ").or_else(|| line.find("exit "))?;
    let mut fields = line[at..].split(' ');
    let exited = fields.next()? == "exit";
    Some(Counts {
        committed: fields.next()?.parse().ok()?,
        refused: fields.next()?.parse().ok()?,
        exited,
    })
}

/// The path of the `fault_worker` binary cargo built beside the tests.
pub fn worker_binary() -> PathBuf {
    // The integration test binaries live in `target/<profile>/deps`, the bin one level up.
    let exe = std::env::current_exe().expect("the test binary");
    let dir = exe.parent().expect("its directory");
    let profile = if dir.ends_with("deps") {
        dir.parent().expect("the profile directory")
    } else {
        dir
    };
    profile.join("fault_worker")
}

/// A scene: its own Redis server, a prefix, workers, a ledger directory, a client, and the
/// checker. Dropping it kills its workers and its server and removes its directories.
pub struct Fleet {
    name: String,
    server: RedisServer,
    prefix: String,
    dir: PathBuf,
    knobs: Knobs,
    workers: Vec<WorkerProcess>,
    retired: Vec<WorkerProcess>,
    client: RedisRuntime,
    checker: Arc<Checker>,
    commits: CommitWatch,
    spawned: usize,
}

impl Fleet {
    /// Starts a Redis server (docs/faults.md's defaults), a client, and `workers` workers.
    pub async fn start(name: &str, knobs: Knobs, workers: usize) -> Fleet {
        Fleet::on(RedisServer::start(), name, knobs, workers).await
    }

    /// As [`start`](Self::start), on a server the scenario configured.
    pub async fn on(server: RedisServer, name: &str, knobs: Knobs, workers: usize) -> Fleet {
        let id = RunId::generate();
        let prefix = format!("am2z-fault-{name}");
        let dir = std::env::temp_dir().join(format!("am2z-fleet-{name}-{id}"));
        std::fs::create_dir_all(&dir).expect("a ledger directory");
        let commits = CommitWatch::start(&server, &format!("{prefix}:done"));
        let client = RedisRuntime::new(knobs.config(&server.url(), &prefix).worker(false));
        client.start().await.expect("the client starts");
        let mut fleet = Fleet {
            name: name.to_owned(),
            server,
            prefix,
            dir,
            knobs,
            workers: Vec::new(),
            retired: Vec::new(),
            client,
            checker: Arc::default(),
            commits,
            spawned: 0,
        };
        for _ in 0..workers {
            fleet.spawn();
        }
        fleet
    }

    /// The scene's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Redis server.
    pub fn server(&self) -> &RedisServer {
        &self.server
    }

    /// The Redis server, to kill or restart it.
    pub fn server_mut(&mut self) -> &mut RedisServer {
        &mut self.server
    }

    /// The key prefix of every key of this scene.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The knobs workers start with.
    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    /// The client runtime (not a worker).
    pub fn client(&self) -> &RedisRuntime {
        &self.client
    }

    /// The watch on the scene's terminal transitions.
    pub fn commits(&self) -> &CommitWatch {
        &self.commits
    }

    /// The checker recording this scene's submissions.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// Starts one more worker with the scene's knobs; returns its slot.
    pub fn spawn(&mut self) -> usize {
        let knobs = self.knobs.clone();
        self.spawn_with(&knobs, &[])
    }

    /// Starts one more worker with these knobs and extra environment; returns its slot.
    pub fn spawn_with(&mut self, knobs: &Knobs, env: &[(&str, String)]) -> usize {
        let worker = self.new_worker(knobs, env);
        self.workers.push(worker);
        self.workers.len() - 1
    }

    fn new_worker(&mut self, knobs: &Knobs, env: &[(&str, String)]) -> WorkerProcess {
        let ledger = self.dir.join(format!("worker-{}.log", self.spawned));
        self.spawned += 1;
        WorkerProcess::spawn(&self.server.url(), &self.prefix, knobs, &ledger, env)
    }

    /// The worker in `slot`.
    pub fn worker(&self, slot: usize) -> &WorkerProcess {
        &self.workers[slot]
    }

    /// The worker in `slot`, to signal or wait for.
    pub fn worker_mut(&mut self, slot: usize) -> &mut WorkerProcess {
        &mut self.workers[slot]
    }

    /// How many worker slots there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether the scene has no worker slot.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// `kill -9` of the worker in `slot`; returns its pid.
    pub fn kill_9(&mut self, slot: usize) -> u32 {
        let worker = &mut self.workers[slot];
        worker.kill_9();
        worker.pid()
    }

    /// Starts a fresh worker (the scene's knobs) in `slot`, as a supervisor would after its
    /// process died; the old one is kept for its counts. Returns the new pid.
    pub fn restart(&mut self, slot: usize) -> u32 {
        let knobs = self.knobs.clone();
        self.restart_with(slot, &knobs, &[])
    }

    /// As [`restart`](Self::restart), with these knobs and extra environment.
    pub fn restart_with(&mut self, slot: usize, knobs: &Knobs, env: &[(&str, String)]) -> u32 {
        let fresh = self.new_worker(knobs, env);
        let pid = fresh.pid();
        let old = std::mem::replace(&mut self.workers[slot], fresh);
        self.retired.push(old);
        pid
    }

    /// The supervisor's pass: restarts every worker whose process exited; returns how many.
    pub fn restart_exited(&mut self) -> usize {
        let exited: Vec<usize> = (0..self.workers.len())
            .filter(|&slot| self.workers[slot].try_exit().is_some())
            .collect();
        for &slot in &exited {
            self.restart(slot);
        }
        exited.len()
    }

    /// Every worker process this scene started, live or not.
    pub fn all_workers(&self) -> impl Iterator<Item = &WorkerProcess> {
        self.workers.iter().chain(&self.retired)
    }

    /// Late commits refused across every worker this scene started (as last reported).
    pub fn refused_commits(&self) -> u64 {
        self.all_workers().map(|w| w.counts().refused).sum()
    }

    /// `n` fresh session ids, tagged for reading.
    pub fn sessions(&self, n: usize, tag: &str) -> Vec<SessionId> {
        (0..n)
            .map(|i| SessionId::new(format!("{tag}-{i}-{}", RunId::generate())).expect("valid"))
            .collect()
    }

    /// Submits through the client and records the submission (ok, failed or unknown).
    pub async fn submit<P>(
        &self,
        session: &SessionId,
        processor: &P,
        input: P::Input,
    ) -> Option<RunHandle>
    where
        P: Processor,
        P::Input: Serialize,
    {
        self.submitter().submit(session, processor, input).await
    }

    /// A handle that submits and records from another task (while the scene injects faults).
    pub fn submitter(&self) -> Submitter {
        Submitter {
            client: self.client.clone(),
            checker: Arc::clone(&self.checker),
        }
    }

    /// An `awaiter` process (the worker binary serving nothing) that waits for `handles` and
    /// prints `done <id> <pid>` or `failed <error>` for each, in order.
    pub fn awaiter(&mut self, handles: &[RunHandle]) -> WorkerProcess {
        let handles = serde_json::to_string(handles).expect("handles encode");
        let knobs = self.knobs.clone();
        self.new_worker(
            &knobs,
            &[(ROLE_VAR, "awaiter".to_owned()), (HANDLES_VAR, handles)],
        )
    }

    /// Every execution the scene's workers recorded.
    pub fn ledger(&self) -> Ledger {
        Ledger::read(&self.dir)
    }

    /// Polls `condition` every 10 ms until it holds.
    ///
    /// # Panics
    /// When it does not hold `within`, naming `what`.
    pub async fn until(
        &self,
        what: &str,
        within: Duration,
        mut condition: impl FnMut(&Fleet) -> bool,
    ) {
        let begin = Instant::now();
        while !condition(self) {
            assert!(
                begin.elapsed() < within,
                "{}: {what} within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for quiescence (every ok submission's outcome, for at most `within`; every
    /// session idle), judges the scene, then stops its sessions and checks they left no key.
    pub async fn check(&self, scenario: &str, within: Duration) -> Report {
        self.checker
            .check(scenario, self, &self.commits, within)
            .await
    }

    /// Stops the client (workers and server stop when the fleet drops).
    pub async fn stop(&self) {
        let _ = self.client.stop().await;
    }
}

/// Submits runs of a scene and records each submission with its checker.
#[derive(Clone)]
pub struct Submitter {
    client: RedisRuntime,
    checker: Arc<Checker>,
}

impl Submitter {
    /// Submits through the scene's client and records the submission (ok, failed or
    /// unknown: a call that errs without saying whether it wrote, or takes over 5 s).
    pub async fn submit<P>(
        &self,
        session: &SessionId,
        processor: &P,
        input: P::Input,
    ) -> Option<RunHandle>
    where
        P: Processor,
        P::Input: Serialize,
    {
        let submitted = tokio::time::timeout(
            SUBMIT_TIMEOUT,
            self.client.submit(session, processor, input),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                processor: processor.name().to_owned(),
                limit: SUBMIT_TIMEOUT,
            })
        });
        self.checker.record(session, submitted)
    }

    /// The scene's checker.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.workers.clear();
        self.retired.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
