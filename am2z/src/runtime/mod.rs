//! The runtime contract, and the runtimes that honour it.
//!
//! [`Runtime`] is what every runtime offers whatever it runs (lifecycle, registry, sessions,
//! stats, events); [`Executes<P>`] is the capability to run processor `P`. The split lets the
//! local runtime run any processor while a distributed runtime asks for serialisable data,
//! and lets generic code name exactly what it needs.

// The embedding is what a distributed runtime hands the shared executor.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) mod embed;
pub(crate) mod host;
pub mod inspect;
pub(crate) mod limits;
pub mod local;
#[cfg(feature = "redis")]
pub mod redis;
pub(crate) mod stats;
pub(crate) mod step;

use std::collections::BTreeMap;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(feature = "redis")]
pub use self::redis::{RedisConfig, RedisRuntime, RunHandle};
pub use inspect::{
    CancelOutcome, Cursor, ErrorDetail, Inspect, Page, PageRequest, RetryOutcome, RunDetail,
    RunFilter, RunState, RunSummary, SessionSummary, Shown, StepDetail, StepState, WorkerInfo,
};
pub use local::{LocalRuntime, LocalRuntimeBuilder};
pub use stats::{QueueStats, RuntimeStats, SessionStats};

use crate::plan::{Contract, Plan};
use crate::{EventStream, Processor, ProcessorConfig, Registration, RunOutcome, SessionId};

/// The default limit on nested `ctx.call`s.
pub const DEFAULT_MAX_CALL_DEPTH: u32 = 10;

/// How long a cancelled step gets, by default, to see its token fire and return before its
/// future is dropped.
pub const DEFAULT_CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the runtime knows about a registered processor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorInfo {
    /// Its name.
    pub name: String,
    /// Its configuration (description, timeout, retry policy, queue settings).
    pub config: ProcessorConfig,
    /// Its contract.
    pub contract: Contract,
    /// Its plan.
    pub plan: Plan,
}

/// What every runtime offers: lifecycle, registry, sessions, stats and events.
pub trait Runtime: Send + Sync + 'static {
    /// Registers `processor` and every processor it contains; a name registered again is
    /// replaced.
    fn register<P: Processor>(&self, processor: P) {
        let mut all = Vec::new();
        processor.visit(&mut |registration| all.push(registration));
        self.register_many(all);
    }

    /// Registers each item (as [`register`](Runtime::register) does for one).
    fn register_many(&self, registrations: impl IntoIterator<Item = Registration>);

    /// Removes `name` from the registry; returns whether it was there.
    fn unregister(&self, name: &str) -> bool;

    /// The registered names, sorted.
    fn registered(&self) -> Vec<String>;

    /// The registered processor `name`, with its configuration.
    fn processor_info(&self, name: &str) -> Option<ProcessorInfo>;

    /// Starts the runtime (harmless if it is running).
    fn start(&self) -> impl Future<Output = Result<(), crate::Error>> + Send;

    /// Stops the runtime: in-flight runs end with [`Error::Cancelled`](crate::Error::Cancelled).
    /// Harmless if it is not running; `start` works again afterwards.
    fn stop(&self) -> impl Future<Output = Result<(), crate::Error>> + Send;

    /// Whether the runtime is started.
    fn is_running(&self) -> bool;

    /// Stops `session`: its in-flight runs end with
    /// [`Error::SessionStopped`](crate::Error::SessionStopped), and everything it held is freed.
    /// Stopping an unknown session is harmless.
    fn stop_session(
        &self,
        session: &SessionId,
    ) -> impl Future<Output = Result<(), crate::Error>> + Send;

    /// Stops every session.
    fn stop_all_sessions(&self) -> impl Future<Output = Result<(), crate::Error>> + Send;

    /// The sessions that have work or state, sorted.
    fn active_sessions(&self) -> impl Future<Output = Result<Vec<SessionId>, crate::Error>> + Send;

    /// Runtime-wide stats.
    fn stats(&self) -> impl Future<Output = Result<RuntimeStats, crate::Error>> + Send;

    /// One session's stats, keyed by processor name.
    fn session_stats(
        &self,
        session: &SessionId,
    ) -> impl Future<Output = Result<SessionStats, crate::Error>> + Send;

    /// Per-processor queue stats, keyed by processor name.
    fn queue_stats(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, QueueStats>, crate::Error>> + Send;

    /// Every event from now on.
    fn subscribe(&self) -> EventStream;

    /// The events of one session from now on.
    fn subscribe_session(&self, session: &SessionId) -> EventStream;

    /// Runs the registered processor `name` on `input` in `session`.
    ///
    /// The serde bounds let a distributed runtime ship the values; an in-process runtime
    /// passes them as they are.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) listing the registered names when `name`
    /// is not registered; [`Error::Configuration`](crate::Error::Configuration) when `I` or `O`
    /// are not the processor's types; otherwise whatever the run returns.
    fn execute_named<I, O>(
        &self,
        session: &SessionId,
        name: &str,
        input: I,
    ) -> impl Future<Output = RunOutcome<O>> + Send
    where
        I: Serialize + Send + 'static,
        O: DeserializeOwned + Send + 'static;
}

/// The capability to run processor `P`.
///
/// ```
/// # async fn demo() -> Result<(), am2z::Error> {
/// use am2z::{processor_fn, Error, Executes, LocalRuntime, Runtime, SessionId};
///
/// async fn shout(s: String) -> Result<String, Error> { Ok(s.to_uppercase()) }
///
/// let runtime = LocalRuntime::new();
/// runtime.start().await?;
/// let shout = processor_fn(shout);
/// let tenant = SessionId::new("tenant-1")?;
/// let result = runtime.execute_in_session(&tenant, &shout, "hi".to_owned()).await?;
/// assert_eq!(result.output, "HI");
/// assert_eq!(result.meta.session_id, tenant);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
pub trait Executes<P: Processor>: Runtime {
    /// Runs `processor` on `input` in `session`; the caller sees only the terminal outcome.
    fn execute_in_session(
        &self,
        session: &SessionId,
        processor: &P,
        input: P::Input,
    ) -> impl Future<Output = RunOutcome<P::Output>> + Send;

    /// Runs `processor` on `input` in the default session.
    fn execute(
        &self,
        processor: &P,
        input: P::Input,
    ) -> impl Future<Output = RunOutcome<P::Output>> + Send {
        async move {
            self.execute_in_session(&SessionId::default_session(), processor, input)
                .await
        }
    }

    /// Runs `processor` on each input concurrently, as separate runs; the outcomes come back in
    /// input order, and one failing item does not fail the others.
    fn execute_many(
        &self,
        session: &SessionId,
        processor: &P,
        inputs: Vec<P::Input>,
    ) -> impl Future<Output = Vec<RunOutcome<P::Output>>> + Send {
        async move {
            futures::future::join_all(
                inputs
                    .into_iter()
                    .map(|input| self.execute_in_session(session, processor, input)),
            )
            .await
        }
    }
}
