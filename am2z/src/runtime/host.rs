//! What a step needs from the runtime that runs it, as one object-safe trait.
//!
//! The step executor ([`super::step`]) is generic and statically dispatched over the user's
//! processor; only this bookkeeping (events, stats, limits) goes through a vtable, so both
//! runtimes share the retry/timeout logic without boxing the user's future.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::limits::{PrioritySemaphore, RateLimiter};
use super::stats::Counters;
use crate::event::EventBus;
use crate::portable::Json;
use crate::{Contract, Error, ProcessorConfig, RunId, SessionId};

pub(crate) trait Host: Send + Sync + 'static {
    fn events(&self) -> &EventBus;
    fn max_call_depth(&self) -> u32;
    /// The counters and gates for one step of `processor` in `session`.
    fn step_slot(
        &self,
        session: &SessionId,
        processor: &'static str,
        config: &ProcessorConfig,
    ) -> StepSlot;
}

/// The counters a step updates and the gates it passes before each attempt.
#[derive(Default)]
pub(crate) struct StepSlot {
    pub(crate) counters: Vec<Arc<Counters>>,
    pub(crate) gates: Vec<Arc<PrioritySemaphore>>,
    pub(crate) rate: Option<Arc<RateLimiter>>,
}

/// Admission beyond this process: a distributed runtime's cluster-wide concurrency and rate
/// limits. Passed before the in-process gates, before each attempt; the returned guard is held
/// for the attempt and gives the permit back when dropped. It never fails: when the shared
/// limiter cannot be reached it admits (and logs), rather than turning a limiter outage into
/// failed steps.
pub(crate) trait StepGate: Send + Sync + 'static {
    fn admit<'a>(
        &'a self,
        processor: &'static str,
        config: &'a ProcessorConfig,
    ) -> BoxFuture<'a, Box<dyn Send>>;

    /// The largest custom event payload (encoded) that may leave this process, if limited.
    fn max_payload_bytes(&self) -> Option<usize> {
        None
    }

    /// Runs a `ctx.call` as a child job of the calling run, on any worker, without holding
    /// the caller's slot while it waits; `None`: the call runs inline, as on the local runtime.
    fn call<'a>(&'a self, _call: ChildCall<'a>) -> Option<BoxFuture<'a, Result<Json, Error>>> {
        None
    }
}

/// A `ctx.call` to run as a child job: the callee's contract and input (JSON), and the
/// caller's run, attempt and the depth the callee runs at.
pub(crate) struct ChildCall<'a> {
    pub(crate) session: &'a SessionId,
    pub(crate) run_id: RunId,
    pub(crate) attempt: u32,
    pub(crate) depth: u32,
    pub(crate) contract: Contract,
    pub(crate) priority: i32,
    pub(crate) input: Json,
}
