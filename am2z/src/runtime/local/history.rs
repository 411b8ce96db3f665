//! What the local runtime remembers of each session's runs, for [`Inspect`](crate::Inspect).
//!
//! Every run of a session gets a [`RunRecord`] when it is submitted: its processor, a copy of
//! its input, its most recent events ([`EVENTS_PER_RUN`]), the progress of each step of its
//! plan, and, once it ended, its outcome (the output as JSON when the processor's data is
//! serde). Ended runs are kept up to the runtime's history bound per session (oldest dropped);
//! `stop_session` drops them all.
//!
//! Listings are a page at a time: runs are held in ordered maps keyed by their submission
//! sequence (newest first is a reverse range), with one index per ended state, per processor
//! and per (processor, ended state). Live runs are not indexed by their current state (it
//! changes at every step and is read from the run's own gauges); a listing of one live state
//! walks the session's live runs, which are the runs under way now.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::event::{Event, EventKind};
use crate::plan::NodeId;
use crate::runtime::inspect::{
    Cursor, ErrorDetail, KeptInput, Page, PageRequest, ProcessorView, RunDetail, RunFilter,
    RunState, RunSummary, Shown, StepDetail, StepState, redact,
};
use crate::runtime::stats::Counters;
use crate::{Error, RunId};

/// Ended runs kept per session by default.
pub const DEFAULT_HISTORY: usize = 10_000;

/// The most events kept per run: the most recent ones.
pub const EVENTS_PER_RUN: usize = 200;

/// What a cursor of a run listing reads: `run:<sequence>`.
const RUN_CURSOR: &str = "run:";

/// One run as the history keeps it.
pub(super) struct RunRecord {
    pub(super) seq: u64,
    pub(super) run_id: RunId,
    pub(super) processor: &'static str,
    pub(super) created_at: SystemTime,
    pub(super) view: Arc<ProcessorView>,
    /// The run's own stage gauges (waiting, active, delayed), moved by its steps.
    pub(super) gauges: Arc<Counters>,
    /// Fired by `cancel_run`; the run's steps derive their tokens from it.
    pub(super) token: CancellationToken,
    pub(super) retry_of: Option<RunId>,
    attempts: AtomicU32,
    log: Mutex<RunLog>,
}

#[derive(Default)]
struct RunLog {
    input: Option<KeptInput>,
    events: VecDeque<Event>,
    steps: Vec<StepProgress>,
    end: Option<RunEnd>,
    retried_as: Option<RunId>,
}

struct RunEnd {
    state: RunState,
    at: SystemTime,
    attempts: u32,
    output: Shown,
    error: Option<Error>,
}

struct StepProgress {
    node: NodeId,
    processor: &'static str,
    state: StepState,
    attempts: u32,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    attempt_started: Option<SystemTime>,
    duration: Duration,
    error: Option<String>,
}

impl RunRecord {
    fn log(&self) -> MutexGuard<'_, RunLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn ended(&self) -> Option<RunState> {
        self.log().end.as_ref().map(|end| end.state)
    }

    /// Where the run stands now.
    fn state(&self, log: &RunLog) -> RunState {
        if let Some(end) = &log.end {
            return end.state;
        }
        let gauges = self.gauges.snapshot();
        if gauges.active > 0 {
            RunState::Active
        } else if gauges.delayed > 0 {
            RunState::Delayed
        } else {
            RunState::Queued
        }
    }

    /// The run that retried this one.
    pub(super) fn retried_as(&self) -> Option<RunId> {
        self.log().retried_as
    }

    pub(super) fn set_retried_as(&self, run: RunId) {
        self.log().retried_as = Some(run);
    }

    /// A copy of the input, to run it again.
    pub(super) fn input_copy(&self) -> Option<Box<dyn Any + Send>> {
        self.log().input.as_ref().and_then(KeptInput::copy)
    }

    /// Keeps one event: the step it concerns moves on, and the oldest event beyond
    /// [`EVENTS_PER_RUN`] is dropped.
    pub(super) fn keep(&self, event: Event) {
        let mut log = self.log();
        if let (Some(processor), true) = (event.processor.as_deref(), is_step_event(&event.kind)) {
            if let EventKind::StepStarted { .. } = event.kind {
                self.attempts.fetch_add(1, Ordering::Relaxed);
            }
            // Events of the local runtime name processors by their `&'static str`.
            if let Some(std::borrow::Cow::Borrowed(name)) = &event.processor {
                log.step_event(&self.view, name, &event);
            } else {
                tracing::trace!(processor, "step event without a static processor name");
            }
        }
        if log.events.len() == EVENTS_PER_RUN {
            log.events.pop_front();
        }
        log.events.push_back(event);
    }

    /// Records how the run ended (once); answers the state it ended in.
    pub(super) fn end(
        &self,
        outcome: Result<&(dyn Any + Send), &Error>,
        attempts: u32,
    ) -> RunState {
        let mut log = self.log();
        if let Some(end) = &log.end {
            return end.state;
        }
        let end = match outcome {
            Ok(output) => RunEnd {
                state: RunState::Completed,
                at: SystemTime::now(),
                attempts,
                output: self.view.show(output),
                error: None,
            },
            Err(error) => RunEnd {
                state: RunState::Failed,
                at: SystemTime::now(),
                attempts,
                output: Shown::Unavailable,
                error: Some(error.clone()),
            },
        };
        let state = end.state;
        log.end = Some(end);
        state
    }

    fn summary(&self, session: &crate::SessionId, log: &RunLog) -> RunSummary {
        RunSummary {
            session: session.clone(),
            run: self.run_id,
            processor: self.processor.to_owned(),
            state: self.state(log),
            created_at: self.created_at,
            ended_at: log.end.as_ref().map(|end| end.at),
            attempts: log
                .end
                .as_ref()
                .map_or_else(|| self.attempts.load(Ordering::Relaxed), |end| end.attempts),
            error: log
                .end
                .as_ref()
                .and_then(|end| end.error.as_ref())
                .map(ToString::to_string),
        }
    }

    pub(super) fn detail(&self, session: &crate::SessionId) -> RunDetail {
        let log = self.log();
        let summary = self.summary(session, &log);
        let steps = self
            .view
            .plan
            .nodes
            .iter()
            .filter_map(|node| match &node.kind {
                crate::plan::NodeKind::Step { processor, .. } => Some(
                    log.steps
                        .iter()
                        .find(|step| step.node == node.id)
                        .map_or_else(
                            || StepDetail {
                                node: node.id,
                                processor: processor.clone(),
                                state: StepState::Pending,
                                attempts: 0,
                                started_at: None,
                                finished_at: None,
                                duration: None,
                                error: None,
                            },
                            StepProgress::detail,
                        ),
                ),
                _ => None,
            })
            .collect();
        let input = match &log.input {
            Some(input) => self.view.show(input.value()),
            None => Shown::Unavailable,
        };
        let end = log.end.as_ref();
        let failed = end.is_some_and(|end| end.state == RunState::Failed);
        // The state a failed run's failing step received is known when the plan has one step:
        // the run's input.
        let single_step = self
            .view
            .plan
            .nodes
            .iter()
            .filter(|node| matches!(node.kind, crate::plan::NodeKind::Step { .. }))
            .count()
            == 1;
        let mut detail = RunDetail {
            summary,
            plan: Some(self.view.plan.clone()),
            steps,
            state: if failed && single_step {
                input.clone()
            } else {
                Shown::Unavailable
            },
            input,
            output: end.map_or(Shown::Unavailable, |end| end.output.clone()),
            error: end.and_then(|end| end.error.as_ref()).map(ErrorDetail::of),
            events: log.events.iter().cloned().collect(),
            retry_of: self.retry_of,
            retried_as: log.retried_as,
        };
        if self.view.redacted {
            redact(&mut detail);
        }
        detail
    }
}

fn is_step_event(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::StepStarted { .. }
            | EventKind::StepCompleted { .. }
            | EventKind::StepFailed { .. }
            | EventKind::StepRetrying { .. }
    )
}

impl RunLog {
    /// Moves the step `name` on with `event`. The k-th execution of a processor maps to its
    /// k-th node in the plan (a chain of the same step thrice); executions beyond its nodes
    /// (a step inside a map) add to its last node.
    fn step_event(&mut self, view: &ProcessorView, name: &'static str, event: &Event) {
        let nodes = view.step_nodes(name);
        let Some(&last) = nodes.last() else {
            // A processor called with `ctx.call`: not a node of the plan.
            return;
        };
        // A new execution of `name` begins at its next node not reached yet; any other event
        // concerns its latest one.
        let begins = matches!(event.kind, EventKind::StepStarted { attempt: 1 });
        let reached = self
            .steps
            .iter()
            .filter(|step| step.processor == name)
            .count();
        let latest = self.steps.iter().rposition(|step| step.processor == name);
        let index = match (begins, latest) {
            (false, Some(latest)) => latest,
            (true, Some(latest)) if reached >= nodes.len() => latest,
            _ => {
                let node = nodes.get(reached).copied().unwrap_or(last);
                self.steps.push(StepProgress {
                    node,
                    processor: name,
                    state: StepState::Pending,
                    attempts: 0,
                    started_at: None,
                    finished_at: None,
                    attempt_started: None,
                    duration: Duration::ZERO,
                    error: None,
                });
                self.steps.len() - 1
            }
        };
        let step = &mut self.steps[index];
        let at = event.at;
        let attempt_time = |step: &StepProgress| {
            step.attempt_started
                .and_then(|started| at.duration_since(started).ok())
                .unwrap_or_default()
        };
        match &event.kind {
            EventKind::StepStarted { .. } => {
                step.state = StepState::Running;
                step.attempts += 1;
                step.started_at.get_or_insert(at);
                step.attempt_started = Some(at);
            }
            EventKind::StepCompleted { execution_time, .. } => {
                step.state = StepState::Completed;
                step.finished_at = Some(at);
                step.duration += *execution_time;
                step.attempt_started = None;
            }
            EventKind::StepRetrying { error, .. } => {
                step.state = StepState::Retrying;
                step.duration += attempt_time(step);
                step.attempt_started = None;
                step.error = Some(error.to_string());
            }
            EventKind::StepFailed { error, .. } => {
                step.state = StepState::Failed;
                step.finished_at = Some(at);
                step.duration += attempt_time(step);
                step.attempt_started = None;
                step.error = Some(error.to_string());
            }
            _ => {}
        }
    }
}

impl StepProgress {
    fn detail(&self) -> StepDetail {
        StepDetail {
            node: self.node,
            processor: self.processor.to_owned(),
            state: self.state,
            attempts: self.attempts,
            started_at: self.started_at,
            finished_at: self.finished_at,
            duration: self.started_at.map(|_| self.duration),
            error: self.error.clone(),
        }
    }
}

/// What a new run's record starts from.
pub(super) struct NewRun {
    pub(super) view: Arc<ProcessorView>,
    pub(super) processor: &'static str,
    pub(super) input: Option<KeptInput>,
    pub(super) retry_of: Option<RunId>,
}

/// The hasher of the history's maps: FNV-1a. Their keys are random run ids and processor
/// names a program registers, so SipHash's defence against chosen keys buys nothing on this
/// hot path.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Fnv;

pub(super) struct FnvHasher(u64);

impl BuildHasher for Fnv {
    type Hasher = FnvHasher;

    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The runs of one session.
pub(super) struct SessionHistory {
    capacity: usize,
    next_seq: u64,
    runs: BTreeMap<u64, Arc<RunRecord>>,
    by_id: HashMap<RunId, u64, Fnv>,
    live: BTreeSet<u64>,
    completed: BTreeSet<u64>,
    failed: BTreeSet<u64>,
    by_processor: HashMap<&'static str, BTreeSet<u64>, Fnv>,
    ended_by_processor: HashMap<(&'static str, RunState), BTreeSet<u64>, Fnv>,
}

impl SessionHistory {
    pub(super) fn new(capacity: usize) -> Self {
        SessionHistory {
            capacity,
            next_seq: 0,
            runs: BTreeMap::new(),
            by_id: HashMap::default(),
            live: BTreeSet::new(),
            completed: BTreeSet::new(),
            failed: BTreeSet::new(),
            by_processor: HashMap::default(),
            ended_by_processor: HashMap::default(),
        }
    }

    /// Records a run submitted now.
    pub(super) fn submit(&mut self, new: NewRun) -> Arc<RunRecord> {
        self.next_seq += 1;
        let seq = self.next_seq;
        let record = Arc::new(RunRecord {
            seq,
            run_id: RunId::generate(),
            processor: new.processor,
            created_at: SystemTime::now(),
            view: new.view,
            gauges: Arc::default(),
            token: CancellationToken::new(),
            retry_of: new.retry_of,
            attempts: AtomicU32::new(0),
            log: Mutex::new(RunLog {
                input: new.input,
                events: VecDeque::with_capacity(8),
                ..RunLog::default()
            }),
        });
        self.runs.insert(seq, Arc::clone(&record));
        self.by_id.insert(record.run_id, seq);
        self.live.insert(seq);
        self.by_processor
            .entry(record.processor)
            .or_default()
            .insert(seq);
        record
    }

    /// Moves an ended run to its state's indexes, and drops the oldest ended runs beyond the
    /// bound.
    pub(super) fn ended(&mut self, record: &RunRecord, state: RunState) {
        if !self.live.remove(&record.seq) {
            return;
        }
        let seq = record.seq;
        match state {
            RunState::Completed => self.completed.insert(seq),
            _ => self.failed.insert(seq),
        };
        self.ended_by_processor
            .entry((record.processor, state))
            .or_default()
            .insert(seq);
        while self.completed.len() + self.failed.len() > self.capacity {
            let oldest = match (self.completed.first(), self.failed.first()) {
                (Some(&c), Some(&f)) => c.min(f),
                (Some(&c), None) => c,
                (None, Some(&f)) => f,
                (None, None) => break,
            };
            self.forget(oldest);
        }
    }

    fn forget(&mut self, seq: u64) {
        let Some(record) = self.runs.remove(&seq) else {
            return;
        };
        self.by_id.remove(&record.run_id);
        self.completed.remove(&seq);
        self.failed.remove(&seq);
        if let Some(runs) = self.by_processor.get_mut(record.processor) {
            runs.remove(&seq);
            if runs.is_empty() {
                self.by_processor.remove(record.processor);
            }
        }
        if let Some(state) = record.ended() {
            let key = (record.processor, state);
            if let Some(runs) = self.ended_by_processor.get_mut(&key) {
                runs.remove(&seq);
                if runs.is_empty() {
                    self.ended_by_processor.remove(&key);
                }
            }
        }
    }

    pub(super) fn get(&self, run: RunId) -> Option<Arc<RunRecord>> {
        self.by_id
            .get(&run)
            .and_then(|seq| self.runs.get(seq))
            .cloned()
    }

    /// Live runs, and ended runs kept by state (completed, failed).
    pub(super) fn counts(&self) -> (u64, u64, u64) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        (
            count(self.live.len()),
            count(self.completed.len()),
            count(self.failed.len()),
        )
    }

    /// The runs matching `filter`, newest first, a page at a time.
    pub(super) fn list(
        &self,
        session: &crate::SessionId,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<RunSummary>, Error> {
        let before = match &page.after {
            None => u64::MAX,
            Some(cursor) => parse_cursor(cursor)?,
        };
        let limit = page.clamped_limit();
        let empty = BTreeSet::new();
        let processor = filter.processor.as_deref();
        // The index to walk, and whether each run must still be checked against the filter.
        let (index, check_state, check_processor) = match (filter.state, processor) {
            (None, None) => (None, false, false),
            (None, Some(name)) => (
                Some(self.by_processor.get(name).unwrap_or(&empty)),
                false,
                false,
            ),
            (Some(state), Some(name)) if state.is_terminal() => (
                Some(
                    self.ended_by_processor
                        .iter()
                        .find(|((p, s), _)| *p == name && *s == state)
                        .map_or(&empty, |(_, runs)| runs),
                ),
                false,
                false,
            ),
            (Some(RunState::Completed), None) => (Some(&self.completed), false, false),
            (Some(RunState::Failed), None) => (Some(&self.failed), false, false),
            // The local runtime has no dead letters.
            (Some(RunState::DeadLettered), _) => (Some(&empty), false, false),
            (Some(_), _) => (Some(&self.live), true, processor.is_some()),
        };
        let seqs: Box<dyn Iterator<Item = u64> + '_> = match index {
            Some(index) => Box::new(index.range(..before).rev().copied()),
            None => Box::new(self.runs.range(..before).rev().map(|(seq, _)| *seq)),
        };
        let mut items = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for seq in seqs {
            let Some(record) = self.runs.get(&seq) else {
                continue;
            };
            if check_processor && Some(record.processor) != processor {
                continue;
            }
            let log = record.log();
            if check_state && Some(record.state(&log)) != filter.state {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(record.summary(session, &log));
            last = Some(seq);
        }
        Ok(Page {
            items,
            next: last
                .filter(|_| more)
                .map(|seq| Cursor::new(format!("{RUN_CURSOR}{seq}"))),
        })
    }
}

fn parse_cursor(cursor: &Cursor) -> Result<u64, Error> {
    cursor
        .as_str()
        .strip_prefix(RUN_CURSOR)
        .and_then(|seq| seq.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::validation(
                "cursor",
                format!(
                    "`{}` is not a cursor of this runtime's run listings: pass back a `next` it returned, or none for the first page",
                    cursor.as_str().escape_debug()
                ),
            )
        })
}

/// A run being recorded: when it is dropped (the run returned, or its caller dropped it), the
/// run is recorded as ended, so no record stays live forever.
pub(super) struct Recorded {
    history: Arc<Mutex<SessionHistory>>,
    pub(super) record: Arc<RunRecord>,
    finished: bool,
}

impl Recorded {
    pub(super) fn new(history: Arc<Mutex<SessionHistory>>, record: Arc<RunRecord>) -> Self {
        Recorded {
            history,
            record,
            finished: false,
        }
    }

    /// Records the run's outcome.
    pub(super) fn finish(&mut self, outcome: Result<&(dyn Any + Send), &Error>, attempts: u32) {
        self.finished = true;
        let state = self.record.end(outcome, attempts);
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ended(&self.record, state);
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        if !self.finished {
            let error = Error::Cancelled {
                reason: "the run was dropped by its caller before it ended".to_owned(),
            };
            let attempts = self.record.attempts.load(Ordering::Relaxed);
            self.finish(Err(&error), attempts);
        }
    }
}
