//! Stats: per processor, per session and per runtime.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SessionId;

/// Where a processor's work stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Attempts waiting for a concurrency slot or a rate-limit token.
    pub waiting: u64,
    /// Attempts running now.
    pub active: u64,
    /// Steps that succeeded.
    pub completed: u64,
    /// Steps that failed for good (after their retries).
    pub failed: u64,
    /// Steps waiting out a `delay` or a retry backoff.
    pub delayed: u64,
}

/// The runtime as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStats {
    /// Processors in the registry.
    pub registered: usize,
    /// Step attempts running now.
    pub running: u64,
    /// Steps that succeeded since start.
    pub completed: u64,
    /// Steps that failed for good since start.
    pub failed: u64,
    /// Sessions with work or state.
    pub active_sessions: usize,
    /// Time since the last `start`.
    pub uptime: Duration,
}

/// One session's work, keyed by processor name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStats {
    /// The session.
    pub session: SessionId,
    /// Runs in flight.
    pub running_runs: u64,
    /// Per processor name.
    pub processors: BTreeMap<String, QueueStats>,
}

/// Live counters behind a [`QueueStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    waiting: AtomicU64,
    active: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    delayed: AtomicU64,
}

/// Which gauge or total to move.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    Waiting,
    Active,
    Delayed,
}

impl Counters {
    fn gauge(&self, stage: Stage) -> &AtomicU64 {
        match stage {
            Stage::Waiting => &self.waiting,
            Stage::Active => &self.active,
            Stage::Delayed => &self.delayed,
        }
    }

    pub(crate) fn enter(&self, stage: Stage) {
        self.gauge(stage).fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self, stage: Stage) {
        self.gauge(stage).fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self, ok: bool) {
        let total = if ok { &self.completed } else { &self.failed };
        total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> QueueStats {
        QueueStats {
            waiting: self.waiting.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
        }
    }
}
