//! [`LocalRuntime`]: runs workflows in-process on tokio.
//!
//! No serialisation and no task per step: a run is one future that interprets the workflow's
//! combinators directly, so its overhead is a small multiple of calling the async fns by
//! hand. Sessions, limits, retries, timeouts, stats and events behave as on every runtime.

mod history;
mod inspect;
mod session;

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use self::history::{DEFAULT_HISTORY, EVENTS_PER_RUN};
use self::history::{Fnv, NewRun, Recorded, SessionHistory};
use self::session::{LocalSession, RunHost, RunningRun};
use super::embed::Embedding;
use super::inspect::{KeptInput, ProcessorView};
use super::limits::{PrioritySemaphore, RateLimiter};
use super::stats::Counters;
use super::step::{while_live, within_grace};
use super::{
    DEFAULT_CANCEL_GRACE, DEFAULT_MAX_CALL_DEPTH, Executes, ProcessorInfo, QueueStats, Runtime,
    RuntimeStats, SessionStats,
};
use crate::context::RunScope;
use crate::event::{Event, EventBus, EventKind};
use crate::state::RunFailure;
use crate::{
    Ctx, Error, EventStream, Processor, ProcessorConfig, Registration, RunOutcome, RunResult,
    SessionId,
};

/// The in-process runtime: the embedded default.
///
/// Cloning is cheap and every clone is the same runtime.
///
/// ```
/// # async fn demo() -> Result<(), am2z::Error> {
/// use am2z::{processor_fn, Chain, Error, Executes, LocalRuntime, Runtime};
///
/// async fn add_one(x: i64) -> Result<i64, Error> { Ok(x + 1) }
/// async fn double(x: i64) -> Result<i64, Error> { Ok(x * 2) }
///
/// let runtime = LocalRuntime::new();
/// runtime.start().await?;
/// let flow = Chain::new(processor_fn(add_one), processor_fn(double));
/// let result = runtime.execute(&flow, 5).await?;
/// assert_eq!(result.output, 12);
/// assert_eq!(result.meta.version, 2); // one per step
/// runtime.stop().await?;
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct LocalRuntime {
    shared: Arc<Shared>,
}

/// Settings of a [`LocalRuntime`]; see [`LocalRuntime::builder`].
#[derive(Debug, Clone)]
pub struct LocalRuntimeBuilder {
    settings: Settings,
}

#[derive(Debug, Clone)]
struct Settings {
    max_call_depth: u32,
    worker_slots: Option<usize>,
    event_capacity: usize,
    cancel_grace: Duration,
    /// Ended runs kept per session for inspection.
    history: usize,
}

pub(super) struct Shared {
    settings: Settings,
    events: EventBus,
    /// Step attempts running at once across the runtime, when bounded.
    worker_slots: Option<Arc<PrioritySemaphore>>,
    running: AtomicBool,
    lifecycle: Mutex<Lifecycle>,
    registry: RwLock<BTreeMap<&'static str, Registration>>,
    processors: RwLock<HashMap<&'static str, Arc<ProcessorState>>>,
    sessions: Mutex<HashMap<SessionId, Arc<LocalSession>>>,
    /// Numbers sessions in the order they were made.
    session_seq: AtomicU64,
    /// What inspection shows of each processor run here, by its type and name.
    views: RwLock<HashMap<(TypeId, &'static str), Arc<ProcessorView>, Fnv>>,
}

struct Lifecycle {
    started_at: Option<Instant>,
    /// Parent of every session's token; fired by `stop`.
    token: CancellationToken,
}

/// A processor's runtime-wide counters and gates, made from its configuration.
pub(super) struct ProcessorState {
    counters: Arc<Counters>,
    concurrency: Option<Arc<PrioritySemaphore>>,
    rate: Option<Arc<RateLimiter>>,
}

impl ProcessorState {
    fn new(config: &ProcessorConfig) -> Self {
        ProcessorState {
            counters: Arc::default(),
            concurrency: config.concurrency.map(|n| {
                Arc::new(PrioritySemaphore::new(
                    usize::try_from(n).unwrap_or(usize::MAX),
                ))
            }),
            rate: config
                .rate_limit
                .map(|r| Arc::new(RateLimiter::new(r.max, r.per))),
        }
    }
}

impl Shared {
    pub(super) fn processor_state(
        &self,
        name: &'static str,
        config: &ProcessorConfig,
    ) -> Arc<ProcessorState> {
        if let Some(state) = self
            .processors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Arc::clone(state);
        }
        let mut processors = self.processors.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            processors
                .entry(name)
                .or_insert_with(|| Arc::new(ProcessorState::new(config))),
        )
    }

    fn session(self: &Arc<Self>, id: &SessionId) -> Result<Arc<LocalSession>, Error> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = sessions.get(id) {
            return Ok(Arc::clone(session));
        }
        let parent = self
            .lifecycle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .token
            .clone();
        if parent.is_cancelled() {
            return Err(not_started());
        }
        let session = Arc::new(LocalSession::new(
            id.clone(),
            Arc::clone(self),
            parent.child_token(),
            self.session_seq.fetch_add(1, Ordering::Relaxed),
        ));
        sessions.insert(id.clone(), Arc::clone(&session));
        drop(sessions);
        self.publish_session_event(id, EventKind::SessionCreated);
        Ok(session)
    }

    fn publish_session_event(&self, session: &SessionId, kind: EventKind) {
        if self.events.is_observed() {
            self.events.publish(Event {
                session: session.clone(),
                run_id: None,
                processor: None,
                at: std::time::SystemTime::now(),
                kind,
            });
        }
    }

    /// What inspection shows of the processor of type `key.0` named `key.1`, worked out once.
    fn view(
        &self,
        key: (TypeId, &'static str),
        make: impl FnOnce() -> ProcessorView,
    ) -> Arc<ProcessorView> {
        if let Some(view) = self
            .views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Arc::clone(view);
        }
        let view = Arc::new(make());
        self.views
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Arc::clone(&view));
        view
    }

    fn take_sessions(&self, only: Option<&SessionId>) -> Vec<Arc<LocalSession>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match only {
            Some(id) => sessions.remove(id).into_iter().collect(),
            None => sessions.drain().map(|(_, session)| session).collect(),
        }
    }

    /// Drops `id`'s state if no run of it is under way (a distributed worker forgets a session
    /// that expired elsewhere). Runs take their session under the same lock, so none can be
    /// starting in it meanwhile.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn forget_idle(&self, id: &SessionId) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let idle = sessions
            .get(id)
            .is_some_and(|session| Arc::strong_count(session) == 1);
        if idle {
            sessions.remove(id);
        }
        idle
    }

    fn stop_sessions(&self, sessions: Vec<Arc<LocalSession>>) {
        for session in sessions {
            session.stopped.store(true, Ordering::SeqCst);
            session.token.cancel();
            self.publish_session_event(&session.id, EventKind::SessionStopped);
        }
    }
}

fn not_started() -> Error {
    Error::configuration("the runtime is not started: call `start().await` before executing")
}

impl Default for LocalRuntimeBuilder {
    fn default() -> Self {
        LocalRuntimeBuilder {
            settings: Settings {
                max_call_depth: DEFAULT_MAX_CALL_DEPTH,
                worker_slots: None,
                event_capacity: 4096,
                cancel_grace: DEFAULT_CANCEL_GRACE,
                history: DEFAULT_HISTORY,
            },
        }
    }
}

impl LocalRuntimeBuilder {
    /// The deepest `ctx.call` nesting allowed (default 10).
    pub fn max_call_depth(mut self, depth: u32) -> Self {
        self.settings.max_call_depth = depth;
        self
    }

    /// Bounds the step attempts running at once across the runtime (default: unbounded).
    /// Waiting attempts are served by their processor's priority.
    pub fn worker_slots(mut self, slots: usize) -> Self {
        self.settings.worker_slots = Some(slots.max(1));
        self
    }

    /// How many events a subscriber may fall behind before it skips the oldest (default 4096).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.settings.event_capacity = capacity.max(1);
        self
    }

    /// How long a cancelled run's steps get to return after their cancellation tokens fire
    /// (`stop_session`, `stop`, a failed sibling of a fail-fast parallel) before their futures
    /// are dropped (default 1 s). A step that watches its token can stop the work it started
    /// and clean up; its caller's outcome is reported once the steps returned or the grace
    /// ran out. Timeouts are exact and get no grace.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.settings.cancel_grace = grace;
        self
    }

    /// How many ended runs each session keeps for inspection (default [`DEFAULT_HISTORY`],
    /// 10 000); beyond it the oldest ended run is dropped. Live runs are always kept.
    /// `stop_session` drops a session's runs. Each kept run holds a copy of its input, its
    /// output as JSON (when its data is serde) and its last [`EVENTS_PER_RUN`] events.
    pub fn history(mut self, ended_runs: usize) -> Self {
        self.settings.history = ended_runs;
        self
    }

    /// Builds the runtime (not yet started).
    pub fn build(self) -> LocalRuntime {
        let settings = self.settings;
        let stopped = CancellationToken::new();
        stopped.cancel();
        LocalRuntime {
            shared: Arc::new(Shared {
                events: EventBus::new(settings.event_capacity),
                worker_slots: settings
                    .worker_slots
                    .map(|n| Arc::new(PrioritySemaphore::new(n))),
                settings,
                running: AtomicBool::new(false),
                lifecycle: Mutex::new(Lifecycle {
                    started_at: None,
                    token: stopped,
                }),
                registry: RwLock::new(BTreeMap::new()),
                processors: RwLock::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                session_seq: AtomicU64::new(0),
                views: RwLock::new(HashMap::default()),
            }),
        }
    }
}

impl LocalRuntime {
    /// A runtime with the default settings (not yet started).
    pub fn new() -> Self {
        LocalRuntimeBuilder::default().build()
    }

    /// Settings for a runtime.
    pub fn builder() -> LocalRuntimeBuilder {
        LocalRuntimeBuilder::default()
    }

    /// Forgets `session`'s state here if none of its runs is under way (it expired in the
    /// distributed runtime this one executes for); returns whether it did.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn forget_idle_session(&self, session: &SessionId) -> bool {
        self.shared.forget_idle(session)
    }

    /// Publishes `run`'s [`RunStarted`](EventKind::RunStarted) (the Redis runtime's worker,
    /// when it first starts the run's entry job): on this executor's bus, the way its steps'
    /// events reach the session's stream.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn publish_run_started(
        &self,
        session: &SessionId,
        run: crate::RunId,
        processor: &str,
    ) {
        let events = &self.shared.events;
        if events.is_observed() {
            events.publish(Event {
                session: session.clone(),
                run_id: Some(run),
                processor: Some(processor.to_owned().into()),
                at: std::time::SystemTime::now(),
                kind: EventKind::RunStarted,
            });
        }
    }

    /// Runs `processor` on behalf of another runtime (a distributed worker), with the
    /// identity and hooks of `embedding`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) async fn execute_embedded<P: Processor>(
        &self,
        session: &SessionId,
        processor: &P,
        input: P::Input,
        embedding: Arc<Embedding>,
    ) -> RunOutcome<P::Output> {
        self.run(session, processor, input, Some(embedding), Recording::Off)
            .await
    }

    async fn run<P: Processor>(
        &self,
        session_id: &SessionId,
        processor: &P,
        input: P::Input,
        embedding: Option<Arc<Embedding>>,
        recording: Recording<P>,
    ) -> RunOutcome<P::Output> {
        let started = Instant::now();
        let shared = &self.shared;
        let session = match shared.running.load(Ordering::Acquire) {
            true => shared.session(session_id),
            false => Err(not_started()),
        };
        let session = match session {
            Ok(session) => session,
            Err(error) => {
                if let Recording::Submitted { mut recorded, .. } = recording {
                    recorded.finish(Err(&error), 0);
                }
                return Err(detached_failure(session_id, error, started));
            }
        };
        let _running = RunningRun::enter(&session);
        // A recorded run has its own token (`cancel_run` fires it) and host (its gauges and
        // events go to its record). An embedded run can be cancelled by its runtime: its own
        // token, under the session's. Otherwise a run shares the session's token.
        let (mut recorded, show_output) = match recording {
            Recording::Off => (None, None),
            Recording::New {
                view,
                input,
                output,
            } => {
                let new = NewRun {
                    processor: processor.name(),
                    view,
                    input,
                    retry_of: None,
                };
                let recorded = SessionHistory::submit(&session.history, new);
                (Some(recorded), Some(output))
            }
            Recording::Submitted { recorded, output } => (Some(recorded), Some(output)),
        };
        let cancelled_by = embedding.as_ref().map(|e| e.cancel.clone());
        let (scope, token) = match (&mut recorded, &cancelled_by) {
            (Some(recorded), _) => {
                let record = &recorded.record;
                let (gauges, token) = recorded.live.take().unwrap_or_default();
                let host = Arc::new(RunHost {
                    session: Arc::clone(&session),
                    record: Arc::clone(record),
                    gauges,
                });
                let scope = RunScope::with_identity(
                    session.id.clone(),
                    host,
                    embedding,
                    record.run_id,
                    record.created_at,
                );
                (scope, token)
            }
            (None, Some(_)) => (
                RunScope::new(session.id.clone(), Arc::clone(&session) as _, embedding),
                session.token.child_token(),
            ),
            (None, None) => (
                RunScope::new(session.id.clone(), Arc::clone(&session) as _, embedding),
                session.token.clone(),
            ),
        };
        let scope = Arc::new(scope);
        // The run's span, the parent of its steps' (`docs/tracing.md`); an embedded run is
        // in the span its runtime made for it.
        let span = match &scope.embedding {
            None => tracing::info_span!(
                "am2z.run",
                session = %scope.session,
                run = %scope.run_id,
                processor = processor.name(),
            ),
            Some(_) => tracing::Span::none(),
        };
        let ctx = Ctx::root(Arc::clone(&scope), token.clone());
        // What else cancels the run: the embedding runtime, or, for a recorded run (whose token
        // is its own, so that `cancel_run` fires it alone), its session.
        let also_cancelled_by = match (&recorded, &cancelled_by) {
            (Some(_), _) => Some(&session.token),
            (None, cancel) => cancel.as_ref(),
        };

        // The work is polled first, so a run that finishes at once never registers with the
        // tokens. Once a token fires, the steps see theirs fire and get the cancel grace to
        // return; any outcome of a cancelled run is reported as its cancellation.
        if scope.embedding.is_none() {
            // A root run of this runtime; an embedded run's runtime announces its start (once,
            // not at each of its jobs' executions).
            scope.publish(Some(processor.name()), || EventKind::RunStarted);
        }
        let work = ctx.run(processor, input).instrument(span);
        tokio::pin!(work);
        let also_cancelled = async {
            match also_cancelled_by {
                Some(cancel) => cancel.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let fired = || {
            token.is_cancelled() || also_cancelled_by.is_some_and(|cancel| cancel.is_cancelled())
        };
        let result = tokio::select! {
            biased;
            result = while_live(fired, &mut work) => result.map_err(|failed| failed.error),
            () = token.cancelled() => Err(cancelled(&mut work, shared.settings.cancel_grace).await),
            () = also_cancelled => {
                token.cancel();
                Err(cancelled(&mut work, shared.settings.cancel_grace).await)
            },
        };
        let result = match result {
            Err(_) if session.token.is_cancelled() => {
                Err(if session.stopped.load(Ordering::SeqCst) {
                    Error::SessionStopped {
                        session: session.id.to_string(),
                    }
                } else {
                    Error::Cancelled {
                        reason: "the runtime was stopped".to_owned(),
                    }
                })
            }
            other => other,
        };

        let execution_time = started.elapsed();
        let meta = scope.metadata();
        let attempts = scope.attempts.load(Ordering::Relaxed);
        if !scope.part_of_run() {
            // The run's processor names it, so observers can count runs by processor.
            scope.publish(Some(processor.name()), || match &result {
                Ok(_) => EventKind::RunCompleted { execution_time },
                Err(error) => EventKind::RunFailed {
                    error: error.clone(),
                },
            });
        }
        if let (Some(recorded), Some(show_output)) = (&mut recorded, show_output) {
            recorded.finish(result.as_ref().map(show_output), attempts);
        }
        match result {
            Ok(output) => Ok(RunResult {
                output,
                meta,
                attempts,
                execution_time,
            }),
            Err(error) => Err(RunFailure {
                error,
                meta,
                attempts,
                execution_time,
            }),
        }
    }
}

/// Waits for a cancelled run's work to return, for at most `grace` (then drops it): its
/// steps' tokens have fired, and steps that watch them stop their work and clean up.
async fn cancelled<F: std::future::Future + Unpin>(work: &mut F, grace: Duration) -> Error {
    let _ = within_grace(work, grace).await;
    Error::Cancelled {
        reason: "the run was cancelled".to_owned(),
    }
}

/// The failure of a run that could not begin (no session could be made for it).
fn detached_failure(session: &SessionId, error: Error, started: Instant) -> RunFailure {
    let now = std::time::SystemTime::now();
    RunFailure {
        error,
        meta: crate::Metadata {
            session_id: session.clone(),
            run_id: crate::RunId::generate(),
            version: 0,
            created_at: now,
            updated_at: now,
        },
        attempts: 0,
        execution_time: started.elapsed(),
    }
}

impl Default for LocalRuntime {
    fn default() -> Self {
        LocalRuntime::new()
    }
}

impl std::fmt::Debug for LocalRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRuntime")
            .field("running", &self.is_running())
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl Runtime for LocalRuntime {
    fn register_many(&self, registrations: impl IntoIterator<Item = Registration>) {
        let mut registry = self
            .shared
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut processors = self
            .shared
            .processors
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for registration in registrations {
            let name = registration.name();
            // A replaced processor gets gates made from its new configuration.
            processors.insert(name, Arc::new(ProcessorState::new(registration.config())));
            registry.insert(name, registration);
            // A replaced processor is shown as registered now.
            self.shared
                .views
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(TypeId::of::<Registration>(), name));
        }
    }

    fn unregister(&self, name: &str) -> bool {
        self.shared
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    fn registered(&self) -> Vec<String> {
        let registry = self
            .shared
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner());
        registry.keys().map(|name| (*name).to_owned()).collect()
    }

    fn processor_info(&self, name: &str) -> Option<ProcessorInfo> {
        let registry = self
            .shared
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner());
        registry.get(name).map(|r| ProcessorInfo {
            name: r.name().to_owned(),
            config: *r.config(),
            contract: r.0.contract(),
            plan: r.0.plan(),
        })
    }

    async fn start(&self) -> Result<(), Error> {
        let mut lifecycle = self
            .shared
            .lifecycle
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !self.shared.running.load(Ordering::Acquire) {
            lifecycle.token = CancellationToken::new();
            lifecycle.started_at = Some(Instant::now());
            self.shared.running.store(true, Ordering::Release);
            tracing::debug!("local runtime started");
        }
        Ok(())
    }

    async fn stop(&self) -> Result<(), Error> {
        {
            let lifecycle = self
                .shared
                .lifecycle
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !self.shared.running.swap(false, Ordering::AcqRel) {
                return Ok(());
            }
            lifecycle.token.cancel();
        }
        let sessions = self.shared.take_sessions(None);
        for session in &sessions {
            self.shared
                .publish_session_event(&session.id, EventKind::SessionStopped);
        }
        tracing::debug!(sessions = sessions.len(), "local runtime stopped");
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire)
    }

    async fn stop_session(&self, session: &SessionId) -> Result<(), Error> {
        let sessions = self.shared.take_sessions(Some(session));
        self.shared.stop_sessions(sessions);
        Ok(())
    }

    async fn stop_all_sessions(&self) -> Result<(), Error> {
        let sessions = self.shared.take_sessions(None);
        self.shared.stop_sessions(sessions);
        Ok(())
    }

    async fn active_sessions(&self) -> Result<Vec<SessionId>, Error> {
        let sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<SessionId> = sessions.keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    async fn stats(&self) -> Result<RuntimeStats, Error> {
        let queues = self.queue_stats().await?;
        let uptime = self
            .shared
            .lifecycle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started_at
            .filter(|_| self.is_running())
            .map(|at| at.elapsed())
            .unwrap_or_default();
        Ok(RuntimeStats {
            registered: self
                .shared
                .registry
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
            running: queues.values().map(|q| q.active).sum(),
            completed: queues.values().map(|q| q.completed).sum(),
            failed: queues.values().map(|q| q.failed).sum(),
            active_sessions: self
                .shared
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
            uptime,
        })
    }

    async fn session_stats(&self, session: &SessionId) -> Result<SessionStats, Error> {
        let sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(match sessions.get(session) {
            Some(state) => state.stats(),
            None => SessionStats {
                session: session.clone(),
                running_runs: 0,
                processors: BTreeMap::new(),
            },
        })
    }

    async fn queue_stats(&self) -> Result<BTreeMap<String, QueueStats>, Error> {
        let processors = self
            .shared
            .processors
            .read()
            .unwrap_or_else(|p| p.into_inner());
        Ok(processors
            .iter()
            .map(|(name, state)| ((*name).to_owned(), state.counters.snapshot()))
            .collect())
    }

    fn subscribe(&self) -> EventStream {
        self.shared.events.subscribe(None)
    }

    fn subscribe_session(&self, session: &SessionId) -> EventStream {
        self.shared.events.subscribe(Some(session.clone()))
    }

    async fn execute_named<I, O>(&self, session: &SessionId, name: &str, input: I) -> RunOutcome<O>
    where
        I: Serialize + Send + 'static,
        O: DeserializeOwned + Send + 'static,
    {
        let started = Instant::now();
        let found = {
            let registry = self
                .shared
                .registry
                .read()
                .unwrap_or_else(|p| p.into_inner());
            match registry.get(name) {
                Some(registration) => Ok(registration.clone()),
                None => Err(Error::not_found(
                    "processor",
                    name,
                    registry.keys().map(|name| (*name).to_owned()),
                )),
            }
        };
        let registration = match found {
            Ok(registration) => registration,
            Err(error) => return Err(detached_failure(session, error, started)),
        };
        let erased = &registration.0;
        let (input_type, input_name) = erased.input_type();
        let (output_type, output_name) = erased.output_type();
        if input_type != std::any::TypeId::of::<I>() || output_type != std::any::TypeId::of::<O>() {
            let error = Error::configuration(format!(
                "processor `{name}` maps `{input_name}` to `{output_name}`, but was called with `{}` to `{}`",
                std::any::type_name::<I>(),
                std::any::type_name::<O>(),
            ));
            return Err(detached_failure(session, error, started));
        }
        let input = Box::new(input) as Box<dyn Any + Send>;
        let recording = Recording::New {
            view: self.shared.registered_view(&registration),
            input: erased.keep_input(&*input),
            output: erased_output,
        };
        let outcome = self
            .run(
                session,
                &ErasedRoot(registration.clone()),
                ErasedInput::from(input),
                None,
                recording,
            )
            .await;
        match outcome {
            Ok(result) => match result.output.downcast::<O>() {
                Ok(output) => Ok(RunResult {
                    output: *output,
                    meta: result.meta,
                    attempts: result.attempts,
                    execution_time: result.execution_time,
                }),
                // Checked above: the registered processor returns an `O`.
                Err(_) => Err(detached_failure(
                    session,
                    Error::configuration("output type changed"),
                    started,
                )),
            },
            Err(failure) => Err(failure),
        }
    }
}

impl<P: Processor> Executes<P> for LocalRuntime {
    async fn execute_in_session(
        &self,
        session: &SessionId,
        processor: &P,
        input: P::Input,
    ) -> RunOutcome<P::Output> {
        let recording = Recording::New {
            view: self.shared.view((TypeId::of::<P>(), processor.name()), || {
                ProcessorView::of(processor)
            }),
            input: Some(KeptInput::of(&input)),
            output: typed_output::<P::Output>,
        };
        self.run(session, processor, input, None, recording).await
    }
}

/// How [`LocalRuntime::run`] records a run for inspection.
enum Recording<P: Processor> {
    /// Not at all: a run embedded in another runtime, which keeps its own records.
    Off,
    /// As a new run of the session.
    New {
        view: Arc<ProcessorView>,
        input: Option<KeptInput>,
        output: fn(&P::Output) -> &(dyn Any + Send),
    },
    /// As the run recorded already (a retry, recorded when it was asked for).
    Submitted {
        recorded: Recorded,
        output: fn(&P::Output) -> &(dyn Any + Send),
    },
}

fn typed_output<O: Send + 'static>(output: &O) -> &(dyn Any + Send) {
    output
}

fn erased_output(output: &Box<dyn Any + Send>) -> &(dyn Any + Send) {
    &**output
}

impl Shared {
    /// What inspection shows of a registered processor run by name.
    fn registered_view(&self, registration: &Registration) -> Arc<ProcessorView> {
        self.view((TypeId::of::<Registration>(), registration.name()), || {
            registration.0.view()
        })
    }
}

/// A registered processor run by name: a composition whose one child is the erased processor.
#[derive(Clone)]
struct ErasedRoot(Registration);

/// Carries an erased input; it is moved, never actually cloned, since the root does not retry.
struct ErasedInput(Option<Box<dyn Any + Send>>);

impl Clone for ErasedInput {
    fn clone(&self) -> Self {
        ErasedInput(None)
    }
}

impl From<Box<dyn Any + Send>> for ErasedInput {
    fn from(input: Box<dyn Any + Send>) -> Self {
        ErasedInput(Some(input))
    }
}

impl Processor for ErasedRoot {
    type Input = ErasedInput;
    type Output = Box<dyn Any + Send>;

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn config(&self) -> &ProcessorConfig {
        static ROOT: ProcessorConfig = ProcessorConfig::new();
        &ROOT
    }

    fn is_step(&self) -> bool {
        false
    }

    async fn process(&self, input: ErasedInput, ctx: &Ctx) -> Result<Self::Output, Error> {
        let input = input
            .0
            .ok_or_else(|| Error::configuration("erased input used twice"))?;
        self.0.0.run_erased(input, ctx).await
    }
}
