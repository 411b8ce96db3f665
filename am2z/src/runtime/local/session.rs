//! One session of the local runtime: its cancellation, its stats, and the [`Host`] its steps use.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::Shared;
use super::history::{RunRecord, SessionHistory};
use crate::event::{EventBus, EventKind};
use crate::runtime::host::{Host, StepSlot};
use crate::runtime::stats::{Counters, SessionStats};
use crate::{ProcessorConfig, SessionId};

pub(super) struct LocalSession {
    pub(super) id: SessionId,
    pub(super) shared: Arc<Shared>,
    /// Fired by `stop_session` (and by `stop`, through its parent): every run of the session
    /// derives its tokens from it.
    pub(super) token: CancellationToken,
    pub(super) stopped: AtomicBool,
    pub(super) running_runs: AtomicU64,
    processors: Mutex<HashMap<&'static str, Arc<Counters>>>,
    /// When the session was made, in the runtime's order of sessions (for listings).
    pub(super) seq: u64,
    /// Its runs, for inspection.
    pub(super) history: Arc<Mutex<SessionHistory>>,
    /// Held while a run of the session is retried, so none is retried twice.
    pub(super) retrying: Mutex<()>,
}

impl LocalSession {
    pub(super) fn new(
        id: SessionId,
        shared: Arc<Shared>,
        token: CancellationToken,
        seq: u64,
    ) -> Self {
        let history = Arc::new(Mutex::new(SessionHistory::new(shared.settings.history)));
        LocalSession {
            seq,
            history,
            retrying: Mutex::new(()),
            id,
            shared,
            token,
            stopped: AtomicBool::new(false),
            running_runs: AtomicU64::new(0),
            processors: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn stats(&self) -> SessionStats {
        let processors = self.processors.lock().unwrap_or_else(|p| p.into_inner());
        SessionStats {
            session: self.id.clone(),
            running_runs: self.running_runs.load(Ordering::Relaxed),
            processors: processors
                .iter()
                .map(|(name, counters)| ((*name).to_owned(), counters.snapshot()))
                .collect::<BTreeMap<_, _>>(),
        }
    }
}

impl Host for LocalSession {
    fn events(&self) -> &EventBus {
        &self.shared.events
    }

    fn max_call_depth(&self) -> u32 {
        self.shared.settings.max_call_depth
    }

    fn cancel_grace(&self) -> std::time::Duration {
        self.shared.settings.cancel_grace
    }

    fn step_slot(
        &self,
        _session: &SessionId,
        processor: &'static str,
        config: &ProcessorConfig,
    ) -> StepSlot {
        let global = self.shared.processor_state(processor, config);
        let in_session = Arc::clone(
            self.processors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(processor)
                .or_default(),
        );
        let mut gates = Vec::new();
        if let Some(slots) = &self.shared.worker_slots {
            gates.push(Arc::clone(slots));
        }
        if let Some(limit) = &global.concurrency {
            gates.push(Arc::clone(limit));
        }
        StepSlot {
            counters: vec![Arc::clone(&global.counters), in_session],
            gates,
            rate: global.rate.clone(),
        }
    }
}

/// The host of one recorded run: its session's, plus the run's own stage gauges and the keeping
/// of its events.
pub(super) struct RunHost {
    pub(super) session: Arc<LocalSession>,
    pub(super) record: Arc<RunRecord>,
    pub(super) gauges: Arc<Counters>,
}

impl Host for RunHost {
    fn events(&self) -> &EventBus {
        self.session.events()
    }

    fn max_call_depth(&self) -> u32 {
        self.session.max_call_depth()
    }

    fn cancel_grace(&self) -> std::time::Duration {
        self.session.cancel_grace()
    }

    fn step_slot(
        &self,
        session: &SessionId,
        processor: &'static str,
        config: &ProcessorConfig,
    ) -> StepSlot {
        let mut slot = self.session.step_slot(session, processor, config);
        slot.counters.push(Arc::clone(&self.gauges));
        slot
    }

    fn keeps_events(&self) -> bool {
        true
    }

    fn keep_event(&self, processor: Option<&'static str>, at: SystemTime, kind: EventKind) {
        self.record.keep(processor, at, kind);
    }
}

/// Keeps a session's running-runs gauge raised for the life of one run.
pub(super) struct RunningRun<'a>(&'a LocalSession);

impl<'a> RunningRun<'a> {
    pub(super) fn enter(session: &'a LocalSession) -> Self {
        session.running_runs.fetch_add(1, Ordering::Relaxed);
        RunningRun(session)
    }
}

impl Drop for RunningRun<'_> {
    fn drop(&mut self) {
        self.0.running_runs.fetch_sub(1, Ordering::Relaxed);
    }
}
