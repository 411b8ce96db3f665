//! Executing one claimed job: run it, then commit its outcome fenced by the lease token, or
//! release it at once when this process stops before the run finished.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Inner;
use super::limits::ClusterGate;
use super::scripts::InvokeReloading;
use super::served::Assignment;
use crate::{RunId, SessionId};

/// How long a worker waits for a run's events to be forwarded before committing anyway.
const EVENTS_BARRIER: Duration = Duration::from_secs(2);

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
    watch(&inner, &job).await;
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
    let mark = inner.barrier.mark();
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
            // A run whose input did not decode never started, so it has no events to wait for.
            if !executed.undecodable {
                inner.barrier.wait(job.run_id, mark, EVENTS_BARRIER).await;
            }
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

/// Makes the sweeper look at the job's session by the lease's deadline. (If this process dies
/// before this, the sweeper's periodic full pass finds the lease.)
async fn watch(inner: &Inner, job: &ClaimedJob) {
    let Ok(mut conn) = inner.conn() else { return };
    let watched: redis::RedisResult<i64> = inner
        .scripts
        .watch
        .key(inner.keys.leasing())
        .arg(job.session.as_str())
        .arg(&job.lease_deadline)
        .arg(inner.registry_ttl_ms())
        .invoke_reloading(&mut conn)
        .await;
    if let Err(error) = watched {
        tracing::warn!(error = %inner.errors.scrub(&error.to_string()), "watching a lease failed; the sweeper's full pass will find it");
    }
}

async fn commit(inner: &Inner, job: &ClaimedJob, executed: super::served::Executed) {
    let Ok(mut conn) = inner.conn() else { return };
    let keys = inner.keys.session(&job.session);
    let mut commit = inner.scripts.commit.key(keys.leases());
    commit
        .key(keys.job(job.run_id))
        .key(keys.result(job.run_id))
        .key(keys.index())
        .key(keys.results());
    if executed.undecodable {
        commit.key(keys.dead());
    }
    let committed: redis::RedisResult<i64> = commit
        .arg(job.run_id.to_string())
        .arg(&job.token)
        .arg(&executed.wire)
        .arg(millis(inner.config.result_ttl))
        .arg(inner.keys.done_channel())
        .arg(format!("{} {}", job.session, job.run_id))
        .arg(millis(inner.config.session_ttl))
        .invoke_fenced(&mut conn)
        .await;
    match committed {
        Ok(1) => {
            inner
                .commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            inner.waiters.hand_off(job.run_id, executed.typed);
            inner.waiters.done(job.run_id);
        }
        Ok(_) => {
            inner
                .fenced_commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(session = %job.session, run = %job.run_id, "commit refused: the lease was lost or the session stopped");
        }
        Err(error) => {
            tracing::warn!(session = %job.session, run = %job.run_id, error = %inner.errors.scrub(&error.to_string()), "commit failed; the lease will expire and the run be retried");
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
