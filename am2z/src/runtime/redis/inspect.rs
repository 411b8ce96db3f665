//! [`Inspect`] for the Redis runtime: what an operator sees of sessions, runs and workers,
//! read from the keys the runtime keeps anyway, and the two actions (`retry_run` is
//! `submit.lua` told which run it retries; `cancel_run` is `cancel.lua`).
//!
//! Every read is bounded (`docs/architecture.md`, "Inspection (Redis)"): a page reads the
//! sorted set it lists from the cursor on (`ZREVRANK` + `ZRANGE`, never the whole set), and
//! then what the session keeps of the runs on that page, in one pipeline. Live runs are
//! classified by their jobs (leased: active; waiting in `delayed` with none leased: delayed;
//! else queued), so a listing filtered by a live state looks through at most
//! [`SCAN_CAP`] runs per call and hands back a cursor that resumes where it stopped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::RedisRuntime;
use super::client::{Outgoing, RunHandle, decode};
use super::keys::SessionKeys;
use super::protocol::body::Body;
use super::protocol::inspect::{self as reads, CancelReply, Position, RunRecord};
use super::protocol::messages::{self, Control, Done};
use super::protocol::millis;
use super::served::{failure, job_fingerprint};
use crate::plan::{NodeKind, Plan};
use crate::runtime::inspect::{
    CancelOutcome, Cursor, ErrorDetail, Inspect, MAX_PAGE, Page, PageRequest, RetryOutcome,
    RunDetail, RunFilter, RunState, RunSummary, SessionSummary, Shown, StepDetail, StepState,
    WorkerInfo, redact,
};
use crate::runtime::{ProcessorInfo, Runtime};
use crate::{Error, Event, EventKind, Processor, RunId, SessionId};

/// The most runs one call of a filtered listing looks through (it then answers what it found,
/// possibly nothing, with a cursor that resumes after the last run it looked at).
pub(crate) const SCAN_CAP: usize = 2_000;

/// The most leased (and, apart, delayed) jobs of a session read to classify step runs past
/// their first step: beyond them, such a run's leased job is not seen and it shows as queued.
pub(crate) const IN_FLIGHT_CAP: usize = 10_000;

/// How many entries of the session's event stream a run's detail reads (the newest): its
/// events and steps come from those.
pub(crate) const EVENT_ENTRIES: usize = 1_000;

/// The most live workers listed.
pub(crate) const MAX_WORKERS: usize = 1_000;

/// What inspection knows of the processors this runtime submitted or executed without
/// registering them (`execute`, `submit`): their plan, contract and config, and whether
/// their data is redacted. Filled once per processor name.
#[derive(Default)]
pub(crate) struct Known {
    by_name: RwLock<HashMap<&'static str, Arc<(ProcessorInfo, bool)>>>,
}

impl Known {
    /// Notes `processor` (once per name).
    pub(crate) fn note<P: Processor>(&self, processor: &P) {
        let name = processor.name();
        if self
            .by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
        {
            return;
        }
        let redacted = redacts(processor);
        let info = ProcessorInfo {
            name: name.to_owned(),
            config: *processor.config(),
            contract: processor.contract(),
            plan: processor.plan(),
        };
        self.by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Arc::new((info, redacted)));
    }

    fn get(&self, name: &str) -> Option<Arc<(ProcessorInfo, bool)>> {
        self.by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

/// Whether `processor`'s runs' data is hidden: it, or a processor it contains, is configured
/// with `redact`.
pub(crate) fn redacts<P: Processor>(processor: &P) -> bool {
    let mut redacted = processor.config().redact;
    processor.visit(&mut |contained| redacted |= contained.config().redact);
    redacted
}

/// Which sorted set a listing walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `runs`: live runs, by creation.
    Live,
    /// `completed` and `failed` together: ended runs, by end time.
    Ended,
    Completed,
    Failed,
    /// `dead`: dead letters, by when they were buried.
    Dead,
}

impl Phase {
    fn tag(self) -> char {
        match self {
            Phase::Live => 'l',
            Phase::Ended => 'e',
            Phase::Completed => 'c',
            Phase::Failed => 'f',
            Phase::Dead => 'd',
        }
    }

    /// The sets a filter walks, in order (live runs before ended ones).
    fn of(state: Option<RunState>) -> &'static [Phase] {
        match state {
            None => &[Phase::Live, Phase::Ended],
            Some(RunState::Queued | RunState::Active | RunState::Delayed) => &[Phase::Live],
            Some(RunState::Completed) => &[Phase::Completed],
            Some(RunState::Failed) => &[Phase::Failed],
            Some(RunState::DeadLettered) => &[Phase::Dead],
        }
    }
}

/// A listing's cursor: the set it walks and the last member it looked at (`None`: that set's
/// start). Written `<tag>:` or `<tag>:<score>:<member>`.
fn write_cursor(phase: Phase, at: Option<&Position>) -> Cursor {
    match at {
        None => Cursor::new(format!("{}:", phase.tag())),
        Some((score, member)) => Cursor::new(format!("{}:{score}:{member}", phase.tag())),
    }
}

fn read_cursor(cursor: &Cursor, phases: &[Phase]) -> Result<(usize, Option<Position>), Error> {
    let refused = || {
        Error::validation(
            "cursor",
            format!(
                "`{}` is not a cursor of this listing: pass back a page's `next` with the same filter",
                cursor.as_str().escape_debug()
            ),
        )
    };
    let text = cursor.as_str();
    let (tag, rest) = text.split_once(':').ok_or_else(refused)?;
    let index = phases
        .iter()
        .position(|phase| tag.len() == 1 && tag.starts_with(phase.tag()))
        .ok_or_else(refused)?;
    if rest.is_empty() {
        return Ok((index, None));
    }
    let (score, member) = rest.split_once(':').ok_or_else(refused)?;
    let score: f64 = score.parse().map_err(|_| refused())?;
    if member.is_empty() || !score.is_finite() {
        return Err(refused());
    }
    Ok((index, Some((score, member.to_owned()))))
}

fn at_ms(ms: f64) -> SystemTime {
    // Scores are milliseconds since the epoch (an end's with its microseconds as a fraction).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = ms.max(0.0) as u64;
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The fields of a job header the listings use (`protocol/claim.rs` parses it whole).
struct HeaderView {
    state: char,
    attempts: u32,
    run_attempts: u32,
    name: String,
}

impl HeaderView {
    fn parse(raw: &str) -> Option<HeaderView> {
        let parts: Vec<&str> = raw.splitn(12, '|').collect();
        if parts.len() != 12 {
            return None;
        }
        Some(HeaderView {
            state: parts[0].chars().next()?,
            attempts: parts[8].parse().ok()?,
            run_attempts: parts[10].parse().ok()?,
            name: parts[11].to_owned(),
        })
    }
}

/// The input of a kept body, as JSON.
fn body_input(body: &[u8]) -> Shown {
    match Body::decode(body) {
        Ok(body) if body.chunks.is_none() => {
            serde_json::from_slice(&body.input).map_or(Shown::Unavailable, Shown::Value)
        }
        _ => Shown::Unavailable,
    }
}

/// What a failed run's end kept for a resubmission (`<fp>|<priority>`): its entry job's
/// fingerprint and priority.
fn read_resubmission(kept: &str) -> Option<(String, i32)> {
    let (fingerprint, priority) = kept.split_once('|')?;
    Some((fingerprint.to_owned(), priority.parse().ok()?))
}

/// What an ended run's stored outcome says.
struct Ended {
    state: RunState,
    created_at: Option<SystemTime>,
    attempts: u32,
    output: Option<serde_json::Value>,
    error: Option<Error>,
}

fn read_outcome(session: &SessionId, run: RunId, name: &str, wire: &str, dead: bool) -> Ended {
    let handle = RunHandle {
        session: session.clone(),
        run_id: run,
        processor: name.to_owned(),
        epoch: None,
    };
    let failed = if dead {
        RunState::DeadLettered
    } else {
        RunState::Failed
    };
    match decode::<serde_json::Value>(wire, &handle, Instant::now()) {
        Ok(result) => Ended {
            state: RunState::Completed,
            created_at: Some(result.meta.created_at),
            attempts: result.attempts,
            output: Some(result.output),
            error: None,
        },
        Err(failure) => Ended {
            // `Unserved` outcomes carry no creation time: their `created_at` is the read's.
            created_at: (!wire.starts_with("{\"Unserved\"")).then_some(failure.meta.created_at),
            state: failed,
            attempts: failure.attempts,
            output: None,
            error: Some(failure.error),
        },
    }
}

/// Each step node of `plan`, where its events put it. Step events name their processor, not
/// their node: a processor at two nodes of one plan has its events counted at the first.
fn steps(plan: Option<&Plan>, events: &[Event]) -> Vec<StepDetail> {
    let Some(plan) = plan else {
        return Vec::new();
    };
    let mut steps: Vec<StepDetail> = plan
        .nodes
        .iter()
        .filter_map(|node| match &node.kind {
            NodeKind::Step { processor, .. } => {
                Some(StepDetail::pending(node.id, processor.clone()))
            }
            _ => None,
        })
        .collect();
    for event in events {
        let Some(processor) = event.processor.as_deref() else {
            continue;
        };
        let Some(step) = steps.iter_mut().find(|s| s.processor == processor) else {
            continue;
        };
        match &event.kind {
            EventKind::StepStarted { .. } => {
                step.state = StepState::Running;
                step.attempts += 1;
                step.started_at.get_or_insert(event.at);
            }
            EventKind::StepCompleted { execution_time, .. } => {
                step.state = StepState::Completed;
                step.finished_at = Some(event.at);
                step.duration = Some(step.duration.unwrap_or_default() + *execution_time);
            }
            EventKind::StepFailed { error, .. } => {
                step.state = StepState::Failed;
                step.finished_at = Some(event.at);
                step.error = Some(error.to_string());
            }
            EventKind::StepRetrying { error, .. } => {
                step.state = StepState::Retrying;
                step.error = Some(error.to_string());
            }
            _ => {}
        }
    }
    steps
}

/// The events of `run` among stream entries read newest first, oldest first.
fn run_events(entries: Vec<(String, Vec<(String, String)>)>, run: RunId) -> Vec<Event> {
    all_events(entries)
        .into_iter()
        .filter(|e| e.run_id == Some(run))
        .collect()
}

/// The events of stream entries read newest first, oldest first.
fn all_events(entries: Vec<(String, Vec<(String, String)>)>) -> Vec<Event> {
    let mut events = Vec::new();
    for (_, fields) in entries.into_iter().rev() {
        for (field, json) in fields {
            let batch: Vec<Event> = match field.as_str() {
                "event" => serde_json::from_str(&json).into_iter().collect(),
                "events" => serde_json::from_str::<Vec<serde_json::Value>>(&json)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|value| serde_json::from_value(value).ok())
                    .collect(),
                _ => Vec::new(),
            };
            events.extend(batch);
        }
    }
    events
}

/// The jobs of a session's step runs that are leased or delayed, read once per call and only
/// when a step run past its entry job needs classifying; and, read once per call when a
/// leased run needs it, whether each run's latest step event in the stream's newest
/// [`EVENT_ENTRIES`] entries is a start.
#[derive(Default)]
struct InFlight {
    read: bool,
    leased: HashSet<String>,
    delayed: HashSet<String>,
    /// Run → its latest step event is `StepStarted`; `None` until read.
    started: Option<HashMap<RunId, bool>>,
    /// The stream holds more entries than were read (a run absent from `started` may have
    /// started before them).
    window_full: bool,
}

impl InFlight {
    /// A leased run is active once its step started: a job leased by a worker whose step
    /// waits for a concurrency permit is still queued. A run whose start is older than the
    /// events read counts as active.
    fn leased_state(&self, run: RunId) -> RunState {
        match self.started.as_ref().and_then(|started| started.get(&run)) {
            Some(true) => RunState::Active,
            Some(false) => RunState::Queued,
            None if self.window_full => RunState::Active,
            None => RunState::Queued,
        }
    }
}

impl RedisRuntime {
    /// What this runtime knows of processor `name` (registered, or submitted or executed
    /// here), and whether its runs' data is hidden: it, or a step of its plan, is configured
    /// with `redact`.
    pub(crate) fn known(&self, name: &str) -> Option<(ProcessorInfo, bool)> {
        let (info, redacted) = match self.processor_info(name) {
            Some(info) => (info, false),
            None => {
                let known = self.inner.known.get(name)?;
                (known.0.clone(), known.1)
            }
        };
        let redacted = redacted
            || info.config.redact
            || info.plan.nodes.iter().any(|node| match &node.kind {
                NodeKind::Step { processor, .. } => self
                    .processor_info(processor)
                    .is_some_and(|step| step.config.redact),
                _ => false,
            });
        Some((info, redacted))
    }

    fn wire(&self, error: super::protocol::WireError) -> Error {
        error.into_error(&self.inner.redis.errors)
    }

    /// Fills `cache.started` from the session's newest events (once per call).
    async fn step_starts(&self, keys: &SessionKeys, cache: &mut InFlight) -> Result<(), Error> {
        if cache.started.is_some() {
            return Ok(());
        }
        let entries = reads::recent_events(&self.inner.redis, keys, EVENT_ENTRIES)
            .await
            .map_err(|e| self.wire(e))?;
        cache.window_full = entries.len() == EVENT_ENTRIES;
        let mut started = HashMap::new();
        for event in all_events(entries) {
            let Some(run) = event.run_id else { continue };
            match event.kind {
                EventKind::StepStarted { .. } => {
                    started.insert(run, true);
                }
                EventKind::StepCompleted { .. }
                | EventKind::StepFailed { .. }
                | EventKind::StepRetrying { .. } => {
                    started.insert(run, false);
                }
                _ => {}
            }
        }
        cache.started = Some(started);
        Ok(())
    }

    async fn in_flight<'a>(
        &self,
        keys: &SessionKeys,
        cache: &'a mut InFlight,
    ) -> Result<&'a InFlight, Error> {
        if !cache.read {
            let (leased, delayed) = reads::in_flight(&self.inner.redis, keys, IN_FLIGHT_CAP)
                .await
                .map_err(|e| self.wire(e))?;
            let run_of = |job: String| job.get(..32).map(str::to_owned);
            cache.leased = leased.into_iter().filter_map(run_of).collect();
            cache.delayed = delayed.into_iter().filter_map(run_of).collect();
            cache.read = true;
        }
        Ok(cache)
    }

    /// Summaries of the live runs at `positions` (`None` where one ended meanwhile).
    async fn live_summaries(
        &self,
        session: &SessionId,
        keys: &SessionKeys,
        positions: &[Position],
        cache: &mut InFlight,
    ) -> Result<Vec<Option<RunSummary>>, Error> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = positions.iter().map(|(_, run)| run.clone()).collect();
        let (headers, delayed) = reads::entry_jobs(&self.inner.redis, keys, &ids)
            .await
            .map_err(|e| self.wire(e))?;
        // Step runs past their entry job: their hash names them.
        let stepping: Vec<RunId> = positions
            .iter()
            .zip(&headers)
            .filter(|(_, header)| header.is_none())
            .filter_map(|((_, run), _)| run.parse().ok())
            .collect();
        let mut hashes: HashMap<RunId, (Option<String>, Option<u32>)> = HashMap::new();
        if !stepping.is_empty() {
            let read = reads::run_hashes(&self.inner.redis, keys, &stepping)
                .await
                .map_err(|e| self.wire(e))?;
            hashes = stepping.iter().copied().zip(read).collect();
            self.in_flight(keys, cache).await?;
        }
        let leased = headers.iter().any(|header| {
            header
                .as_deref()
                .is_some_and(|h| h.starts_with('L') || h.starts_with('C'))
        }) || stepping
            .iter()
            .any(|run| cache.leased.contains(&run.to_string()));
        if leased {
            self.step_starts(keys, cache).await?;
        }
        let mut rows = Vec::with_capacity(positions.len());
        for (((created, id), header), delayed) in positions.iter().zip(headers).zip(delayed) {
            let Ok(run) = id.parse::<RunId>() else {
                rows.push(None);
                continue;
            };
            let (state, processor, attempts) = match header.as_deref().and_then(HeaderView::parse) {
                Some(header) => {
                    let state = match header.state {
                        'L' | 'C' => cache.leased_state(run),
                        _ if delayed.is_some() => RunState::Delayed,
                        _ => RunState::Queued,
                    };
                    (state, header.name, header.run_attempts + header.attempts)
                }
                None => {
                    let Some((name, attempts)) = hashes.remove(&run) else {
                        // Neither an entry job nor a run hash: it ended meanwhile.
                        rows.push(None);
                        continue;
                    };
                    let state = if cache.leased.contains(id) {
                        cache.leased_state(run)
                    } else if cache.delayed.contains(id) {
                        RunState::Delayed
                    } else {
                        RunState::Queued
                    };
                    (state, name.unwrap_or_default(), attempts.unwrap_or(0))
                }
            };
            rows.push(Some(RunSummary {
                session: session.clone(),
                run,
                processor,
                state,
                // The attempt running now counts.
                attempts: attempts + u32::from(state == RunState::Active),
                created_at: at_ms(*created),
                ended_at: None,
                error: None,
            }));
        }
        Ok(rows)
    }

    /// Summaries of the ended runs at `positions` (`None` where the outcome was trimmed,
    /// except for dead letters, which are listed for as long as they are kept).
    async fn ended_summaries(
        &self,
        session: &SessionId,
        keys: &SessionKeys,
        positions: &[Position],
        phase: Phase,
    ) -> Result<Vec<Option<RunSummary>>, Error> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = positions.iter().map(|(_, run)| run.clone()).collect();
        let (fields, dead) = reads::ended(&self.inner.redis, keys, &ids)
            .await
            .map_err(|e| self.wire(e))?;
        let mut fields = fields.into_iter();
        let mut rows = Vec::with_capacity(positions.len());
        for ((ended_ms, id), dead) in positions.iter().zip(dead) {
            let (outcome, name) = (fields.next().flatten(), fields.next().flatten());
            let Ok(run) = id.parse::<RunId>() else {
                rows.push(None);
                continue;
            };
            let dead = dead.is_some() || phase == Phase::Dead;
            let processor = name.unwrap_or_default();
            let summary = match outcome {
                Some(wire) => {
                    let ended = read_outcome(session, run, &processor, &wire, dead);
                    RunSummary {
                        session: session.clone(),
                        run,
                        processor,
                        state: ended.state,
                        created_at: ended.created_at.unwrap_or_else(|| at_ms(*ended_ms)),
                        ended_at: Some(at_ms(*ended_ms)),
                        attempts: ended.attempts,
                        error: ended.error.map(|e| e.to_string()),
                    }
                }
                None if dead => RunSummary {
                    session: session.clone(),
                    run,
                    processor,
                    state: RunState::DeadLettered,
                    created_at: at_ms(*ended_ms),
                    ended_at: Some(at_ms(*ended_ms)),
                    attempts: 0,
                    error: None,
                },
                None => {
                    rows.push(None);
                    continue;
                }
            };
            rows.push(Some(summary));
        }
        Ok(rows)
    }

    /// Up to `limit` members of the set `phase` walks, after `at`.
    async fn candidates(
        &self,
        keys: &SessionKeys,
        phase: Phase,
        at: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Position>, Error> {
        let redis = &self.inner.redis;
        let read = |key: String| async move {
            reads::newest(redis, &key, at, limit)
                .await
                .map_err(|e| self.wire(e))
        };
        match phase {
            Phase::Live => read(keys.runs()).await,
            Phase::Completed => read(keys.completed()).await,
            Phase::Failed => read(keys.failed()).await,
            Phase::Dead => read(keys.dead()).await,
            Phase::Ended => {
                let (completed, failed) =
                    futures::try_join!(read(keys.completed()), read(keys.failed()))?;
                let mut merged: Vec<Position> = completed.into_iter().chain(failed).collect();
                merged.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
                merged.truncate(limit);
                Ok(merged)
            }
        }
    }

    async fn list_runs(
        &self,
        session: &SessionId,
        filter: &RunFilter,
        page: PageRequest,
    ) -> Result<Page<RunSummary>, Error> {
        let keys = self.inner.keys.session(session);
        let want = page.clamped_limit();
        let phases = Phase::of(filter.state);
        let (mut index, mut at) = match &page.after {
            None => (0, None),
            Some(cursor) => read_cursor(cursor, phases)?,
        };
        let mut items = Vec::new();
        let mut looked = 0;
        let mut cache = InFlight::default();
        loop {
            let phase = phases[index];
            // A filtered page reads ahead, since not every run it looks at is kept.
            let chunk = match filter.state.is_some() || filter.processor.is_some() {
                true => MAX_PAGE,
                false => want - items.len(),
            };
            let positions = self.candidates(&keys, phase, at.as_ref(), chunk).await?;
            let exhausted = positions.len() < chunk;
            let rows = match phase {
                Phase::Live => {
                    self.live_summaries(session, &keys, &positions, &mut cache)
                        .await?
                }
                _ => {
                    self.ended_summaries(session, &keys, &positions, phase)
                        .await?
                }
            };
            for (position, row) in positions.into_iter().zip(rows) {
                looked += 1;
                at = Some(position);
                let kept = row.filter(|row| {
                    filter.state.is_none_or(|state| row.state == state)
                        && filter
                            .processor
                            .as_ref()
                            .is_none_or(|p| *p == row.processor)
                });
                if let Some(row) = kept {
                    items.push(row);
                    if items.len() == want {
                        return Ok(Page {
                            items,
                            next: Some(write_cursor(phase, at.as_ref())),
                        });
                    }
                }
            }
            if exhausted {
                index += 1;
                at = None;
                if index == phases.len() {
                    return Ok(Page { items, next: None });
                }
            }
            if looked >= SCAN_CAP {
                return Ok(Page {
                    items,
                    next: Some(write_cursor(phases[index], at.as_ref())),
                });
            }
        }
    }

    async fn list_sessions(&self, page: PageRequest) -> Result<Page<SessionSummary>, Error> {
        let want = page.clamped_limit();
        let at = match &page.after {
            None => None,
            Some(cursor) => read_cursor(cursor, &[Phase::Live])?.1,
        };
        let positions = reads::newest(
            &self.inner.redis,
            &self.inner.keys.sessions(),
            at.as_ref(),
            want,
        )
        .await
        .map_err(|e| self.wire(e))?;
        let next = (positions.len() == want).then(|| write_cursor(Phase::Live, positions.last()));
        let sessions: Vec<SessionId> = positions
            .iter()
            .filter_map(|(_, id)| SessionId::new(id).ok())
            .collect();
        // One pipeline per session: on a cluster each is on its own slot.
        let counted = futures::future::try_join_all(sessions.iter().map(|session| {
            let keys = self.inner.keys.session(session);
            async move { reads::counts(&self.inner.redis, &keys).await }
        }))
        .await
        .map_err(|e| self.wire(e))?;
        let items = sessions
            .into_iter()
            .zip(counted)
            .map(
                |(session, (live, completed, failed, dead))| SessionSummary {
                    session,
                    live_runs: live,
                    completed,
                    // Dead letters are failed runs too: counted once, as dead letters.
                    failed: failed.saturating_sub(dead),
                    dead_lettered: dead,
                },
            )
            .collect();
        Ok(Page { items, next })
    }

    /// The summary of a live run from its record (its entry job, or its run hash and the
    /// session's jobs in flight).
    async fn live_summary(
        &self,
        session: &SessionId,
        keys: &SessionKeys,
        run: RunId,
        created: f64,
        record: &RunRecord,
    ) -> Result<RunSummary, Error> {
        let mut cache = InFlight::default();
        self.step_starts(keys, &mut cache).await?;
        let (state, processor, attempts) =
            match record.header.as_deref().and_then(HeaderView::parse) {
                Some(header) => {
                    let (_, delayed) =
                        reads::entry_jobs(&self.inner.redis, keys, &[run.to_string()])
                            .await
                            .map_err(|e| self.wire(e))?;
                    let state = match header.state {
                        'L' | 'C' => cache.leased_state(run),
                        _ if delayed.first().is_some_and(Option::is_some) => RunState::Delayed,
                        _ => RunState::Queued,
                    };
                    (state, header.name, header.run_attempts + header.attempts)
                }
                None => {
                    let cache = self.in_flight(keys, &mut cache).await?;
                    let id = run.to_string();
                    let state = if cache.leased.contains(&id) {
                        cache.leased_state(run)
                    } else if cache.delayed.contains(&id) {
                        RunState::Delayed
                    } else {
                        RunState::Queued
                    };
                    (
                        state,
                        record.hash_name.clone().unwrap_or_default(),
                        record.hash_attempts.unwrap_or(0),
                    )
                }
            };
        Ok(RunSummary {
            session: session.clone(),
            run,
            processor,
            state,
            created_at: at_ms(created),
            ended_at: None,
            attempts: attempts + u32::from(state == RunState::Active),
            error: None,
        })
    }

    async fn run_detail(
        &self,
        session: &SessionId,
        run: RunId,
    ) -> Result<Option<RunDetail>, Error> {
        let keys = self.inner.keys.session(session);
        let record = reads::run_record(&self.inner.redis, &keys, run)
            .await
            .map_err(|e| self.wire(e))?;
        let ended_ms = record.completed.or(record.failed).or(record.dead);
        let mut output = Shown::Unavailable;
        let mut state = Shown::Unavailable;
        let mut error = None;
        let summary = match (record.live, ended_ms) {
            (Some(created), _) => {
                self.live_summary(session, &keys, run, created, &record)
                    .await?
            }
            (None, Some(ended_ms)) => {
                let processor = record.name.clone().unwrap_or_default();
                let dead = record.dead.is_some();
                let ended = record
                    .outcome
                    .as_deref()
                    .map(|wire| read_outcome(session, run, &processor, wire, dead));
                let summary = RunSummary {
                    session: session.clone(),
                    run,
                    processor,
                    state: match &ended {
                        Some(ended) => ended.state,
                        None if dead => RunState::DeadLettered,
                        None if record.completed.is_some() => RunState::Completed,
                        None => RunState::Failed,
                    },
                    created_at: ended
                        .as_ref()
                        .and_then(|e| e.created_at)
                        .unwrap_or_else(|| at_ms(ended_ms)),
                    ended_at: Some(at_ms(ended_ms)),
                    attempts: ended.as_ref().map_or(0, |e| e.attempts),
                    error: ended
                        .as_ref()
                        .and_then(|e| e.error.as_ref())
                        .map(ToString::to_string),
                };
                if let Some(ended) = ended {
                    if let Some(value) = ended.output {
                        output = Shown::Value(value);
                    }
                    if let Some(Error::StepFailed {
                        state_before: Some(snapshot),
                        ..
                    }) = &ended.error
                        && let Ok(value) = snapshot.decode::<serde_json::Value>()
                    {
                        state = Shown::Value(value);
                    }
                    error = ended.error.as_ref().map(ErrorDetail::of);
                }
                summary
            }
            (None, None) => return Ok(None),
        };
        let input = record
            .body
            .as_deref()
            .map_or(Shown::Unavailable, body_input);
        let known = self.known(&summary.processor);
        let entries = reads::recent_events(&self.inner.redis, &keys, EVENT_ENTRIES)
            .await
            .map_err(|e| self.wire(e))?;
        let events = run_events(entries, run);
        let plan = known.as_ref().map(|(info, _)| info.plan.clone());
        let steps = steps(plan.as_ref(), &events);
        let mut detail = RunDetail {
            summary,
            plan,
            steps,
            input,
            output,
            state,
            error,
            events,
            retry_of: record.retry_of.as_deref().and_then(|r| r.parse().ok()),
            retried_as: record.retried_as.as_deref().and_then(|r| r.parse().ok()),
        };
        // Redacted when either says so: this runtime's own config of the processor, or the
        // flag its submitter wrote in the run's entry body. A processor this runtime does not
        // know, with no readable body to say, stays hidden (fail closed).
        let flagged = record
            .body
            .as_deref()
            .and_then(|body| Body::decode(body).ok())
            .map(|body| body.redact);
        let redacted = match (known.map(|(_, redacted)| redacted), flagged) {
            (Some(here), flagged) => here || flagged == Some(true),
            (None, Some(flagged)) => flagged,
            (None, None) => true,
        };
        if redacted {
            redact(&mut detail);
        }
        Ok(Some(detail))
    }

    async fn live_workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let redis = &self.inner.redis;
        let now = reads::now_ms(redis).await.map_err(|e| self.wire(e))?;
        let records = reads::workers(redis, &self.inner.keys, now, MAX_WORKERS)
            .await
            .map_err(|e| self.wire(e))?;
        let heartbeat = self.inner.config.renew_every() * 3;
        #[allow(clippy::cast_precision_loss)]
        let heartbeat_ms = millis(heartbeat) as f64;
        let (pid, host) = (std::process::id(), super::renewer::host_name());
        let mut workers: Vec<WorkerInfo> = records
            .into_iter()
            .map(|record| {
                let info = &record.info;
                let mut processors: Vec<String> = info
                    .get("processors")
                    .map(|names| {
                        names
                            .split('\n')
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                processors.sort();
                let seen = info
                    .get("seen")
                    .and_then(|seen| seen.parse::<f64>().ok())
                    .unwrap_or(record.lapses_ms - heartbeat_ms);
                let their_pid = info.get("pid").and_then(|pid| pid.parse().ok());
                let their_host = info.get("host").filter(|h| !h.is_empty()).cloned();
                // This runtime's own id, or another runtime of this process (same pid, same
                // host).
                let this_process = record.id == self.inner.worker_id
                    || (their_pid == Some(pid) && their_host.as_deref() == Some(host.as_str()));
                WorkerInfo {
                    this_process,
                    id: record.id,
                    host: their_host,
                    pid: their_pid,
                    processors,
                    last_seen: at_ms(seen),
                }
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    async fn retry(&self, session: &SessionId, run: RunId) -> Result<RetryOutcome, Error> {
        let keys = self.inner.keys.session(session);
        let record = reads::run_record(&self.inner.redis, &keys, run)
            .await
            .map_err(|e| self.wire(e))?;
        if let Some(new) = record.retried_as.as_deref().and_then(|r| r.parse().ok()) {
            return Ok(RetryOutcome::AlreadyRetried { run: new });
        }
        let not_retryable = |why: &str| {
            Error::validation(
                "run",
                format!("run `{run}` of session `{session}` cannot be retried: {why}"),
            )
        };
        if record.live.is_some() {
            return Err(not_retryable("it is live"));
        }
        if record.completed.is_some() {
            return Err(not_retryable("it completed"));
        }
        if record.failed.is_none() && record.dead.is_none() {
            return Err(Error::not_found(
                format!("run of session `{session}`"),
                run.to_string(),
                std::iter::empty::<String>(),
            ));
        }
        let (Some(kept), Some(name)) = (&record.body, &record.name) else {
            return Err(not_retryable(
                "its input is no longer kept (it is kept with the outcome, for `result_ttl`)",
            ));
        };
        let kept = Body::decode(kept)
            .ok()
            .filter(|body| body.chunks.is_none())
            .ok_or_else(|| not_retryable("its kept input does not read"))?;
        // The processor as this runtime knows it, else what the run's end kept of its entry
        // job: a retry needs no processor registered here.
        let (fingerprint, priority, redacted_here) = match self.known(name) {
            Some((info, redacted)) => (
                job_fingerprint(info.contract.fingerprint, info.plan.fingerprint),
                info.config.priority,
                redacted,
            ),
            None => {
                let (fingerprint, priority) = record
                    .resubmission
                    .as_deref()
                    .and_then(read_resubmission)
                    .ok_or_else(|| Error::not_found("processor", name, self.registered()))?;
                (fingerprint, priority, false)
            }
        };
        let fresh = RunId::generate();
        let body = Body {
            step: None,
            call: None,
            chunks: None,
            // The retry is a new submission: it runs in the retrying caller's trace.
            trace: super::trace::current(),
            redact: kept.redact || redacted_here,
            input: kept.input,
        }
        .encode();
        let outgoing = Outgoing {
            run: fresh,
            name: name.clone(),
            fingerprint,
            priority,
            lease: false,
            body,
        };
        let runs = std::slice::from_ref(&outgoing);
        let written = self
            .inner
            .client
            .write_retry(session, None, Some(run), runs)
            .await?;
        match written {
            Err(existing) => Ok(RetryOutcome::AlreadyRetried { run: existing }),
            Ok(written) => {
                let accepted = written
                    .accepted(runs, &self.inner.config)
                    .into_iter()
                    .next();
                match accepted {
                    Some(Ok(_)) => Ok(RetryOutcome::Retried { run: fresh }),
                    Some(Err(error)) => Err(error),
                    None => Err(Error::resource("submit", "no answer for the retry")),
                }
            }
        }
    }

    async fn cancel(&self, session: &SessionId, run: RunId) -> Result<CancelOutcome, Error> {
        let inner = &self.inner;
        let keys = inner.keys.session(session);
        let record = reads::run_record(&inner.redis, &keys, run)
            .await
            .map_err(|e| self.wire(e))?;
        let created = record.live.map_or_else(SystemTime::now, at_ms);
        let mut failed = failure(
            session,
            run,
            created,
            Instant::now(),
            Error::Cancelled {
                reason: format!("run `{run}` was cancelled by an operator (`cancel_run`)"),
            },
        );
        failed.attempts = record
            .header
            .as_deref()
            .and_then(HeaderView::parse)
            .map_or(record.hash_attempts.unwrap_or(0), |h| {
                h.run_attempts + h.attempts
            });
        failed.execution_time = SystemTime::now()
            .duration_since(created)
            .unwrap_or_default();
        let outcome = serde_json::to_string(&serde_json::json!({ "Err": failed }))?;
        let done = Done::new(session, run, &outcome).to_string();
        let cancelled = reads::cancel(
            &inner.redis,
            &keys,
            run,
            &outcome,
            &inner.keys.done_channel(session),
            &done,
            millis(inner.config.session_ttl),
        )
        .await
        .map_err(|e| self.wire(e))?;
        match cancelled {
            CancelReply::Done => {
                // Its running jobs, here and on every worker, see their tokens fire.
                inner.leases.abort(session, run);
                let cancel = Control::Abort {
                    session: session.clone(),
                    run,
                };
                let channel = inner.keys.control_channel();
                if let Err(error) = messages::publish(&inner.redis, &channel, &cancel).await {
                    tracing::warn!(%session, %run, error = %self.wire(error), "announcing a cancel failed; the run's running steps finish and their commits are refused");
                }
                Ok(CancelOutcome::Cancelled)
            }
            CancelReply::Ended(state) => Ok(CancelOutcome::AlreadyEnded {
                state: state.parse()?,
            }),
            CancelReply::Stopping => Err(Error::SessionStopped {
                session: session.to_string(),
            }),
            CancelReply::Unknown => Err(Error::not_found(
                format!("run of session `{session}`"),
                run.to_string(),
                std::iter::empty::<String>(),
            )),
        }
    }
}

impl Inspect for RedisRuntime {
    async fn sessions(&self, page: PageRequest) -> Result<Page<SessionSummary>, Error> {
        self.list_sessions(page).await
    }

    async fn runs(
        &self,
        session: &SessionId,
        filter: &RunFilter,
        page: PageRequest,
    ) -> Result<Page<RunSummary>, Error> {
        self.list_runs(session, filter, page).await
    }

    async fn run(&self, session: &SessionId, run: RunId) -> Result<Option<RunDetail>, Error> {
        self.run_detail(session, run).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        self.live_workers().await
    }

    async fn retry_run(&self, session: &SessionId, run: RunId) -> Result<RetryOutcome, Error> {
        self.retry(session, run).await
    }

    async fn cancel_run(&self, session: &SessionId, run: RunId) -> Result<CancelOutcome, Error> {
        self.cancel(session, run).await
    }
}
