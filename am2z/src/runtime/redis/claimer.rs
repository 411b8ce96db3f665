//! The claimer: takes sessions in fair order and leases their jobs, up to the worker's
//! concurrency, sleeping when there is nothing to do until a `wake` message (or the idle
//! poll) says there may be.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::worker::{self, ClaimedJob, millis};
use crate::{Error, RunId, SessionId};

/// How many sessions one claim looks at before concluding there is nothing it can take.
const SESSIONS_PER_CLAIM: usize = 8;

/// The most jobs one claim leases from one session (a fair turn's quantum).
const CLAIM_BATCH: usize = 16;

pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(inner.config.worker_concurrency));
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            permit = Arc::clone(&slots).acquire_owned() => permit,
        };
        let Ok(first) = first else { return };
        // Lease as many jobs at once as there are free slots (up to a batch): one round trip
        // for many jobs when the worker is busy.
        let mut permits = vec![first];
        while permits.len() < CLAIM_BATCH {
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        match claim(&inner, permits.len()).await {
            Ok(jobs) if !jobs.is_empty() => {
                for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                    let inner = Arc::clone(&inner);
                    tokio::spawn(async move {
                        worker::execute(inner, job).await;
                        drop(permit);
                    });
                }
            }
            Ok(_) => {
                drop(permits);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = inner.wake.notified() => {}
                    () = tokio::time::sleep(inner.config.idle_poll) => {}
                }
            }
            Err(error) => {
                drop(permits);
                tracing::warn!(%error, "claiming failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// Leases up to `most` jobs this process can run, from the least-served session that has
/// any.
async fn claim(inner: &Inner, most: usize) -> Result<Vec<ClaimedJob>, Error> {
    let fingerprints = inner.served_fingerprints();
    if fingerprints.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = inner.conn()?;
    let asked = std::time::Instant::now();
    let sched = inner.keys.sched();
    for _ in 0..SESSIONS_PER_CLAIM {
        let picked: Option<String> = inner
            .scripts
            .pick
            .key(&sched)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        let Some(picked) = picked else {
            return Ok(Vec::new());
        };
        let Ok(session) = SessionId::new(&picked) else {
            // Not one of ours (ids are validated before they reach Redis): drop it.
            let _: redis::RedisResult<i64> = redis::cmd("ZREM")
                .arg(&sched)
                .arg(&picked)
                .query_async(&mut conn)
                .await;
            continue;
        };
        let keys = inner.keys.session(&session);
        // Raw bytes: a job's input is whatever is in Redis, not necessarily UTF-8, and one bad
        // job must not make the whole batch's reply unreadable.
        let reply: Vec<Vec<u8>> = inner
            .scripts
            .claim
            .key(keys.queue())
            .key(keys.leases())
            .arg(keys.job_prefix())
            .arg(millis(inner.config.lease))
            .arg(inner.config.session_concurrency)
            .arg(millis(inner.config.session_ttl))
            .arg(most)
            .arg(&fingerprints)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        match reply.first().map(Vec::as_slice) {
            Some(b"ok") => {
                let jobs: Vec<ClaimedJob> = reply[1..]
                    .chunks_exact(8)
                    .filter_map(|fields| job(&session, fields, asked))
                    .collect();
                return Ok(jobs);
            }
            Some(b"empty") => retire(inner, &mut conn, &session).await?,
            _ => {}
        }
    }
    Ok(Vec::new())
}

/// One leased job from its eight fields in `claim.lua`'s reply (the input is kept as bytes:
/// decoding it is the served processor's job, which fails the run with a typed error);
/// `asked` is when the claim was sent.
fn job(session: &SessionId, fields: &[Vec<u8>], asked: std::time::Instant) -> Option<ClaimedJob> {
    let text = |i: usize| String::from_utf8_lossy(&fields[i]).into_owned();
    let run_id = u128::from_str_radix(&text(0), 16).ok()?;
    Some(ClaimedJob {
        session: session.clone(),
        run_id: RunId::from_u128(run_id),
        name: text(1),
        fingerprint: text(2),
        input: fields[3].clone(),
        token: text(4),
        created_ms: text(5).parse().unwrap_or(0),
        deliveries: text(6).parse().unwrap_or(1),
        lease_deadline: text(7),
        asked,
    })
}

/// Takes an empty session out of the schedule, then re-checks its queue: a submission that
/// raced in is queued before it enlists, so either we see it here or its enlist comes after
/// our removal. No wake-up is lost.
async fn retire(
    inner: &Inner,
    conn: &mut ConnectionManager,
    session: &SessionId,
) -> Result<(), Error> {
    let keys = inner.keys.session(session);
    let queued: i64 = redis::pipe()
        .cmd("ZREM")
        .arg(inner.keys.sched())
        .arg(session.as_str())
        .ignore()
        .cmd("ZCARD")
        .arg(keys.queue())
        .query_async::<(i64,)>(conn)
        .await
        .map(|(n,)| n)
        .map_err(|e| inner.errors.unavailable(&e))?;
    if queued > 0 {
        inner.enlist(conn, session).await;
    }
    Ok(())
}
