//! The claimer: takes sessions in fair order and leases their jobs, up to the worker's
//! concurrency, sleeping when there is nothing to do until a `wake` message (or the idle
//! poll) says there may be.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use redis::aio::ConnectionManager;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::keys::JobId;
use super::scripts::InvokeReloading;
use super::worker::{self, ClaimedJob, millis};
use crate::{Error, SessionId};

/// How many sessions one claim looks at before concluding there is nothing it can take.
const SESSIONS_PER_CLAIM: usize = 8;

/// The most jobs one claim leases from one session (a fair turn's quantum).
const CLAIM_BATCH: usize = 16;

pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(inner.config.worker_concurrency));
    let mut hint: Option<SessionId> = None;
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
        // A wake that came while this claimer was busy announced work the claim below sees
        // anyway: drop it, and listen from now on, so no wake during the claim is lost and
        // none makes an idle claimer look again for nothing.
        let _ = inner.wake.notified().now_or_never();
        inner.woken.lock().unwrap_or_else(|p| p.into_inner()).take();
        let woken = inner.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match claim(&inner, permits.len(), hint.take()).await {
            Ok(Claimed { jobs, drained }) if !jobs.is_empty() => {
                let session = jobs[0].session.clone();
                let deadline = jobs[0].lease_deadline.clone();
                for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                    let inner = Arc::clone(&inner);
                    tokio::spawn(async move {
                        worker::execute(inner, job).await;
                        drop(permit);
                    });
                }
                drop(permits);
                match after_claim(&inner, &session, &deadline, drained).await {
                    Next::Pick => {}
                    Next::Again => hint = Some(session),
                    Next::Idle => {
                        // Nothing left to pick: wait as an idle claimer does (the listener
                        // was armed before the claim, so a wake since then is not lost).
                        if !idle(&inner, &stop, woken, &mut hint).await {
                            return;
                        }
                    }
                }
            }
            Ok(_) => {
                drop(permits);
                if !idle(&inner, &stop, woken, &mut hint).await {
                    return;
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

/// Waits for a wake (setting `hint` to the session it names), the idle poll, or `stop`;
/// false when stopped.
async fn idle(
    inner: &Inner,
    stop: &CancellationToken,
    woken: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    hint: &mut Option<SessionId>,
) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = woken => {
            // Nothing was claimable at the last look, so the session whose wake ended the
            // wait is the one to serve, without a `pick` round trip.
            *hint = inner.woken.lock().unwrap_or_else(|p| p.into_inner()).take();
            true
        }
        () = tokio::time::sleep(inner.config.idle_poll) => true,
    }
}

/// What one claim leased.
struct Claimed {
    jobs: Vec<ClaimedJob>,
    /// Whether the claim left the session's queue empty.
    drained: bool,
}

impl Claimed {
    fn nothing() -> Self {
        Claimed {
            jobs: Vec::new(),
            drained: false,
        }
    }
}

/// Leases up to `most` jobs this process can run, from the least-served session that has
/// any, or first from `hint`, the session whose `wake` ended this claimer's idleness (charged
/// its turn in `sched` as `pick` would, in the same round trip).
async fn claim(inner: &Inner, most: usize, hint: Option<SessionId>) -> Result<Claimed, Error> {
    let fingerprints = inner.served_fingerprints();
    if fingerprints.is_empty() {
        return Ok(Claimed::nothing());
    }
    let mut conn = inner.conn()?;
    let asked = std::time::Instant::now();
    let sched = inner.keys.sched();
    let mut hint = hint;
    for _ in 0..SESSIONS_PER_CLAIM {
        let hinted = hint.is_some();
        let session = match hint.take() {
            Some(session) => session,
            None => {
                let picked: Option<String> = inner
                    .scripts
                    .pick
                    .key(&sched)
                    .invoke_reloading(&mut conn)
                    .await
                    .map_err(|e| inner.errors.unavailable(&e))?;
                let Some(picked) = picked else {
                    return Ok(Claimed::nothing());
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
                session
            }
        };
        let keys = inner.keys.session(&session);
        // Raw bytes: a job's input is whatever is in Redis, not necessarily UTF-8, and one bad
        // job must not make the whole batch's reply unreadable.
        let mut call = inner.scripts.claim.prepare_invoke();
        call.key(keys.queue())
            .key(keys.leases())
            .key(keys.index())
            .arg(keys.job_prefix())
            .arg(millis(inner.config.lease))
            .arg(inner.config.session_concurrency)
            .arg(millis(inner.config.session_ttl))
            .arg(most)
            .arg(keys.run_prefix())
            .arg(&fingerprints);
        let pipelined: Option<redis::Value> = if hinted {
            // `XX`: a session retired meanwhile is not put back by its charge.
            let replies: Vec<redis::Value> = redis::pipe()
                .ignore_errors()
                .cmd("ZADD")
                .arg(&sched)
                .arg("XX")
                .arg("INCR")
                .arg(1)
                .arg(session.as_str())
                .ignore()
                .invoke_script(&call)
                .query_async(&mut conn)
                .await
                .map_err(|e| inner.errors.unavailable(&e))?;
            replies.into_iter().next()
        } else {
            None
        };
        let reply: Vec<Vec<u8>> = match pipelined {
            Some(redis::Value::ServerError(error)) if error.code() != "NOSCRIPT" => {
                return Err(inner.errors.unavailable(&error.into()));
            }
            Some(reply) if !matches!(reply, redis::Value::ServerError(_)) => {
                redis::from_redis_value(reply).map_err(|e| inner.errors.unavailable(&e.into()))?
            }
            // Picked above, or `NOSCRIPT` (after a `SCRIPT FLUSH`): the loading path.
            _ => call
                .invoke_reloading(&mut conn)
                .await
                .map_err(|e| inner.errors.unavailable(&e))?,
        };
        match reply.first().map(Vec::as_slice) {
            Some(b"ok") if reply.len() >= 2 => {
                let jobs: Vec<ClaimedJob> = reply[2..]
                    .chunks_exact(FIELDS)
                    .filter_map(|fields| job(&session, fields, asked))
                    .collect();
                let drained = reply[1] == b"0";
                return Ok(Claimed { jobs, drained });
            }
            Some(b"empty") => retire(inner, &mut conn, &session).await?,
            _ => {}
        }
    }
    Ok(Claimed::nothing())
}

/// What the claimer does after a claim.
enum Next {
    /// Pick the least-served session.
    Pick,
    /// Claim from the same session again without picking: it is the only one scheduled and
    /// still has queued jobs, so `pick` could only return it.
    Again,
    /// Nothing is scheduled: wait for a wake.
    Idle,
}

/// After a claim from `session`, in one round trip while its jobs run: makes the sweeper
/// look at the session by the new leases' `deadline` (if this process dies before this, the
/// sweeper's full pass finds the leases), and, when the claim `drained` the session's queue,
/// takes the session out of the schedule rather than picking it again only to find it empty;
/// then looks at the schedule to tell what the claimer does next.
async fn after_claim(inner: &Inner, session: &SessionId, deadline: &str, drained: bool) -> Next {
    let Ok(mut conn) = inner.conn() else {
        return Next::Pick;
    };
    let mut watch = inner.scripts.watch.prepare_invoke();
    watch
        .key(inner.keys.leasing())
        .arg(session.as_str())
        .arg(deadline)
        .arg(inner.registry_ttl_ms());
    let mut pipe = redis::pipe();
    pipe.invoke_script(&watch).ignore();
    if drained {
        pipe.zrem(inner.keys.sched(), session.as_str())
            .ignore()
            .zcard(inner.keys.session(session).queue())
            .zcard(inner.keys.sched());
        let done: redis::RedisResult<(i64, i64)> = pipe.query_async(&mut conn).await;
        match done {
            // A submission raced in after the claim: keep the session scheduled.
            Ok((queued, _)) if queued > 0 => {
                inner.enlist(&mut conn, session).await;
                Next::Pick
            }
            Ok((_, 0)) => Next::Idle,
            Ok(_) => Next::Pick,
            Err(_) => {
                watch_slowly(inner, &mut conn, &watch).await;
                if let Err(error) = retire(inner, &mut conn, session).await {
                    tracing::debug!(%error, "retiring a drained session failed; the next claim finds it empty");
                }
                Next::Pick
            }
        }
    } else {
        pipe.zrange(inner.keys.sched(), 0, 1);
        let done: redis::RedisResult<(Vec<String>,)> = pipe.query_async(&mut conn).await;
        match done {
            Ok((scheduled,)) if scheduled.len() == 1 && scheduled[0] == session.as_str() => {
                Next::Again
            }
            Ok(_) => Next::Pick,
            Err(_) => {
                watch_slowly(inner, &mut conn, &watch).await;
                Next::Pick
            }
        }
    }
}

/// `watch.lua` on its own, through the path that loads the script (after a `SCRIPT FLUSH`,
/// say).
async fn watch_slowly(
    inner: &Inner,
    conn: &mut ConnectionManager,
    watch: &redis::ScriptInvocation<'_>,
) {
    let watched: redis::RedisResult<i64> = watch.invoke_reloading(conn).await;
    if let Err(error) = watched {
        tracing::warn!(error = %inner.errors.scrub(&error.to_string()), "watching a lease failed; the sweeper's full pass will find it");
    }
}

/// How many fields `claim.lua` gives per job.
const FIELDS: usize = 12;

/// One leased job from its fields in `claim.lua`'s reply (the input is kept as bytes:
/// decoding it is the served processor's job, which fails the run with a typed error);
/// `asked` is when the claim was sent.
fn job(session: &SessionId, fields: &[Vec<u8>], asked: std::time::Instant) -> Option<ClaimedJob> {
    let text = |i: usize| String::from_utf8_lossy(&fields[i]).into_owned();
    Some(ClaimedJob {
        session: session.clone(),
        id: JobId::parse(&text(0))?,
        name: text(1),
        fingerprint: text(2),
        input: fields[3].clone(),
        token: text(4),
        created_ms: text(5).parse().unwrap_or(0),
        deliveries: text(6).parse().unwrap_or(1),
        lease_deadline: text(7),
        asked,
        step: fields[8].clone(),
        version: text(9).parse().unwrap_or(0),
        attempts: text(10).parse().unwrap_or(0),
        resume: text(11).parse().unwrap_or(0),
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
