//! Inspection and control: what an operator sees of a runtime and does to it (the dashboard,
//! the `am2z` command line and the metrics are built on this alone).
//!
//! [`Inspect`] is part of the runtime contract: the local and the Redis runtime answer every
//! call with the same meaning. Reads are bounded (a page at a time, never a walk over every
//! key), and every action is typed and idempotent: doing it twice is the same as doing it once.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Runtime;
use crate::event::EventKind;
use crate::plan::{NodeId, NodeKind, Plan};
use crate::portable::{Codecs, PortableGraph};
use crate::{Error, Event, Processor, RunId, SessionId};

/// The most items one page holds; a larger `limit` is clamped to it.
pub const MAX_PAGE: usize = 500;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Submitted; none of its steps runs or waits out a delay now.
    Queued,
    /// One of its steps runs now.
    Active,
    /// Waiting out a `delay` or a retry backoff, nothing running.
    Delayed,
    /// Ended with an output.
    Completed,
    /// Ended with an error.
    Failed,
    /// Ended because it could not be run (poisoned: its worker died on it too often, or no
    /// worker serves it); kept in the session's dead letters.
    DeadLettered,
}

impl RunState {
    /// Every state, live ones first.
    pub const ALL: [RunState; 6] = [
        RunState::Queued,
        RunState::Active,
        RunState::Delayed,
        RunState::Completed,
        RunState::Failed,
        RunState::DeadLettered,
    ];

    /// Its name, as [`FromStr`] reads it and JSON writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Active => "active",
            RunState::Delayed => "delayed",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::DeadLettered => "dead_lettered",
        }
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::DeadLettered
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == text || (text == "dead" && *state == RunState::DeadLettered))
            .ok_or_else(|| {
                Error::validation(
                    "state",
                    format!(
                        "`{}` is not a run state: use one of queued, active, delayed, completed, failed, dead_lettered",
                        text.escape_debug()
                    ),
                )
            })
    }
}

/// An opaque position in a listing: hand back [`Page::next`] to get the page after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// A cursor from its text (as [`Display`](fmt::Display) wrote it). A cursor a runtime did
    /// not write is refused by the listing with [`Error::Validation`].
    pub fn new(text: impl Into<String>) -> Self {
        Cursor(text.into())
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which page of a listing: from the start or after a cursor, at most `limit` items
/// (clamped to 1..=[`MAX_PAGE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Where to go on from; `None`: the first page.
    pub after: Option<Cursor>,
    /// How many items at most.
    pub limit: usize,
}

impl PageRequest {
    /// The first page of at most `limit` items.
    pub fn first(limit: usize) -> Self {
        PageRequest { after: None, limit }
    }

    /// The page after `cursor`, of at most `limit` items.
    pub fn after(cursor: Cursor, limit: usize) -> Self {
        PageRequest {
            after: Some(cursor),
            limit,
        }
    }

    /// The limit, clamped to 1..=[`MAX_PAGE`].
    pub fn clamped_limit(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest::first(50)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` on the last page.
    pub next: Option<Cursor>,
}

/// A session as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session.
    pub session: SessionId,
    /// Runs submitted and not ended.
    pub live_runs: u64,
    /// Ended runs still kept, by state: completed.
    pub completed: u64,
    /// Ended runs still kept, by state: failed.
    pub failed: u64,
    /// Dead letters kept.
    pub dead_lettered: u64,
}

/// Which runs of a session to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs in this state; `None`: every state.
    pub state: Option<RunState>,
    /// Only runs of this processor (or workflow).
    pub processor: Option<String>,
}

impl RunFilter {
    /// Every run.
    pub fn all() -> Self {
        RunFilter::default()
    }

    /// The runs in `state`.
    pub fn state(state: RunState) -> Self {
        RunFilter {
            state: Some(state),
            processor: None,
        }
    }
}

/// A run as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Its session.
    pub session: SessionId,
    /// The run.
    pub run: RunId,
    /// The processor or workflow it runs.
    pub processor: String,
    /// Where it stands.
    pub state: RunState,
    /// When it was submitted.
    pub created_at: SystemTime,
    /// When it ended.
    pub ended_at: Option<SystemTime>,
    /// Processor attempts made so far, summed over its steps.
    pub attempts: u32,
    /// The terminal error's message, for a failed or dead-lettered run.
    pub error: Option<String>,
}

/// Where one step of a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not reached (yet, or ever: a route arm not taken, a step after a failure).
    Pending,
    /// An attempt runs now.
    Running,
    /// An attempt failed and another will follow.
    Retrying,
    /// Succeeded.
    Completed,
    /// Failed for good.
    Failed,
}

/// One step of a run: a step node of its plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDetail {
    /// The plan node it is.
    pub node: NodeId,
    /// The processor the step runs.
    pub processor: String,
    /// Where it stands.
    pub state: StepState,
    /// Attempts made (summed over the step's executions, for a step inside a map).
    pub attempts: u32,
    /// When its first attempt started.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
    /// Time spent in its attempts, summed.
    pub duration: Option<Duration>,
    /// Its last error.
    pub error: Option<String>,
}

impl StepDetail {
    /// Step node `node`, running `processor`, not reached yet.
    pub fn pending(node: NodeId, processor: impl Into<String>) -> Self {
        StepDetail {
            node,
            processor: processor.into(),
            state: StepState::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration: None,
            error: None,
        }
    }
}

/// A terminal error, with the chain of its causes (outermost first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The error itself.
    pub error: Error,
    /// Its message and each cause's, outermost first.
    pub chain: Vec<String>,
}

/// A value shown in a run's detail, or its absence for a reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Shown {
    /// The value, as JSON.
    Value(serde_json::Value),
    /// Hidden: the processor is configured with `redact`.
    Redacted,
    /// Not kept by the runtime (or not yet produced).
    Unavailable,
}

/// One run, in detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// What listings show.
    pub summary: RunSummary,
    /// Its processor's plan, when the processor is registered with this runtime.
    pub plan: Option<Plan>,
    /// Each step node of the plan, in the plan's order.
    pub steps: Vec<StepDetail>,
    /// The input it was submitted with.
    pub input: Shown,
    /// Its output, once completed.
    pub output: Shown,
    /// The state its failed step received, once failed.
    pub state: Shown,
    /// Its terminal error, once failed or dead-lettered.
    pub error: Option<ErrorDetail>,
    /// Its events, oldest first (the most recent ones the runtime keeps).
    pub events: Vec<Event>,
    /// The run this one retried.
    pub retry_of: Option<RunId>,
    /// The run that retried this one.
    pub retried_as: Option<RunId>,
}

/// A live worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its id.
    pub id: String,
    /// Its host name, when known.
    pub host: Option<String>,
    /// Its process id, when known.
    pub pid: Option<u32>,
    /// The processors it serves, sorted.
    pub processors: Vec<String>,
    /// When it was last heard of.
    pub last_seen: SystemTime,
    /// Whether it is this process.
    pub this_process: bool,
}

/// What [`Inspect::retry_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RetryOutcome {
    /// A new run was submitted with the same processor and input.
    Retried {
        /// The new run.
        run: RunId,
    },
    /// The run had been retried already: nothing new was submitted.
    AlreadyRetried {
        /// The run that retried it.
        run: RunId,
    },
}

/// What [`Inspect::cancel_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The run was live and now ends with [`Error::Cancelled`].
    Cancelled,
    /// The run had ended already: nothing changed.
    AlreadyEnded {
        /// How it ended.
        state: RunState,
    },
}

/// Inspection and control of a runtime.
pub trait Inspect: Runtime {
    /// The sessions that exist, a page at a time.
    fn sessions(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<SessionSummary>, Error>> + Send;

    /// The runs of `session` that match `filter`, newest first, a page at a time.
    ///
    /// # Errors
    /// [`Error::Validation`] for a cursor this runtime did not write.
    fn runs(
        &self,
        session: &SessionId,
        filter: &RunFilter,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<RunSummary>, Error>> + Send;

    /// One run in detail; `None` when the runtime knows no such run in `session`.
    fn run(
        &self,
        session: &SessionId,
        run: RunId,
    ) -> impl Future<Output = Result<Option<RunDetail>, Error>> + Send;

    /// The live workers.
    fn workers(&self) -> impl Future<Output = Result<Vec<WorkerInfo>, Error>> + Send;

    /// Submits a failed or dead-lettered run again, with its processor and input, as a new
    /// run of the same session (linked both ways: [`RunDetail::retry_of`] and
    /// [`RunDetail::retried_as`]). Idempotent: a second call answers
    /// [`RetryOutcome::AlreadyRetried`] with the same new run.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown run; [`Error::Validation`] for a run that is live or
    /// completed, or whose input the runtime no longer has.
    fn retry_run(
        &self,
        session: &SessionId,
        run: RunId,
    ) -> impl Future<Output = Result<RetryOutcome, Error>> + Send;

    /// Cancels a live run: its running steps' tokens fire and it ends with
    /// [`Error::Cancelled`]. Idempotent: an ended run answers [`CancelOutcome::AlreadyEnded`].
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown run.
    fn cancel_run(
        &self,
        session: &SessionId,
        run: RunId,
    ) -> impl Future<Output = Result<CancelOutcome, Error>> + Send;
}

/// What inspection needs to know of one processor, worked out once per processor (not per
/// run): its plan, whether its data is redacted, and the JSON codecs of its data when it has
/// them (a portable processor: serde input and output).
pub(crate) struct ProcessorView {
    pub(crate) plan: Plan,
    /// The processor or one of its steps is configured with `redact`.
    pub(crate) redacted: bool,
    pub(crate) codecs: Option<Codecs>,
    /// Each step processor's plan nodes, in plan order.
    step_nodes: Vec<(String, Vec<NodeId>)>,
}

impl ProcessorView {
    pub(crate) fn of<P: Processor>(processor: &P) -> Self {
        let mut redacted = processor.config().redact;
        processor.visit(&mut |contained| redacted |= contained.config().redact);
        let mut graph = PortableGraph::new();
        let codecs = processor
            .compile(&mut graph)
            .and_then(|root| graph.finish(root))
            .map(|graph| graph.codecs().clone());
        let plan = processor.plan();
        let mut step_nodes: Vec<(String, Vec<NodeId>)> = Vec::new();
        for node in &plan.nodes {
            if let NodeKind::Step { processor, .. } = &node.kind {
                match step_nodes.iter_mut().find(|(name, _)| name == processor) {
                    Some((_, nodes)) => nodes.push(node.id),
                    None => step_nodes.push((processor.clone(), vec![node.id])),
                }
            }
        }
        ProcessorView {
            plan,
            redacted,
            codecs,
            step_nodes,
        }
    }

    /// How many step nodes the plan has.
    pub(crate) fn step_count(&self) -> usize {
        self.step_nodes.iter().map(|(_, nodes)| nodes.len()).sum()
    }

    /// The plan nodes that run `processor`, in plan order.
    pub(crate) fn step_nodes(&self, processor: &str) -> &[NodeId] {
        self.step_nodes
            .iter()
            .find(|(name, _)| name == processor)
            .map_or(&[], |(_, nodes)| nodes.as_slice())
    }

    /// `value` as inspection shows it: JSON through the processor's codecs, or unavailable.
    pub(crate) fn show(&self, value: &(dyn Any + Send)) -> Shown {
        match self
            .codecs
            .as_ref()
            .and_then(|codecs| codecs.encode_dyn(value))
        {
            Some(Ok(json)) => Shown::Value(json),
            _ => Shown::Unavailable,
        }
    }
}

/// Hides a redacted run's data: its input, output and state, and its custom events' payloads.
/// Every runtime applies this one rule to the detail of a run whose processor (or one of whose
/// steps' processors) is configured with `redact`.
pub(crate) fn redact(detail: &mut RunDetail) {
    detail.input = Shown::Redacted;
    detail.output = Shown::Redacted;
    detail.state = Shown::Redacted;
    for event in &mut detail.events {
        if let EventKind::Custom { payload, .. } = &mut event.kind {
            *payload = serde_json::Value::String(REDACTED.to_owned());
        }
    }
}

/// What a redacted custom event's payload reads.
pub(crate) const REDACTED: &str = "[redacted]";

impl ErrorDetail {
    /// `error` with the messages of its causes.
    pub(crate) fn of(error: &Error) -> Self {
        let mut chain = vec![error.to_string()];
        let mut cause = std::error::Error::source(error);
        while let Some(inner) = cause {
            chain.push(inner.to_string());
            cause = inner.source();
        }
        ErrorDetail {
            error: error.clone(),
            chain,
        }
    }
}

/// A run's input as a runtime without serialisation keeps it: the value, and how to copy it
/// for a retry.
pub(crate) struct KeptInput {
    value: Box<dyn Any + Send>,
    copy: fn(&(dyn Any + Send)) -> Option<Box<dyn Any + Send>>,
}

impl KeptInput {
    pub(crate) fn of<T: Clone + Send + 'static>(value: &T) -> Self {
        KeptInput {
            value: Box::new(value.clone()),
            copy: copy_any::<T>,
        }
    }

    pub(crate) fn value(&self) -> &(dyn Any + Send) {
        &*self.value
    }

    /// A copy of the value, to run it again.
    pub(crate) fn copy(&self) -> Option<Box<dyn Any + Send>> {
        (self.copy)(&*self.value)
    }
}

fn copy_any<T: Clone + Send + 'static>(value: &(dyn Any + Send)) -> Option<Box<dyn Any + Send>> {
    value
        .downcast_ref::<T>()
        .map(|value| Box::new(value.clone()) as Box<dyn Any + Send>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_states_read_back_what_they_write() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>().ok(), Some(state));
            let json = serde_json::to_string(&state).ok();
            assert_eq!(json, Some(format!("\"{}\"", state.as_str())));
        }
        assert_eq!(
            "dead".parse::<RunState>().ok(),
            Some(RunState::DeadLettered)
        );
        assert!("finished".parse::<RunState>().is_err());
    }

    #[test]
    fn redaction_hides_data_and_custom_payloads_only() {
        let session = SessionId::new("redact").unwrap_or_else(|e| panic!("{e}"));
        let event = |kind| Event {
            session: session.clone(),
            run_id: None,
            processor: None,
            at: std::time::UNIX_EPOCH,
            kind,
        };
        let mut detail = RunDetail {
            summary: RunSummary {
                session: session.clone(),
                run: RunId::generate(),
                processor: "p".to_owned(),
                state: RunState::Completed,
                created_at: std::time::UNIX_EPOCH,
                ended_at: None,
                attempts: 1,
                error: None,
            },
            plan: None,
            steps: Vec::new(),
            input: Shown::Value(serde_json::json!("secret")),
            output: Shown::Value(serde_json::json!("secret")),
            state: Shown::Unavailable,
            error: None,
            events: vec![
                event(EventKind::Custom {
                    name: "kept".to_owned(),
                    payload: serde_json::json!({ "card": "secret" }),
                }),
                event(EventKind::Progress { value: 50 }),
            ],
            retry_of: None,
            retried_as: None,
        };
        redact(&mut detail);
        assert_eq!(
            (&detail.input, &detail.output, &detail.state),
            (&Shown::Redacted, &Shown::Redacted, &Shown::Redacted)
        );
        let json = serde_json::to_string(&detail).unwrap_or_default();
        assert!(!json.contains("secret"), "{json}");
        assert_eq!(detail.events[1].kind, EventKind::Progress { value: 50 });
        assert!(matches!(&detail.events[0].kind, EventKind::Custom { name, .. } if name == "kept"));
    }

    #[test]
    fn page_limits_are_clamped() {
        assert_eq!(PageRequest::first(0).clamped_limit(), 1);
        assert_eq!(PageRequest::first(10_000).clamped_limit(), MAX_PAGE);
        assert_eq!(PageRequest::first(7).clamped_limit(), 7);
    }
}
