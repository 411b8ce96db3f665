//! Forwards the events of runs executed here to Redis (the session's stream and the events
//! channel), and commits finished runs behind their events: one task sends both, in order,
//! as pipelines on the one multiplexed connection, so every process sees a run's events
//! before its outcome without the commit waiting for the events' round trip.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use redis::{RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::keys::JobId;
use super::steps::Advance;
use super::worker::millis;
use crate::{Event, EventKind, EventStream, SessionId};

/// The most events or commits sent in one pipeline.
const BATCH: usize = 256;

/// Pipelines in flight at once: enough to keep the connection busy, few enough to bound what
/// is buffered when Redis is slow.
const MAX_IN_FLIGHT: usize = 32;

/// The largest outcome (bytes) a `done` message carries, so that a waiter in another process
/// needs no read; every process receives every `done` message, so larger ones are only named.
pub(crate) const DONE_INLINE: usize = 4096;

/// A finished job to commit, fenced by its lease token.
pub(crate) struct Commit {
    pub(crate) session: SessionId,
    pub(crate) job: JobId,
    pub(crate) token: String,
    pub(crate) body: CommitBody,
    /// The script's answer.
    pub(crate) reply: oneshot::Sender<RedisResult<Value>>,
}

/// What a commit stores.
pub(crate) enum CommitBody {
    /// A whole run's outcome (`commit.lua`, answering 1 committed or 0 refused); `dead` when
    /// the job's input did not decode: the run is dead-lettered with its outcome.
    Run { wire: String, dead: bool },
    /// A job of a run executed step by step, and what follows it (`advance.lua`).
    Advance(Box<Advance>),
    /// A step job that waits `delay` before `attempt`, having made `attempts` (`park.lua`,
    /// answering the due time, or 0 when refused).
    Park {
        attempt: u32,
        delay: std::time::Duration,
        attempts: u32,
    },
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
    Commit(Commit),
}

/// Forwards `stream` (the embedded executor's events) and sends the commits asked for on
/// `commits`, until `stop` fires.
pub(crate) async fn run(
    inner: Arc<Inner>,
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
                in_flight.push_back(send(Arc::clone(&inner), items(std::mem::take(&mut events))));
            }
        }
        let mut batch = items(events);
        batch.extend(requests.into_iter().map(Item::Commit));
        if !batch.is_empty() {
            in_flight.push_back(send(Arc::clone(&inner), batch));
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
fn items(events: Vec<Event>) -> Vec<Item> {
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

/// Adds `item` to `pipe`, as one command.
fn add(pipe: &mut redis::Pipeline, inner: &Inner, item: &Item) {
    match item {
        Item::Events { session, events } => {
            let keys = inner.keys.session(session);
            let mut call = inner.scripts.event.prepare_invoke();
            call.key(keys.meta())
                .key(keys.events())
                .key(keys.stats())
                .arg(inner.config.events_max_len)
                .arg(inner.keys.events_channel());
            for (json, field) in events {
                call.arg(json).arg(field);
            }
            pipe.invoke_script(&call);
        }
        Item::Counted(counted) => {
            // Plain commands: a script call would cost Redis more than these few.
            let stats = inner.keys.stats();
            for (field, n) in counted {
                pipe.hincr(&stats, field, *n).ignore();
            }
            pipe.pexpire(
                &stats,
                millis(inner.config.session_ttl)
                    .try_into()
                    .unwrap_or(i64::MAX),
            );
        }
        Item::Commit(commit) => {
            let keys = inner.keys.session(&commit.session);
            match &commit.body {
                CommitBody::Run { wire, dead } => {
                    let mut call = inner.scripts.commit.prepare_invoke();
                    call.key(keys.leases())
                        .key(keys.job(&commit.job))
                        .key(keys.result(commit.job.run))
                        .key(keys.index())
                        .key(keys.results());
                    if *dead {
                        call.key(keys.dead());
                    }
                    call.arg(commit.job.to_string())
                        .arg(&commit.token)
                        .arg(wire)
                        .arg(millis(inner.config.result_ttl))
                        .arg(inner.keys.done_channel())
                        .arg(format!("{} {}", commit.session, commit.job.run))
                        .arg(millis(inner.config.session_ttl))
                        .arg(DONE_INLINE);
                    pipe.invoke_script(&call);
                }
                CommitBody::Advance(advance) => {
                    let run = commit.job.run;
                    let mut call = inner.scripts.advance.prepare_invoke();
                    call.key(keys.leases())
                        .key(keys.job(&commit.job))
                        .key(keys.run(run))
                        .key(keys.queue())
                        .key(keys.index())
                        .key(keys.results())
                        .key(keys.result(run))
                        .key(keys.meta())
                        .key(keys.events())
                        .arg(commit.job.to_string())
                        .arg(&commit.token)
                        .arg(keys.job_prefix())
                        .arg(run.to_string())
                        .arg(millis(inner.config.session_ttl))
                        .arg(millis(inner.config.result_ttl))
                        .arg(inner.keys.done_channel())
                        .arg(format!("{} {run}", commit.session))
                        .arg(DONE_INLINE)
                        .arg(inner.keys.events_channel())
                        .arg(inner.config.events_max_len)
                        .arg(inner.keys.control_channel())
                        .arg(if advance.hand_off {
                            millis(inner.config.lease)
                        } else {
                            0
                        })
                        .arg(advance.version)
                        .arg(advance.attempts)
                        .arg(&advance.successors)
                        .arg(&advance.arrivals);
                    match &advance.outcome {
                        Some((wire, event)) => call.arg(wire).arg(event),
                        None => call.arg("").arg(""),
                    };
                    call.arg(if advance.entry { "1" } else { "0" })
                        .arg(&advance.staged);
                    pipe.invoke_script(&call);
                }
                CommitBody::Park {
                    attempt,
                    delay,
                    attempts,
                } => {
                    let mut call = inner.scripts.park.prepare_invoke();
                    call.key(keys.leases())
                        .key(keys.job(&commit.job))
                        .key(keys.delayed())
                        .key(keys.meta())
                        .arg(commit.job.to_string())
                        .arg(&commit.token)
                        .arg(attempt)
                        .arg(millis(*delay))
                        .arg(attempts);
                    pipe.invoke_script(&call);
                }
            }
        }
    }
}

/// How many times a pipeline's `NOSCRIPT` items are sent again after loading the scripts (a
/// `SCRIPT FLUSH` may land again between the load and the retry).
const RELOADS: usize = 3;

/// Sends `items` as one pipeline and answers the commits among them. Items refused with
/// `NOSCRIPT` (after a `SCRIPT FLUSH`) are sent again once the scripts are loaded. When the
/// connection drops with the pipeline in flight, its commits are sent once more on the
/// re-established connection (a repetition of one that landed is refused by its token, and
/// a commit lost that way would otherwise wait out its lease and run again); its events are
/// not (a repetition would duplicate them in the stream).
async fn send(inner: Arc<Inner>, mut items: Vec<Item>) {
    let mut reloads = 0;
    let mut resent = false;
    loop {
        let replies = match pipeline(&inner, &items).await {
            Ok(replies) => replies,
            Err(error) if error.is_connection_dropped() && !resent => {
                resent = true;
                let (commits, events): (Vec<Item>, Vec<Item>) = items
                    .into_iter()
                    .partition(|item| matches!(item, Item::Commit(_)));
                fail(&inner, events, &error);
                if commits.is_empty() {
                    return;
                }
                items = commits;
                continue;
            }
            Err(error) => {
                fail(&inner, items, &error);
                return;
            }
        };
        let mut retry = Vec::new();
        for (item, reply) in items.into_iter().zip(replies) {
            match reply {
                Value::ServerError(error) if error.code() == "NOSCRIPT" && reloads < RELOADS => {
                    retry.push(item);
                }
                reply => answer(&inner, item, reply),
            }
        }
        if retry.is_empty() {
            return;
        }
        reloads += 1;
        let Ok(mut conn) = inner.conn() else { return };
        let loaded: RedisResult<()> = async {
            inner.scripts.event.load_async(&mut conn).await?;
            inner.scripts.commit.load_async(&mut conn).await?;
            inner.scripts.advance.load_async(&mut conn).await?;
            inner.scripts.park.load_async(&mut conn).await?;
            Ok(())
        }
        .await;
        if let Err(error) = loaded {
            fail(&inner, retry, &error);
            return;
        }
        items = retry;
    }
}

/// One reply per item (the counts' `HINCRBY`s are ignored; their `PEXPIRE` answers).
async fn pipeline(inner: &Inner, items: &[Item]) -> RedisResult<Vec<Value>> {
    let mut conn = inner.conn().map_err(|_| {
        redis::RedisError::from((redis::ErrorKind::Client, "the runtime is stopped"))
    })?;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for item in items {
        add(&mut pipe, inner, item);
    }
    pipe.query_async(&mut conn).await
}

fn answer(inner: &Inner, item: Item, reply: Value) {
    match item {
        Item::Commit(commit) => {
            let committed = match reply {
                Value::ServerError(error) => Err(error.into()),
                reply => Ok(reply),
            };
            let _ = commit.reply.send(committed);
        }
        _ => {
            if let Value::ServerError(error) = reply {
                tracing::warn!(error = %inner.errors.scrub(&error.to_string()), "forwarding events failed");
            }
        }
    }
}

fn fail(inner: &Inner, items: Vec<Item>, error: &redis::RedisError) {
    if items.is_empty() {
        return;
    }
    tracing::warn!(error = %inner.errors.scrub(&error.to_string()), "forwarding events and commits failed");
    for item in items {
        if let Item::Commit(commit) = item {
            let _ = commit.reply.send(Err(error.clone()));
        }
    }
}
