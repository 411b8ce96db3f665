//! Which channels this process listens on. On one node: the four prefix-wide channels, from
//! start to stop (`connection::subscribe`). On a cluster: `wake` and `control` from the
//! start, and the `done` and `events` shard channels of the sessions this process follows:
//! a session is followed before this process submits to it or awaits one of its runs (so no
//! `done` can slip by), or when `subscribe_session` names it; it is dropped a minute after
//! its last waiter left (a session `subscribe_session` named, a minute after it stops).
//! One task owns the subscriber's cluster connection (RESP3: messages arrive as pushes) and
//! takes the subscribe and unsubscribe requests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::config::RedisConfig;
use super::connection::{self, ErrorMap, Message, Role, Target};
use super::feed::Feed;
use super::keys::Keys;
use super::waiters::Waiters;
use crate::event::EventBus;
use crate::{Error, SessionId};

/// How long a session without waiters stays followed (a caller awaiting its runs one after
/// the other does not subscribe each time).
const LINGER: Duration = Duration::from_secs(60);

/// How often the followed sessions are looked over.
const SWEEP: Duration = Duration::from_secs(15);

/// A request to the subscriber task.
enum Request {
    Subscribe {
        channels: Vec<String>,
        done: oneshot::Sender<Result<(), Error>>,
    },
    Unsubscribe(Vec<String>),
}

/// A session this process follows.
struct Followed {
    /// Named by `subscribe_session`: kept until the session stops.
    pinned: bool,
    /// Since when it has had no waiter (`None`: it has some, or had at the last look).
    idle_since: Option<Instant>,
}

/// What this process listens to beyond its standing channels: on a cluster, the sessions it
/// follows; on one node, the prefix's `events` and `done` while something here needs them.
pub(crate) struct Subscriptions {
    keys: Keys,
    /// One node's `events` channel, taken while events are observed here.
    events: Arc<Feed>,
    /// One node's `done` channel, taken while a run's outcome is awaited here.
    done: Arc<Feed>,
    followed: Mutex<HashMap<SessionId, Followed>>,
    /// The subscriber task's inbox, while the runtime runs.
    inbox: Mutex<Option<mpsc::UnboundedSender<Request>>>,
}

impl Subscriptions {
    /// `waiters` and `events` say when one node's `done` and `events` are needed.
    pub(crate) fn new(keys: Keys, waiters: Arc<Waiters>, events: EventBus) -> Self {
        Subscriptions {
            keys,
            events: Arc::new(Feed::events(events)),
            done: Arc::new(Feed::done(waiters)),
            followed: Mutex::default(),
            inbox: Mutex::default(),
        }
    }

    fn followed(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Followed>> {
        self.followed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, request: Request) -> bool {
        match &*self.inbox.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(inbox) => inbox.send(request).is_ok(),
            None => false,
        }
    }

    /// One node's channels taken on demand (`events`, `done`), with what says when.
    pub(crate) fn on_demand(&self) -> [connection::OnDemand; 2] {
        let [events, done] = self.keys.prefix_channels();
        [
            connection::OnDemand {
                channel: events,
                feed: Arc::clone(&self.events),
            },
            connection::OnDemand {
                channel: done,
                feed: Arc::clone(&self.done),
            },
        ]
    }

    /// Returns once a run submitted now has its events heard here, when something here
    /// observes them (on one node: once `events` is subscribed). On a cluster a session's
    /// events are followed with it ([`follow`](Self::follow)).
    pub(crate) async fn events_ready(&self) {
        if !self.keys.is_cluster() {
            self.events.ready().await;
        }
    }

    /// Listens to `session`'s `done` and `events` from now on (returns once subscribed);
    /// `pin`: until the session stops. On one node, every session's are heard on the
    /// prefix's channels: returns once `done` is, when a waiter here needs it.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the subscription could not be made.
    pub(crate) async fn follow(&self, session: &SessionId, pin: bool) -> Result<(), Error> {
        if !self.keys.is_cluster() {
            self.done.ready().await;
            return Ok(());
        }
        if let Some(followed) = self.followed().get_mut(session) {
            followed.idle_since = None;
            followed.pinned |= pin;
            return Ok(());
        }
        let (done, subscribed) = oneshot::channel();
        let channels = self.keys.session_channels(session).to_vec();
        if !self.send(Request::Subscribe { channels, done }) {
            // Not started: the caller's own call fails with the typed error.
            return Ok(());
        }
        subscribed.await.unwrap_or_else(|_| {
            Err(Error::unavailable(
                "redis",
                "the subscriber stopped before the subscription was made",
            ))
        })?;
        self.followed()
            .entry(session.clone())
            .and_modify(|f| f.pinned |= pin)
            .or_insert(Followed {
                pinned: pin,
                idle_since: None,
            });
        Ok(())
    }

    /// `session` stopped or expired: its channels are dropped once it has had no waiter for
    /// [`LINGER`], like any session no one awaits. Not at once: the stop's own messages (the
    /// `SessionStopped` event, the waiters' outcomes) are published on the session's channels
    /// after the `control` message that says so, on another node, with no order between them.
    pub(crate) fn release(&self, session: &SessionId) {
        if let Some(followed) = self.followed().get_mut(session) {
            followed.pinned = false;
        }
    }

    /// Drops the sessions that have had no waiter for [`LINGER`] (pinned ones stay).
    fn sweep(&self, waiting: &HashSet<SessionId>) {
        let now = Instant::now();
        let mut dropped = Vec::new();
        self.followed().retain(|session, followed| {
            if followed.pinned || waiting.contains(session) {
                followed.idle_since = None;
                return true;
            }
            match followed.idle_since {
                None => {
                    followed.idle_since = Some(now);
                    true
                }
                Some(since) if now.duration_since(since) < LINGER => true,
                Some(_) => {
                    dropped.push(session.clone());
                    false
                }
            }
        });
        for session in dropped {
            let channels = self.keys.session_channels(&session).to_vec();
            self.send(Request::Unsubscribe(channels));
        }
    }

    /// Every channel this process means to listen on: the standing ones and the followed
    /// sessions'.
    fn wanted(&self) -> HashSet<String> {
        let mut wanted: HashSet<String> = self.keys.standing_channels().into_iter().collect();
        for session in self.followed().keys() {
            wanted.extend(self.keys.session_channels(session));
        }
        wanted
    }
}

/// What the subscriber hands its messages to.
pub(crate) struct Handlers<M, R> {
    pub(crate) on_message: M,
    /// Called when messages may have been missed (a reconnect, a channel moved with its
    /// slot): waiters read their outcome again, claimers look for work.
    pub(crate) on_reconnect: R,
}

/// What the cluster's subscriber works with.
pub(crate) struct Subscriber {
    pub(crate) target: Target,
    pub(crate) config: Arc<RedisConfig>,
    pub(crate) errors: ErrorMap,
    pub(crate) subscriptions: Arc<Subscriptions>,
    /// Whose sessions are still awaited (the sweep keeps those followed).
    pub(crate) waiters: Arc<Waiters>,
}

/// Runs the cluster's subscriber until `stop`: subscribes to the standing channels (`ready`
/// learns whether that worked), then serves `subscriptions`' requests and hands every
/// message over.
pub(crate) async fn run_cluster(
    subscriber: Subscriber,
    ready: oneshot::Sender<Result<(), Error>>,
    stop: CancellationToken,
    handlers: Handlers<impl Fn(Message) + Send + 'static, impl Fn() + Send + 'static>,
) {
    let Subscriber {
        target,
        config,
        errors,
        subscriptions,
        waiters,
    } = subscriber;
    let (pushes_in, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let (inbox, mut requests) = mpsc::unbounded_channel::<Request>();
    let standing = subscriptions.keys.standing_channels();
    let connected = async {
        let client = target.cluster_client(&config, &errors, Some(pushes_in))?;
        let mut conn = client
            .get_async_connection()
            .await
            .map_err(|e| errors.connecting(&e))?;
        connection::name_cluster(&mut conn, Role::Sub, &errors).await;
        // One slot per `SSUBSCRIBE`: the standing channels live on different slots.
        for channel in &standing {
            conn.ssubscribe(channel)
                .await
                .map_err(|e| errors.unavailable(&e))?;
        }
        Ok::<_, Error>(conn)
    };
    let mut conn = match tokio::time::timeout(Duration::from_secs(10), connected).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            let _ = ready.send(Err(error));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(Error::unavailable(
                "redis",
                "subscribing to the Redis Cluster timed out after 10 s",
            )));
            return;
        }
    };
    subscriptions.followed().clear();
    *subscriptions
        .inbox
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(inbox);
    let _ = ready.send(Ok(()));
    // Confirmations this task asked for: any other `ssubscribe` push is the client renewing
    // subscriptions after a reconnect.
    let mut expected: HashMap<String, usize> = standing.iter().map(|c| (c.clone(), 1)).collect();
    let mut leaving: HashMap<String, usize> = HashMap::new();
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(push) = pushes.recv() => {
                if matches!(push.kind, PushKind::SMessage | PushKind::Message) {
                    if let Some(message) = Message::from_push(push.data) {
                        (handlers.on_message)(message);
                    }
                    continue;
                }
                let channel = channel_of(&push);
                match push.kind {
                    PushKind::SSubscribe => {
                        let channel = channel.unwrap_or_default();
                        match expected.get_mut(&channel) {
                            Some(n) if *n > 0 => *n -= 1,
                            // The client renewed it on a new connection: named again.
                            _ => {
                                connection::name_cluster(&mut conn, Role::Sub, &errors).await;
                                (handlers.on_reconnect)();
                            }
                        }
                    }
                    PushKind::SUnsubscribe => {
                        let channel = channel.unwrap_or_default();
                        match leaving.get_mut(&channel) {
                            Some(n) if *n > 0 => *n -= 1,
                            // The server dropped it (its slot moved): subscribed again, and
                            // what may have been missed meanwhile is read again.
                            _ if subscriptions.wanted().contains(&channel) => {
                                *expected.entry(channel.clone()).or_default() += 1;
                                if let Err(error) = conn.ssubscribe(&channel).await {
                                    tracing::warn!(%channel, error = %errors.unavailable(&error), "subscribing again failed");
                                }
                                (handlers.on_reconnect)();
                            }
                            _ => {}
                        }
                    }
                    PushKind::Disconnection => {
                        tracing::warn!("a Redis Cluster subscription dropped; the client renews it");
                    }
                    _ => {}
                }
            }
            Some(request) = requests.recv() => match request {
                Request::Subscribe { channels, done } => {
                    for channel in &channels {
                        *expected.entry(channel.clone()).or_default() += 1;
                    }
                    let subscribed = conn
                        .ssubscribe(&channels)
                        .await
                        .map_err(|e| errors.unavailable(&e));
                    let _ = done.send(subscribed);
                }
                Request::Unsubscribe(channels) => {
                    for channel in &channels {
                        *leaving.entry(channel.clone()).or_default() += 1;
                    }
                    if let Err(error) = conn.sunsubscribe(&channels).await {
                        tracing::debug!(error = %errors.unavailable(&error), "unsubscribing failed");
                    }
                }
            },
            _ = sweep.tick() => subscriptions.sweep(&waiters.sessions()),
        }
    }
    subscriptions
        .inbox
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
}

/// The channel a push names, when it names one.
fn channel_of(push: &PushInfo) -> Option<String> {
    push.data
        .first()
        .and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
}
