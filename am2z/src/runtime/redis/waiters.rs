//! Callers in this process waiting for run outcomes, woken by `done` messages, by the worker
//! that committed the run (when it ran here), or by `stop_session`. A waiter is registered by
//! a guard ([`Waiter`]): however its wait ends (its outcome, its caller's own timeout dropping
//! the future), the registration and any outcome kept for it go with the guard.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::{RunId, SessionId};

/// A run, as waiters know it: by session and run (a `done` is matched by both).
type RunKey = (SessionId, RunId);

/// One waiting caller.
pub(crate) struct WaitSlot {
    pub(crate) notify: Notify,
    pub(crate) stopped: AtomicBool,
}

/// What waits, and what was left for the waiters, per run.
#[derive(Default)]
struct Entry {
    slots: Vec<Arc<WaitSlot>>,
    /// The typed outcome of a run executed here (no decoding; in-process state snapshots
    /// survive).
    handoff: Option<Box<dyn Any + Send>>,
    /// The stored outcome that came with the run's `done` message (no read).
    delivered: Option<String>,
}

#[derive(Default)]
pub(crate) struct Waiters {
    runs: Mutex<HashMap<RunKey, Entry>>,
    /// Signalled when the first run gets a waiter, and when the last one loses its last.
    changed: Notify,
}

/// A registered waiter; unregisters itself when dropped.
pub(crate) struct Waiter {
    waiters: Arc<Waiters>,
    key: RunKey,
    pub(crate) slot: Arc<WaitSlot>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut runs = self.waiters.lock();
        if let Some(entry) = runs.get_mut(&self.key) {
            entry.slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
            if entry.slots.is_empty() {
                runs.remove(&self.key);
                if runs.is_empty() {
                    self.waiters.changed.notify_one();
                }
            }
        }
    }
}

impl Waiter {
    /// The typed outcome left by the worker here that executed the run, if any.
    pub(crate) fn take_handoff(&self) -> Option<Box<dyn Any + Send>> {
        self.waiters
            .lock()
            .get_mut(&self.key)
            .and_then(|e| e.handoff.take())
    }

    /// The stored outcome that came with the run's `done` message, if any.
    pub(crate) fn take_delivered(&self) -> Option<String> {
        self.waiters
            .lock()
            .get_mut(&self.key)
            .and_then(|e| e.delivered.take())
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, Entry>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter for `run` of `session`.
    pub(crate) fn register(self: &Arc<Self>, session: &SessionId, run: RunId) -> Waiter {
        let slot = Arc::new(WaitSlot {
            notify: Notify::new(),
            stopped: AtomicBool::new(false),
        });
        let key = (session.clone(), run);
        let mut runs = self.lock();
        if runs.is_empty() {
            self.changed.notify_one();
        }
        runs.entry(key.clone())
            .or_default()
            .slots
            .push(Arc::clone(&slot));
        drop(runs);
        Waiter {
            waiters: Arc::clone(self),
            key,
            slot,
        }
    }

    /// Whether any run is awaited here.
    pub(crate) fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Resolves after the first run got a waiter, or the last lost its last, since the last
    /// call (a change before anyone waited is kept); read [`any`](Self::any) then.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The sessions that have waiters here.
    pub(crate) fn sessions(&self) -> std::collections::HashSet<SessionId> {
        self.lock()
            .keys()
            .map(|(session, _)| session.clone())
            .collect()
    }

    /// Keeps the typed `outcome` of `run` for a waiter here, if there is one.
    pub(crate) fn hand_off(&self, session: &SessionId, run: RunId, outcome: Box<dyn Any + Send>) {
        if let Some(entry) = self.lock().get_mut(&(session.clone(), run)) {
            entry.handoff = Some(outcome);
        }
    }

    /// Keeps the stored outcome `wire` of `run` for a waiter here, if there is one.
    pub(crate) fn deliver(&self, session: &SessionId, run: RunId, wire: String) {
        if let Some(entry) = self.lock().get_mut(&(session.clone(), run)) {
            entry.delivered = Some(wire);
        }
    }

    /// `run` of `session` ended.
    pub(crate) fn done(&self, session: &SessionId, run: RunId) {
        if let Some(entry) = self.lock().get(&(session.clone(), run)) {
            for slot in &entry.slots {
                slot.notify.notify_one();
            }
        }
    }

    /// `session` was stopped: its waiters end with "session stopped".
    pub(crate) fn session_stopped(&self, session: &SessionId) {
        for ((s, _), entry) in self.lock().iter() {
            if s == session {
                for slot in &entry.slots {
                    slot.stopped.store(true, Ordering::SeqCst);
                    slot.notify.notify_one();
                }
            }
        }
    }

    /// Every waiter re-checks (after a reconnect, messages may have been missed).
    pub(crate) fn wake_all(&self) {
        for entry in self.lock().values() {
            for slot in &entry.slots {
                slot.notify.notify_one();
            }
        }
    }

    /// How many runs are awaited here (for tests: a dropped wait leaves none behind).
    pub(crate) fn awaited(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let waiters = Arc::new(Waiters::default());
        let session = SessionId::new("s").unwrap();
        let run = RunId::generate();
        let first = waiters.register(&session, run);
        let second = waiters.register(&session, run);
        waiters.deliver(&session, run, "outcome".to_owned());
        drop(first);
        assert_eq!(second.take_delivered().as_deref(), Some("outcome"));
        waiters.hand_off(&session, run, Box::new(5_u8));
        drop(second);
        assert_eq!(
            waiters.awaited(),
            0,
            "the outcome kept for the waiters went with them"
        );
        // Nothing is kept for a run nobody waits for.
        waiters.deliver(&session, run, "late".to_owned());
        assert_eq!(waiters.awaited(), 0);
    }

    #[test]
    fn outcomes_are_matched_by_session_and_run() {
        let waiters = Arc::new(Waiters::default());
        let (a, b) = (SessionId::new("a").unwrap(), SessionId::new("b").unwrap());
        let run = RunId::generate();
        let waiter = waiters.register(&b, run);
        waiters.deliver(&a, run, "a's outcome".to_owned());
        assert_eq!(waiter.take_delivered(), None);
        waiters.session_stopped(&a);
        assert!(!waiter.slot.stopped.load(Ordering::SeqCst));
        waiters.session_stopped(&b);
        assert!(waiter.slot.stopped.load(Ordering::SeqCst));
    }
}
