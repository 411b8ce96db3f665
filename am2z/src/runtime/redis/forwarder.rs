//! Forwards the events of runs executed here to Redis (the session's stream and the events
//! channel), and sends the commits of finished jobs behind their events: one task sends both,
//! in order, as pipelines on the one multiplexed connection, so every process sees a run's
//! events before its outcome without the commit waiting for the events' round trip. The
//! endings of runs executed as one job that are ready together go as one `commit.lua` call
//! per session (each still fenced by its own token).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::config::RedisConfig;
use super::keys::{JobId, Keys};
use super::protocol::advance::{Advance, Advanced, Arrival, HeldInstance, NewJob, RunEnd};
use super::protocol::commit::{Commit as CommitCall, Ending, Park};
use super::protocol::event::Events;
use super::protocol::{self, Redis, ScriptDef, Token, WireError, advance, commit, event};
use crate::{Event, EventKind, EventStream, SessionId};

/// The most events or commits sent in one pipeline.
const BATCH: usize = 256;

/// Pipelines in flight at once: enough to keep the connection busy, few enough to bound what
/// is buffered when Redis is slow.
const MAX_IN_FLIGHT: usize = 32;

/// The largest outcome (bytes) a `done` message carries, so that a waiter in another process
/// needs no read; every process receives every `done` message, so larger ones are only named.
pub(crate) const DONE_INLINE: usize = 4096;

/// A commit of a job of a run executed step by step (owned: it crosses a channel).
pub(crate) struct AdvanceCommit {
    pub(crate) job: JobId,
    pub(crate) token: Token,
    pub(crate) step_fp: String,
    pub(crate) version_delta: u64,
    pub(crate) attempts_delta: u32,
    pub(crate) entry: bool,
    pub(crate) hand_off: Option<Duration>,
    pub(crate) end: Option<RunEnd>,
    pub(crate) successors: Vec<NewJob>,
    pub(crate) arrivals: Vec<Arrival>,
    pub(crate) held: Vec<HeldInstance>,
    /// The chunks the job's own input was staged in (freed by the commit).
    pub(crate) consumed: u32,
}

/// What a commit stores.
pub(crate) enum CommitBody {
    /// A run executed as one job ends (`commit.lua`).
    End(Ending),
    /// A job of a run executed step by step, and what follows it (`advance.lua`).
    Advance(Box<AdvanceCommit>),
    /// A job that waits in Redis (`park.lua`).
    Park {
        job: JobId,
        token: Token,
        attempt: u32,
        wait: Duration,
        attempts: u32,
    },
}

/// What Redis answered a commit.
pub(crate) enum Reply {
    /// Whether the run's end was committed (`false`: refused).
    Ended(bool),
    Advanced(Advanced),
    /// When the job is due, or `None` when the park was refused.
    Parked(Option<u64>),
}

/// A commit asked of the forwarder.
pub(crate) struct Commit {
    pub(crate) session: SessionId,
    pub(crate) body: CommitBody,
    pub(crate) reply: oneshot::Sender<Result<Reply, WireError>>,
}

/// Where a worker sends its commits (none before `start`).
#[derive(Clone)]
pub(crate) struct Outbox(mpsc::UnboundedSender<Commit>);

impl Outbox {
    /// Sends `body` behind the job's events and waits for Redis' answer; `None` when the
    /// runtime stopped meanwhile (the lease then expires and the job is retried).
    pub(crate) async fn send(
        &self,
        session: &SessionId,
        body: CommitBody,
    ) -> Option<Result<Reply, WireError>> {
        let (reply, replied) = oneshot::channel();
        self.0
            .send(Commit {
                session: session.clone(),
                body,
                reply,
            })
            .ok()?;
        replied.await.ok()
    }
}

/// The settings and connection the forwarder works with.
pub(crate) struct Forwarding {
    pub(crate) redis: Arc<Redis>,
    pub(crate) keys: Keys,
    pub(crate) config: Arc<RedisConfig>,
}

/// A forwarder: the outbox to give workers, and the task to spawn.
pub(crate) fn start(
    forwarding: Arc<Forwarding>,
    events: EventStream,
    stop: CancellationToken,
) -> (Outbox, impl std::future::Future<Output = ()> + Send) {
    let (outbox, commits) = mpsc::unbounded_channel();
    (Outbox(outbox), run(forwarding, events, commits, stop))
}

/// One command of a pipeline, kept so that it can be sent again after a `NOSCRIPT`.
enum Item {
    /// Events of one session, in order (JSON, and the stats field each counts or `""`).
    Events {
        session: SessionId,
        events: Vec<(String, String)>,
    },
    /// Finished steps counted in the prefix-wide stats.
    Counted(HashMap<String, i64>),
    /// Endings of runs of one session, and who awaits each.
    Endings {
        session: SessionId,
        endings: Vec<(Ending, oneshot::Sender<Result<Reply, WireError>>)>,
    },
    /// One other commit.
    Commit(Commit),
}

async fn run(
    forwarding: Arc<Forwarding>,
    mut stream: EventStream,
    mut commits: mpsc::UnboundedReceiver<Commit>,
    stop: CancellationToken,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    let mut missed = 0;
    loop {
        if stream.missed() > missed {
            missed = stream.missed();
            tracing::warn!(
                missed,
                "events were produced faster than Redis took them; some were skipped"
            );
        }
        let mut requests = Vec::new();
        let mut events = Vec::new();
        let room = in_flight.len() < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
            request = commits.recv(), if open && room => match request {
                Some(request) => requests.push(request),
                None => open = false,
            },
            event = stream.next(), if room => match event {
                Some(event) => events.push(event),
                None => return,
            },
        }
        // Every commit asked for so far, then every event published so far: a run's events
        // were all published before its commit was asked for, so they are in this drain and
        // go out first.
        while requests.len() < BATCH {
            match commits.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        loop {
            match stream.next().now_or_never() {
                Some(Some(event)) => events.push(event),
                _ => break,
            }
            if events.len() >= BATCH {
                // Pipelines are sent in the order they are queued here.
                let batch = event_items(std::mem::take(&mut events));
                in_flight.push_back(send(Arc::clone(&forwarding), batch));
            }
        }
        let mut batch = event_items(events);
        batch.extend(commit_items(requests));
        if !batch.is_empty() {
            in_flight.push_back(send(Arc::clone(&forwarding), batch));
        }
    }
}

/// The stats field a finished step counts under (`<processor>:completed` / `:failed`).
fn stats_field(event: &Event) -> Option<String> {
    let outcome = match event.kind {
        EventKind::StepCompleted { .. } => "completed",
        EventKind::StepFailed { .. } => "failed",
        _ => return None,
    };
    Some(format!("{}:{outcome}", event.processor.as_deref()?))
}

/// `events` as one script call per session (in order within each session) and one count of
/// finished steps.
fn event_items(events: Vec<Event>) -> Vec<Item> {
    let mut sessions: Vec<(SessionId, Vec<(String, String)>)> = Vec::new();
    let mut counted: HashMap<String, i64> = HashMap::new();
    for event in events {
        // Session lifecycle events are published by the runtime itself (once, cluster-wide),
        // not by each worker's executor.
        if matches!(
            event.kind,
            EventKind::SessionCreated | EventKind::SessionStopped
        ) {
            continue;
        }
        let Ok(json) = serde_json::to_string(&event) else {
            continue;
        };
        let field = stats_field(&event).unwrap_or_default();
        if !field.is_empty() {
            *counted.entry(field.clone()).or_default() += 1;
        }
        match sessions.iter_mut().find(|(s, _)| *s == event.session) {
            Some((_, list)) => list.push((json, field)),
            None => sessions.push((event.session, vec![(json, field)])),
        }
    }
    let mut items: Vec<Item> = sessions
        .into_iter()
        .map(|(session, events)| Item::Events { session, events })
        .collect();
    if !counted.is_empty() {
        items.push(Item::Counted(counted));
    }
    items
}

/// `commits`, the endings of one session grouped into one call.
fn commit_items(commits: Vec<Commit>) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    for commit in commits {
        match commit.body {
            CommitBody::End(ending) => {
                let grouped = items.iter_mut().find_map(|item| match item {
                    Item::Endings { session, endings } if *session == commit.session => {
                        Some(endings)
                    }
                    _ => None,
                });
                match grouped {
                    Some(endings) => endings.push((ending, commit.reply)),
                    None => items.push(Item::Endings {
                        session: commit.session,
                        endings: vec![(ending, commit.reply)],
                    }),
                }
            }
            body => items.push(Item::Commit(Commit { body, ..commit })),
        }
    }
    items
}

/// Adds `item` to `pipe`, as one command (or, for the counts, a few).
fn add(pipe: &mut redis::Pipeline, forwarding: &Forwarding, item: &Item) {
    let (keys, config) = (&forwarding.keys, &forwarding.config);
    match item {
        Item::Events { session, events } => {
            let call = Events {
                session: &keys.session(session),
                events_max_len: config.events_max_len,
                events_channel: &keys.events_channel(),
                events,
            }
            .invocation();
            pipe.invoke_script(&call);
        }
        Item::Counted(counted) => {
            // Plain commands: a script call would cost Redis more than these few.
            let stats = keys.stats();
            for (field, n) in counted {
                pipe.hincr(&stats, field, *n).ignore();
            }
            // Counters, not work: they go once the prefix has been idle as long as a session.
            pipe.pexpire(
                &stats,
                i64::try_from(protocol::millis(config.session_ttl)).unwrap_or(i64::MAX),
            );
        }
        Item::Endings { session, endings } => {
            let endings: Vec<Ending> = endings.iter().map(|(e, _)| e.clone()).collect();
            let call = CommitCall {
                session: &keys.session(session),
                done_channel: &keys.done_channel(),
                session_ttl: config.session_ttl,
                dead_max_len: config.dead_letters_max_len,
                endings: &endings,
            }
            .invocation();
            pipe.invoke_script(&call);
        }
        Item::Commit(commit) => {
            let session = keys.session(&commit.session);
            let call = match &commit.body {
                CommitBody::Advance(advance) => Advance {
                    session: &session,
                    job: advance.job,
                    token: advance.token,
                    step_fp: &advance.step_fp,
                    version_delta: advance.version_delta,
                    attempts_delta: advance.attempts_delta,
                    entry: advance.entry,
                    hand_off: advance.hand_off,
                    done_channel: &keys.done_channel(),
                    session_ttl: config.session_ttl,
                    events_channel: &keys.events_channel(),
                    events_max_len: config.events_max_len,
                    end: advance.end.as_ref(),
                    successors: &advance.successors,
                    arrivals: &advance.arrivals,
                    held: &advance.held,
                    consumed: advance.consumed,
                }
                .invocation(),
                CommitBody::Park {
                    job,
                    token,
                    attempt,
                    wait,
                    attempts,
                } => Park {
                    session: &session,
                    job: *job,
                    token: *token,
                    attempt: *attempt,
                    wait: *wait,
                    attempts: *attempts,
                }
                .invocation(),
                // Grouped into `Item::Endings`.
                CommitBody::End(_) => return,
            };
            pipe.invoke_script(&call);
        }
    }
}

/// The scripts a pipeline's items use (loaded again after a `SCRIPT FLUSH`).
const PIPELINED: [&ScriptDef; 4] = [
    &event::EVENT,
    &commit::COMMIT,
    &commit::PARK,
    &advance::ADVANCE,
];

/// How many times a pipeline's `NOSCRIPT` items are sent again after loading the scripts (a
/// `SCRIPT FLUSH` may land again between the load and the retry).
const RELOADS: usize = 3;

/// Sends `items` as one pipeline and answers the commits among them. Items refused with
/// `NOSCRIPT` (after a `SCRIPT FLUSH`) are sent again once the scripts are loaded. When the
/// connection drops with the pipeline in flight, its commits are sent once more on the
/// re-established connection (a repetition of one that landed is refused by its token, and
/// a commit lost that way would otherwise wait out its lease and run again); its events are
/// not (a repetition would duplicate them in the stream).
async fn send(forwarding: Arc<Forwarding>, mut items: Vec<Item>) {
    let mut reloads = 0;
    let mut resent = false;
    loop {
        let replies = match pipeline(&forwarding, &items).await {
            Ok(replies) => replies,
            Err(error) if error.is_connection_dropped() && !resent => {
                resent = true;
                let (commits, events): (Vec<Item>, Vec<Item>) = items
                    .into_iter()
                    .partition(|item| matches!(item, Item::Commit(_) | Item::Endings { .. }));
                fail(&forwarding, events, &error);
                if commits.is_empty() {
                    return;
                }
                items = commits;
                continue;
            }
            Err(error) => {
                fail(&forwarding, items, &error);
                return;
            }
        };
        let mut retry = Vec::new();
        for (item, reply) in items.into_iter().zip(replies) {
            match reply {
                Value::ServerError(error) if error.code() == "NOSCRIPT" && reloads < RELOADS => {
                    retry.push(item);
                }
                reply => answer(&forwarding, item, reply),
            }
        }
        if retry.is_empty() {
            return;
        }
        reloads += 1;
        if let Err(error) = forwarding.redis.load(&PIPELINED).await {
            fail(&forwarding, retry, &error);
            return;
        }
        items = retry;
    }
}

/// One reply per item (the counts' `HINCRBY`s are ignored; their `PEXPIRE` answers).
async fn pipeline(forwarding: &Forwarding, items: &[Item]) -> Result<Vec<Value>, WireError> {
    let mut conn = forwarding.redis.conn()?;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for item in items {
        add(&mut pipe, forwarding, item);
    }
    Ok(pipe.query_async(&mut conn).await?)
}

fn answer(forwarding: &Forwarding, item: Item, reply: Value) {
    let server_error = |reply: &Value| match reply {
        Value::ServerError(error) => Some(WireError::Redis(error.clone().into())),
        _ => None,
    };
    match item {
        Item::Endings { endings, .. } => {
            let read = match server_error(&reply) {
                Some(error) => Err(error),
                None => CommitCall::read(reply, endings.len()),
            };
            match read {
                Ok(committed) => {
                    for ((_, to), committed) in endings.into_iter().zip(committed) {
                        let _ = to.send(Ok(Reply::Ended(committed)));
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    for (_, to) in endings {
                        let _ = to.send(Err(WireError::reply("commit", message.clone())));
                    }
                }
            }
        }
        Item::Commit(commit) => {
            let read = match server_error(&reply) {
                Some(error) => Err(error),
                None => match commit.body {
                    CommitBody::Advance(_) => Advance::read(reply).map(Reply::Advanced),
                    CommitBody::Park { .. } => Park::read(reply).map(Reply::Parked),
                    CommitBody::End(_) => Err(WireError::reply("commit", "an ungrouped ending")),
                },
            };
            let _ = commit.reply.send(read);
        }
        Item::Events { .. } => match server_error(&reply) {
            Some(error) => {
                tracing::warn!(error = %error.into_error(&forwarding.redis.errors), "forwarding events failed");
            }
            None => {
                if let Err(error) = Events::read(reply) {
                    tracing::warn!(%error, "forwarding events: unexpected reply");
                }
            }
        },
        Item::Counted(_) => {}
    }
}

fn fail(forwarding: &Forwarding, items: Vec<Item>, error: &WireError) {
    if items.is_empty() {
        return;
    }
    let message = error.to_string();
    tracing::warn!(error = %forwarding.redis.errors.scrub(&message), "forwarding events and commits failed");
    let failed = || Err(WireError::reply("pipeline", message.clone()));
    for item in items {
        match item {
            Item::Commit(commit) => {
                let _ = commit.reply.send(failed());
            }
            Item::Endings { endings, .. } => {
                for (_, to) in endings {
                    let _ = to.send(failed());
                }
            }
            _ => {}
        }
    }
}
