//! [`Ctx`]: what a processor can see and do while it runs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, EventKind};
use crate::portable::PortableGraph;
use crate::runtime::embed::{ChildCall, Embedding};
use crate::runtime::host::Host;
use crate::runtime::step::{self, AttemptPermits, StepFailure};
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
    /// The limits this attempt holds (a step's own context only): given back while the step
    /// waits on a `ctx.call`, so that the callee can never wait for them.
    pub(crate) permits: Option<Arc<AttemptPermits>>,
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
    /// Set when another runtime runs this run through the shared executor (a distributed
    /// worker): the run's identity and the hooks the executor calls.
    pub(crate) embedding: Option<Arc<Embedding>>,
}

impl RunScope {
    pub(crate) fn new(
        session: SessionId,
        host: Arc<dyn Host>,
        embedding: Option<Arc<Embedding>>,
    ) -> Self {
        let (run_id, created_at) = match &embedding {
            Some(embedding) => (embedding.run_id, embedding.created_at),
            None => (RunId::generate(), SystemTime::now()),
        };
        RunScope::with_identity(session, host, embedding, run_id, created_at)
    }

    /// A run whose id and creation time were already given (the local runtime's record of it).
    pub(crate) fn with_identity(
        session: SessionId,
        host: Arc<dyn Host>,
        embedding: Option<Arc<Embedding>>,
        run_id: RunId,
        created_at: SystemTime,
    ) -> Self {
        RunScope {
            session,
            run_id,
            created_at,
            embedding,
            version: AtomicU64::new(0),
            updated_at: AtomicU64::new(0),
            attempts: AtomicU32::new(0),
            host,
        }
    }

    /// The call depth the run starts at.
    pub(crate) fn depth(&self) -> u32 {
        self.embedding.as_ref().map_or(0, |e| e.depth)
    }

    /// Whether the run is one step of a larger run (which has the run-level events).
    pub(crate) fn part_of_run(&self) -> bool {
        self.embedding.as_ref().is_some_and(|e| e.part_of_run)
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

    /// Publishes an event of this run to the subscribers and to the host's record of the run,
    /// building it only when either wants it.
    pub(crate) fn publish(
        &self,
        processor: Option<&'static str>,
        kind: impl FnOnce() -> EventKind,
    ) {
        let events = self.host.events();
        let observed = events.is_observed();
        let kept = self.host.keeps_events();
        if !observed && !kept {
            return;
        }
        if !observed {
            // Kept only: no event (nor a clone of the session id) is built.
            self.host.keep_event(processor, SystemTime::now(), kind());
            return;
        }
        let event = self.event(processor, kind());
        if kept {
            self.host
                .keep_event(processor, event.at, event.kind.clone());
        }
        events.publish(event);
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
            depth: run.depth(),
            run,
            processor: "",
            attempt: 0,
            token,
            span: tracing::Span::none(),
            permits: None,
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
        let limit = self
            .run
            .embedding
            .as_ref()
            .map(|e| e.hooks.max_payload_bytes());
        if let Some(limit) = limit {
            let size = serde_json::to_vec(&payload)?.len();
            if size > limit {
                return Err(Error::resource(
                    "payload",
                    format!("the event `{name}` is {size} bytes; the limit is {limit}"),
                ));
            }
        }
        if events.is_observed() || self.run.host.keeps_events() {
            let payload = serde_json::to_value(payload)?;
            self.run
                .publish(Some(self.processor), || EventKind::Custom {
                    name: name.to_owned(),
                    payload,
                });
        }
        Ok(())
    }

    /// Reports progress (a percentage by convention); subscribers see the values in order.
    pub fn progress(&self, value: u32) {
        self.run
            .publish(Some(self.processor), || EventKind::Progress { value });
    }

    /// Runs `processor` on `input` as a nested step of this run (same session and run id, one
    /// level deeper), with its own timeout, retries and limits.
    ///
    /// Returns what the processor returns, so a fallback is one `or_else` away. The future is
    /// boxed, so a processor may call itself (directly or through others) without an infinitely
    /// sized future; the depth limit ends such recursion. While the call runs, the calling step
    /// gives back the limits it holds (its worker slot, its processor's concurrency permit) and
    /// takes them again before it goes on, so a call never waits for a limit its own caller
    /// holds: a processor with `concurrency = 1` may call itself.
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
            // The limits this step holds (worker slot, the processor's concurrency) are given
            // back while it waits: the callee, or the callee's own callee, may need them.
            let released = self.permits.as_ref().map(|permits| permits.release());
            let output = self.call_unlimited(processor, input, depth).await;
            if let Some(released) = released {
                released.reacquire().await;
            }
            output
        })
    }

    async fn call_unlimited<P: Processor>(
        &self,
        processor: &P,
        input: P::Input,
        depth: u32,
    ) -> Result<P::Output, Error> {
        // On a distributed runtime the callee runs as a child run of this run (any worker,
        // this one's slot free meanwhile), when its data crosses as JSON.
        if let Some(embedding) = &self.run.embedding {
            let mut graph = PortableGraph::new();
            let encoded = processor
                .compile(&mut graph)
                .and_then(|_| graph.codecs().encode(&input).ok());
            if let Some(encoded) = encoded {
                let call = ChildCall {
                    session: &self.run.session,
                    run_id: self.run.run_id,
                    attempt: self.attempt,
                    depth,
                    contract: processor.contract(),
                    plan: processor.plan().fingerprint,
                    priority: processor.config().priority,
                    input: encoded,
                };
                if let Some(child) = embedding.hooks.call(call) {
                    let output = child.await?;
                    return graph.codecs().decode::<P::Output>(output);
                }
            }
        }
        let caller = Ctx {
            run: Arc::clone(&self.run),
            processor: self.processor,
            attempt: self.attempt,
            depth,
            token: self.token.clone(),
            span: self.span.clone(),
            permits: None,
        };
        caller
            .run(processor, input)
            .await
            .map_err(|failed| failed.error)
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

    /// How long cancelled children get to return (the runtime's cancel grace).
    pub(crate) fn cancel_grace(&self) -> std::time::Duration {
        self.run.host.cancel_grace()
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
            permits: None,
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
