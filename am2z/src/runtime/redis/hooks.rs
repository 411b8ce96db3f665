//! What the shared step executor asks of a Redis worker for the runs it executes
//! ([`Hooks`]): limits that hold across workers, `ctx.call` as a child run, and the payload
//! limit of values that leave the process; and the steps the job finished, counted with its
//! commit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::calls::Caller;
use super::limits::Limits;
use super::protocol::finished::FinishedStep;
use crate::portable::Json;
use crate::runtime::embed::{ChildCall, Hooks};
use crate::{Error, ProcessorConfig};

/// The hooks of one job's execution.
pub(crate) struct JobHooks {
    pub(crate) limits: Arc<Limits>,
    pub(crate) caller: Caller,
    pub(crate) max_payload_bytes: usize,
    /// The job's child calls so far (each names its child run).
    calls: AtomicU32,
    /// The steps it finished, not yet handed to a commit.
    finished: Mutex<FinishedSteps>,
}

/// Steps finished by one job's execution (`protocol::finished`): counted by the commit that
/// carries the job's outcome.
pub(crate) type FinishedSteps = Vec<FinishedStep>;

impl JobHooks {
    pub(crate) fn new(limits: Arc<Limits>, caller: Caller, max_payload_bytes: usize) -> Self {
        JobHooks {
            limits,
            caller,
            max_payload_bytes,
            calls: AtomicU32::new(0),
            finished: Mutex::default(),
        }
    }

    /// The steps finished since the last call, for the commit about to be sent.
    pub(crate) fn take_finished(&self) -> FinishedSteps {
        std::mem::take(&mut *self.finished.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Hooks for JobHooks {
    fn admit<'a>(
        &'a self,
        processor: &'static str,
        config: &'a ProcessorConfig,
    ) -> BoxFuture<'a, Box<dyn Send>> {
        Box::pin(
            async move { Box::new(self.limits.admit(processor, config).await) as Box<dyn Send> },
        )
    }

    /// Custom events go to the session stream: they obey the payload limit like inputs and
    /// outcomes do.
    fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    fn step_finished(&self, processor: &'static str, completed: bool) {
        let outcome = if completed { "completed" } else { "failed" };
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        finished.push((processor, outcome));
    }

    fn call<'a>(&'a self, call: ChildCall<'a>) -> Option<BoxFuture<'a, Result<Json, Error>>> {
        let ordinal = self.calls.fetch_add(1, Ordering::Relaxed);
        self.caller.call(ordinal, call)
    }
}
