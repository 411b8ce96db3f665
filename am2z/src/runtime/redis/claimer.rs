//! The claimer: takes sessions in fair order and leases their jobs, up to the worker's free
//! slots, sleeping when there is nothing to do until a `wake` message (or the idle poll) says
//! there may be.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::job::ClaimedJob;
use super::protocol::WireError;
use super::protocol::claim::{Claim, ClaimOutcome};
use super::protocol::schedule::{self, Picked};
use super::slots::{JobSlot, Slots, take_free};
use super::worker::{self, Worker};
use crate::SessionId;

/// How many sessions one claim looks at before concluding there is nothing it can take.
const SESSIONS_PER_CLAIM: usize = 8;

/// The most jobs one claim leases from one session (a fair turn's quantum).
const CLAIM_BATCH: usize = 16;

/// The most claims in a row from a lone session without a look at the schedule: bounds how
/// long a lost `wake` can keep a newly scheduled session waiting.
const AGAIN_AT_MOST: u32 = 8;

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

/// A session to claim from without looking at the schedule first.
#[derive(Debug, PartialEq, Eq)]
enum Hint {
    /// The only session scheduled, claimed from last time and with ready jobs left: no
    /// `pick` (it could only return this session, and a lone session's charge orders it
    /// against nobody).
    Again(SessionId),
    /// The session a `wake` named while this claimer was idle: charged its turn as `pick`
    /// would, in the same round trip as the claim.
    Woken(SessionId),
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

/// The claimer's policy after a claim (unit-tested); `others_waiting`: a `wake` since the
/// claim's look at the schedule named another session.
fn next(claimed: &Claimed, others_waiting: bool) -> Next {
    match &claimed.session {
        _ if claimed.jobs.is_empty() => Next::Idle,
        Some(session) if claimed.left > 0 && claimed.scheduled <= 1 && !others_waiting => {
            Next::Again(session.clone())
        }
        _ => Next::Pick,
    }
}

pub(crate) async fn run(
    worker: Arc<Worker>,
    slots: Arc<Slots>,
    wakeups: Arc<Wakeups>,
    stop: CancellationToken,
) {
    let mut hint: Option<Hint> = None;
    let mut again = 0;
    // The last look found nothing and no wake has come since: the next claim is a poll.
    let mut polling = false;
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            permit = slots.lease_when_it_pays() => permit,
        };
        let Some(first) = first else { return };
        // Lease as many jobs at once as there are free slots (up to a batch): one round trip
        // for many jobs when the worker is busy. A poll takes one slot only: it rarely finds
        // work, and while it waits for Redis the other slots stay free for a run this process
        // submits and can lease itself (a poll that finds work is followed by a full claim).
        let batch = if polling { 1 } else { CLAIM_BATCH };
        polling = false;
        let mut permits = vec![first];
        permits.extend(take_free(&slots, batch - 1));
        // A wake that came while this claimer was busy announced work the claim below sees
        // anyway: drop it, and listen from now on, so no wake during the claim is lost.
        let _ = wakeups.notify.notified().now_or_never();
        let woken_hint = wakeups.take();
        let woken = wakeups.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let hinted = hint.take().or(woken_hint.map(Hint::Woken));
        match claim(&worker, permits.len(), hinted).await {
            Ok(claimed) => {
                let next = next(&claimed, worker.contention.others_waiting());
                let watch = claimed.jobs.iter().map(|j| j.leased.deadline_ms).min();
                let session = claimed.session.clone();
                spawn(&worker, &slots, claimed.jobs, &mut permits);
                drop(permits);
                if let (Some(session), Some(deadline)) = (session, watch) {
                    worker.watch_leases(&session, deadline).await;
                }
                match next {
                    Next::Pick => again = 0,
                    Next::Again(session) if again < AGAIN_AT_MOST => {
                        again += 1;
                        hint = Some(Hint::Again(session));
                    }
                    Next::Again(_) => again = 0,
                    Next::Idle => {
                        again = 0;
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = &mut woken => {
                                // Nothing was claimable at the last look, so the session whose
                                // wake ended the wait is the one to serve, without a `pick`.
                                hint = wakeups.take().map(Hint::Woken);
                            }
                            () = tokio::time::sleep(worker.config.idle_poll) => polling = true,
                        }
                    }
                }
            }
            Err(error) => {
                drop(permits);
                polling = true;
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
    slots: &Arc<Slots>,
    jobs: Vec<ClaimedJob>,
    permits: &mut Vec<OwnedSemaphorePermit>,
) {
    for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
        let slot = Arc::new(JobSlot::new(Arc::clone(slots), permit));
        tokio::spawn(worker::execute(Arc::clone(worker), job, slot));
    }
}

/// Leases up to `most` jobs this process can run, from the least-served session that has
/// any, or first from `hint`.
async fn claim(worker: &Worker, most: usize, hint: Option<Hint>) -> Result<Claimed, WireError> {
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
    // The sessions this claim found nothing in. When `pick` names one of them again and no
    // more sessions are scheduled than were tried, every one has been looked at: a lone
    // session whose jobs this worker cannot run costs one claim per idle poll, not eight.
    let mut tried: Vec<SessionId> = Vec::new();
    for _ in 0..SESSIONS_PER_CLAIM {
        let asked = Instant::now();
        let wakes = worker.contention.wakes();
        let claim = |session_keys| Claim {
            session: session_keys,
            lease: worker.config.lease,
            quota: worker.config.session_concurrency,
            most,
            served: &fingerprints,
        };
        let (session, scheduled, reply) = match hint.take() {
            Some(Hint::Again(session)) => {
                let reply = claim(&keys.session(&session)).call(redis).await?;
                (session, None, reply)
            }
            // The charge and the claim go out together (the connection pipelines them).
            Some(Hint::Woken(session)) => {
                let session_keys = keys.session(&session);
                let claiming = claim(&session_keys);
                let (picked, reply) = tokio::join!(
                    schedule::pick(redis, keys, Some(&session)),
                    claiming.call(redis)
                );
                (session, Some(picked?.scheduled), reply?)
            }
            None => {
                let Picked { session, scheduled } = schedule::pick(redis, keys, None).await?;
                let Some(session) = session else {
                    worker.contention.looked(false, wakes);
                    return Ok(claimed);
                };
                let Ok(session) = SessionId::new(&session) else {
                    // Not one of ours (ids are validated before they reach Redis): drop it.
                    schedule::forget(redis, keys, &session, u64::MAX, Duration::ZERO).await?;
                    continue;
                };
                if tried.contains(&session) {
                    if scheduled <= tried.len() as u64 {
                        worker.contention.looked(scheduled > 1, wakes);
                        return Ok(claimed);
                    }
                    // Others are scheduled behind it: the pick's charge moves it after them.
                    continue;
                }
                let session_keys = keys.session(&session);
                let reply = claim(&session_keys).call(redis).await?;
                (session, Some(scheduled), reply)
            }
        };
        // Without a look at the schedule, what the wakes said since stands.
        if let Some(scheduled) = scheduled {
            worker.contention.looked(scheduled > 1, wakes);
        }
        claimed.scheduled = scheduled.unwrap_or(1);
        if let Some(generation) = reply.retire
            && let Err(error) = schedule::retire(redis, keys, &session, generation).await
        {
            tracing::debug!(%session, error = %error.into_error(&redis.errors), "retiring a drained session failed; the next claim finds it empty");
        }
        if let ClaimOutcome::Leased { jobs, left } = reply.outcome {
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
        tried.push(session);
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
        assert_eq!(next(&claimed(3, 5, 1), false), Next::Again(s));
        // Others wait (as of the look, or woken since): back to the fair order.
        assert_eq!(next(&claimed(3, 5, 2), false), Next::Pick);
        assert_eq!(next(&claimed(3, 5, 1), true), Next::Pick);
        // Drained: pick (another session may have work).
        assert_eq!(next(&claimed(3, 0, 1), false), Next::Pick);
        // Nothing leased anywhere: wait for a wake.
        assert_eq!(next(&claimed(0, 0, 0), false), Next::Idle);
    }
}
