//! Prometheus metrics of a runtime, in the text exposition format (version 0.0.4).
//!
//! [`Metrics`] counts what a runtime's event stream says (runs started and ended, and steps,
//! by processor, and step durations) from the moment it is made, and reads gauges (queue
//! depth, runs kept, dead letters, sessions, workers, leases) from the runtime each time it
//! renders. Serve [`Metrics::render`]'s text at `/metrics` with the content type
//! [`CONTENT_TYPE`].
//!
//! ```
//! # async fn demo() -> Result<(), am2z::Error> {
//! use am2z::metrics::Metrics;
//! use am2z::{processor_fn, Error, Executes, LocalRuntime, Runtime};
//!
//! async fn shout(s: String) -> Result<String, Error> { Ok(s.to_uppercase()) }
//!
//! let runtime = LocalRuntime::new();
//! runtime.start().await?;
//! let metrics = Metrics::new(&runtime); // counts from now on
//! runtime.execute(&processor_fn(shout).named("shout"), "hi".to_owned()).await?;
//! let text = metrics.render().await?;
//! assert!(text.contains("# TYPE am2z_runs_completed_total counter"));
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # Process-local and fleet-wide
//!
//! On the Redis runtime every process sees every process's events (they are forwarded
//! through Redis), so the event counters of one collector count the whole fleet's runs and
//! steps, since the collector started; run several collectors and each counts them all (do
//! not sum them across processes). On a Redis Cluster a process hears the events of the
//! sessions it follows only. The gauges read from Redis (sessions, runs kept, dead letters,
//! workers) are fleet-wide too; the step gauges (`am2z_queue_depth`, `am2z_steps_running`),
//! the leases and the commits are this process's own. `docs/metrics.md` lists every metric.
//!
//! Labels are bounded: one `processor` label per processor name (at most
//! [`MAX_PROCESSORS`]; names past that are counted under `processor="_other"`), never a
//! session or a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::runtime::{Inspect, PageRequest};
use crate::{Error, Event, EventKind, LocalRuntime};

/// The content type of the text [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The most processor names counted apart; events of further names are counted under
/// `processor="_other"`, so a scrape stays small whatever the fleet runs.
pub const MAX_PROCESSORS: usize = 1000;

/// The upper bounds (in seconds) of the step duration histogram's buckets (`+Inf` follows).
pub const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The most sessions a render reads (pages of [`MAX_PAGE`](crate::runtime::inspect::MAX_PAGE));
/// past that the session gauges count the first ones only and `am2z_sessions_truncated` is 1.
pub const MAX_SESSIONS_READ: usize = 20 * crate::runtime::inspect::MAX_PAGE;

/// The most workers given their own `am2z_worker_up` sample.
pub const MAX_WORKERS_LISTED: usize = 256;

/// Figures a runtime keeps about this process alone, beyond what [`Inspect`] answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessFigures {
    /// Jobs this process holds a lease on now (a distributed runtime's workers).
    pub leases_held: Option<u64>,
    /// Runs this process executed and committed.
    pub committed_runs: Option<u64>,
    /// Commits of this process that were refused because the lease had moved on.
    pub refused_commits: Option<u64>,
}

/// A runtime metrics can be read from: [`Inspect`], a cheap clone, and this process's own
/// figures.
pub trait Source: Inspect + Clone {
    /// This process's figures; by default none.
    fn process_figures(&self) -> ProcessFigures {
        ProcessFigures::default()
    }
}

impl Source for LocalRuntime {}

#[cfg(feature = "redis")]
impl Source for crate::RedisRuntime {
    fn process_figures(&self) -> ProcessFigures {
        ProcessFigures {
            leases_held: Some(self.runs_in_flight() as u64),
            committed_runs: Some(self.committed_runs()),
            refused_commits: Some(self.refused_commits()),
        }
    }
}

/// Collects a runtime's metrics: counts its events from [`new`](Metrics::new) on, and reads
/// its gauges at each [`render`](Metrics::render).
///
/// The collecting task ends when the `Metrics` is dropped (or the runtime is gone).
pub struct Metrics<R> {
    runtime: R,
    counts: Arc<Mutex<Counts>>,
    _collector: DropGuard,
}

impl<R: Source> Metrics<R> {
    /// Starts counting `runtime`'s events (it subscribes at once: every event published
    /// after this call is counted).
    ///
    /// # Panics
    /// Outside a Tokio runtime (the collector is a task).
    pub fn new(runtime: &R) -> Self {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let stop = CancellationToken::new();
        let mut events = runtime.subscribe();
        let collected = Arc::clone(&counts);
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = stopped.cancelled() => break,
                    event = events.next_event() => event,
                };
                let Some(event) = event else { break };
                let mut counts = lock(&collected);
                counts.missed = events.missed();
                counts.count(&event);
            }
        });
        Metrics {
            runtime: runtime.clone(),
            counts,
            _collector: stop.drop_guard(),
        }
    }

    /// The runtime's metrics now: the event counters, then the gauges read from the runtime
    /// (a few bounded calls: the sessions, at most [`MAX_SESSIONS_READ`] of them, the queue
    /// stats, the runtime stats and the workers).
    ///
    /// # Errors
    /// What the runtime's reads return, e.g. [`Error::Unavailable`] when Redis cannot be
    /// reached.
    pub async fn render(&self) -> Result<String, Error> {
        let counts = lock(&self.counts).clone();
        let gauges = Gauges::read(&self.runtime).await?;
        let mut out = Exposition::default();
        counts.write(&mut out);
        gauges.write(&mut out);
        Ok(out.text)
    }
}

impl<R> std::fmt::Debug for Metrics<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The gauges of `runtime` alone (no event counters: nothing collects them), for a server of
/// your own that does not keep a [`Metrics`].
///
/// # Errors
/// As [`Metrics::render`].
pub async fn render<R: Source>(runtime: &R) -> Result<String, Error> {
    let gauges = Gauges::read(runtime).await?;
    let mut out = Exposition::default();
    gauges.write(&mut out);
    Ok(out.text)
}

/// A lock that a panic elsewhere does not poison for the scrape (the counts stay valid:
/// every update is a few additions).
fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The label under which processors past [`MAX_PROCESSORS`] are counted.
const OTHER: &str = "_other";

/// What the events said, since the collector started.
#[derive(Debug, Clone, Default)]
struct Counts {
    runs: BTreeMap<String, RunCounts>,
    steps: BTreeMap<String, StepCounts>,
    /// Events the collector skipped because it fell behind.
    missed: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct RunCounts {
    started: u64,
    completed: u64,
    failed: u64,
}

#[derive(Debug, Clone, Default)]
struct StepCounts {
    started: u64,
    completed: u64,
    retried: u64,
    failed: u64,
    durations: Histogram,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket of [`DURATION_BUCKETS`] (not cumulative; `+Inf` is `count`).
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[bucket] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// The entry of `name` in `map`, or the `_other` entry once `map` is full.
fn entry<'m, T: Default>(map: &'m mut BTreeMap<String, T>, name: &str) -> &'m mut T {
    let name = if map.contains_key(name) || map.len() < MAX_PROCESSORS {
        name
    } else {
        OTHER
    };
    map.entry(name.to_owned()).or_default()
}

impl Counts {
    fn count(&mut self, event: &Event) {
        let processor = event.processor.as_deref().unwrap_or("");
        match &event.kind {
            EventKind::StepStarted { .. } => entry(&mut self.steps, processor).started += 1,
            EventKind::StepCompleted { execution_time, .. } => {
                let step = entry(&mut self.steps, processor);
                step.completed += 1;
                step.durations.observe(*execution_time);
            }
            EventKind::StepRetrying { .. } => entry(&mut self.steps, processor).retried += 1,
            EventKind::StepFailed { .. } => entry(&mut self.steps, processor).failed += 1,
            EventKind::RunStarted => entry(&mut self.runs, processor).started += 1,
            EventKind::RunCompleted { .. } => entry(&mut self.runs, processor).completed += 1,
            EventKind::RunFailed { .. } => entry(&mut self.runs, processor).failed += 1,
            _ => {}
        }
    }

    fn write(&self, out: &mut Exposition) {
        let run_counter = |out: &mut Exposition, name, help, value: fn(&RunCounts) -> u64| {
            out.family(name, help, "counter");
            for (processor, runs) in &self.runs {
                out.sample(name, &[("processor", processor)], value(runs));
            }
        };
        run_counter(
            out,
            "am2z_runs_started_total",
            "Runs that started executing, by the run's processor or workflow.",
            |r| r.started,
        );
        run_counter(
            out,
            "am2z_runs_completed_total",
            "Runs that completed, by the run's processor or workflow.",
            |r| r.completed,
        );
        run_counter(
            out,
            "am2z_runs_failed_total",
            "Runs that failed, by the run's processor or workflow.",
            |r| r.failed,
        );
        let step_counter = |out: &mut Exposition, name, help, value: fn(&StepCounts) -> u64| {
            out.family(name, help, "counter");
            for (processor, steps) in &self.steps {
                out.sample(name, &[("processor", processor)], value(steps));
            }
        };
        step_counter(
            out,
            "am2z_steps_started_total",
            "Step attempts started, by processor.",
            |s| s.started,
        );
        step_counter(
            out,
            "am2z_steps_completed_total",
            "Steps that succeeded, by processor.",
            |s| s.completed,
        );
        step_counter(
            out,
            "am2z_steps_retried_total",
            "Step attempts that failed and were retried, by processor.",
            |s| s.retried,
        );
        step_counter(
            out,
            "am2z_steps_failed_total",
            "Steps that failed for good (no attempt left, or not retryable), by processor.",
            |s| s.failed,
        );
        let name = "am2z_step_duration_seconds";
        out.family(
            name,
            "Duration of the successful step attempts, by processor.",
            "histogram",
        );
        for (processor, steps) in &self.steps {
            let histogram = &steps.durations;
            let mut cumulative = 0;
            for (le, in_bucket) in DURATION_BUCKETS.iter().zip(histogram.buckets) {
                cumulative += in_bucket;
                let le = le.to_string();
                out.sample(
                    "am2z_step_duration_seconds_bucket",
                    &[("processor", processor), ("le", &le)],
                    cumulative,
                );
            }
            out.sample(
                "am2z_step_duration_seconds_bucket",
                &[("processor", processor), ("le", "+Inf")],
                histogram.count,
            );
            out.sample(
                "am2z_step_duration_seconds_sum",
                &[("processor", processor)],
                histogram.sum,
            );
            out.sample(
                "am2z_step_duration_seconds_count",
                &[("processor", processor)],
                histogram.count,
            );
        }
        out.family(
            "am2z_events_missed_total",
            "Events the metrics collector skipped because it fell behind (process-local).",
            "counter",
        );
        out.sample("am2z_events_missed_total", &[], self.missed);
    }
}

/// What the runtime answers at render time.
#[derive(Debug, Default)]
struct Gauges {
    sessions: u64,
    truncated: bool,
    live_runs: u64,
    completed_runs: u64,
    failed_runs: u64,
    dead_letters: u64,
    waiting: u64,
    active: u64,
    delayed: u64,
    steps_running: u64,
    workers: Vec<String>,
    process: ProcessFigures,
}

impl Gauges {
    async fn read<R: Source>(runtime: &R) -> Result<Self, Error> {
        let mut gauges = Gauges::default();
        let mut page = PageRequest::first(crate::runtime::inspect::MAX_PAGE);
        loop {
            let sessions = runtime.sessions(page.clone()).await?;
            for session in &sessions.items {
                gauges.sessions += 1;
                gauges.live_runs += session.live_runs;
                gauges.completed_runs += session.completed;
                gauges.failed_runs += session.failed;
                gauges.dead_letters += session.dead_lettered;
            }
            match sessions.next {
                Some(next) if (gauges.sessions as usize) < MAX_SESSIONS_READ => {
                    page = PageRequest::after(next, page.limit);
                }
                Some(_) => {
                    gauges.truncated = true;
                    break;
                }
                None => break,
            }
        }
        for queue in runtime.queue_stats().await?.values() {
            gauges.waiting += queue.waiting;
            gauges.active += queue.active;
            gauges.delayed += queue.delayed;
        }
        gauges.steps_running = runtime.stats().await?.running;
        gauges.workers = runtime.workers().await?.into_iter().map(|w| w.id).collect();
        gauges.workers.sort();
        gauges.process = runtime.process_figures();
        Ok(gauges)
    }

    fn write(&self, out: &mut Exposition) {
        let gauge = |out: &mut Exposition, name: &str, help: &str, value: u64| {
            out.family(name, help, "gauge");
            out.sample(name, &[], value);
        };
        gauge(
            out,
            "am2z_sessions",
            "Sessions with work or state (fleet-wide).",
            self.sessions,
        );
        gauge(
            out,
            "am2z_sessions_truncated",
            "1 when there were more sessions than a scrape reads, and the session gauges count the first ones only.",
            u64::from(self.truncated),
        );
        let name = "am2z_runs";
        out.family(
            name,
            "Runs by state, summed over sessions: live (submitted, not ended), and the ended runs still kept (fleet-wide).",
            "gauge",
        );
        for (state, value) in [
            ("live", self.live_runs),
            ("completed", self.completed_runs),
            ("failed", self.failed_runs),
        ] {
            out.sample(name, &[("state", state)], value);
        }
        gauge(
            out,
            "am2z_dead_letters",
            "Dead letters kept, summed over sessions (fleet-wide).",
            self.dead_letters,
        );
        let name = "am2z_queue_depth";
        out.family(
            name,
            "Step attempts by state, summed over processors and sessions: waiting for a concurrency slot or a rate-limit token, active, or delayed (a delay or a retry backoff) (process-local on Redis).",
            "gauge",
        );
        for (state, value) in [
            ("waiting", self.waiting),
            ("active", self.active),
            ("delayed", self.delayed),
        ] {
            out.sample(name, &[("state", state)], value);
        }
        gauge(
            out,
            "am2z_steps_running",
            "Step attempts running now (process-local).",
            self.steps_running,
        );
        gauge(
            out,
            "am2z_workers",
            "Live workers (fleet-wide).",
            self.workers.len() as u64,
        );
        let name = "am2z_worker_up";
        out.family(
            name,
            "1 for each live worker, by worker id (the first 256 by id).",
            "gauge",
        );
        for worker in self.workers.iter().take(MAX_WORKERS_LISTED) {
            out.sample(name, &[("worker", worker)], 1u64);
        }
        let process = &self.process;
        if let Some(leases) = process.leases_held {
            gauge(
                out,
                "am2z_leases_held",
                "Jobs this process holds a lease on now (process-local).",
                leases,
            );
        }
        let counter = |out: &mut Exposition, name: &str, help: &str, value: u64| {
            out.family(name, help, "counter");
            out.sample(name, &[], value);
        };
        if let Some(committed) = process.committed_runs {
            counter(
                out,
                "am2z_committed_runs_total",
                "Runs this process executed and committed (process-local).",
                committed,
            );
        }
        if let Some(refused) = process.refused_commits {
            counter(
                out,
                "am2z_refused_commits_total",
                "Commits of this process refused because the lease had moved on: the run was retried elsewhere or its session stopped (process-local).",
                refused,
            );
        }
    }
}

/// A sample's value.
trait Value {
    fn write_to(&self, out: &mut String);
}

impl Value for u64 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// The text exposition format, written a family at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// A family's `# HELP` and `# TYPE` lines (before its samples).
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        value.write_to(&mut self.text);
        self.text.push('\n');
    }
}

/// A HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("a\\b\"c\nd"), "a\\\\b\"c\\nd");
        let mut out = Exposition::default();
        out.family("x_total", "Help\nwith a line", "counter");
        out.sample("x_total", &[("processor", "we\"ird\\")], 3u64);
        assert_eq!(
            out.text,
            "# HELP x_total Help\\nwith a line\n# TYPE x_total counter\nx_total{processor=\"we\\\"ird\\\\\"} 3\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let mut counts = Counts::default();
        let event = |ms| Event {
            session: crate::SessionId::default_session(),
            run_id: None,
            processor: Some("p".into()),
            at: std::time::SystemTime::now(),
            kind: EventKind::StepCompleted {
                attempt: 1,
                execution_time: Duration::from_millis(ms),
            },
        };
        for ms in [0, 3, 3, 700, 400_000] {
            counts.count(&event(ms));
        }
        let mut out = Exposition::default();
        counts.write(&mut out);
        let text = out.text;
        assert!(
            text.contains("am2z_step_duration_seconds_bucket{processor=\"p\",le=\"0.001\"} 1\n")
        );
        assert!(
            text.contains("am2z_step_duration_seconds_bucket{processor=\"p\",le=\"0.005\"} 3\n")
        );
        assert!(text.contains("am2z_step_duration_seconds_bucket{processor=\"p\",le=\"1\"} 4\n"));
        assert!(text.contains("am2z_step_duration_seconds_bucket{processor=\"p\",le=\"300\"} 4\n"));
        assert!(
            text.contains("am2z_step_duration_seconds_bucket{processor=\"p\",le=\"+Inf\"} 5\n")
        );
        assert!(text.contains("am2z_step_duration_seconds_count{processor=\"p\"} 5\n"));
    }

    #[test]
    fn a_render_can_be_served_from_any_thread() {
        fn is_send<T: Send>(_: &T) {}
        fn is_shared<T: Send + Sync>() {}
        is_shared::<Metrics<LocalRuntime>>();
        let runtime = LocalRuntime::new();
        is_send(&render(&runtime));
    }

    #[test]
    fn processors_past_the_limit_are_counted_together() {
        let mut counts = Counts::default();
        for i in 0..MAX_PROCESSORS + 5 {
            counts.count(&Event {
                session: crate::SessionId::default_session(),
                run_id: None,
                processor: Some(format!("p{i}").into()),
                at: std::time::SystemTime::now(),
                kind: EventKind::StepStarted { attempt: 1 },
            });
        }
        assert_eq!(counts.steps.len(), MAX_PROCESSORS + 1);
        assert_eq!(counts.steps.get(OTHER).map(|s| s.started), Some(5));
    }
}
