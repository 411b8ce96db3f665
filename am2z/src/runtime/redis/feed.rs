//! Channels one node's subscriber takes only while the process needs them. Redis writes every
//! message of a channel to every connection subscribed to it: `events` carries a message per
//! batch a worker commits, `done` one per commit of run ends, and a process that listened to
//! both whether or not anything in it used them cost Redis a socket write per message, and
//! itself a read, for nothing. So the subscriber takes
//!
//! - `events` while the process' event bus has a subscriber, and
//! - `done` while a caller in the process awaits a run's outcome,
//!
//! and lets each go a while after the last user left. A caller that starts to need one waits
//! for it ([`Feed::ready`]) before it submits or reads: a subscriber sees the events of every
//! run submitted after it subscribed, and a waiter hears the `done` of its run, as when the
//! channels were always subscribed. (Runs other processes submit in that round trip are a
//! race between processes either way.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::waiters::Waiters;
use crate::event::EventBus;

/// How long a subscribed channel nobody needs is kept (a dashboard page reloaded, a client's
/// next run) before it is let go.
const LINGER: Duration = Duration::from_secs(10);

/// How long a caller waits for the channel before it goes on anyway (Redis is unreachable or
/// reconnecting: its own call then fails, or its wait re-reads the outcome every second).
const READY_WAIT: Duration = Duration::from_secs(2);

/// What says whether the channel is needed.
enum Need {
    /// The event bus has a subscriber.
    Observers(EventBus),
    /// A run's outcome is awaited.
    Waiters(Arc<Waiters>),
}

/// One on-demand channel's state, between what needs it, the subscriber connection that
/// follows the need, and the callers that wait for it.
pub(crate) struct Feed {
    need: Need,
    /// A subscriber follows this feed (the runtime runs).
    followed: AtomicBool,
    /// The channel is subscribed on the subscriber's current connection.
    subscribed: watch::Sender<bool>,
}

/// A subscriber following a feed; the feed is unfollowed when it drops.
pub(crate) struct Following(Arc<Feed>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.followed.store(false, Ordering::Release);
        self.0.set_subscribed(false);
    }
}

impl Feed {
    /// The `events` channel, needed while `bus` has a subscriber.
    pub(crate) fn events(bus: EventBus) -> Self {
        Feed::new(Need::Observers(bus))
    }

    /// The `done` channel, needed while `waiters` has a waiter.
    pub(crate) fn done(waiters: Arc<Waiters>) -> Self {
        Feed::new(Need::Waiters(waiters))
    }

    fn new(need: Need) -> Self {
        Feed {
            need,
            followed: AtomicBool::new(false),
            subscribed: watch::Sender::new(false),
        }
    }

    /// A subscriber follows the feed until the guard drops.
    pub(crate) fn follow(self: &Arc<Self>) -> Following {
        self.followed.store(true, Ordering::Release);
        Following(Arc::clone(self))
    }

    /// Whether anything in this process needs the channel now.
    pub(crate) fn wanted(&self) -> bool {
        match &self.need {
            Need::Observers(bus) => bus.is_observed(),
            Need::Waiters(waiters) => waiters.any(),
        }
    }

    /// Resolves when [`wanted`](Self::wanted) may have changed.
    pub(crate) async fn changed(&self) {
        match &self.need {
            Need::Observers(bus) => bus.observers_changed().await,
            Need::Waiters(waiters) => waiters.changed().await,
        }
    }

    /// How long a subscribed channel nobody wants is kept.
    pub(crate) fn linger(&self) -> Duration {
        LINGER
    }

    /// The subscriber connection took the channel, or no longer has it.
    pub(crate) fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.send_replace(subscribed);
    }

    /// Returns once the channel is subscribed, when it is wanted and followed (at once
    /// otherwise: nothing to wait for, or no subscriber runs), or after [`READY_WAIT`].
    pub(crate) async fn ready(&self) {
        if !self.wanted() || !self.followed.load(Ordering::Acquire) {
            return;
        }
        let mut subscribed = self.subscribed.subscribe();
        let _ = tokio::time::timeout(READY_WAIT, subscribed.wait_for(|s| *s)).await;
    }
}
