//! Executing one claimed job: run it, then commit its outcome fenced by the lease token
//! (through the forwarder, behind the run's events), or release it at once when this process
//! stops before the run finished.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Inner;
use super::forwarder::Commit;
use super::limits::ClusterGate;
use super::scripts::InvokeReloading;
use super::served::Assignment;
use crate::{RunId, SessionId};

/// A job this process holds a lease on.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedJob {
    pub(crate) session: SessionId,
    pub(crate) run_id: RunId,
    pub(crate) name: String,
    pub(crate) fingerprint: String,
    pub(crate) input: Vec<u8>,
    pub(crate) token: String,
    pub(crate) created_ms: u64,
    pub(crate) deliveries: u32,
    /// When the lease runs out (ms on Redis' clock), unless renewed.
    pub(crate) lease_deadline: String,
    /// When this process sent the claim (a stop heard since may predate the claim).
    pub(crate) asked: std::time::Instant,
}

/// What the renewer needs to know about a held lease.
pub(crate) struct HeldLease {
    pub(crate) session: SessionId,
    pub(crate) token: String,
    /// Fired when the lease is lost: the run is abandoned (its commit would be refused).
    pub(crate) lost: CancellationToken,
}

pub(crate) async fn execute(inner: Arc<Inner>, job: ClaimedJob) {
    let lost = CancellationToken::new();
    inner
        .leases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            job.run_id,
            HeldLease {
                session: job.session.clone(),
                token: job.token.clone(),
                lost: lost.clone(),
            },
        );
    let created_at = UNIX_EPOCH + Duration::from_millis(job.created_ms);
    let served = inner.served_for(&job.name, &job.fingerprint);
    // A stop of the session heard since the claim was sent: the job may be the stopped
    // session's (then the release is refused), or a new one's (then it is claimed again).
    let served = served.filter(|_| !inner.stops.heard_since(&job.session, job.asked));
    let executed = match served {
        Some(served) => {
            let span = tracing::debug_span!(
                "am2z.job",
                session = %job.session,
                run = %job.run_id,
                processor = %job.name,
                delivery = job.deliveries,
            );
            let running = served
                .execute(Assignment {
                    engine: &inner.engine,
                    session: &job.session,
                    input: &job.input,
                    run_id: job.run_id,
                    created_at,
                    max_bytes: inner.config.max_payload_bytes,
                    gate: Arc::new(ClusterGate {
                        inner: Arc::clone(&inner),
                    }),
                })
                .instrument(span);
            tokio::select! {
                executed = running => Some(executed),
                () = lost.cancelled() => None,
            }
        }
        None => None,
    };
    match executed {
        Some(executed) if !executed.cancelled_here => {
            commit(&inner, &job, executed).await;
        }
        _ => release(&inner, &job).await,
    }
    inner
        .leases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&job.run_id);
    inner.lease_returned.notify_waiters();
}

async fn commit(inner: &Inner, job: &ClaimedJob, executed: super::served::Executed) {
    let (reply, replied) = oneshot::channel();
    let asked = inner.outbox().map(|outbox| {
        outbox.send(Commit {
            session: job.session.clone(),
            run_id: job.run_id,
            token: job.token.clone(),
            wire: executed.wire,
            dead: executed.undecodable,
            reply,
        })
    });
    if !matches!(asked, Some(Ok(()))) {
        tracing::warn!(session = %job.session, run = %job.run_id, "the runtime stopped before the commit; the lease will expire and the run be retried");
        return;
    }
    match replied.await {
        Ok(Ok(1)) => {
            inner
                .commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            inner.waiters.hand_off(job.run_id, executed.typed);
            inner.waiters.done(job.run_id);
        }
        Ok(Ok(_)) => {
            inner
                .fenced_commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(session = %job.session, run = %job.run_id, "commit refused: the lease was lost or the session stopped");
        }
        Ok(Err(error)) => {
            tracing::warn!(session = %job.session, run = %job.run_id, error = %inner.errors.scrub(&error.to_string()), "commit failed; the lease will expire and the run be retried");
        }
        Err(_) => {
            tracing::warn!(session = %job.session, run = %job.run_id, "the runtime stopped during the commit; the lease will expire and the run be retried");
        }
    }
}

async fn release(inner: &Inner, job: &ClaimedJob) {
    let Ok(mut conn) = inner.conn() else { return };
    let keys = inner.keys.session(&job.session);
    let released: redis::RedisResult<i64> = inner
        .scripts
        .release
        .key(keys.leases())
        .key(keys.job(job.run_id))
        .key(keys.queue())
        .arg(job.run_id.to_string())
        .arg(&job.token)
        .invoke_fenced(&mut conn)
        .await;
    match released {
        Ok(1) => {
            tracing::debug!(session = %job.session, run = %job.run_id, "lease released");
            inner.enlist(&mut conn, &job.session).await;
        }
        // The lease moved on while this attempt ran (the renewer saw it and abandoned the
        // run): as fenced as a refused commit, and counted with them.
        Ok(_) => {
            inner
                .fenced_commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(error) => {
            tracing::warn!(error = %inner.errors.scrub(&error.to_string()), "releasing a lease failed; it will expire");
        }
    }
}

/// A duration in whole milliseconds, for scripts.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
