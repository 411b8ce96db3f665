//! [`Ctx`]: what a processor can see and do while it runs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, EventKind};
use crate::runtime::host::{Host, StepGate};
use crate::runtime::step::{self, StepFailure};
use crate::{Error, Metadata, Processor, RunId, SessionId};

/// The context of one attempt of one step.
///
/// It gives the run's [`Metadata`], the attempt number, a cancellation token (fired by a
/// timeout, `stop_session` or a cancelled parent), events ([`emit`](Ctx::emit),
/// [`progress`](Ctx::progress)), nested calls ([`call`](Ctx::call)) and a tracing span that
/// already carries the session, run and processor.
pub struct Ctx {
    pub(crate) run: Arc<RunScope>,
    pub(crate) processor: &'static str,
    pub(crate) attempt: u32,
    pub(crate) depth: u32,
    pub(crate) token: CancellationToken,
    pub(crate) span: tracing::Span,
}

/// What all steps of one run share.
pub(crate) struct RunScope {
    pub(crate) session: SessionId,
    pub(crate) run_id: RunId,
    pub(crate) created_at: SystemTime,
    pub(crate) version: AtomicU64,
    /// Nanoseconds since the epoch of the last completed step (0: none yet).
    pub(crate) updated_at: AtomicU64,
    pub(crate) attempts: AtomicU32,
    pub(crate) host: Arc<dyn Host>,
    /// Limits enforced beyond this process (a Redis worker's cluster-wide gates), if any.
    pub(crate) gate: Option<Arc<dyn StepGate>>,
    /// This run is one step of a larger run executed step by step elsewhere: the larger run
    /// has the run-level events, once, not each of its steps.
    pub(crate) one_step: bool,
    /// Where the run's own step parks instead of sleeping (a distributed worker's step job).
    pub(crate) parking: Option<Arc<Parking>>,
}

/// A step job's waits, handed back to its worker instead of slept in its slot: the step's
/// `delay` and its retry backoff become a due time in Redis, and the job resumes at the
/// attempt it parked before.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct Parking {
    /// The attempt the step resumes at (0: a fresh step, whose `delay` still applies).
    pub(crate) resume: u32,
    parked: std::sync::Mutex<Option<Parked>>,
}

/// Where a step parked: the attempt that follows the wait, and the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parked {
    pub(crate) attempt: u32,
    pub(crate) delay: std::time::Duration,
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl Parking {
    /// A parking for a step that resumes at attempt `resume` (0: fresh).
    pub(crate) fn new(resume: u32) -> Self {
        Parking {
            resume,
            parked: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn park(&self, attempt: u32, delay: std::time::Duration) {
        *self.parked.lock().unwrap_or_else(|p| p.into_inner()) = Some(Parked { attempt, delay });
    }

    /// Where the step parked, if it did.
    pub(crate) fn parked(&self) -> Option<Parked> {
        *self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a distributed worker hands to the run it executes: the identity the submitter gave
/// it, and the cluster-wide gate its steps pass.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct RunSeed {
    pub(crate) run_id: RunId,
    pub(crate) created_at: SystemTime,
    pub(crate) gate: Option<Arc<dyn StepGate>>,
    /// The run is one step of a run executed step by step (see [`RunScope::one_step`]).
    pub(crate) one_step: bool,
    /// See [`RunScope::parking`].
    pub(crate) parking: Option<Arc<Parking>>,
}

tokio::task_local! {
    /// The seed of the next run made in this task (taken once): set by a Redis worker
    /// executing a run that another process submitted and named.
    static SEED: std::cell::Cell<Option<RunSeed>>;
}

/// Runs `future` so that the first run it starts takes `seed`'s identity and gate (once:
/// runs started later in the same task are ordinary).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) async fn with_run_seed<F: std::future::Future>(seed: RunSeed, future: F) -> F::Output {
    SEED.scope(std::cell::Cell::new(Some(seed)), future).await
}

impl RunScope {
    pub(crate) fn new(session: SessionId, host: Arc<dyn Host>) -> Self {
        let seed = SEED.try_with(std::cell::Cell::take).ok().flatten();
        let (run_id, created_at, gate, one_step, parking) = match seed {
            Some(seed) => (
                seed.run_id,
                seed.created_at,
                seed.gate,
                seed.one_step,
                seed.parking,
            ),
            None => (RunId::generate(), SystemTime::now(), None, false, None),
        };
        RunScope {
            session,
            run_id,
            created_at,
            gate,
            one_step,
            parking,
            version: AtomicU64::new(0),
            updated_at: AtomicU64::new(0),
            attempts: AtomicU32::new(0),
            host,
        }
    }

    pub(crate) fn step_committed(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.updated_at
            .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn metadata(&self) -> Metadata {
        let updated = self.updated_at.load(Ordering::Relaxed);
        Metadata {
            session_id: self.session.clone(),
            run_id: self.run_id,
            version: self.version.load(Ordering::Relaxed),
            created_at: self.created_at,
            updated_at: if updated == 0 {
                self.created_at
            } else {
                UNIX_EPOCH + std::time::Duration::from_nanos(updated)
            },
        }
    }

    pub(crate) fn event(&self, processor: Option<&'static str>, kind: EventKind) -> Event {
        Event {
            session: self.session.clone(),
            run_id: Some(self.run_id),
            processor: processor.map(std::borrow::Cow::Borrowed),
            at: SystemTime::now(),
            kind,
        }
    }
}

impl Ctx {
    /// The root context of a run, from which every step's context derives.
    pub(crate) fn root(run: Arc<RunScope>, token: CancellationToken) -> Self {
        Ctx {
            run,
            processor: "",
            attempt: 0,
            depth: 0,
            token,
            span: tracing::Span::none(),
        }
    }

    /// The run's metadata as of now (its version counts the steps completed so far).
    pub fn meta(&self) -> Metadata {
        self.run.metadata()
    }

    /// The session this run belongs to.
    pub fn session_id(&self) -> &SessionId {
        &self.run.session
    }

    /// The run's id.
    pub fn run_id(&self) -> RunId {
        self.run.run_id
    }

    /// The name of the processor this context was made for.
    pub fn processor(&self) -> &'static str {
        self.processor
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How deep in `ctx.call`s this step runs (0 for a step of the run itself).
    pub fn call_depth(&self) -> u32 {
        self.depth
    }

    /// The token that fires when this attempt must stop: its timeout expired, its session was
    /// stopped, or a sibling branch failed. Long-running work should watch it.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether this attempt has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when this attempt is asked to stop.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// The tracing span of this attempt (fields `session`, `run`, `processor`, `attempt`).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Publishes a custom event named `name` with `payload`.
    ///
    /// # Errors
    /// [`Error::Serialization`] if `payload` cannot be turned into JSON; [`Error::Resource`]
    /// if the run executes on a distributed runtime and the encoded payload is larger than its
    /// payload limit (nothing is published then).
    pub fn emit(&self, name: &str, payload: impl Serialize) -> Result<(), Error> {
        let events = self.run.host.events();
        let limit = self.run.gate.as_ref().and_then(|g| g.max_payload_bytes());
        if let Some(limit) = limit {
            let size = serde_json::to_vec(&payload)?.len();
            if size > limit {
                return Err(Error::resource(
                    "payload",
                    format!("the event `{name}` is {size} bytes; the limit is {limit}"),
                ));
            }
        }
        if events.is_observed() {
            let payload = serde_json::to_value(payload)?;
            events.publish(self.run.event(
                Some(self.processor),
                EventKind::Custom {
                    name: name.to_owned(),
                    payload,
                },
            ));
        }
        Ok(())
    }

    /// Reports progress (a percentage by convention); subscribers see the values in order.
    pub fn progress(&self, value: u32) {
        let events = self.run.host.events();
        if events.is_observed() {
            events.publish(
                self.run
                    .event(Some(self.processor), EventKind::Progress { value }),
            );
        }
    }

    /// Runs `processor` on `input` as a nested step of this run (same session and run id, one
    /// level deeper), with its own timeout, retries and limits.
    ///
    /// Returns what the processor returns, so a fallback is one `or_else` away. The future is
    /// boxed, so a processor may call itself (directly or through others) without an infinitely
    /// sized future; the depth limit ends such recursion.
    ///
    /// # Errors
    /// The processor's terminal error, or [`Error::DepthExceeded`] when the call would nest
    /// deeper than the runtime's limit (default 10).
    pub fn call<'a, P: Processor>(
        &'a self,
        processor: &'a P,
        input: P::Input,
    ) -> BoxFuture<'a, Result<P::Output, Error>> {
        Box::pin(async move {
            let depth = self.depth + 1;
            let limit = self.run.host.max_call_depth();
            if depth > limit {
                return Err(Error::DepthExceeded {
                    processor: processor.name().to_owned(),
                    depth,
                    limit,
                });
            }
            let caller = Ctx {
                run: Arc::clone(&self.run),
                processor: self.processor,
                attempt: self.attempt,
                depth,
                token: self.token.clone(),
                span: self.span.clone(),
            };
            caller
                .run(processor, input)
                .await
                .map_err(|failed| failed.error)
        })
    }

    /// Runs `processor` as a child of this context: a step gets its attempts, retries, limits
    /// and events; a composition runs its children. Used by the combinators.
    pub(crate) async fn run<P: Processor>(
        &self,
        processor: &P,
        input: P::Input,
    ) -> Result<P::Output, StepFailure<P::Input>> {
        step::run(processor, input, self).await
    }

    /// A context for a group of children that can be cancelled together.
    pub(crate) fn with_token(&self, token: CancellationToken) -> Ctx {
        Ctx {
            run: Arc::clone(&self.run),
            processor: self.processor,
            attempt: self.attempt,
            depth: self.depth,
            token,
            span: self.span.clone(),
        }
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("session", &self.run.session)
            .field("run_id", &self.run.run_id)
            .field("processor", &self.processor)
            .field("attempt", &self.attempt)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}
