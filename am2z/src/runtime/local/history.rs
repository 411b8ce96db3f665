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

/// One run as the history keeps it. What only a live run needs (its gauges and token) is in
/// [`LiveRun`], dropped when the run ends; an ended run keeps three allocations (this, its
/// input and its events), which matters when the oldest is dropped from a cold cache.
pub(super) struct RunRecord {
    pub(super) seq: u64,
    pub(super) run_id: RunId,
    pub(super) processor: &'static str,
    pub(super) created_at: SystemTime,
    pub(super) view: Arc<ProcessorView>,
    pub(super) retry_of: Option<RunId>,
    attempts: AtomicU32,
    log: Mutex<RunLog>,
}

/// A live run's own gauges (waiting, active, delayed: moved by its steps) and cancellation
/// token (fired by `cancel_run`; its steps derive theirs from it).
pub(super) struct LiveRun {
    pub(super) gauges: Arc<Counters>,
    pub(super) token: CancellationToken,
}

impl LiveRun {
    fn state(&self) -> RunState {
        let gauges = self.gauges.snapshot();
        if gauges.active > 0 {
            RunState::Active
        } else if gauges.delayed > 0 {
            RunState::Delayed
        } else {
            RunState::Queued
        }
    }
}

/// An event as a run keeps it: its session and run are the record's.
struct KeptEvent {
    processor: Option<&'static str>,
    at: SystemTime,
    kind: EventKind,
}

#[derive(Default)]
struct RunLog {
    input: Option<KeptInput>,
    events: VecDeque<KeptEvent>,
    /// The steps' progress as of the events dropped from `events` (none until a run has more
    /// than [`EVENTS_PER_RUN`]): a step's progress is these, moved on by the kept events.
    folded: Vec<StepProgress>,
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

#[derive(Clone)]
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

    /// Keeps one event; beyond [`EVENTS_PER_RUN`] the oldest is dropped (folded into the
    /// steps' progress first).
    pub(super) fn keep(&self, processor: Option<&'static str>, at: SystemTime, kind: EventKind) {
        if let EventKind::StepStarted { .. } = kind {
            self.attempts.fetch_add(1, Ordering::Relaxed);
        }
        let mut log = self.log();
        if log.events.len() == EVENTS_PER_RUN
            && let Some(oldest) = log.events.pop_front()
        {
            step_event(&mut log.folded, &self.view, &oldest);
        }
        log.events.push_back(KeptEvent {
            processor,
            at,
            kind,
        });
    }

    /// Records how the run ended (once); answers the state it ended in.
    fn end(&self, outcome: Result<&(dyn Any + Send), &Error>, attempts: u32) -> RunState {
        let mut log = self.log();
        if let Some(end) = &log.end {
            return end.state;
        }
        // The run's last event (`RunCompleted`/`RunFailed`) was kept just now: its time is the
        // run's end.
        let at = match log.events.back() {
            Some(KeptEvent {
                at,
                kind: EventKind::RunCompleted { .. } | EventKind::RunFailed { .. },
                ..
            }) => *at,
            _ => SystemTime::now(),
        };
        let end = match outcome {
            Ok(output) => RunEnd {
                state: RunState::Completed,
                at,
                attempts,
                output: self.view.show(output),
                error: None,
            },
            Err(error) => RunEnd {
                state: RunState::Failed,
                at,
                attempts,
                output: Shown::Unavailable,
                error: Some(error.clone()),
            },
        };
        let state = end.state;
        log.end = Some(end);
        state
    }

    fn summary(&self, session: &crate::SessionId, state: RunState, log: &RunLog) -> RunSummary {
        RunSummary {
            session: session.clone(),
            run: self.run_id,
            processor: self.processor.to_owned(),
            state,
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

    /// The run in detail, `live` while it runs.
    fn detail(&self, session: &crate::SessionId, live: Option<&LiveRun>) -> RunDetail {
        let log = self.log();
        let state = match (&log.end, live) {
            (Some(end), _) => end.state,
            (None, Some(live)) => live.state(),
            (None, None) => RunState::Queued,
        };
        let summary = self.summary(session, state, &log);
        let mut progress = log.folded.clone();
        for event in &log.events {
            step_event(&mut progress, &self.view, event);
        }
        let step_nodes = self
            .view
            .plan
            .nodes
            .iter()
            .filter_map(|node| match &node.kind {
                crate::plan::NodeKind::Step { processor, .. } => Some((node.id, processor)),
                _ => None,
            });
        let steps: Vec<StepDetail> = step_nodes
            .map(|(node, processor)| {
                progress.iter().find(|step| step.node == node).map_or_else(
                    || StepDetail::pending(node, processor.clone()),
                    StepProgress::detail,
                )
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
        let state = if failed && steps.len() == 1 {
            input.clone()
        } else {
            Shown::Unavailable
        };
        let events = log
            .events
            .iter()
            .map(|event| Event {
                session: session.clone(),
                run_id: Some(self.run_id),
                processor: event.processor.map(std::borrow::Cow::Borrowed),
                at: event.at,
                kind: event.kind.clone(),
            })
            .collect();
        let mut detail = RunDetail {
            summary,
            plan: Some(self.view.plan.clone()),
            steps,
            state,
            input,
            output: end.map_or(Shown::Unavailable, |end| end.output.clone()),
            error: end.and_then(|end| end.error.as_ref()).map(ErrorDetail::of),
            events,
            retry_of: self.retry_of,
            retried_as: log.retried_as,
        };
        if self.view.redacted {
            redact(&mut detail);
        }
        detail
    }
}

/// Moves the steps' progress on with one event. The k-th execution of a processor maps to
/// its k-th node in the plan (a chain of the same step thrice); executions beyond its nodes (a
/// step inside a map) add to its last node. Processors that are not nodes of the plan (called
/// with `ctx.call`) have no step.
fn step_event(steps: &mut Vec<StepProgress>, view: &ProcessorView, event: &KeptEvent) {
    let Some(name) = event.processor else { return };
    let begins = match event.kind {
        EventKind::StepStarted { attempt } => attempt == 1,
        EventKind::StepCompleted { .. }
        | EventKind::StepFailed { .. }
        | EventKind::StepRetrying { .. } => false,
        _ => return,
    };
    let nodes = view.step_nodes(name);
    let Some(&last) = nodes.last() else { return };
    let reached = steps.iter().filter(|step| step.processor == name).count();
    let latest = steps.iter().rposition(|step| step.processor == name);
    let index = match (begins, latest) {
        (false, Some(latest)) => latest,
        (true, Some(latest)) if reached >= nodes.len() => latest,
        _ => {
            steps.push(StepProgress {
                node: nodes.get(reached).copied().unwrap_or(last),
                processor: name,
                state: StepState::Pending,
                attempts: 0,
                started_at: None,
                finished_at: None,
                attempt_started: None,
                duration: Duration::ZERO,
                error: None,
            });
            steps.len() - 1
        }
    };
    let step = &mut steps[index];
    let at = event.at;
    let attempt_time = step
        .attempt_started
        .and_then(|started| at.duration_since(started).ok())
        .unwrap_or_default();
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
            step.duration += attempt_time;
            step.attempt_started = None;
            step.error = Some(error.to_string());
        }
        EventKind::StepFailed { error, .. } => {
            step.state = StepState::Failed;
            step.finished_at = Some(at);
            step.duration += attempt_time;
            step.attempt_started = None;
            step.error = Some(error.to_string());
        }
        _ => {}
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

/// One run in the session's ordered map, with what dropping it needs (so that dropping the
/// oldest run reads nothing but its entry).
struct Entry {
    record: Arc<RunRecord>,
    run_id: RunId,
    processor: &'static str,
    ended: Option<RunState>,
}

/// The runs of one session.
pub(super) struct SessionHistory {
    capacity: usize,
    next_seq: u64,
    runs: BTreeMap<u64, Entry>,
    by_id: HashMap<RunId, u64, Fnv>,
    live: BTreeMap<u64, LiveRun>,
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
            live: BTreeMap::new(),
            completed: BTreeSet::new(),
            failed: BTreeSet::new(),
            by_processor: HashMap::default(),
            ended_by_processor: HashMap::default(),
        }
    }

    /// Records a run submitted now.
    pub(super) fn submit(history: &Arc<Mutex<Self>>, new: NewRun) -> Recorded {
        let gauges = Arc::<Counters>::default();
        // Room for the run's start and end and each step's, the common case.
        let events = VecDeque::with_capacity((2 * new.view.step_count() + 2).min(EVENTS_PER_RUN));
        let token = CancellationToken::new();
        let mut this = history.lock().unwrap_or_else(|p| p.into_inner());
        this.next_seq += 1;
        let seq = this.next_seq;
        let record = Arc::new(RunRecord {
            seq,
            run_id: RunId::generate(),
            processor: new.processor,
            created_at: SystemTime::now(),
            view: new.view,
            retry_of: new.retry_of,
            attempts: AtomicU32::new(0),
            log: Mutex::new(RunLog {
                input: new.input,
                events,
                ..RunLog::default()
            }),
        });
        this.runs.insert(
            seq,
            Entry {
                record: Arc::clone(&record),
                run_id: record.run_id,
                processor: record.processor,
                ended: None,
            },
        );
        this.by_id.insert(record.run_id, seq);
        this.live.insert(
            seq,
            LiveRun {
                gauges: Arc::clone(&gauges),
                token: token.clone(),
            },
        );
        this.by_processor
            .entry(record.processor)
            .or_default()
            .insert(seq);
        drop(this);
        Recorded {
            history: Arc::clone(history),
            record,
            live: Some((gauges, token)),
            finished: false,
        }
    }

    /// Moves an ended run to its state's indexes, and drops the oldest ended runs beyond the
    /// bound (answered, to be freed once the history is unlocked).
    fn ended(&mut self, seq: u64, state: RunState) -> Vec<Entry> {
        if self.live.remove(&seq).is_none() {
            return Vec::new();
        }
        let Some(entry) = self.runs.get_mut(&seq) else {
            return Vec::new();
        };
        entry.ended = Some(state);
        let processor = entry.processor;
        match state {
            RunState::Completed => self.completed.insert(seq),
            _ => self.failed.insert(seq),
        };
        self.ended_by_processor
            .entry((processor, state))
            .or_default()
            .insert(seq);
        let mut dropped = Vec::new();
        while self.completed.len() + self.failed.len() > self.capacity {
            let oldest = match (self.completed.first(), self.failed.first()) {
                (Some(&c), Some(&f)) => c.min(f),
                (Some(&c), None) => c,
                (None, Some(&f)) => f,
                (None, None) => break,
            };
            dropped.extend(self.forget(oldest));
        }
        dropped
    }

    fn forget(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.runs.remove(&seq)?;
        self.by_id.remove(&entry.run_id);
        self.completed.remove(&seq);
        self.failed.remove(&seq);
        if let Some(runs) = self.by_processor.get_mut(entry.processor) {
            runs.remove(&seq);
            if runs.is_empty() {
                self.by_processor.remove(entry.processor);
            }
        }
        if let Some(state) = entry.ended {
            let key = (entry.processor, state);
            if let Some(runs) = self.ended_by_processor.get_mut(&key) {
                runs.remove(&seq);
                if runs.is_empty() {
                    self.ended_by_processor.remove(&key);
                }
            }
        }
        Some(entry)
    }

    pub(super) fn get(&self, run: RunId) -> Option<Arc<RunRecord>> {
        self.by_id
            .get(&run)
            .and_then(|seq| self.runs.get(seq))
            .map(|entry| Arc::clone(&entry.record))
    }

    /// The detail of `run`.
    pub(super) fn detail(&self, session: &crate::SessionId, run: RunId) -> Option<RunDetail> {
        let seq = self.by_id.get(&run)?;
        let entry = self.runs.get(seq)?;
        Some(entry.record.detail(session, self.live.get(seq)))
    }

    /// Fires a live run's token; answers how it ended when it is not live.
    pub(super) fn cancel(&self, run: RunId) -> Option<Result<(), RunState>> {
        let seq = self.by_id.get(&run)?;
        let entry = self.runs.get(seq)?;
        Some(match (self.live.get(seq), entry.ended) {
            (Some(live), _) => {
                live.token.cancel();
                Ok(())
            }
            (None, Some(state)) => Err(state),
            // Not live and not ended cannot be: treat it as ended by cancellation.
            (None, None) => Err(RunState::Failed),
        })
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
        fn indexed(index: &BTreeSet<u64>, before: u64) -> Box<dyn Iterator<Item = u64> + '_> {
            Box::new(index.range(..before).rev().copied())
        }
        // The index to walk; live states are walked over the live runs and checked.
        let seqs: Box<dyn Iterator<Item = u64> + '_> = match (filter.state, processor) {
            (None, None) => Box::new(self.runs.range(..before).rev().map(|(seq, _)| *seq)),
            (None, Some(name)) => indexed(self.by_processor.get(name).unwrap_or(&empty), before),
            (Some(state), Some(name)) if state.is_terminal() => indexed(
                self.ended_by_processor
                    .iter()
                    .find(|((p, s), _)| *p == name && *s == state)
                    .map_or(&empty, |(_, runs)| runs),
                before,
            ),
            (Some(RunState::Completed), None) => indexed(&self.completed, before),
            (Some(RunState::Failed), None) => indexed(&self.failed, before),
            // The local runtime has no dead letters.
            (Some(RunState::DeadLettered), _) => indexed(&empty, before),
            (Some(state), _) => Box::new(
                self.live
                    .range(..before)
                    .rev()
                    .filter(move |(_, live)| live.state() == state)
                    .map(|(seq, _)| *seq),
            ),
        };
        let mut items = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for seq in seqs {
            let Some(entry) = self.runs.get(&seq) else {
                continue;
            };
            if processor.is_some_and(|name| name != entry.processor) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            let state = match (entry.ended, self.live.get(&seq)) {
                (Some(state), _) => state,
                (None, Some(live)) => live.state(),
                (None, None) => RunState::Queued,
            };
            items.push(entry.record.summary(session, state, &entry.record.log()));
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

/// A run being recorded, with what its execution needs (its gauges and token). When it is
/// dropped without [`finish`](Recorded::finish) (its caller dropped the run), the run is
/// recorded as cancelled, so no record stays live forever.
pub(super) struct Recorded {
    history: Arc<Mutex<SessionHistory>>,
    pub(super) record: Arc<RunRecord>,
    /// The run's gauges and token, for its execution to take.
    pub(super) live: Option<(Arc<Counters>, CancellationToken)>,
    finished: bool,
}

impl Recorded {
    /// Records the run's outcome.
    pub(super) fn finish(&mut self, outcome: Result<&(dyn Any + Send), &Error>, attempts: u32) {
        self.finished = true;
        let state = self.record.end(outcome, attempts);
        let dropped = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ended(self.record.seq, state);
        // Freed here, with the history unlocked.
        drop(dropped);
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
