//! The claimer: takes sessions in fair order and leases their jobs, up to the worker's free
//! slots, sleeping when there is nothing to do until a `wake` message (or the idle poll) says
//! there may be.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::job::ClaimedJob;
use super::protocol::claim::{Claim, ClaimOutcome};
use super::protocol::schedule::{self, Picked};
use super::protocol::{WireError, timers};
use super::slots::JobSlot;
use super::worker::{self, Worker};
use crate::SessionId;

/// How many sessions one claim looks at before concluding there is nothing it can take.
const SESSIONS_PER_CLAIM: usize = 8;

/// The most jobs one claim leases from one session (a fair turn's quantum).
const CLAIM_BATCH: usize = 16;

/// Wake-ups of the claimer: `wake` messages (naming the session that got ready jobs), and
/// the worker's own changes (a new served processor, a reconnect).
#[derive(Default)]
pub(crate) struct Wakeups {
    notify: Notify,
    /// The session named by the latest `wake` message: an idle claimer claims from it
    /// directly (charging its turn as `pick` would).
    woken: Mutex<Option<SessionId>>,
}

impl Wakeups {
    /// A `wake` message named `session` (or, with `None`, something else changed).
    pub(crate) fn wake(&self, session: Option<SessionId>) {
        if session.is_some() {
            *self.woken.lock().unwrap_or_else(|p| p.into_inner()) = session;
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Option<SessionId> {
        self.woken.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What the claimer does after a claim.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Pick the least-served session.
    Pick,
    /// Claim from the same session again without picking: it is the only one scheduled and
    /// still has ready jobs, so `pick` could only return it.
    Again(SessionId),
    /// Nothing is claimable: wait for a wake.
    Idle,
}

/// What one claim leased, and what it learned of the schedule.
struct Claimed {
    jobs: Vec<ClaimedJob>,
    session: Option<SessionId>,
    /// Ready jobs left in the session claimed from.
    left: u64,
    /// Sessions scheduled, as of the claim's pick.
    scheduled: u64,
}

/// The claimer's policy after a claim (unit-tested).
fn next(claimed: &Claimed) -> Next {
    match &claimed.session {
        _ if claimed.jobs.is_empty() => Next::Idle,
        Some(session) if claimed.left > 0 && claimed.scheduled <= 1 => Next::Again(session.clone()),
        _ => Next::Pick,
    }
}

pub(crate) async fn run(
    worker: Arc<Worker>,
    slots: Arc<Semaphore>,
    wakeups: Arc<Wakeups>,
    stop: CancellationToken,
) {
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
        // anyway: drop it, and listen from now on, so no wake during the claim is lost.
        let _ = wakeups.notify.notified().now_or_never();
        let woken_hint = wakeups.take();
        let woken = wakeups.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let hinted = hint.take().or(woken_hint);
        match claim(&worker, permits.len(), hinted).await {
            Ok(claimed) => {
                let next = next(&claimed);
                spawn(&worker, &slots, claimed.jobs, &mut permits);
                drop(permits);
                match next {
                    Next::Pick => {}
                    Next::Again(session) => hint = Some(session),
                    Next::Idle => {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = &mut woken => {
                                // Nothing was claimable at the last look, so the session whose
                                // wake ended the wait is the one to serve, without a `pick`.
                                hint = wakeups.take();
                            }
                            () = tokio::time::sleep(worker.config.idle_poll) => {}
                        }
                    }
                }
            }
            Err(error) => {
                drop(permits);
                tracing::warn!(error = %error.into_error(&worker.redis.errors), "claiming failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// Runs each job on a slot of its own.
fn spawn(
    worker: &Arc<Worker>,
    slots: &Arc<Semaphore>,
    jobs: Vec<ClaimedJob>,
    permits: &mut Vec<OwnedSemaphorePermit>,
) {
    for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
        let slot = Arc::new(JobSlot::new(Arc::clone(slots), permit));
        tokio::spawn(worker::execute(Arc::clone(worker), job, slot));
    }
}

/// Leases up to `most` jobs this process can run, from the least-served session that has
/// any, or first from `hint` (the session its last claim or a wake named, charged its turn
/// as `pick` would).
async fn claim(
    worker: &Worker,
    most: usize,
    hint: Option<SessionId>,
) -> Result<Claimed, WireError> {
    let fingerprints = worker.served.fingerprints();
    let mut claimed = Claimed {
        jobs: Vec::new(),
        session: None,
        left: 0,
        scheduled: 0,
    };
    if fingerprints.is_empty() {
        return Ok(claimed);
    }
    let (redis, keys) = (&worker.redis, &worker.keys);
    let mut hint = hint;
    for _ in 0..SESSIONS_PER_CLAIM {
        let asked = Instant::now();
        let claim = |session_keys| Claim {
            session: session_keys,
            lease: worker.config.lease,
            quota: worker.config.session_concurrency,
            most,
            served: &fingerprints,
        };
        let (session, scheduled, reply) = match hint.take() {
            // The charge and the claim go out together (the connection pipelines them).
            Some(session) => {
                let session_keys = keys.session(&session);
                let claiming = claim(&session_keys);
                let (picked, reply) = tokio::join!(
                    schedule::pick(redis, keys, Some(&session)),
                    claiming.call(redis)
                );
                (session, picked?.scheduled, reply?)
            }
            None => {
                let Picked { session, scheduled } = schedule::pick(redis, keys, None).await?;
                let Some(session) = session else {
                    worker.contention.saw(false);
                    return Ok(claimed);
                };
                let Ok(session) = SessionId::new(&session) else {
                    // Not one of ours (ids are validated before they reach Redis): drop it.
                    schedule::forget(redis, keys, &session, u64::MAX, Duration::ZERO).await?;
                    continue;
                };
                let session_keys = keys.session(&session);
                let reply = claim(&session_keys).call(redis).await?;
                (session, scheduled, reply)
            }
        };
        worker.contention.saw(scheduled > 1);
        claimed.scheduled = scheduled;
        if let Some(generation) = reply.retire
            && let Err(error) = schedule::retire(redis, keys, &session, generation).await
        {
            tracing::debug!(%session, error = %error.into_error(&redis.errors), "retiring a drained session failed; the next claim finds it empty");
        }
        if let ClaimOutcome::Leased { jobs, left } = reply.outcome {
            // Makes the sweeper look at the session by the new leases' deadline (if this
            // process dies before this, the sweeper's full pass finds the leases).
            if let Some(deadline) = jobs.iter().map(|j| j.deadline_ms).min()
                && let Err(error) = timers::watch(redis, keys, &session, deadline).await
            {
                tracing::warn!(%session, error = %error.into_error(&redis.errors), "watching new leases failed; the sweeper's full pass finds them");
            }
            claimed.jobs = jobs
                .into_iter()
                .map(|leased| ClaimedJob {
                    session: session.clone(),
                    leased,
                    asked,
                })
                .collect();
            claimed.left = left;
            claimed.session = Some(session);
            return Ok(claimed);
        }
    }
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(jobs: usize, left: u64, scheduled: u64) -> Claimed {
        let leased = |i| super::super::protocol::claim::LeasedJob {
            id: super::super::keys::JobId::entry(crate::RunId::from_u128(i)),
            fingerprint: String::new(),
            name: String::new(),
            token: 1,
            deliveries: 1,
            created_ms: 0,
            attempt: 0,
            attempts: 0,
            version: 0,
            run_attempts: 0,
            deadline_ms: 0,
            body: Vec::new(),
        };
        let session = SessionId::new("s").unwrap();
        Claimed {
            jobs: (0..jobs)
                .map(|i| ClaimedJob {
                    session: session.clone(),
                    leased: leased(i as u128),
                    asked: Instant::now(),
                })
                .collect(),
            session: Some(session),
            left,
            scheduled,
        }
    }

    #[test]
    fn a_lone_session_with_work_left_is_claimed_again_without_a_pick() {
        let s = SessionId::new("s").unwrap();
        assert_eq!(next(&claimed(3, 5, 1)), Next::Again(s));
        // Others wait: back to the fair order.
        assert_eq!(next(&claimed(3, 5, 2)), Next::Pick);
        // Drained: pick (another session may have work).
        assert_eq!(next(&claimed(3, 0, 1)), Next::Pick);
        // Nothing leased anywhere: wait for a wake.
        assert_eq!(next(&claimed(0, 0, 0)), Next::Idle);
    }
}
