//! Plain reads (no script): each reads keys of one slot, so it works the same on a Cluster.

use std::collections::HashMap;

use super::{Redis, WireError};
use crate::runtime::redis::keys::{Keys, SessionKeys};
use crate::{RunId, SessionId};

/// The upper bound of a range over `leases` that takes the leases only: every finite
/// deadline, not the member scored +inf that keeps the set a skip list (`LEASES_SKIPLIST` in
/// `scripts/include/session.lua`).
pub(crate) const LEASED: &str = "(+inf";

/// Where a run stands, as a waiter sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RunStatus {
    /// Its stored outcome, once it ended (until trimmed).
    pub(crate) outcome: Option<String>,
    /// It is live (submitted, not ended).
    pub(crate) live: bool,
    /// The epoch of the session now under its id (`None`: no session, or one being stopped:
    /// a stop takes the session's live runs out of `runs` before it deletes the rest, and a
    /// run it took is stopped, not unknown).
    pub(crate) epoch: Option<u64>,
}

/// Reads where `run` of `session` stands, in one round trip.
pub(crate) async fn run_status(
    redis: &Redis,
    session: &SessionKeys,
    run: RunId,
) -> Result<RunStatus, WireError> {
    let mut conn = redis.conn()?;
    #[allow(clippy::type_complexity)]
    let (outcome, live, (epoch, stopping)): (
        Option<String>,
        Option<f64>,
        (Option<u64>, Option<String>),
    ) = redis::pipe()
        .hget(session.results(), run.to_string())
        .zscore(session.runs(), run.to_string())
        .cmd("HMGET")
        .arg(session.meta())
        .arg("epoch")
        .arg("stopping")
        .query_async(&mut conn)
        .await?;
    Ok(RunStatus {
        outcome,
        live: live.is_some(),
        epoch: epoch.filter(|_| stopping.is_none()),
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
    // Two slots on a cluster: two commands, in flight together.
    let (mut first, mut second) = (redis.conn()?, redis.conn()?);
    let (mut count, mut read) = (redis::cmd("ZCARD"), redis::cmd("HGETALL"));
    count.arg(keys.sessions());
    read.arg(keys.stats());
    let (sessions, stats) = tokio::join!(
        count.query_async::<usize>(&mut first),
        read.query_async::<HashMap<String, u64>>(&mut second),
    );
    Ok((sessions?, stats?))
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
        .zcount(session.leases(), "-inf", LEASED)
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
        .zrangebyscore_limit_withscores(session.leases(), "-inf", LEASED, 0, 1)
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

/// Where a replay of a session's events resumes: after event `index` of stream entry
/// `entry`. An entry holds one event (written by a script: `session_created`, a run's end)
/// or a worker's batch of them; a cursor is written `<entry>` after the last (or only) event
/// of an entry and `<entry>/<index>` inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    entry: (u64, u64),
    index: Option<usize>,
}

impl Cursor {
    /// Reads a cursor given back by a caller; `None` when it is not one.
    pub(crate) fn parse(text: &str) -> Option<Cursor> {
        let (entry, index) = match text.split_once('/') {
            Some((entry, index)) => (entry, Some(index.parse().ok()?)),
            None => (text, None),
        };
        let (ms, seq) = entry.split_once('-')?;
        Some(Cursor {
            entry: (ms.parse().ok()?, seq.parse().ok()?),
            index,
        })
    }

    fn entry(&self) -> String {
        format!("{}-{}", self.entry.0, self.entry.1)
    }
}

/// Up to `limit` events (as JSON values, each with the cursor that resumes after it) of `session`'s
/// stream, after `after` (from the start when `None`).
pub(crate) async fn events(
    redis: &Redis,
    session: &SessionKeys,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<(String, serde_json::Value)>, WireError> {
    let mut conn = redis.conn()?;
    // Inside a batch: that entry again, without the events already seen.
    let (start, skip) = match after {
        None => ("-".to_owned(), None),
        Some(cursor) => match cursor.index {
            Some(index) => (cursor.entry(), Some((cursor.entry(), index + 1))),
            None => (format!("({}", cursor.entry()), None),
        },
    };
    // Each entry holds at least one event: `limit` entries are enough.
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(session.events())
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(limit)
        .query_async(&mut conn)
        .await?;
    let mut page = Vec::new();
    for (id, fields) in entries {
        // An entry that does not read holds no event (it still advances the cursor).
        let batch: Vec<serde_json::Value> = match fields.into_iter().next() {
            Some((field, json)) if field == "event" => {
                serde_json::from_str(&json).into_iter().collect()
            }
            Some((field, json)) if field == "events" => {
                serde_json::from_str(&json).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let from = match &skip {
            Some((entry, from)) if *entry == id => *from,
            _ => 0,
        };
        let last = batch.len().saturating_sub(1);
        for (index, json) in batch.into_iter().enumerate().skip(from) {
            if page.len() == limit {
                return Ok(page);
            }
            let cursor = match index == last {
                true => id.clone(),
                false => format!("{id}/{index}"),
            };
            page.push((cursor, json));
        }
    }
    Ok(page)
}
