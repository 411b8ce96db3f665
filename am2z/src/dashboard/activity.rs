//! Throughput and failures over the last minutes, counted from the runtime's events as this
//! dashboard receives them (no runtime keeps a history of rates, so the dashboard does).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::{Event, EventKind, EventStream, SessionId};

/// Minutes of history kept and shown.
pub(super) const WINDOW_MINUTES: u64 = 15;

/// What ended in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(super) struct MinuteCounts {
    /// The minute, as seconds since the Unix epoch at its start.
    pub(super) minute_start: u64,
    /// Runs that completed.
    pub(super) completed: u64,
    /// Runs that failed.
    pub(super) failed: u64,
    /// Step attempts that failed and were retried.
    pub(super) retried: u64,
}

/// The last [`WINDOW_MINUTES`] minutes, oldest first, every minute present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct ActivitySnapshot {
    /// One entry per minute, oldest first; the last one is the minute now running.
    pub(super) minutes: Vec<MinuteCounts>,
    /// When the dashboard started counting: minutes before it show nothing.
    pub(super) counting_since: u64,
    /// Events the dashboard skipped because it fell behind.
    pub(super) missed_events: u64,
}

impl ActivitySnapshot {
    /// Runs completed and failed over the whole window.
    pub(super) fn totals(&self) -> (u64, u64) {
        self.minutes
            .iter()
            .fold((0, 0), |(c, f), m| (c + m.completed, f + m.failed))
    }
}

/// The counters, shared by the task that reads events and the pages that show them.
#[derive(Debug)]
pub(super) struct Activity {
    counts: Mutex<Counts>,
}

#[derive(Debug)]
struct Counts {
    counting_since: u64,
    missed_events: u64,
    /// Runtime-wide, oldest first, at most [`WINDOW_MINUTES`] minutes.
    all: VecDeque<MinuteCounts>,
    /// Per session; a session drops out once it had nothing for a whole window.
    sessions: HashMap<SessionId, VecDeque<MinuteCounts>>,
    /// The minute the last prune ran in.
    pruned_at: u64,
}

fn minute_of(at: SystemTime) -> u64 {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs - secs % 60
}

fn oldest_kept(now_minute: u64) -> u64 {
    now_minute.saturating_sub((WINDOW_MINUTES - 1) * 60)
}

/// Adds to the minute `minute` of `minutes`, and forgets minutes out of the window.
fn bump(minutes: &mut VecDeque<MinuteCounts>, minute: u64, apply: impl FnOnce(&mut MinuteCounts)) {
    if minutes.back().is_none_or(|last| last.minute_start < minute) {
        minutes.push_back(MinuteCounts {
            minute_start: minute,
            ..MinuteCounts::default()
        });
    }
    if let Some(last) = minutes.back_mut() {
        apply(last);
    }
    let keep_from = oldest_kept(minute);
    while minutes.front().is_some_and(|m| m.minute_start < keep_from) {
        minutes.pop_front();
    }
}

/// The window ending at `now_minute`, every minute present.
fn window(minutes: &VecDeque<MinuteCounts>, now_minute: u64) -> Vec<MinuteCounts> {
    (0..WINDOW_MINUTES)
        .rev()
        .map(|back| {
            let start = now_minute.saturating_sub(back * 60);
            minutes
                .iter()
                .find(|m| m.minute_start == start)
                .copied()
                .unwrap_or(MinuteCounts {
                    minute_start: start,
                    ..MinuteCounts::default()
                })
        })
        .collect()
}

impl Activity {
    pub(super) fn new(now: SystemTime) -> Self {
        Activity {
            counts: Mutex::new(Counts {
                counting_since: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                missed_events: 0,
                all: VecDeque::new(),
                sessions: HashMap::new(),
                pruned_at: minute_of(now),
            }),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts are plain numbers: a panic elsewhere cannot leave them half-written.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `event`, received at `now`.
    pub(super) fn record(&self, event: &Event, now: SystemTime) {
        let apply: fn(&mut MinuteCounts) = match event.kind {
            EventKind::RunCompleted { .. } => |m| m.completed += 1,
            EventKind::RunFailed { .. } => |m| m.failed += 1,
            EventKind::StepRetrying { .. } => |m| m.retried += 1,
            _ => return,
        };
        let minute = minute_of(now);
        let mut counts = self.counts();
        bump(&mut counts.all, minute, apply);
        let session = counts.sessions.entry(event.session.clone()).or_default();
        bump(session, minute, apply);
        if counts.pruned_at < minute {
            counts.pruned_at = minute;
            let keep_from = oldest_kept(minute);
            counts
                .sessions
                .retain(|_, minutes| minutes.back().is_some_and(|m| m.minute_start >= keep_from));
        }
    }

    /// Notes that the event stream skipped `missed` events in all.
    pub(super) fn set_missed(&self, missed: u64) {
        self.counts().missed_events = missed;
    }

    /// The runtime-wide window ending at `now`.
    pub(super) fn snapshot(&self, now: SystemTime) -> ActivitySnapshot {
        let counts = self.counts();
        ActivitySnapshot {
            minutes: window(&counts.all, minute_of(now)),
            counting_since: counts.counting_since,
            missed_events: counts.missed_events,
        }
    }

    /// One session's runs completed and failed over the window ending at `now`.
    pub(super) fn session_totals(&self, session: &SessionId, now: SystemTime) -> (u64, u64) {
        let keep_from = oldest_kept(minute_of(now));
        self.counts()
            .sessions
            .get(session)
            .map_or((0, 0), |minutes| {
                minutes
                    .iter()
                    .filter(|m| m.minute_start >= keep_from)
                    .fold((0, 0), |(c, f), m| (c + m.completed, f + m.failed))
            })
    }
}

/// Reads `events` into `activity` until the guard is dropped.
pub(super) struct Watching(JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts counting `events` into `activity` on the current tokio runtime.
pub(super) fn watch(activity: Arc<Activity>, mut events: EventStream) -> Watching {
    Watching(tokio::spawn(async move {
        while let Some(event) = events.next_event().await {
            activity.record(&event, SystemTime::now());
            activity.set_missed(events.missed());
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Error, RunId};

    fn event(session: &str, kind: EventKind) -> Event {
        Event {
            session: SessionId::new(session).unwrap_or_default(),
            run_id: Some(RunId::generate()),
            processor: None,
            at: SystemTime::now(),
            kind,
        }
    }

    fn completed() -> EventKind {
        EventKind::RunCompleted {
            execution_time: Duration::from_millis(3),
        }
    }

    fn failed() -> EventKind {
        EventKind::RunFailed {
            error: Error::execution("p", "boom"),
        }
    }

    #[test]
    fn runs_are_counted_per_minute_and_per_session() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let activity = Activity::new(start);
        activity.record(&event("a", completed()), start);
        activity.record(&event("a", failed()), start + Duration::from_secs(5));
        activity.record(&event("b", completed()), start + Duration::from_secs(65));
        activity.record(
            &event("b", EventKind::SessionCreated),
            start + Duration::from_secs(66),
        );
        // A start is not an end: the window counts runs as they end.
        activity.record(
            &event("b", EventKind::RunStarted),
            start + Duration::from_secs(67),
        );

        let now = start + Duration::from_secs(70);
        let snapshot = activity.snapshot(now);
        assert_eq!(snapshot.minutes.len() as u64, WINDOW_MINUTES);
        let last_two: Vec<(u64, u64)> = snapshot.minutes[snapshot.minutes.len() - 2..]
            .iter()
            .map(|m| (m.completed, m.failed))
            .collect();
        assert_eq!(last_two, [(1, 1), (1, 0)]);
        assert_eq!(snapshot.totals(), (2, 1));
        let a = SessionId::new("a").unwrap_or_default();
        assert_eq!(activity.session_totals(&a, now), (1, 1));
    }

    #[test]
    fn minutes_out_of_the_window_are_forgotten() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let activity = Activity::new(start);
        activity.record(&event("a", completed()), start);
        let later = start + Duration::from_secs(WINDOW_MINUTES * 60 + 60);
        activity.record(&event("b", completed()), later);
        assert_eq!(activity.snapshot(later).totals(), (1, 0));
        let a = SessionId::new("a").unwrap_or_default();
        assert_eq!(activity.session_totals(&a, later), (0, 0));
        assert!(
            !activity.counts().sessions.contains_key(&a),
            "a quiet session is pruned"
        );
    }
}
