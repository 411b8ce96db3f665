//! # am2z: typed processor workflows, in-process or across machines
//!
//! Write plain `async fn`s, make them processors, compose them into workflows whose every
//! edge is checked by rustc, and run them on the local runtime (in-process tokio) or across
//! many processes on Redis, each run in an isolated session.
//!
//! ```
//! use am2z::{processor_fn, Chain, Error, Executes, LocalRuntime, Runtime, SessionId};
//!
//! async fn add_one(x: i64) -> Result<i64, Error> { Ok(x + 1) }
//! async fn double(x: i64) -> Result<i64, Error> { Ok(x * 2) }
//!
//! # async fn demo() -> Result<(), Error> {
//! let runtime = LocalRuntime::new();
//! runtime.start().await?;
//!
//! let flow = Chain::new(processor_fn(add_one), processor_fn(double));
//! let tenant = SessionId::new("tenant-7")?;
//! let result = runtime.execute_in_session(&tenant, &flow, 20).await?;
//! assert_eq!(result.output, 42);
//! assert_eq!(result.meta.session_id, tenant);
//!
//! runtime.stop_session(&tenant).await?;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! The pieces, one module each:
//! - [`Processor`] and [`ProcessorConfig`]: a typed, named, configured async step;
//!   [`processor_fn`] turns a plain async fn into one.
//! - [`Ctx`]: what a step sees while it runs (metadata, cancellation, events, nested calls).
//! - [`Chain`], [`Parallel`], [`Route`], [`Map`], [`Workflow`]: typed composition.
//! - [`Runtime`] and [`Executes`]: the contract every runtime honours; [`LocalRuntime`].
//! - [`SessionId`], [`Event`], [`Error`], [`Plan`]: sessions, events, errors and plans.

mod context;
mod error;
mod event;
pub mod plan;
mod processor;
pub mod runtime;
mod session;
mod state;
mod workflow;

pub use context::Ctx;
pub use error::{Category, Error, Result, Severity};
pub use event::{Event, EventKind, EventStream};
pub use plan::{Contract, Fingerprint, Plan};
pub use processor::{
    Accepts, AsyncCtxFn, Backoff, FnProcessor, IsResult, Processor, ProcessorConfig, RateLimit,
    Registration, RetryPolicy, Returns, WithCtx, WithoutCtx, processor_fn,
};
pub use runtime::{
    Executes, LocalRuntime, LocalRuntimeBuilder, ProcessorInfo, QueueStats, Runtime, RuntimeStats,
    SessionStats,
};
#[cfg(feature = "redis")]
pub use runtime::{RedisConfig, RedisRuntime, RunHandle};
pub use session::{DEFAULT_SESSION, MAX_SESSION_ID_LEN, SessionId};
pub use state::{Metadata, RunFailure, RunId, RunOutcome, RunResult, StateSnapshot};
pub use workflow::{
    AllOrNothing, Arm, Chain, CollectResults, Dispatch, Fallback, Map, Merge, MergeFn, NoArms,
    Parallel, Route, RouteArms, Workflow,
};

pub use am2z_macros::{processor, workflow};

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
