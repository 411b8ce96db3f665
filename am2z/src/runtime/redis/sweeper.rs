//! The sweeper: re-queues jobs whose lease expired (their worker died or froze) and
//! dead-letters those that exhausted `max_deliveries`. One process sweeps at a time (a lock
//! key). Each pass visits the sessions whose earliest lease deadline has passed (the
//! `leasing` index, kept by claims and by the sweeper itself); every tenth pass walks the
//! whole session registry with `SSCAN` (a set, never the keyspace) as a safety net for a
//! lease whose claimer died before indexing it, and to expire idle sessions and fail jobs no
//! live worker serves.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::worker::millis;
use crate::{Error, SessionId};

/// Every how many passes the sweeper walks the whole registry (the safety net that also
/// expires idle sessions, fails unserved jobs and re-arms timers).
const FULL_PASS_EVERY: u64 = 10;

pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(inner.config.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pass: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = sweep(&inner, pass.is_multiple_of(FULL_PASS_EVERY)).await {
            tracing::warn!(%error, "sweeping failed");
        }
        pass += 1;
    }
}

async fn sweep(inner: &Inner, full: bool) -> Result<(), Error> {
    let mut conn = inner.conn()?;
    // Held a little less than the period, so the next tick of any process may sweep.
    let hold = millis(inner.config.sweep_every * 9 / 10).max(1);
    let locked: Option<String> = redis::cmd("SET")
        .arg(inner.keys.sweeper_lock())
        .arg(std::process::id())
        .arg("NX")
        .arg("PX")
        .arg(hold)
        .query_async(&mut conn)
        .await
        .map_err(|e| inner.errors.unavailable(&e))?;
    if locked.is_none() {
        return Ok(());
    }
    let served = live_contracts(inner, &mut conn).await?;
    if !full {
        // The fast pass: only sessions whose earliest known lease deadline has passed.
        let due: Vec<String> = inner
            .scripts
            .leases_due
            .key(inner.keys.leasing())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        for session in due {
            sweep_session(inner, &mut conn, &session, &served, None).await?;
        }
        return Ok(());
    }
    let grace = inner.config.unserved_grace.map_or(0, millis);
    let mut cursor: u64 = 0;
    loop {
        let (next, sessions): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(inner.keys.sessions())
            .arg(cursor)
            .arg("COUNT")
            .arg(200)
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        for session in sessions {
            sweep_session(inner, &mut conn, &session, &served, Some(grace)).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Sweeps one session: expired leases, expiry of the session itself; then re-arms its timers.
/// In the full pass (`full_pass`: the unserved grace, 0 for none) also fails unserved jobs and
/// schedules a session with ready jobs: a submitter that died (or whose call was dropped)
/// between queueing a job and scheduling its session would otherwise leave it unclaimed.
async fn sweep_session(
    inner: &Inner,
    conn: &mut ConnectionManager,
    session: &str,
    served: &[String],
    full_pass: Option<u64>,
) -> Result<(), Error> {
    let grace = full_pass.unwrap_or(0);
    let Ok(session) = SessionId::new(session) else {
        // Not one of ours (ids are validated before they reach Redis).
        let _: redis::RedisResult<i64> = redis::cmd("ZREM")
            .arg(inner.keys.leasing())
            .arg(session)
            .query_async(conn)
            .await;
        return Ok(());
    };
    let keys = inner.keys.session(&session);
    let (requeued, dead, live, next_due, next_lease, queued): (i64, i64, i64, i64, i64, i64) =
        inner
            .scripts
            .sweep
            .key(keys.leases())
            .key(keys.queue())
            .key(keys.dead())
            .key(keys.index())
            .key(keys.meta())
            .key(keys.results())
            .key(keys.delayed())
            .arg(keys.job_prefix())
            .arg(keys.result_prefix())
            .arg(inner.config.max_deliveries)
            .arg(millis(inner.config.result_ttl))
            .arg(inner.keys.done_channel())
            .arg(session.as_str())
            .arg(millis(inner.config.redelivery_backoff))
            .arg(millis(inner.config.redelivery_backoff_max))
            .arg(grace)
            .arg(keys.run_prefix())
            .arg(served)
            .invoke_async(conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
    if live == 0 {
        // The session expired (idle past its TTL): forget it here, and tell every process to
        // drop what it still holds for it.
        let _: (i64, i64, i64, i64, i64) = redis::pipe()
            .srem(inner.keys.sessions(), session.as_str())
            .zrem(inner.keys.sched(), session.as_str())
            .zrem(inner.keys.timers(), session.as_str())
            .zrem(inner.keys.leasing(), session.as_str())
            .publish(
                inner.keys.control_channel(),
                format!("stop {}", session.as_str()),
            )
            .query_async(conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        tracing::debug!(%session, "expired session forgotten");
        return Ok(());
    }
    let _: i64 = inner
        .scripts
        .settle
        .key(inner.keys.leasing())
        .arg(session.as_str())
        .arg(next_lease)
        .arg(inner.registry_ttl_ms())
        .invoke_async(conn)
        .await
        .map_err(|e| inner.errors.unavailable(&e))?;
    if next_lease == 0 {
        rewatch(inner, conn, &session).await?;
    }
    if next_due > 0 {
        // Arms (or re-arms, after a crash of the promoter) the session's timer.
        super::promoter::arm(inner, conn, &session, next_due).await?;
    }
    if requeued > 0 {
        tracing::info!(%session, requeued, "re-queued expired leases");
    }
    // In the full pass, a session with ready jobs is (re)scheduled: a submission whose
    // scheduling was lost (its submitter died, or the connection dropped between `submit.lua`
    // and `enlist.lua`) would otherwise wait for the session's next submission.
    if requeued > 0 || (full_pass.is_some() && queued > 0) {
        inner.enlist(conn, &session).await;
    }
    if dead > 0 {
        tracing::warn!(%session, dead, "dead-lettered jobs whose workers kept dying");
    }
    Ok(())
}

/// After a settle that found no lease: a claim that raced it left its lease unwatched (its
/// watch kept the due score the settle then removed), so look at the session's leases again
/// and watch the earliest.
async fn rewatch(
    inner: &Inner,
    conn: &mut ConnectionManager,
    session: &SessionId,
) -> Result<(), Error> {
    let earliest: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(inner.keys.session(session).leases())
        .arg(0)
        .arg(0)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .map_err(|e| inner.errors.unavailable(&e))?;
    if let Some((_, deadline)) = earliest.first() {
        let _: i64 = inner
            .scripts
            .watch
            .key(inner.keys.leasing())
            .arg(session.as_str())
            .arg(*deadline)
            .arg(inner.registry_ttl_ms())
            .invoke_async(conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
    }
    Ok(())
}

/// The contracts some live worker serves (from the heartbeat registry).
async fn live_contracts(inner: &Inner, conn: &mut ConnectionManager) -> Result<Vec<String>, Error> {
    let workers: Vec<String> = redis::cmd("ZRANGE")
        .arg(inner.keys.workers())
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .map_err(|e| inner.errors.unavailable(&e))?;
    let mut served = std::collections::BTreeSet::new();
    for worker in workers {
        let contracts: Vec<String> = redis::cmd("SMEMBERS")
            .arg(inner.keys.worker_contracts(&worker))
            .query_async(conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        served.extend(contracts);
    }
    Ok(served.into_iter().collect())
}
