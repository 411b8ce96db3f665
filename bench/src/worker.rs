//! Worker processes: the `worker` subcommand of this binary, and the handle the bench keeps
//! on each one it spawns (so the bench owns its worker code and kills only its own children).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use am2z::{Error, RedisConfig, RedisRuntime, Runtime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::workflows::serve_all;

/// TTL of everything the bench leaves behind (stats keys outlive `stop_session`).
pub(crate) const KEY_TTL: Duration = Duration::from_secs(600);

/// How long a worker gets to finish its runs after being told to stop, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// How often a worker with `progress` reports its committed runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(1);

/// `am2z-bench worker <url> <prefix> <concurrency> [progress]`: serves every bench processor
/// until its standard input closes, then drains and exits. Prints `ready <pid>` once it
/// claims (its own pid: a wrapper such as `perf record` may stand between it and the
/// parent); with `progress`, then `done <n>` whenever the runs it committed changed, at
/// most every millisecond, so the parent sees completions without asking Redis.
#[allow(clippy::print_stdout)] // the parent reads `ready` and `done` on stdout
pub(crate) async fn serve(
    url: &str,
    prefix: &str,
    concurrency: usize,
    progress: bool,
) -> Result<(), Error> {
    // The environment's `AM2Z_*` settings (`AM2Z_LEASE_AHEAD`, say, for A/B runs), as a worker
    // of an application takes them; the bench's own choices over them.
    let config = RedisConfig::from_env()?
        .url(url)
        .prefix(prefix)
        .worker_concurrency(concurrency)
        .step_jobs(crate::step_jobs())
        .result_ttl(KEY_TTL)
        .session_ttl(KEY_TTL);
    let runtime = RedisRuntime::new(config);
    serve_all(&runtime);
    runtime.start().await?;
    println!("ready {}", std::process::id());
    let reporter = progress.then(|| {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut reported = 0;
            loop {
                tick.tick().await;
                let done = runtime.committed_runs();
                if done != reported {
                    reported = done;
                    println!("done {done}");
                }
            }
        })
    });
    // Any input or EOF ends the worker: the parent closes our stdin to stop us.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    runtime.drain(Duration::from_secs(10)).await
}

/// A worker process this bench spawned.
pub(crate) struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The worker's process id as it reported it (for `/proc` and `CLIENT LIST`; not the
    /// wrapper's, when `AM2Z_BENCH_WORKER_WRAP` runs it under one).
    pub(crate) pid: u32,
    /// Runs it committed, as last reported (with `progress`).
    done: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
}

impl WorkerProcess {
    /// Spawns a worker on `prefix` and waits until it is claiming. With `progress` it
    /// reports the runs it committed ([`done`](Self::done)).
    ///
    /// `AM2Z_BENCH_WORKER_WRAP` (e.g. `perf record -o /tmp/w.data --` or `valgrind
    /// --tool=callgrind`) runs each worker under that command, to profile the worker side of
    /// a scenario.
    pub(crate) async fn spawn(
        url: &str,
        prefix: &str,
        concurrency: usize,
        progress: bool,
    ) -> Result<Self, Error> {
        let exe = std::env::current_exe().map_err(Error::from)?;
        let wrap = std::env::var("AM2Z_BENCH_WORKER_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("worker")
            .arg(url)
            .arg(prefix)
            .arg(concurrency.to_string())
            .args(progress.then_some("progress"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::from)?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::unavailable("bench worker", "no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let pid = match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("ready ") => line["ready ".len()..]
                .parse::<u32>()
                .map_err(|_| Error::unavailable("bench worker", format!("said {line:?}")))?,
            other => {
                let _ = child.kill().await;
                return Err(Error::unavailable(
                    "bench worker",
                    format!("did not report ready: {other:?}"),
                ));
            }
        };
        // Read every line it prints (a full pipe would block it), keeping the last count.
        let done = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&done);
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(n) = line.strip_prefix("done ").and_then(|n| n.parse().ok()) {
                    count.store(n, Ordering::Release);
                }
            }
        });
        Ok(WorkerProcess {
            child,
            stdin,
            pid,
            done,
            reader,
        })
    }

    /// Runs this worker committed, as it last reported (spawned with `progress`; within a
    /// millisecond or so of the commit).
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// CPU time (user + system) the process used so far, in seconds (`/proc/<pid>/stat`,
    /// at the usual 100 ticks per second).
    pub(crate) fn cpu_seconds(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                // Fields after the `(comm)`, which may hold spaces: state is field 3,
                // utime 14 and stime 15.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: f64 = fields.get(11)?.parse().ok()?;
                let stime: f64 = fields.get(12)?.parse().ok()?;
                Some((utime + stime) / 100.0)
            })
            .unwrap_or(0.0)
    }

    /// Closes its stdin (it drains and exits); kills it (this pid only) if it lingers.
    pub(crate) async fn stop(mut self) -> Result<(), Error> {
        drop(self.stdin.take());
        self.reader.abort();
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(status) => {
                let status = status.map_err(Error::from)?;
                if !status.success() {
                    return Err(Error::unavailable(
                        "bench worker",
                        format!("pid {} exited with {status}", self.pid),
                    ));
                }
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                Err(Error::unavailable(
                    "bench worker",
                    format!("pid {} did not stop in time and was killed", self.pid),
                ))
            }
        }
    }
}
