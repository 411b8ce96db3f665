//! What inspection reads and does (`runtime/redis/inspect.rs` builds the answers): plain
//! reads of one slot each (a session's keys, or the worker registry), a page at a time, and
//! `cancel.lua`, the one action that is a script of its own (a retry is `submit.lua` with
//! `retry_of`).

use super::{Redis, ScriptDef, WireError, session_call, status};
use crate::RunId;
use crate::runtime::redis::keys::{Keys, SessionKeys};

pub(crate) static CANCEL: ScriptDef = ScriptDef::new(
    "cancel",
    include_str!("../scripts/cancel.lua"),
    &["run_key"],
    &["run", "outcome", "done_channel", "done", "session_ttl"],
);

/// Where a member stands in a sorted set listed newest first: its score and the member
/// itself (members of equal score are listed in reverse byte order, as `ZRANGE ... REV`).
pub(crate) type Position = (f64, String);

/// The most members of one score a page looks through when the member it resumes after
/// has left the set (runs submitted in one call share a score: at most 512 of them).
const TIES: usize = 10_000;

/// Up to `limit` members of `key` after `after` (from the highest score when `None`), newest
/// first, with their scores. Costs one command (two when `after` is given and still in the
/// set; three when it left it); never reads more than `limit` members (plus the ties of its
/// score when `after` left the set).
pub(crate) async fn newest(
    redis: &Redis,
    key: &str,
    after: Option<&Position>,
    limit: usize,
) -> Result<Vec<Position>, WireError> {
    let mut conn = redis.conn()?;
    // Redis answers member, score; a position is score, member.
    let swap = |found: Vec<(String, f64)>| found.into_iter().map(|(m, s)| (s, m)).collect();
    let Some((score, member)) = after else {
        let found: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg("+inf")
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        return Ok(swap(found));
    };
    let rank: Option<u64> = redis::cmd("ZREVRANK")
        .arg(key)
        .arg(member)
        .query_async(&mut conn)
        .await?;
    if let Some(rank) = rank {
        let found: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(rank + 1)
            .arg(rank + limit as u64)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        return Ok(swap(found));
    }
    // The member left the set: the rest of its score, then what scores lower.
    let (ties, lower): (Vec<String>, Vec<(String, f64)>) = redis::pipe()
        .cmd("ZRANGE")
        .arg(key)
        .arg(*score)
        .arg(*score)
        .arg("BYSCORE")
        .arg("REV")
        .arg("LIMIT")
        .arg(0)
        .arg(TIES)
        .cmd("ZRANGE")
        .arg(key)
        .arg(format!("({score}"))
        .arg("-inf")
        .arg("BYSCORE")
        .arg("REV")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    Ok(ties
        .into_iter()
        .filter(|tie| tie.as_str() < member.as_str())
        .map(|tie| (*score, tie))
        .chain(swap(lower))
        .take(limit)
        .collect())
}

/// A session's counts: live runs, completed, failed (dead letters included), dead letters.
pub(crate) async fn counts(
    redis: &Redis,
    session: &SessionKeys,
) -> Result<(u64, u64, u64, u64), WireError> {
    let mut conn = redis.conn()?;
    Ok(redis::pipe()
        .zcard(session.runs())
        .zcard(session.completed())
        .zcard(session.failed())
        .zcard(session.dead())
        .query_async(&mut conn)
        .await?)
}

/// What the session's own keys say of live runs: each one's entry job header and whether
/// it waits in `delayed` (one round trip, two commands).
pub(crate) async fn entry_jobs(
    redis: &Redis,
    session: &SessionKeys,
    runs: &[String],
) -> Result<(Vec<Option<String>>, Vec<Option<f64>>), WireError> {
    fields_and_scores(redis, &session.jobs(), runs, &session.delayed(), runs).await
}

/// `HMGET hash fields` and `ZMSCORE zset members` in one round trip. Both commands take at
/// least one argument: an empty page asks nothing.
async fn fields_and_scores(
    redis: &Redis,
    hash: &str,
    fields: &[String],
    zset: &str,
    members: &[String],
) -> Result<(Vec<Option<String>>, Vec<Option<f64>>), WireError> {
    if fields.is_empty() || members.is_empty() {
        return Ok((vec![None; fields.len()], vec![None; members.len()]));
    }
    let mut conn = redis.conn()?;
    Ok(redis::pipe()
        .cmd("HMGET")
        .arg(hash)
        .arg(fields)
        .cmd("ZMSCORE")
        .arg(zset)
        .arg(members)
        .query_async(&mut conn)
        .await?)
}

/// The processor name and attempts kept in each run's hash (a step run past its entry job;
/// one round trip, a command per run).
pub(crate) async fn run_hashes(
    redis: &Redis,
    session: &SessionKeys,
    runs: &[RunId],
) -> Result<Vec<(Option<String>, Option<u32>)>, WireError> {
    let mut conn = redis.conn()?;
    let mut pipe = redis::pipe();
    for run in runs {
        pipe.cmd("HMGET")
            .arg(session.run(*run))
            .arg("name")
            .arg("attempts");
    }
    Ok(pipe.query_async(&mut conn).await?)
}

/// The jobs in flight or waiting in a session: its leased and calling jobs and its delayed
/// jobs, at most `cap` of each (one round trip, three commands).
pub(crate) async fn in_flight(
    redis: &Redis,
    session: &SessionKeys,
    cap: usize,
) -> Result<(Vec<String>, Vec<String>), WireError> {
    let mut conn = redis.conn()?;
    let last = cap.saturating_sub(1);
    let (leases, calls, delayed): (Vec<String>, Vec<String>, Vec<String>) = redis::pipe()
        .zrangebyscore_limit(
            session.leases(),
            "-inf",
            super::reads::LEASED,
            0,
            cap as isize,
        )
        .zrange(session.calls(), 0, last as isize)
        .zrange(session.delayed(), 0, last as isize)
        .query_async(&mut conn)
        .await?;
    Ok((leases.into_iter().chain(calls).collect(), delayed))
}

/// What `results` keeps of ended runs: each one's outcome and processor name, and whether
/// it is a dead letter (one round trip, two commands).
pub(crate) async fn ended(
    redis: &Redis,
    session: &SessionKeys,
    runs: &[String],
) -> Result<(Vec<Option<String>>, Vec<Option<f64>>), WireError> {
    let fields: Vec<String> = runs
        .iter()
        .flat_map(|run| [run.clone(), format!("{run}:p")])
        .collect();
    fields_and_scores(redis, &session.results(), &fields, &session.dead(), runs).await
}

/// Everything the session's keys hold of one run (one round trip, eight commands).
#[derive(Debug, Default)]
pub(crate) struct RunRecord {
    /// Its creation time, while live.
    pub(crate) live: Option<f64>,
    /// Its end time, once completed / failed; when it was dead-lettered.
    pub(crate) completed: Option<f64>,
    pub(crate) failed: Option<f64>,
    pub(crate) dead: Option<f64>,
    /// `results`: its outcome, processor name, what a resubmission needs (a failed run's
    /// entry job fingerprint and priority, `<fp>|<priority>`), the run that retried it, the
    /// run it retried.
    pub(crate) outcome: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) resubmission: Option<String>,
    pub(crate) retried_as: Option<String>,
    pub(crate) retry_of: Option<String>,
    /// Its entry job's header (while live) and body (its input: kept with its outcome).
    pub(crate) header: Option<String>,
    pub(crate) body: Option<Vec<u8>>,
    /// Its run hash's processor name and attempts (a step run past its entry job).
    pub(crate) hash_name: Option<String>,
    pub(crate) hash_attempts: Option<u32>,
}

/// Reads [`RunRecord`] of `run`.
pub(crate) async fn run_record(
    redis: &Redis,
    session: &SessionKeys,
    run: RunId,
) -> Result<RunRecord, WireError> {
    let mut conn = redis.conn()?;
    let id = run.to_string();
    type Results = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    #[allow(clippy::type_complexity)]
    let (live, completed, failed, dead, results, header, body, hash): (
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Results,
        Option<String>,
        Option<Vec<u8>>,
        (Option<String>, Option<u32>),
    ) = redis::pipe()
        .zscore(session.runs(), &id)
        .zscore(session.completed(), &id)
        .zscore(session.failed(), &id)
        .zscore(session.dead(), &id)
        .cmd("HMGET")
        .arg(session.results())
        .arg(&id)
        .arg(format!("{id}:p"))
        .arg(format!("{id}:f"))
        .arg(format!("{id}:r"))
        .arg(format!("{id}:o"))
        .hget(session.jobs(), &id)
        .hget(session.bodies(), &id)
        .cmd("HMGET")
        .arg(session.run(run))
        .arg("name")
        .arg("attempts")
        .query_async(&mut conn)
        .await?;
    let (outcome, name, resubmission, retried_as, retry_of) = results;
    Ok(RunRecord {
        live,
        completed,
        failed,
        dead,
        outcome,
        name,
        resubmission,
        retried_as,
        retry_of,
        header,
        body,
        hash_name: hash.0,
        hash_attempts: hash.1,
    })
}

/// The newest `count` entries of the session's event stream, newest first: each entry's
/// field (`event` or `events`) and JSON (one round trip, one command).
pub(crate) async fn recent_events(
    redis: &Redis,
    session: &SessionKeys,
    count: usize,
) -> Result<Vec<(String, Vec<(String, String)>)>, WireError> {
    let mut conn = redis.conn()?;
    Ok(redis::cmd("XREVRANGE")
        .arg(session.events())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await?)
}

/// A live worker as the registry holds it.
#[derive(Debug)]
pub(crate) struct WorkerRecord {
    pub(crate) id: String,
    /// When its heartbeat lapses (ms on Redis' clock).
    pub(crate) lapses_ms: f64,
    /// Its info hash (`host`, `pid`, `processors`, `seen`).
    pub(crate) info: std::collections::HashMap<String, String>,
}

/// The live workers (at most `cap`), with what each registered of itself (two round trips:
/// one command, then one per worker).
pub(crate) async fn workers(
    redis: &Redis,
    keys: &Keys,
    now_ms: f64,
    cap: usize,
) -> Result<Vec<WorkerRecord>, WireError> {
    let mut conn = redis.conn()?;
    let live: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.workers())
        .arg("+inf")
        .arg(format!("({now_ms}"))
        .arg("BYSCORE")
        .arg("REV")
        .arg("LIMIT")
        .arg(0)
        .arg(cap)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    if live.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (id, _) in &live {
        pipe.hgetall(keys.worker_info(id));
    }
    let infos: Vec<std::collections::HashMap<String, String>> = pipe.query_async(&mut conn).await?;
    Ok(live
        .into_iter()
        .zip(infos)
        .map(|((id, lapses_ms), info)| WorkerRecord {
            id,
            lapses_ms,
            info,
        })
        .collect())
}

/// Redis' clock, in ms.
pub(crate) async fn now_ms(redis: &Redis) -> Result<f64, WireError> {
    let mut conn = redis.conn()?;
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
    #[allow(clippy::cast_precision_loss)]
    Ok((seconds * 1000 + micros / 1000) as f64)
}

/// What `cancel.lua` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CancelReply {
    /// The run was live and ended here.
    Done,
    /// It had ended already, as `state` says (`completed`, `failed`, `dead_lettered`).
    Ended(String),
    /// The session is being stopped.
    Stopping,
    /// No such run (live or kept).
    Unknown,
}

/// Ends live `run` with `outcome` (its `done` line `done`), unless it ended already.
pub(crate) async fn cancel(
    redis: &Redis,
    session: &SessionKeys,
    run: RunId,
    outcome: &str,
    done_channel: &str,
    done: &str,
    session_ttl: u64,
) -> Result<CancelReply, WireError> {
    let mut call = session_call(&CANCEL, session);
    call.key(session.run(run))
        .arg(run.to_string())
        .arg(outcome)
        .arg(done_channel)
        .arg(done)
        .arg(session_ttl);
    let mut fields = redis.run_durable(&CANCEL, &call).await?;
    let cancelled = match status(
        &mut fields,
        "cancel",
        &["cancelled", "ended", "stopping", "unknown"],
    )?
    .as_str()
    {
        "cancelled" => CancelReply::Done,
        "ended" => CancelReply::Ended(fields.text("state")?),
        "stopping" => CancelReply::Stopping,
        _ => CancelReply::Unknown,
    };
    fields.finish()?;
    Ok(cancelled)
}
