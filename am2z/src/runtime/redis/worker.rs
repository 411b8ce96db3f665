//! Executing one claimed job: run it (a whole run, or one step of a run executed step by
//! step: `steps.rs`), then commit its outcome fenced by the lease token (through the
//! forwarder, behind the job's events), or release it at once when this process stops before
//! the job finished.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Inner;
use super::forwarder::{Commit, CommitBody};
use super::keys::JobId;
use super::limits::ClusterGate;
use super::scripts::InvokeReloading;
use super::served::{Assignment, Executed, Served};
use super::steps;
use crate::{RunId, SessionId};

/// A job this process holds a lease on.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedJob {
    pub(crate) session: SessionId,
    pub(crate) id: JobId,
    /// The processor the run runs (for a step job: the whole workflow's).
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
    /// Where the job stands in its run (JSON of `steps::Position`; empty for an entry job).
    pub(crate) step: Vec<u8>,
    /// The run's steps completed and attempts made before this job (step by step).
    pub(crate) version: u64,
    pub(crate) attempts: u32,
    /// The attempt the job's step resumes at after waiting in Redis (0: a fresh step).
    pub(crate) resume: u32,
    /// For a child run (a `ctx.call` executed as a job): the calling run and the call depth.
    pub(crate) child_of: Option<(RunId, u32)>,
}

/// What the renewer and the control channel need to know about a held lease.
pub(crate) struct HeldLease {
    pub(crate) session: SessionId,
    pub(crate) token: String,
    /// Fired when the lease is lost: the run is abandoned (its commit would be refused).
    pub(crate) lost: CancellationToken,
    /// Fired when the job's run ended, or a fan-out it is under closed: the job is dropped.
    pub(crate) moot: CancellationToken,
    /// The job's position in its run (a step job's; read only when a `cancel` names a
    /// fan-out instance, to tell whether the job runs under it).
    pub(crate) position: Vec<u8>,
}

/// Executes `job`, then every successor its commits hand to this worker.
pub(crate) async fn execute(inner: Arc<Inner>, job: ClaimedJob) {
    let mut next = Some(job);
    while let Some(job) = next.take() {
        next = execute_one(&inner, job).await;
    }
}

async fn execute_one(inner: &Arc<Inner>, job: ClaimedJob) -> Option<ClaimedJob> {
    let lost = CancellationToken::new();
    let moot = CancellationToken::new();
    inner
        .leases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            job.id,
            HeldLease {
                session: job.session.clone(),
                token: job.token.clone(),
                lost: lost.clone(),
                moot: moot.clone(),
                position: job.step.clone(),
            },
        );
    let served = inner.served_for(&job.name, &job.fingerprint);
    // A stop of the session heard since the claim was sent: the job may be the stopped
    // session's (then the release is refused), or a new one's (then it is claimed again).
    let served = served.filter(|_| !inner.stops.heard_since(&job.session, job.asked));
    let span = tracing::debug_span!(
        "am2z.job",
        session = %job.session,
        job = %job.id,
        processor = %job.name,
        delivery = job.deliveries,
    );
    let graph = served.as_ref().and_then(|s| s.graph().cloned());
    // A child call is one job, whatever its processor (it answers one `ctx.call`).
    let step_by_step = !job.step.is_empty() || (inner.config.step_jobs && job.child_of.is_none());
    let next = match (served, graph) {
        (Some(served), Some(graph)) if step_by_step => {
            let signals = steps::Signals {
                lost: &lost,
                moot: &moot,
            };
            let ran = steps::run(inner, &job, served.as_ref(), &graph, signals)
                .instrument(span)
                .await;
            match ran {
                steps::Ran::Advance(advance) => advance_run(inner, &job, *advance).await,
                steps::Ran::Park { parked, attempts } => {
                    park(inner, &job, parked, attempts).await;
                    None
                }
                steps::Ran::Release => {
                    release(inner, &job).await;
                    None
                }
            }
        }
        (Some(served), _) if job.step.is_empty() => {
            whole_run(inner, &job, served, &lost).instrument(span).await;
            None
        }
        _ => {
            release(inner, &job).await;
            None
        }
    };
    inner
        .leases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&job.id);
    inner.lease_returned.notify_waiters();
    next
}

/// Executes a run as one job: the whole run in this process, then one commit.
async fn whole_run(
    inner: &Arc<Inner>,
    job: &ClaimedJob,
    served: Arc<dyn Served>,
    lost: &CancellationToken,
) {
    let running = served.execute(Assignment {
        engine: &inner.engine,
        session: &job.session,
        input: &job.input,
        run_id: job.id.run,
        child_of: job.child_of,
        resume: (job.resume, job.attempts),
        created_at: UNIX_EPOCH + Duration::from_millis(job.created_ms),
        max_bytes: inner.config.max_payload_bytes,
        gate: Arc::new(ClusterGate::new(Arc::clone(inner), job.id)),
    });
    let executed = tokio::select! {
        executed = running => Some(executed),
        () = lost.cancelled() => None,
    };
    match executed {
        Some(Executed {
            parked: Some((parked, attempts)),
            ..
        }) => park(inner, job, parked, attempts).await,
        Some(executed) if !executed.cancelled_here => commit(inner, job, executed).await,
        _ => release(inner, job).await,
    }
}

/// Sends `body` to the forwarder (behind the job's events) and awaits its reply.
async fn send_commit(
    inner: &Inner,
    job: &ClaimedJob,
    body: CommitBody,
) -> Option<redis::RedisResult<redis::Value>> {
    let (reply, replied) = oneshot::channel();
    let asked = inner.outbox().map(|outbox| {
        outbox.send(Commit {
            session: job.session.clone(),
            job: job.id,
            token: job.token.clone(),
            body,
            reply,
        })
    });
    if !matches!(asked, Some(Ok(()))) {
        tracing::warn!(session = %job.session, job = %job.id, "the runtime stopped before the commit; the lease will expire and the job be retried");
        return None;
    }
    match replied.await {
        Ok(result) => Some(result),
        Err(_) => {
            tracing::warn!(session = %job.session, job = %job.id, "the runtime stopped during the commit; the lease will expire and the job be retried");
            None
        }
    }
}

fn refused(inner: &Inner, job: &ClaimedJob) {
    inner.fenced_commits.fetch_add(1, Ordering::Relaxed);
    tracing::info!(session = %job.session, job = %job.id, "commit refused: the lease was lost or the session stopped");
}

fn commit_failed(inner: &Inner, job: &ClaimedJob, error: &redis::RedisError) {
    tracing::warn!(session = %job.session, job = %job.id, error = %inner.errors.scrub(&error.to_string()), "commit failed; the lease will expire and the job be retried");
}

async fn commit(inner: &Inner, job: &ClaimedJob, executed: Executed) {
    let body = CommitBody::Run {
        wire: executed.wire,
        dead: executed.undecodable,
    };
    match send_commit(inner, job, body).await {
        Some(Ok(redis::Value::Int(1))) => {
            inner.commits.fetch_add(1, Ordering::Relaxed);
            inner.waiters.hand_off(job.id.run, executed.typed);
            inner.waiters.done(job.id.run);
        }
        Some(Ok(_)) => refused(inner, job),
        Some(Err(error)) => commit_failed(inner, job, &error),
        None => {}
    }
}

/// Commits a job of a run executed step by step; returns the successor handed to this
/// worker, if any.
async fn advance_run(
    inner: &Inner,
    job: &ClaimedJob,
    mut advance: steps::Advance,
) -> Option<ClaimedJob> {
    if let Err(error) = stage(inner, job, &mut advance).await {
        commit_failed(inner, job, &error);
        return None;
    }
    let outcome = advance.outcome.as_ref().map(|(wire, _)| wire.clone());
    let reply = send_commit(inner, job, CommitBody::Advance(Box::new(advance))).await?;
    let reply = match reply.and_then(|value| redis::from_redis_value(value).map_err(Into::into)) {
        Ok(reply) => reply,
        Err(error) => {
            commit_failed(inner, job, &error);
            return None;
        }
    };
    let reply: Vec<Vec<u8>> = reply;
    match steps::Committed::parse(&reply) {
        Some(steps::Committed::Done {
            ended,
            queued,
            handed,
        }) => {
            if ended {
                inner.commits.fetch_add(1, Ordering::Relaxed);
                if let Some(wire) = outcome {
                    inner.waiters.deliver(job.id.run, wire);
                }
                inner.waiters.done(job.id.run);
            }
            if queued > 0 {
                // Wakes the workers (this one too) for the jobs it did not keep.
                if let Ok(mut conn) = inner.conn() {
                    inner.enlist(&mut conn, &job.session).await;
                }
            }
            handed.and_then(|handed| handed.into_job(job))
        }
        Some(steps::Committed::Refused) => {
            refused(inner, job);
            None
        }
        Some(steps::Committed::Unstaged) => {
            tracing::warn!(session = %job.session, job = %job.id, "staged map items expired before the commit; the lease will expire and the job be retried");
            None
        }
        None => {
            tracing::warn!(session = %job.session, job = %job.id, "unreadable commit reply; the lease will expire and the job be retried");
            None
        }
    }
}

/// How many held map items one `stage.lua` call stores.
const STAGE_SLICE: usize = 2_000;

/// Stages the new map instances' held items of `advance` (each in slices, under a key of this
/// lease), so that the commit only renames them.
async fn stage(
    inner: &Inner,
    job: &ClaimedJob,
    advance: &mut steps::Advance,
) -> redis::RedisResult<()> {
    if advance.held.is_empty() {
        return Ok(());
    }
    let mut conn = inner.conn().map_err(|_| {
        redis::RedisError::from((redis::ErrorKind::Client, "the runtime is stopped"))
    })?;
    let keys = inner.keys.session(&job.session);
    for (ordinal, held) in advance.held.iter().enumerate() {
        let staging = keys.stage(&job.id, &job.token, ordinal);
        for slice in held.slices(STAGE_SLICE) {
            let staged: i64 = inner
                .scripts
                .stage
                .key(&staging)
                .key(keys.index())
                .key(keys.meta())
                .arg(slice)
                .invoke_reloading(&mut conn)
                .await?;
            if staged == 0 {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the session is gone",
                )));
            }
        }
        advance.staged.extend([
            held.instance.as_str().to_owned(),
            held.first.to_string(),
            staging,
        ]);
    }
    Ok(())
}

/// Puts a step job that waits before its next attempt into the session's due-time set, and
/// arms the session's timer for it.
async fn park(inner: &Inner, job: &ClaimedJob, parked: crate::context::Parked, attempts: u32) {
    let body = CommitBody::Park {
        attempt: parked.attempt,
        delay: parked.delay,
        attempts,
    };
    let reply = send_commit(inner, job, body).await;
    let due = match reply.map(|r| r.and_then(|v| redis::from_redis_value(v).map_err(Into::into))) {
        Some(Ok(due)) => due,
        Some(Err(error)) => return commit_failed(inner, job, &error),
        None => return,
    };
    let due: i64 = due;
    if due <= 0 {
        return refused(inner, job);
    }
    let armed = match inner.conn() {
        Ok(mut conn) => super::promoter::arm(inner, &mut conn, &job.session, due).await,
        Err(error) => Err(error),
    };
    if let Err(error) = armed {
        tracing::warn!(session = %job.session, job = %job.id, %error, "arming the timer of a waiting step failed; the sweeper re-arms it");
    }
}

async fn release(inner: &Inner, job: &ClaimedJob) {
    let Ok(mut conn) = inner.conn() else { return };
    let keys = inner.keys.session(&job.session);
    let released: redis::RedisResult<i64> = inner
        .scripts
        .release
        .key(keys.leases())
        .key(keys.job(&job.id))
        .key(keys.queue())
        .arg(job.id.to_string())
        .arg(&job.token)
        .invoke_fenced(&mut conn)
        .await;
    match released {
        Ok(1) => {
            tracing::debug!(session = %job.session, job = %job.id, "lease released");
            inner.enlist(&mut conn, &job.session).await;
        }
        // The lease moved on while this attempt ran (the renewer saw it and abandoned the
        // run): as fenced as a refused commit, and counted with them.
        Ok(_) => {
            inner.fenced_commits.fetch_add(1, Ordering::Relaxed);
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
