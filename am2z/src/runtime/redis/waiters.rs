//! Callers in this process waiting for run outcomes, woken by `done` messages, by the worker
//! that committed the run (when it ran here), or by `stop_session`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::{RunId, SessionId};

/// One waiting caller.
pub(crate) struct WaitSlot {
    pub(crate) session: SessionId,
    pub(crate) notify: Notify,
    pub(crate) stopped: AtomicBool,
}

#[derive(Default)]
pub(crate) struct Waiters {
    slots: Mutex<HashMap<RunId, Vec<Arc<WaitSlot>>>>,
    /// Typed outcomes of runs executed here, for a waiter here (no decoding; in-process state
    /// snapshots survive).
    handoff: Mutex<HashMap<RunId, Box<dyn Any + Send>>>,
    /// Stored outcomes that came with a run's `done` message, for a waiter here (no read).
    delivered: Mutex<HashMap<RunId, String>>,
}

impl Waiters {
    pub(crate) fn register(&self, run: RunId, session: &SessionId) -> Arc<WaitSlot> {
        let slot = Arc::new(WaitSlot {
            session: session.clone(),
            notify: Notify::new(),
            stopped: AtomicBool::new(false),
        });
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run)
            .or_default()
            .push(Arc::clone(&slot));
        slot
    }

    pub(crate) fn unregister(&self, run: RunId, slot: &Arc<WaitSlot>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let last = match slots.get_mut(&run) {
            Some(list) => {
                list.retain(|s| !Arc::ptr_eq(s, slot));
                list.is_empty()
            }
            None => true,
        };
        if last {
            slots.remove(&run);
            drop(slots);
            self.handoff
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&run);
            self.delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&run);
        }
    }

    /// Whether anyone here waits for `run`.
    pub(crate) fn is_awaited(&self, run: RunId) -> bool {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&run)
    }

    /// Keeps `outcome` for a waiter of `run` here, if there is one.
    pub(crate) fn hand_off(&self, run: RunId, outcome: Box<dyn Any + Send>) {
        if self.is_awaited(run) {
            self.handoff
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(run, outcome);
        }
    }

    pub(crate) fn take_handoff(&self, run: RunId) -> Option<Box<dyn Any + Send>> {
        self.handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run)
    }

    /// Keeps the stored outcome `wire` of `run` for a waiter here, if there is one.
    pub(crate) fn deliver(&self, run: RunId, wire: String) {
        if self.is_awaited(run) {
            self.delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(run, wire);
        }
    }

    pub(crate) fn take_delivered(&self, run: RunId) -> Option<String> {
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run)
    }

    /// `run` reached a terminal state.
    pub(crate) fn done(&self, run: RunId) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.get(&run).into_iter().flatten() {
            slot.notify.notify_one();
        }
    }

    /// `session` was stopped: its waiters end with "session stopped".
    pub(crate) fn session_stopped(&self, session: &SessionId) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.values().flatten() {
            if slot.session == *session {
                slot.stopped.store(true, Ordering::SeqCst);
                slot.notify.notify_one();
            }
        }
    }

    /// Every waiter re-checks (after a reconnect, messages may have been missed).
    pub(crate) fn wake_all(&self) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.values().flatten() {
            slot.notify.notify_one();
        }
    }
}
