//! Whether this process listens to the prefix's `events` channel (on one node). Redis writes
//! every message of a channel to every connection subscribed to it, and every batch of
//! events a worker commits is one message, so a process that listened whether or not
//! anything in it observes events cost Redis a socket write per batch, and itself a read,
//! for nothing. The subscriber connection takes the channel while the process' event bus has
//! a subscriber, and lets it go a while after the last one left.
//!
//! A run this process submits while its events are wanted goes only once the channel is
//! subscribed, so a subscriber sees the events of every run submitted after it subscribed,
//! as it did when the channel was always subscribed. (Runs other processes submit in the
//! round trip it takes are a race between processes either way.)

use std::time::Duration;

use tokio::sync::watch;

use crate::event::EventBus;

/// How long the channel stays subscribed after the last observer left (a dashboard page
/// reloaded, a test's next subscriber) before it is let go.
const LINGER: Duration = Duration::from_secs(10);

/// How long a submission waits for the channel to be subscribed before it goes anyway (Redis
/// is unreachable or reconnecting: the submission then fails or waits on its own).
const READY_WAIT: Duration = Duration::from_secs(2);

/// The `events` channel's subscription state, between the process' event bus, the
/// subscriber connection that follows it, and submissions that wait for it.
pub(crate) struct EventsFeed {
    bus: EventBus,
    /// The channel is subscribed on the subscriber's current connection.
    subscribed: watch::Sender<bool>,
}

impl EventsFeed {
    pub(crate) fn new(bus: EventBus) -> Self {
        EventsFeed {
            bus,
            subscribed: watch::Sender::new(false),
        }
    }

    /// Whether anything in this process observes events now.
    pub(crate) fn wanted(&self) -> bool {
        self.bus.is_observed()
    }

    /// Resolves when [`wanted`](Self::wanted) may have changed.
    pub(crate) async fn changed(&self) {
        self.bus.observers_changed().await;
    }

    /// How long a subscribed channel nobody wants is kept.
    pub(crate) fn linger(&self) -> Duration {
        LINGER
    }

    /// The subscriber connection took the channel, or no longer has it.
    pub(crate) fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.send_replace(subscribed);
    }

    /// Returns once the channel is subscribed, when events are wanted (at once otherwise), or
    /// after [`READY_WAIT`].
    pub(crate) async fn ready(&self) {
        if !self.wanted() {
            return;
        }
        let mut subscribed = self.subscribed.subscribe();
        let _ = tokio::time::timeout(READY_WAIT, subscribed.wait_for(|s| *s)).await;
    }
}
