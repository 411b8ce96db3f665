//! The renewer: every third of the lease, tells every process this worker is alive (and which
//! contracts it serves), extends every lease this process holds (one call per session), and
//! renews its concurrency permits. A renewal refused by the fencing token means the lease was
//! lost (the sweeper gave the job to another worker, or the session is stopping): the job is
//! abandoned at once.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::protocol::claim::Renew;
use super::protocol::workers;
use super::worker::Worker;

pub(crate) async fn run(worker: Arc<Worker>, worker_id: String, stop: CancellationToken) {
    let mut tick = tokio::time::interval(worker.config.renew_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        heartbeat(&worker, &worker_id).await;
        renew_all(&worker).await;
        worker.limits.renew().await;
    }
}

/// Registers this worker and its contracts for three renewal periods.
pub(crate) async fn heartbeat(worker: &Worker, worker_id: &str) {
    let card = workers::WorkerCard {
        host: &host_name(),
        pid: std::process::id(),
        processors: &worker.served.names(),
    };
    let beat = workers::heartbeat(
        &worker.redis,
        &worker.keys,
        worker_id,
        worker.config.renew_every() * 3,
        &card,
        &worker.served.fingerprints(),
    )
    .await;
    if let Err(error) = beat {
        tracing::warn!(error = %error.into_error(&worker.redis.errors), "the worker heartbeat failed");
    }
}

/// This machine's host name, as the kernel or the environment gives it ('' when unknown).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// Takes this worker out of the registry (at stop).
pub(crate) async fn farewell(worker: &Worker, worker_id: &str) {
    let Ok(mut conn) = worker.redis.conn() else {
        return;
    };
    let _: redis::RedisResult<(i64, i64, i64)> = redis::pipe()
        .zrem(worker.keys.workers(), worker_id)
        .del(worker.keys.worker_contracts(worker_id))
        .del(worker.keys.worker_info(worker_id))
        .query_async(&mut conn)
        .await;
}

async fn renew_all(worker: &Worker) {
    let renewals = worker.leases.by_session().into_iter().map(|(session, leases)| async move {
        let keys = worker.keys.session(&session);
        let renewed = Renew {
            session: &keys,
            lease: worker.config.lease,
            leases: &leases,
        }
        .call(&worker.redis)
        .await;
        match renewed {
            Ok(lost) => {
                for job in lost {
                    tracing::info!(%session, %job, "lease lost; abandoning the job");
                    worker.leases.lose(&job);
                }
            }
            Err(error) => {
                tracing::warn!(%session, error = %error.into_error(&worker.redis.errors), "renewing leases failed");
            }
        }
    });
    futures::future::join_all(renewals).await;
}
