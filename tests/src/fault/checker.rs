//! The checker, after Jepsen: every submission is recorded as ok, failed or unknown; after
//! quiescence the scene's Redis is compared with what the client was told and with the
//! workers' execution ledger.
//!
//! - **lost**: an ok submission with no awaitable outcome. Each is classified: if its run id is
//!   in the server's append-only file, Redis had it durably and the *runtime* dropped it;
//!   otherwise *Redis forgot* it (possible only with weaker persistence than `appendfsync
//!   always`).
//! - **double commits**: a run whose terminal outcome was published more than once on the
//!   `done` channel. `commit.lua`, the sweeper's dead-letter and its unserved failure publish
//!   `done` in the same script that writes the outcome, so the channel is an exact observable
//!   of terminal transitions (a [`CommitWatch`] subscribes before the first submission and
//!   re-subscribes after a Redis restart).
//! - **duplicate executions**: step attempts the ledger shows more than once (at-least-once).
//! - **half-written**: a job hash in no queue, delayed set or lease set.
//! - **stray keys**: a key outside the scene's prefix, or tagged with a session the scene
//!   never used; **left after stop**: keys of a session after `stop_session`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use am2z::{Error, RunHandle, RunId, Runtime, SessionId};
use futures::StreamExt;

use super::server::RedisServer;
use super::worker::Fleet;

/// What the client was told about one submission.
#[derive(Debug, Clone)]
pub enum Submission {
    /// Acknowledged: it must reach a terminal outcome.
    Ok(RunHandle),
    /// Refused in a way that says nothing was written (quota, payload, encoding).
    Failed(SessionId, Error),
    /// The call failed without saying whether the job was written (connection lost, timeout):
    /// it must be terminal or absent, never half-written.
    Unknown(SessionId, Error),
}

/// The submissions of a scene.
#[derive(Debug, Default)]
pub struct Checker {
    submissions: Mutex<Vec<Submission>>,
}

impl Checker {
    /// Records a submission's result; returns the handle when it was acknowledged.
    pub fn record(
        &self,
        session: &SessionId,
        submitted: Result<RunHandle, Error>,
    ) -> Option<RunHandle> {
        let (submission, handle) = match submitted {
            Ok(handle) => (Submission::Ok(handle.clone()), Some(handle)),
            Err(error @ (Error::Unavailable { .. } | Error::Timeout { .. })) => {
                (Submission::Unknown(session.clone(), error), None)
            }
            Err(error) => (Submission::Failed(session.clone(), error), None),
        };
        self.lock().push(submission);
        handle
    }

    /// Every submission so far.
    pub fn submissions(&self) -> Vec<Submission> {
        self.lock().clone()
    }

    /// The acknowledged submissions.
    pub fn ok(&self) -> Vec<RunHandle> {
        self.lock()
            .iter()
            .filter_map(|s| match s {
                Submission::Ok(handle) => Some(handle.clone()),
                _ => None,
            })
            .collect()
    }

    fn sessions(&self) -> BTreeSet<SessionId> {
        self.lock()
            .iter()
            .map(|s| match s {
                Submission::Ok(handle) => handle.session.clone(),
                Submission::Failed(session, _) | Submission::Unknown(session, _) => session.clone(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Submission>> {
        self.submissions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn check(
        &self,
        scenario: &str,
        fleet: &Fleet,
        commits: &CommitWatch,
        within: Duration,
    ) -> Report {
        let server = fleet.server();
        let client = fleet.client();
        let submissions = self.submissions();
        let mut report = Report {
            scenario: scenario.to_owned(),
            submitted: submissions.len(),
            ..Report::default()
        };
        for submission in &submissions {
            match submission {
                Submission::Ok(_) => report.ok += 1,
                Submission::Failed(..) => report.failed += 1,
                Submission::Unknown(..) => report.unknown += 1,
            }
        }
        // Every acknowledged run must reach an outcome any process can read.
        let ok = self.ok();
        let outcomes: Vec<(RunHandle, Outcome)> = futures::stream::iter(ok)
            .map(|handle| async move {
                let outcome = client
                    .wait::<serde_json::Value>(&handle, Some(within))
                    .await
                    .map(|result| result.output)
                    .map_err(|failure| failure.error);
                (handle, outcome)
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let aof = append_only_text(server);
        for (handle, outcome) in outcomes {
            let run = handle.run_id.to_string();
            match &outcome {
                Ok(_) => report.completed += 1,
                Err(error) if is_lost(error) => {
                    report.lost += 1;
                    if !aof.contains(&run) {
                        report.redis_forgot += 1;
                    }
                    report.lost_runs.push(run.clone());
                }
                Err(_) => report.terminal_failures += 1,
            }
            report.outcomes.insert(handle.run_id, outcome);
        }
        let sessions = self.sessions();
        let prefix = fleet.prefix();
        // Unknown submissions that were written run to their end too: wait for idle sessions.
        let idle_by = Instant::now() + within;
        loop {
            let busy: usize = sessions
                .iter()
                .map(|s| {
                    let tag = session_prefix(prefix, s);
                    ["queue", "delayed", "leases", "calls"]
                        .iter()
                        .map(|set| count(server, &["ZCARD", &format!("{tag}{set}")]))
                        .sum::<usize>()
                })
                .sum();
            if busy == 0 || Instant::now() >= idle_by {
                report.left_busy = busy;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The `done` message of the last commit may still be on its way to the watcher.
        let terminal = report.completed + report.terminal_failures;
        let seen_by = Instant::now() + Duration::from_secs(2);
        while commits.total() < terminal && Instant::now() < seen_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counted = commits.counts();
        report.commits_seen = counted.values().sum();
        report.double_commits = counted.values().filter(|&&n| n > 1).count();
        report.refused_commits = fleet.refused_commits();
        let ledger = fleet.ledger();
        report.executions = ledger.len();
        report.duplicate_executions = ledger.duplicates().values().map(|e| e.len() - 1).sum();
        // Keys: inside the prefix, tagged with the scene's sessions (or a global tag, which
        // starts with `:` as no session id can), no half-written job.
        let tags: BTreeSet<String> = sessions.iter().map(|s| format!("{{{s}}}")).collect();
        for key in server.keys("*") {
            let inside = key.starts_with(&format!("{prefix}:"));
            let tag_ok = match (key.find('{'), key.find('}')) {
                (Some(open), Some(close)) if open < close => {
                    let tag = &key[open..=close];
                    tag.starts_with("{:") || tags.contains(tag)
                }
                _ => true,
            };
            if !inside || !tag_ok {
                report.stray_keys.push(key);
            }
        }
        for session in &sessions {
            let layout = crate::layout::Layout::new(&server.url(), prefix, session.as_str());
            for job in layout.jobs() {
                if layout.state(&job) == "gone" {
                    report.half_written += 1;
                }
            }
        }
        // A stopped session leaves zero keys.
        for session in &sessions {
            if let Err(error) = client.stop_session(session).await {
                report.stop_errors.push(error.to_string());
            }
            report.left_after_stop += server
                .keys(&format!("{}*", session_prefix(prefix, session)))
                .len();
        }
        report
    }
}

/// A waited-for outcome: the output as JSON, or the terminal error.
pub type Outcome = Result<serde_json::Value, Error>;

/// An outcome that is not terminal: the run was not found or never finished.
fn is_lost(error: &Error) -> bool {
    match error {
        Error::Timeout { .. } | Error::SessionStopped { .. } | Error::Cancelled { .. } => true,
        Error::NotFound { what, .. } => what == "run",
        _ => false,
    }
}

fn session_prefix(prefix: &str, session: &SessionId) -> String {
    format!("{prefix}:{{{session}}}:")
}

fn count(server: &RedisServer, args: &[&str]) -> usize {
    server.cli(args).parse().unwrap_or(0)
}

/// Everything in the server's append-only files, as text (run ids are plain ASCII in it).
fn append_only_text(server: &RedisServer) -> String {
    let mut text = String::new();
    let mut dirs = vec![server.dir().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains("appendonly") {
                text.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&path).unwrap_or_default(),
                ));
            }
        }
    }
    text
}

/// The verdict on a scene. [`Display`](fmt::Display) is one line, printed by each scenario.
#[derive(Debug, Default)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Submissions made.
    pub submitted: usize,
    /// Acknowledged submissions.
    pub ok: usize,
    /// Submissions refused outright.
    pub failed: usize,
    /// Submissions whose fate the client could not know.
    pub unknown: usize,
    /// Acknowledged runs that completed with an output.
    pub completed: usize,
    /// Acknowledged runs that ended in a typed failure.
    pub terminal_failures: usize,
    /// Acknowledged runs without an outcome (must be 0).
    pub lost: usize,
    /// Of the lost, those Redis itself did not persist.
    pub redis_forgot: usize,
    /// The lost runs' ids.
    pub lost_runs: Vec<String>,
    /// Runs with more than one terminal transition (must be 0).
    pub double_commits: usize,
    /// Terminal transitions observed on the `done` channel.
    pub commits_seen: usize,
    /// Late commits Redis refused (workers' reports).
    pub refused_commits: u64,
    /// Processor executions in the ledger.
    pub executions: usize,
    /// Executions beyond the first of each step attempt.
    pub duplicate_executions: usize,
    /// Job hashes in no queue, delayed or lease set.
    pub half_written: usize,
    /// Jobs still queued, delayed or leased when the check gave up waiting.
    pub left_busy: usize,
    /// Keys outside the scene's prefix or sessions.
    pub stray_keys: Vec<String>,
    /// Keys left by stopped sessions.
    pub left_after_stop: usize,
    /// Errors of `stop_session`.
    pub stop_errors: Vec<String>,
    /// Faults the scenario injected.
    pub faults: usize,
    /// Fault to the last orphaned run re-leased (started again by another worker; set by the
    /// scenario).
    pub recovery: Option<Duration>,
    /// Fault to the first orphaned run committed by another worker (set by the scenario).
    pub first_commit: Option<Duration>,
    /// Every acknowledged run's outcome.
    pub outcomes: BTreeMap<RunId, Outcome>,
}

impl Report {
    /// Asserts the invariants every scenario shares: nothing lost, one commit per run,
    /// nothing half-written or left busy, no stray key, stopped sessions empty.
    ///
    /// # Panics
    /// On the first invariant that does not hold, with the report.
    pub fn assert_invariants(&self) {
        assert_eq!(self.lost, 0, "lost runs {:?}: {self}", self.lost_runs);
        assert_eq!(self.double_commits, 0, "double commits: {self}");
        assert_eq!(self.half_written, 0, "half-written jobs: {self}");
        assert_eq!(self.left_busy, 0, "jobs never finished: {self}");
        assert!(
            self.stray_keys.is_empty(),
            "stray keys {:?}: {self}",
            self.stray_keys
        );
        assert_eq!(self.left_after_stop, 0, "keys left after stop: {self}");
        assert!(
            self.stop_errors.is_empty(),
            "{:?}: {self}",
            self.stop_errors
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] runs {} (ok {}, failed {}, unknown {}), completed {}, typed failures {}, faults {}, lost {} (redis forgot {}), double commits {}, commits seen {}, refused late commits {}, executions {}, duplicate executions {}, half-written {}, stray keys {}, keys after stop {}, recovery: all orphans re-leased {}, first orphan committed {}",
            self.scenario,
            self.submitted,
            self.ok,
            self.failed,
            self.unknown,
            self.completed,
            self.terminal_failures,
            self.faults,
            self.lost,
            self.redis_forgot,
            self.double_commits,
            self.commits_seen,
            self.refused_commits,
            self.executions,
            self.duplicate_executions,
            self.half_written,
            self.stray_keys.len(),
            self.left_after_stop,
            seconds(self.recovery),
            seconds(self.first_commit),
        )
    }
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "-".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()))
}

/// Counts (and times) the terminal transitions of a scene's runs: a `redis-cli SUBSCRIBE` to
/// its `done` channel, restarted whenever the server goes away.
pub struct CommitWatch {
    seen: Arc<Mutex<BTreeMap<String, Vec<SystemTime>>>>,
    child: Arc<Mutex<Option<Child>>>,
    done: Arc<AtomicBool>,
}

impl CommitWatch {
    /// Subscribes to `channel` on `server`; returns once the subscription is live.
    ///
    /// # Panics
    /// When the first subscription does not come up within 10 s.
    pub fn start(server: &RedisServer, channel: &str) -> CommitWatch {
        let watch = CommitWatch {
            seen: Arc::default(),
            child: Arc::default(),
            done: Arc::default(),
        };
        let (subscribed, first) = std::sync::mpsc::channel();
        let port = server.port().to_string();
        let channel = channel.to_owned();
        let (seen, child, done) = (
            Arc::clone(&watch.seen),
            Arc::clone(&watch.child),
            Arc::clone(&watch.done),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let spawned = Command::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", &port, "SUBSCRIBE", &channel])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn();
                let Ok(mut process) = spawned else { return };
                let stdout = process.stdout.take();
                *child.lock().unwrap_or_else(|p| p.into_inner()) = Some(process);
                // `message`, the channel, then the payload: one `done` line per run ended,
                // several when one commit ended several runs.
                let (mut message, mut payload) = (false, false);
                for line in stdout
                    .map(|s| BufReader::new(s).lines())
                    .into_iter()
                    .flatten()
                    .map_while(Result::ok)
                {
                    if line == "subscribe" {
                        let _ = subscribed.send(());
                    }
                    if line == "message" {
                        (message, payload) = (true, false);
                        continue;
                    }
                    if message && line == channel {
                        (message, payload) = (false, true);
                        continue;
                    }
                    if payload {
                        // `<session> <run>`, then the outcome when it is small: the run
                        // is the second word.
                        if let Some(run) = line.split(' ').nth(1) {
                            seen.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(run.to_owned())
                                .or_default()
                                .push(SystemTime::now());
                        }
                    }
                }
                if let Some(mut process) = child.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = process.kill();
                    let _ = process.wait();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        first
            .recv_timeout(Duration::from_secs(10))
            .expect("the commit watch subscribed");
        watch
    }

    /// Terminal transitions seen per run id.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.lock()
            .iter()
            .map(|(run, at)| (run.clone(), at.len()))
            .collect()
    }

    /// From `fault` to the first terminal transition of one of `runs` seen after it.
    pub fn first_after(&self, runs: &BTreeSet<String>, fault: SystemTime) -> Option<Duration> {
        self.lock()
            .iter()
            .filter(|(run, _)| runs.contains(*run))
            .flat_map(|(_, at)| at.iter())
            .filter_map(|at| at.duration_since(fault).ok())
            .min()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<SystemTime>>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Terminal transitions seen.
    pub fn total(&self) -> usize {
        self.counts().values().sum()
    }
}

impl Drop for CommitWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(mut process) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}
