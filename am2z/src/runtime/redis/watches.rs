//! What this process asked the sweeper to watch: per session, the lease deadline it last
//! recorded in `{:leasing}` (`timers::watch`). A claim whose session is already watched by a
//! deadline still ahead asks nothing: the sweeper looks at the session by then and, after its
//! sweep, watches the session's earliest lease again (`settle`), new leases included. So a
//! busy session costs one `watch` per lease period, not one per claim.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::SessionId;

/// Past this many sessions, deadlines already passed are dropped at the next record.
const PRUNE_AT: usize = 4096;

/// The deadlines this process recorded, by session.
#[derive(Default)]
pub(crate) struct Watches {
    deadlines: Mutex<HashMap<SessionId, u64>>,
}

impl Watches {
    /// Whether a new lease of `session` ending at `deadline` (ms) must be watched: `false`
    /// when this process recorded an earlier deadline that is still at least `margin` ahead
    /// (the margin covers the clocks of this host and Redis disagreeing).
    pub(crate) fn needs(&self, session: &SessionId, deadline: u64, margin: Duration) -> bool {
        let ahead = now_ms().saturating_add(millis(margin));
        let deadlines = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
        match deadlines.get(session) {
            Some(&watched) => watched > deadline || watched <= ahead,
            None => true,
        }
    }

    /// `session` is watched by `deadline`.
    pub(crate) fn record(&self, session: &SessionId, deadline: u64) {
        let mut deadlines = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
        if deadlines.len() >= PRUNE_AT {
            let now = now_ms();
            deadlines.retain(|_, watched| *watched > now);
        }
        deadlines.insert(session.clone(), deadline);
    }

    /// `session` was stopped (its watch removed) or forgotten: its next lease is watched.
    pub(crate) fn forget(&self, session: &SessionId) {
        self.deadlines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }

    /// After a reconnect: anything may have happened meanwhile.
    pub(crate) fn forget_all(&self) {
        self.deadlines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_watched_again_only_when_its_watch_is_due_or_later() {
        let watches = Watches::default();
        let s = SessionId::new("s").unwrap();
        let margin = Duration::from_secs(10);
        let in_a_minute = now_ms() + 60_000;
        assert!(watches.needs(&s, in_a_minute, margin), "never watched");
        watches.record(&s, in_a_minute);
        assert!(
            !watches.needs(&s, in_a_minute + 1_000, margin),
            "watched earlier"
        );
        assert!(
            watches.needs(&s, in_a_minute - 1_000, margin),
            "an earlier lease"
        );
        // A watch about to fall due (within the margin) may already have been swept.
        watches.record(&s, now_ms() + 5_000);
        assert!(watches.needs(&s, in_a_minute, margin));
        watches.record(&s, in_a_minute);
        watches.forget(&s);
        assert!(
            watches.needs(&s, in_a_minute + 1_000, margin),
            "stopped since"
        );
    }
}
