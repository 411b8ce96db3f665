//! Forwards the events of runs executed here to Redis (the session's stream and the events
//! channel), and sends the commits of finished jobs behind their events: one task sends both,
//! as pipelines on the one multiplexed connection. Everything ready for one session goes as
//! its events (one plain `XADD` and one message: no script reads them), then one
//! `commit.lua` call (the steps they count, the ends of its runs executed as one job, each
//! fenced by its own token, announced in one `done` message), then its step commits and
//! parks: any process sees a run's events before its outcome, and the cost in Redis is per
//! batch, not per run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionLike;
use redis::{ErrorKind, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::config::RedisConfig;
use super::keys::{JobId, Keys};
use super::protocol::advance::{Advance, Advanced, StepCommit};
use super::protocol::claim::LeasedJob;
use super::protocol::commit::{Commit as CommitCall, Ending, Park};
use super::protocol::{
    self, Redis, ScriptDef, Token, WireError, advance, commit, events, messages,
};
use super::served::ServedTable;
use crate::{Event, EventKind, EventStream, SessionId};

/// The most events or commits sent in one pipeline.
const BATCH: usize = 256;

/// Pipelines in flight at once. Few on purpose (group commit): while they are out, the
/// commits and events asked for gather and go as the next pipeline, one script call per
/// session, so under load a call carries many runs. A lone commit goes at once (no timer);
/// two in flight keep the connection busy across a round trip.
const MAX_IN_FLIGHT: usize = 2;

/// How many scheduler turns a pipeline waits for more commits while another is in flight.
/// A reply hands out a burst of jobs (a commit refills the slots it frees), and their
/// commits come back one by one as the jobs finish: sent at the first, the next pipeline
/// would carry a few runs and leave the rest to wait a whole round trip behind it. With a
/// pipeline in flight Redis has work, so waiting costs it nothing; the wait ends at the
/// first turn that brings no commit, and never happens when nothing is in flight (a lone
/// commit goes at once).
const GATHER_TURNS: usize = 16;

/// What a commit stores.
pub(crate) enum CommitBody {
    /// A run executed as one job ends (`commit.lua`).
    End(Ending),
    /// A job of a run executed step by step, and what follows it (`advance.lua`).
    Advance(Box<StepCommit>),
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
    /// Whether the run's end was committed (`false`: refused), and the session's next job,
    /// leased for the slot it freed when it wanted one.
    Ended(bool, Option<LeasedJob>),
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
    /// What this worker serves (a commit refilling the slots it frees leases only those).
    pub(crate) served: Arc<ServedTable>,
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

/// One command of a pipeline (or a few, only one of which answers), kept so that it can be
/// sent again after a `NOSCRIPT`.
enum Item {
    /// One session's events, a JSON array: appended to its stream with `XADD NOMKSTREAM` (a
    /// session that is gone keeps no late event; its stream lives as long as its other keys)
    /// and published. Scripts never see them: a script call pays for every byte it is given
    /// (Lua copies, interns and later collects each argument), and events are most of a
    /// run's bytes.
    Events { session: SessionId, events: Vec<u8> },
    /// The ends of one session's runs executed as one job (each with the steps it finished),
    /// with who awaits each.
    Session {
        session: SessionId,
        endings: Vec<Ending>,
        /// Who awaits each ending's answer, in order.
        answers: Vec<oneshot::Sender<Result<Reply, WireError>>>,
    },
    /// One session's commits of jobs of runs executed step by step (one `advance.lua`
    /// call), with who awaits each.
    Steps {
        session: SessionId,
        commits: Vec<StepCommit>,
        answers: Vec<oneshot::Sender<Result<Reply, WireError>>>,
    },
    /// Finished steps counted in the prefix-wide stats.
    Counted(HashMap<String, u64>),
    /// A step commit or a park.
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
        drain(&mut commits, &mut requests);
        if !in_flight.is_empty() {
            for _ in 0..GATHER_TURNS {
                let before = requests.len();
                tokio::task::yield_now().await;
                drain(&mut commits, &mut requests);
                if requests.len() == before || requests.len() >= BATCH {
                    break;
                }
            }
        }
        loop {
            match stream.next().now_or_never() {
                Some(Some(event)) => events.push(event),
                _ => break,
            }
            if events.len() >= BATCH {
                // Pipelines are sent in the order they are queued here.
                let batch = items(std::mem::take(&mut events), Vec::new());
                in_flight.push_back(send(Arc::clone(&forwarding), batch));
            }
        }
        let batch = items(events, requests);
        if !batch.is_empty() {
            in_flight.push_back(send(Arc::clone(&forwarding), batch));
        }
    }
}

/// Takes the commits asked for so far, up to a pipeline's worth.
fn drain(commits: &mut mpsc::UnboundedReceiver<Commit>, requests: &mut Vec<Commit>) {
    while requests.len() < BATCH {
        match commits.try_recv() {
            Ok(request) => requests.push(request),
            Err(_) => break,
        }
    }
}

/// What a finished step counts as: its processor and outcome, the stats field
/// `<processor>:completed` / `:failed` (formatted once per batch, by [`stats_fields`]).
type StepCount = (&'static str, &'static str);

/// The stats fields and counts of `counts`.
fn stats_fields(counts: HashMap<StepCount, u64>) -> impl Iterator<Item = (String, u64)> {
    counts
        .into_iter()
        .map(|((processor, outcome), n)| (format!("{processor}:{outcome}"), n))
}

/// `events` and `commits` as one `commit.lua` call per session (its events in order, the
/// steps its commits' jobs finished, its run ends), each followed by the session's step
/// commits and parks, and one count of those steps for the prefix.
fn items(events: Vec<Event>, commits: Vec<Commit>) -> Vec<Item> {
    #[derive(Default)]
    struct Batch {
        /// The session's events as one JSON array, each written in place (empty: none).
        events: Vec<u8>,
        endings: Vec<Ending>,
        answers: Vec<oneshot::Sender<Result<Reply, WireError>>>,
        steps: Vec<StepCommit>,
        step_answers: Vec<oneshot::Sender<Result<Reply, WireError>>>,
        others: Vec<Commit>,
    }
    /// The batch of `session`, added after the others when it has none yet (sessions keep
    /// the order they first appear in).
    fn batch<'a>(sessions: &'a mut Vec<(SessionId, Batch)>, session: &SessionId) -> &'a mut Batch {
        let at = match sessions.iter().position(|(s, _)| s == session) {
            Some(at) => at,
            None => {
                sessions.push((session.clone(), Batch::default()));
                sessions.len() - 1
            }
        };
        &mut sessions[at].1
    }
    let mut sessions: Vec<(SessionId, Batch)> = Vec::new();
    let mut all_counts: HashMap<StepCount, u64> = HashMap::new();
    for event in events {
        // Session lifecycle events are published by the runtime itself (once, cluster-wide),
        // not by each worker's executor.
        if matches!(
            event.kind,
            EventKind::SessionCreated | EventKind::SessionStopped
        ) {
            continue;
        }
        let batch = batch(&mut sessions, &event.session);
        let mark = batch.events.len();
        batch.events.push(if mark == 0 { b'[' } else { b',' });
        if events::write_event(&mut batch.events, &event).is_err() {
            batch.events.truncate(mark);
        }
    }
    for commit in commits {
        let batch = batch(&mut sessions, &commit.session);
        let finished = match &commit.body {
            CommitBody::End(ending) => &ending.finished[..],
            CommitBody::Advance(step) => &step.finished[..],
            CommitBody::Park { .. } => &[],
        };
        for &step in finished {
            *all_counts.entry(step).or_default() += 1;
        }
        match commit.body {
            CommitBody::End(ending) => {
                batch.endings.push(ending);
                batch.answers.push(commit.reply);
            }
            CommitBody::Advance(step) => {
                batch.steps.push(*step);
                batch.step_answers.push(commit.reply);
            }
            body => batch.others.push(Commit { body, ..commit }),
        }
    }
    let mut items = Vec::new();
    for (session, batch) in sessions {
        if !batch.events.is_empty() {
            let mut events = batch.events;
            events.push(b']');
            items.push(Item::Events {
                session: session.clone(),
                events,
            });
        }
        if !batch.endings.is_empty() {
            items.push(Item::Session {
                session: session.clone(),
                endings: batch.endings,
                answers: batch.answers,
            });
        }
        if !batch.steps.is_empty() {
            items.push(Item::Steps {
                session,
                commits: batch.steps,
                answers: batch.step_answers,
            });
        }
        items.extend(batch.others.into_iter().map(Item::Commit));
    }
    if !all_counts.is_empty() {
        items.push(Item::Counted(stats_fields(all_counts).collect()));
    }
    items
}

/// Adds `item` to `pipe`, as one command (or, for the counts, a few); `served`: the
/// fingerprints this worker serves, for the refills of freed slots.
fn add(pipe: &mut redis::Pipeline, forwarding: &Forwarding, item: &Item, served: &[String]) {
    let (keys, config) = (&forwarding.keys, &forwarding.config);
    match item {
        Item::Events { session, events } => {
            let stream = keys.session(session).events();
            pipe.add_command(events::append(&stream, config.events_max_len, events));
            let channel = keys.events_channel(session);
            pipe.add_command(messages::publish_command(&channel, events))
                .ignore();
        }
        Item::Session {
            session, endings, ..
        } => {
            let call = CommitCall {
                session: &keys.session(session),
                done_channel: &keys.done_channel(session),
                session_ttl: config.session_ttl,
                dead_max_len: config.dead_letters_max_len,
                endings,
                lease: config.lease,
                quota: config.session_concurrency,
                served,
            }
            .command();
            pipe.add_command(call);
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
        Item::Steps {
            session, commits, ..
        } => {
            let call = Advance {
                session: &keys.session(session),
                done_channel: &keys.done_channel(session),
                session_ttl: config.session_ttl,
                events_channel: &keys.events_channel(session),
                events_max_len: config.events_max_len,
                commits,
            }
            .command();
            pipe.add_command(call);
        }
        Item::Commit(commit) => {
            let session = keys.session(&commit.session);
            let call = match &commit.body {
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
                // Grouped into `Item::Session` and `Item::Steps`.
                CommitBody::End(_) | CommitBody::Advance(_) => return,
            };
            pipe.invoke_script(&call);
        }
    }
}

/// The scripts a pipeline's items use (loaded again after a `SCRIPT FLUSH`).
const PIPELINED: [&ScriptDef; 3] = [&commit::COMMIT, &commit::PARK, &advance::ADVANCE];

/// How many times a pipeline's `NOSCRIPT` items are sent again after loading the scripts (a
/// `SCRIPT FLUSH` may land again between the load and the retry).
const RELOADS: usize = 3;

/// Sends `items` as one pipeline and answers the commits among them. Items refused with
/// `NOSCRIPT` (after a `SCRIPT FLUSH`) are sent again once the scripts are loaded. When the
/// connection drops with the pipeline in flight, its commits are sent once more on the
/// re-established connection (a repetition of one that landed is refused by its token, and
/// a commit lost that way would otherwise wait out its lease and run again); its events are
/// not (a repetition would duplicate them in the stream).
async fn send(forwarding: Arc<Forwarding>, items: Vec<Item>) {
    if !forwarding.keys.is_cluster() {
        return send_pipeline(&forwarding, items).await;
    }
    // A cluster's pipelines never mix slots: one per session, one for the prefix-wide
    // counts, all in flight at once (a session's items keep their order).
    let mut groups: Vec<(Option<SessionId>, Vec<Item>)> = Vec::new();
    for item in items {
        let slot = item.session().cloned();
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(item),
            None => groups.push((slot, vec![item])),
        }
    }
    futures::future::join_all(
        groups
            .into_iter()
            .map(|(_, group)| send_pipeline(&forwarding, group)),
    )
    .await;
}

/// The most times an item refused by a cluster (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`:
/// not run) is sent again, alone, so the cluster client follows the redirection.
const CLUSTER_RETRIES: usize = 10;

/// Sends `items` as one pipeline (see [`send`]).
async fn send_pipeline(forwarding: &Forwarding, mut items: Vec<Item>) {
    let mut reloads = 0;
    let mut resent = false;
    loop {
        let replies = match pipeline(forwarding, &items).await {
            Ok(replies) => replies,
            Err(error) if error.is_connection_dropped() && !resent => {
                resent = true;
                items = items.into_iter().filter_map(without_events).collect();
                if items.is_empty() {
                    return;
                }
                continue;
            }
            Err(error) => {
                fail(forwarding, items, &error);
                return;
            }
        };
        let mut retry = Vec::new();
        for (item, reply) in items.into_iter().zip(replies) {
            match reply {
                Value::ServerError(error) if error.code() == "NOSCRIPT" && reloads < RELOADS => {
                    retry.push(item);
                }
                Value::ServerError(error) if refused_by_cluster(error.code()) => {
                    send_alone(forwarding, item).await;
                }
                reply => answer(forwarding, item, reply),
            }
        }
        if retry.is_empty() {
            return;
        }
        reloads += 1;
        if let Err(error) = forwarding.redis.load(&PIPELINED).await {
            fail(forwarding, retry, &error);
            return;
        }
        items = retry;
    }
}

/// Whether a reply says the cluster did not run the command (its slot moved or is moving,
/// or the cluster is failing over): it is to be sent again.
fn refused_by_cluster(code: &str) -> bool {
    matches!(code, "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")
}

/// Sends `item` on its own (its commands one by one), so the cluster client follows `MOVED`
/// and `ASK` and waits out `TRYAGAIN` and `CLUSTERDOWN` itself; again with backoff while the
/// cluster keeps refusing it (a long migration), then answers it with its first command's
/// reply (the others, an events message, answer nothing).
async fn send_alone(forwarding: &Forwarding, item: Item) {
    if matches!(item, Item::Counted(_)) {
        // Counters, several commands: dropped like events whose pipeline was lost.
        tracing::debug!("finished-step counts refused by the cluster were dropped");
        return;
    }
    let mut pipe = redis::pipe();
    add(
        &mut pipe,
        forwarding,
        &item,
        &forwarding.served.fingerprints(),
    );
    let commands: Vec<redis::Cmd> = pipe.cmd_iter().cloned().collect();
    let Some((first, rest)) = commands.split_first() else {
        return answer(forwarding, item, Value::Nil);
    };
    let reply = match send_retrying(forwarding, first).await {
        Ok(reply) => reply,
        Err(error) => return fail(forwarding, vec![item], &error),
    };
    for command in rest {
        if let Err(error) = send_retrying(forwarding, command).await {
            tracing::debug!(error = %forwarding.redis.errors.scrub(&error.to_string()), "an events message refused by the cluster was dropped");
        }
    }
    answer(forwarding, item, reply);
}

/// Sends `command` alone, again with backoff while the cluster refuses it (or after a
/// `SCRIPT FLUSH`, once the scripts are loaded again).
async fn send_retrying(forwarding: &Forwarding, command: &redis::Cmd) -> Result<Value, WireError> {
    let mut backoff = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        let mut conn = forwarding.redis.conn()?;
        match conn.req_packed_command(command).await {
            Ok(reply) => return Ok(reply),
            Err(error)
                if attempt < CLUSTER_RETRIES
                    && (error.is_cluster_error()
                        || error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)) =>
            {
                if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) {
                    let _ = forwarding.redis.load(&PIPELINED).await;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
            Err(error) => return Err(WireError::Redis(error)),
        }
    }
}

impl Item {
    /// The session whose slot the item writes to (`None`: the prefix-wide counts).
    fn session(&self) -> Option<&SessionId> {
        match self {
            Item::Events { session, .. }
            | Item::Session { session, .. }
            | Item::Steps { session, .. } => Some(session),
            Item::Commit(commit) => Some(&commit.session),
            Item::Counted(_) => None,
        }
    }
}

/// What of `item` is sent again after the connection dropped with it in flight: its commits
/// (a repetition of one that landed is refused by its token), not its events (a repetition
/// would duplicate them in the stream).
fn without_events(item: Item) -> Option<Item> {
    match item {
        Item::Commit(_) | Item::Steps { .. } | Item::Session { .. } => Some(item),
        Item::Events { .. } | Item::Counted(_) => None,
    }
}

/// One reply per item (ignored: the counts' `HINCRBY`s, whose `PEXPIRE` answers, and an events
/// item's message, whose `XADD` does).
async fn pipeline(forwarding: &Forwarding, items: &[Item]) -> Result<Vec<Value>, WireError> {
    let mut conn = forwarding.redis.conn()?;
    let refills = items.iter().any(|item| match item {
        Item::Session { endings, .. } => endings.iter().any(|e| e.refill),
        _ => false,
    });
    let served = match refills {
        true => forwarding.served.fingerprints(),
        false => Vec::new(),
    };
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for item in items {
        add(&mut pipe, forwarding, item, &served);
    }
    let Some((replicas, timeout)) = forwarding.redis.durable else {
        return Ok(pipe.query_async(&mut conn).await?);
    };
    // Durable writes: the commits are answered once the replicas hold them.
    pipe.cmd("WAIT")
        .arg(replicas)
        .arg(protocol::millis(timeout));
    let mut replies: Vec<Value> = pipe.query_async(&mut conn).await?;
    let acknowledged = match replies.pop() {
        Some(Value::Int(n)) => u32::try_from(n).unwrap_or(0),
        _ => 0,
    };
    if acknowledged < replicas {
        tracing::warn!(
            acknowledged,
            replicas,
            "commits reached fewer replicas than durable writes ask for; a failover now may undo them (their jobs then run again)"
        );
    }
    Ok(replies)
}

fn answer(forwarding: &Forwarding, item: Item, reply: Value) {
    let server_error = |reply: &Value| match reply {
        Value::ServerError(error) => Some(WireError::Redis(error.clone().into())),
        _ => None,
    };
    match item {
        Item::Events { .. } => match reply {
            Value::ServerError(error) => {
                let message = WireError::Redis(error.into()).to_string();
                tracing::warn!(error = %forwarding.redis.errors.scrub(&message), "storing events failed");
            }
            Value::Nil => {
                tracing::debug!("events of a session that is gone were only published");
            }
            _ => {}
        },
        Item::Session {
            endings, answers, ..
        } => {
            let read = match server_error(&reply) {
                Some(error) => Err(error),
                None => CommitCall::read(reply, &endings),
            };
            match read {
                Ok(committed) => {
                    for (to, (ended, next)) in answers.into_iter().zip(committed.ended) {
                        let _ = to.send(Ok(Reply::Ended(ended, next)));
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    if answers.is_empty() {
                        tracing::warn!(error = %forwarding.redis.errors.scrub(&message), "counting finished steps failed");
                    }
                    for to in answers {
                        let _ = to.send(Err(WireError::reply("commit", message.clone())));
                    }
                }
            }
        }
        Item::Commit(commit) => {
            let read = match server_error(&reply) {
                Some(error) => Err(error),
                None => match commit.body {
                    CommitBody::Park { .. } => Park::read(reply).map(Reply::Parked),
                    CommitBody::End(_) | CommitBody::Advance(_) => {
                        Err(WireError::reply("commit", "an ungrouped commit"))
                    }
                },
            };
            let _ = commit.reply.send(read);
        }
        Item::Steps {
            commits, answers, ..
        } => {
            let read = match server_error(&reply) {
                Some(error) => Err(error),
                None => Advance::read(reply, commits.len()),
            };
            match read {
                Ok(advanced) => {
                    for (to, advanced) in answers.into_iter().zip(advanced) {
                        let _ = to.send(Ok(Reply::Advanced(advanced)));
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    for to in answers {
                        let _ = to.send(Err(WireError::reply("advance", message.clone())));
                    }
                }
            }
        }
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
            Item::Session { answers, .. } | Item::Steps { answers, .. } => {
                for to in answers {
                    let _ = to.send(failed());
                }
            }
            Item::Events { .. } | Item::Counted(_) => {}
        }
    }
}
