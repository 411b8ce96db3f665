//! Plain reads (no script): each reads keys of one slot, so it works the same on a Cluster.

use std::collections::HashMap;

use super::{Redis, WireError};
use crate::runtime::redis::keys::{Keys, SessionKeys};
use crate::{RunId, SessionId};

/// Where a run stands, as a waiter sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RunStatus {
    /// Its stored outcome, once it ended (until trimmed).
    pub(crate) outcome: Option<String>,
    /// It is live (submitted, not ended).
    pub(crate) live: bool,
    /// The epoch of the session now under its id (`None`: no session).
    pub(crate) epoch: Option<u64>,
}

/// Reads where `run` of `session` stands, in one round trip.
pub(crate) async fn run_status(
    redis: &Redis,
    session: &SessionKeys,
    run: RunId,
) -> Result<RunStatus, WireError> {
    let mut conn = redis.conn()?;
    let (outcome, live, epoch): (Option<String>, Option<f64>, Option<u64>) = redis::pipe()
        .hget(session.results(), run.to_string())
        .zscore(session.runs(), run.to_string())
        .hget(session.meta(), "epoch")
        .query_async(&mut conn)
        .await?;
    Ok(RunStatus {
        outcome,
        live: live.is_some(),
        epoch,
    })
}

/// The registered sessions (those that parse as ids), sorted.
pub(crate) async fn sessions(redis: &Redis, keys: &Keys) -> Result<Vec<SessionId>, WireError> {
    let mut conn = redis.conn()?;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.sessions())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await?;
    let mut sessions: Vec<SessionId> = members
        .iter()
        .filter_map(|s| SessionId::new(s).ok())
        .collect();
    sessions.sort();
    Ok(sessions)
}

/// A page of the registry, from `cursor` (0 to start): the sessions with their registration
/// scores, and the next cursor (0 when done).
pub(crate) async fn sessions_page(
    redis: &Redis,
    keys: &Keys,
    cursor: u64,
) -> Result<(u64, Vec<(String, u64)>), WireError> {
    let mut conn = redis.conn()?;
    let (next, flat): (u64, Vec<String>) = redis::cmd("ZSCAN")
        .arg(keys.sessions())
        .arg(cursor)
        .arg("COUNT")
        .arg(200)
        .query_async(&mut conn)
        .await?;
    let mut page = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks_exact(2) {
        let score = pair[1]
            .parse::<f64>()
            .map_err(|_| WireError::reply("zscan", format!("score `{}`", pair[1])))?;
        // Scores are whole milliseconds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        page.push((pair[0].clone(), score as u64));
    }
    Ok((next, page))
}

/// The registration score of `session`, if it is registered.
pub(crate) async fn registration(
    redis: &Redis,
    keys: &Keys,
    session: &str,
) -> Result<Option<u64>, WireError> {
    let mut conn = redis.conn()?;
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.sessions())
        .arg(session)
        .query_async(&mut conn)
        .await?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(score.map(|s| s as u64))
}

/// How many sessions are registered, and the prefix-wide finished-step counts.
pub(crate) async fn totals(
    redis: &Redis,
    keys: &Keys,
) -> Result<(usize, HashMap<String, u64>), WireError> {
    let mut conn = redis.conn()?;
    Ok(redis::pipe()
        .zcard(keys.sessions())
        .hgetall(keys.stats())
        .query_async(&mut conn)
        .await?)
}

/// The prefix-wide finished-step counts.
pub(crate) async fn stats(redis: &Redis, keys: &Keys) -> Result<HashMap<String, u64>, WireError> {
    let mut conn = redis.conn()?;
    Ok(redis::cmd("HGETALL")
        .arg(keys.stats())
        .query_async(&mut conn)
        .await?)
}

/// One session's leased jobs and its finished-step counts.
pub(crate) async fn session_stats(
    redis: &Redis,
    session: &SessionKeys,
) -> Result<(u64, HashMap<String, u64>), WireError> {
    let mut conn = redis.conn()?;
    Ok(redis::pipe()
        .zcard(session.leases())
        .hgetall(session.stats())
        .query_async(&mut conn)
        .await?)
}

/// The `fields` of `run`'s hash (a join reads its branches' results, a job its staged input),
/// as bytes, `None` where absent.
pub(crate) async fn run_fields(
    redis: &Redis,
    session: &SessionKeys,
    run: RunId,
    fields: &[String],
) -> Result<Vec<Option<Vec<u8>>>, WireError> {
    let mut conn = redis.conn()?;
    Ok(redis::cmd("HMGET")
        .arg(session.run(run))
        .arg(fields)
        .query_async(&mut conn)
        .await?)
}

/// The earliest deadline of `session`'s leases (running or calling), if it has any.
pub(crate) async fn earliest_lease(
    redis: &Redis,
    session: &SessionKeys,
) -> Result<Option<u64>, WireError> {
    let mut conn = redis.conn()?;
    type Earliest = Vec<(String, f64)>;
    let (running, calling): (Earliest, Earliest) = redis::pipe()
        .zrange_withscores(session.leases(), 0, 0)
        .zrange_withscores(session.calls(), 0, 0)
        .query_async(&mut conn)
        .await?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(running
        .into_iter()
        .chain(calling)
        .map(|(_, deadline)| deadline as u64)
        .min())
}

/// A page of `session`'s event stream after entry `after` (`"-"`: from the start).
pub(crate) async fn events(
    redis: &Redis,
    session: &SessionKeys,
    after: &str,
    count: usize,
) -> Result<Vec<(String, Vec<(String, String)>)>, WireError> {
    let mut conn = redis.conn()?;
    let start = if after == "-" {
        "-".to_owned()
    } else {
        format!("({after}")
    };
    Ok(redis::cmd("XRANGE")
        .arg(session.events())
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await?)
}
