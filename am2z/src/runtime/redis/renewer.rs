//! The renewer: extends every lease this process holds each third of the lease time. A
//! renewal refused by the fencing token means the lease was lost (the sweeper gave the job to
//! another worker, or the session stopped): the run is abandoned at once.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Inner;
use super::scripts::InvokeReloading;
use super::worker::millis;

pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(inner.config.renew_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        heartbeat(&inner).await;
        renew_all(&inner).await;
        super::limits::renew_permits(&inner).await;
    }
}

/// Tells every process this worker is alive and which contracts it serves (for three renewal
/// periods).
async fn heartbeat(inner: &Inner) {
    let Ok(mut conn) = inner.conn() else { return };
    let beat: redis::RedisResult<i64> = inner
        .scripts
        .heartbeat
        .key(inner.keys.workers())
        .key(inner.keys.worker_contracts(&inner.worker_id))
        .arg(&inner.worker_id)
        .arg(millis(inner.config.renew_every() * 3).max(1))
        .arg(inner.served_fingerprints())
        .invoke_reloading(&mut conn)
        .await;
    if let Err(error) = beat {
        tracing::warn!(error = %inner.errors.scrub(&error.to_string()), "the worker heartbeat failed");
    }
}

/// Takes this worker out of the registry (at stop).
pub(crate) async fn farewell(inner: &Inner) {
    let Ok(mut conn) = inner.conn() else { return };
    let _: redis::RedisResult<(i64, i64)> = redis::pipe()
        .zrem(inner.keys.workers(), &inner.worker_id)
        .del(inner.keys.worker_contracts(&inner.worker_id))
        .query_async(&mut conn)
        .await;
}

async fn renew_all(inner: &Inner) {
    let held: Vec<_> = inner
        .leases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(run, lease)| {
            (
                *run,
                lease.session.clone(),
                lease.token.clone(),
                lease.lost.clone(),
            )
        })
        .collect();
    if held.is_empty() {
        return;
    }
    let Ok(conn) = inner.conn() else { return };
    let lease_ms = millis(inner.config.lease);
    let renewals = held.into_iter().map(|(run, session, token, lost)| {
        let mut conn = conn.clone();
        async move {
            let keys = inner.keys.session(&session);
            let renewed: redis::RedisResult<i64> = inner
                .scripts
                .renew
                .key(keys.leases())
                .key(keys.job(&run))
                .arg(run.to_string())
                .arg(&token)
                .arg(lease_ms)
                .invoke_reloading(&mut conn)
                .await;
            match renewed {
                Ok(1) => {}
                Ok(_) => {
                    tracing::info!(%session, %run, "lease lost; abandoning the run");
                    lost.cancel();
                }
                Err(error) => {
                    tracing::warn!(%session, %run, error = %inner.errors.scrub(&error.to_string()), "renewing a lease failed");
                }
            }
        }
    });
    futures::future::join_all(renewals).await;
}
