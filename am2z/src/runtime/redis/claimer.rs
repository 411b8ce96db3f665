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

pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(inner.config.worker_concurrency));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = Arc::clone(&slots).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        match claim(&inner).await {
            Ok(Some(job)) => {
                let inner = Arc::clone(&inner);
                tokio::spawn(async move {
                    worker::execute(inner, job).await;
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = inner.wake.notified() => {}
                    () = tokio::time::sleep(inner.config.idle_poll) => {}
                }
            }
            Err(error) => {
                drop(permit);
                tracing::warn!(%error, "claiming failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// Leases one job this process can run, from the least-served session that has one.
async fn claim(inner: &Inner) -> Result<Option<ClaimedJob>, Error> {
    let fingerprints = inner.served_fingerprints();
    if fingerprints.is_empty() {
        return Ok(None);
    }
    let mut conn = inner.conn()?;
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
            return Ok(None);
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
        let reply: Vec<String> = inner
            .scripts
            .claim
            .key(keys.queue())
            .key(keys.leases())
            .arg(keys.job_prefix())
            .arg(millis(inner.config.lease))
            .arg(inner.config.session_concurrency)
            .arg(millis(inner.config.session_ttl))
            .arg(&fingerprints)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        match reply.first().map(String::as_str) {
            Some("ok") if reply.len() == 9 => {
                let run_id = u128::from_str_radix(&reply[1], 16).map(RunId::from_u128);
                let Ok(run_id) = run_id else { continue };
                return Ok(Some(ClaimedJob {
                    session,
                    run_id,
                    name: reply[2].clone(),
                    fingerprint: reply[3].clone(),
                    input: reply[4].clone(),
                    token: reply[5].clone(),
                    created_ms: reply[6].parse().unwrap_or(0),
                    deliveries: reply[7].parse().unwrap_or(1),
                    lease_deadline: reply[8].clone(),
                }));
            }
            Some("empty") => retire(inner, &mut conn, &session).await?,
            _ => {}
        }
    }
    Ok(None)
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
