//! Running a run on behalf of another runtime: a distributed worker executes, through the
//! shared step executor, a run (or one step of a run) that a client submitted elsewhere.
//!
//! The worker hands the executor an [`Embedding`]: the identity the submitter gave the run,
//! how deep in `ctx.call`s it runs, a token the worker fires to cancel it, and [`Hooks`] the
//! executor calls where a distributed run differs from a local one (admission by limits that
//! hold across processes, `ctx.call` as a job of its own, the largest value that may leave the
//! process). When asked to, the executor also hands the run's own waits (a step's `delay`, a
//! retry's backoff) back to the worker instead of sleeping them, so that a waiting step does
//! not hold a worker slot.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::portable::Json;
use crate::{Contract, Error, ProcessorConfig, RunId, SessionId};

/// How an embedded run differs from a local one.
pub(crate) struct Embedding {
    /// The run's id, as its submitter named it.
    pub(crate) run_id: RunId,
    pub(crate) created_at: SystemTime,
    /// The call depth the run starts at: above 0 for a `ctx.call` executed as a child run.
    pub(crate) depth: u32,
    /// The run is one step of a larger run executed step by step elsewhere: the larger run
    /// has the run-level events, once, not each of its steps.
    pub(crate) part_of_run: bool,
    /// Fired by the embedding runtime when the run must stop (its job became moot, its lease
    /// was lost): the run's steps see their tokens fire and get the runtime's cancel grace.
    pub(crate) cancel: CancellationToken,
    pub(crate) hooks: Arc<dyn Hooks>,
    /// See [`Waits`].
    pub(crate) waits: Option<Waits>,
}

/// The run's own step hands its waits back: a step resumed after one starts at `resume`.
pub(crate) struct Waits {
    /// The attempt the step resumes at (0: a fresh step, whose `delay` still applies).
    pub(crate) resume: u32,
    handed_back: Mutex<Option<Wait>>,
}

/// A wait handed back: the attempt that follows it, and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) attempt: u32,
    pub(crate) delay: Duration,
}

impl Waits {
    pub(crate) fn resuming_at(resume: u32) -> Self {
        Waits {
            resume,
            handed_back: Mutex::new(None),
        }
    }

    pub(crate) fn hand_back(&self, wait: Wait) {
        *self.handed_back.lock().unwrap_or_else(|p| p.into_inner()) = Some(wait);
    }

    /// The wait the step handed back, if it did.
    pub(crate) fn handed_back(&self) -> Option<Wait> {
        *self.handed_back.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the executor asks of the runtime that embeds it.
pub(crate) trait Hooks: Send + Sync + 'static {
    /// Admission beyond this process (limits that hold across processes), before each attempt
    /// and again when a step resumes after a `ctx.call`. The returned guard is held while the
    /// attempt runs and gives the admission back when dropped. It never fails: when the shared
    /// limiter cannot be reached it admits (and logs), rather than turn a limiter outage into
    /// failed steps.
    fn admit<'a>(
        &'a self,
        processor: &'static str,
        config: &'a ProcessorConfig,
    ) -> BoxFuture<'a, Box<dyn Send>>;

    /// The largest custom event payload (encoded) that may leave this process.
    fn max_payload_bytes(&self) -> usize;

    /// A step finished for good: it `completed`, or failed with no retry left. The embedding
    /// runtime counts it with the commit that carries the step's outcome, so a step whose
    /// commit never lands (its worker died) is not counted by the execution that is lost.
    fn step_finished(&self, processor: &'static str, completed: bool);

    /// Runs a `ctx.call` as a run of its own (on any worker, the caller's slot free while it
    /// waits); `None`: the call runs inline, as on the local runtime.
    fn call<'a>(&'a self, call: ChildCall<'a>) -> Option<BoxFuture<'a, Result<Json, Error>>>;
}

/// A `ctx.call` to run as a run of its own: the callee's contract, plan fingerprint and input
/// (JSON), and the caller's run, attempt and the depth the callee runs at.
pub(crate) struct ChildCall<'a> {
    pub(crate) session: &'a SessionId,
    pub(crate) run_id: RunId,
    pub(crate) attempt: u32,
    pub(crate) depth: u32,
    pub(crate) contract: Contract,
    pub(crate) plan: crate::plan::Fingerprint,
    pub(crate) priority: i32,
    pub(crate) input: Json,
}
