//! What a step needs from the runtime that runs it, as one object-safe trait.
//!
//! The step executor ([`super::step`]) is generic and statically dispatched over the user's
//! processor; only this bookkeeping (events, stats, limits) goes through a vtable, so both
//! runtimes share the retry/timeout logic without boxing the user's future.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::limits::{PrioritySemaphore, RateLimiter};
use super::stats::Counters;
use crate::event::{EventBus, EventKind};
use crate::{ProcessorConfig, SessionId};

pub(crate) trait Host: Send + Sync + 'static {
    fn events(&self) -> &EventBus;
    fn max_call_depth(&self) -> u32;
    /// How long a cancelled run's steps may take to return after their tokens fire, before
    /// their futures are dropped.
    fn cancel_grace(&self) -> Duration;
    /// The counters and gates for one step of `processor` in `session`.
    fn step_slot(
        &self,
        session: &SessionId,
        processor: &'static str,
        config: &ProcessorConfig,
    ) -> StepSlot;
    /// Whether the host keeps its runs' events (the local runtime's inspection history): then
    /// they are built even when nobody subscribes.
    fn keeps_events(&self) -> bool {
        false
    }
    /// Keeps one event of a run it hosts (called only when [`keeps_events`](Host::keeps_events)):
    /// its session and run are the host's own.
    fn keep_event(&self, _processor: Option<&'static str>, _at: SystemTime, _kind: EventKind) {}
}

/// The counters a step updates and the gates it passes before each attempt.
#[derive(Default)]
pub(crate) struct StepSlot {
    pub(crate) counters: Vec<Arc<Counters>>,
    pub(crate) gates: Vec<Arc<PrioritySemaphore>>,
    pub(crate) rate: Option<Arc<RateLimiter>>,
}
