//! Typed events: what happened, to which run, in which session.
//!
//! Subscribers get every event published after they subscribed. Delivery never blocks the
//! runtime: each subscriber reads from a bounded ring, and one that falls behind skips the
//! oldest events (and can see how many with [`EventStream::missed`]) instead of slowing
//! anybody else down.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::ReusableBoxFuture;

use crate::{Error, RunId, SessionId};

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The session it happened in.
    pub session: SessionId,
    /// The run, for run and step events.
    pub run_id: Option<RunId>,
    /// The processor: a step's, for step events; the run's (its processor or workflow), for
    /// [`RunStarted`](EventKind::RunStarted), [`RunCompleted`](EventKind::RunCompleted) and
    /// [`RunFailed`](EventKind::RunFailed).
    pub processor: Option<Cow<'static, str>>,
    /// When it happened.
    pub at: SystemTime,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The session saw its first run.
    SessionCreated,
    /// The session was stopped and its resources freed.
    SessionStopped,
    /// A run started executing: once per run, before its steps' events. On the Redis runtime
    /// the worker that first starts the run's entry job publishes it (a `ctx.call` run, part
    /// of its caller's run, has none).
    RunStarted,
    /// An attempt of a step started.
    StepStarted {
        /// The attempt number, from 1.
        attempt: u32,
    },
    /// An attempt of a step succeeded.
    StepCompleted {
        /// The attempt number.
        attempt: u32,
        /// How long the attempt took.
        execution_time: Duration,
    },
    /// A step failed for good (no attempt left, or not retryable).
    StepFailed {
        /// The last attempt number.
        attempt: u32,
        /// Its error.
        error: Error,
    },
    /// An attempt failed and another will follow after `delay`.
    StepRetrying {
        /// The attempt that failed.
        attempt: u32,
        /// The attempt that will follow.
        next_attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// Why the attempt failed.
        error: Error,
    },
    /// A processor reported progress with `ctx.progress`.
    Progress {
        /// The progress value the processor gave (a percentage by convention).
        value: u32,
    },
    /// A processor emitted a custom event with `ctx.emit`.
    Custom {
        /// The event's name.
        name: String,
        /// Its payload.
        payload: serde_json::Value,
    },
    /// A run finished successfully.
    RunCompleted {
        /// Its wall-clock time.
        execution_time: Duration,
    },
    /// A run failed.
    RunFailed {
        /// Its error.
        error: Error,
    },
}

/// Where events go: the in-process subscribers (the Redis runtime forwards to its per-session
/// streams as one of them).
#[derive(Clone)]
pub(crate) struct EventBus {
    sender: broadcast::Sender<Event>,
    /// Live subscriptions, kept apart from the channel's own count, which sits behind a lock.
    subscribers: Arc<Observers>,
}

/// How many subscriptions a bus has, and a signal each time it goes from none to some or
/// back (what feeds the bus from elsewhere can start and stop with it).
#[derive(Default)]
struct Observers {
    count: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        EventBus {
            sender,
            subscribers: Arc::default(),
        }
    }

    /// Resolves after the bus went from no subscriber to some, or back, since the last call
    /// (a change before anyone waited is kept); read [`is_observed`](Self::is_observed) then.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) async fn observers_changed(&self) {
        self.subscribers.changed.notified().await;
    }

    /// Whether anyone would see an event: lets hot paths skip building one.
    pub(crate) fn is_observed(&self) -> bool {
        self.subscribers.count.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn publish(&self, event: Event) {
        // An error only means nobody listens right now.
        let _ = self.sender.send(event);
    }

    pub(crate) fn subscribe(&self, session: Option<SessionId>) -> EventStream {
        if self.subscribers.count.fetch_add(1, Ordering::Relaxed) == 0 {
            self.subscribers.changed.notify_one();
        }
        let subscription = Subscription(Arc::clone(&self.subscribers));
        EventStream::new(self.sender.subscribe(), session, subscription)
    }
}

type Next = (
    Result<Event, broadcast::error::RecvError>,
    broadcast::Receiver<Event>,
);

/// A subscription: a [`Stream`] of [`Event`]s, optionally only those of one session.
///
/// Dropping it unsubscribes.
pub struct EventStream {
    next: ReusableBoxFuture<'static, Next>,
    session: Option<SessionId>,
    missed: u64,
    _subscription: Subscription,
}

/// Counts a live [`EventStream`] in its bus while it exists.
struct Subscription(Arc<Observers>);

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.changed.notify_one();
        }
    }
}

async fn receive(mut receiver: broadcast::Receiver<Event>) -> Next {
    let result = receiver.recv().await;
    (result, receiver)
}

impl EventStream {
    fn new(
        receiver: broadcast::Receiver<Event>,
        session: Option<SessionId>,
        subscription: Subscription,
    ) -> Self {
        EventStream {
            next: ReusableBoxFuture::new(receive(receiver)),
            session,
            missed: 0,
            _subscription: subscription,
        }
    }

    /// How many events this subscriber skipped because it fell too far behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The next event, or `None` once the runtime is gone.
    pub async fn next_event(&mut self) -> Option<Event> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            let (result, receiver) = futures::ready!(self.next.poll(cx));
            self.next.set(receive(receiver));
            match result {
                Ok(event) => {
                    if self.session.as_ref().is_none_or(|s| *s == event.session) {
                        return Poll::Ready(Some(event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => self.missed += skipped,
                Err(broadcast::error::RecvError::Closed) => return Poll::Ready(None),
            }
        }
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("session", &self.session)
            .field("missed", &self.missed)
            .finish_non_exhaustive()
    }
}
