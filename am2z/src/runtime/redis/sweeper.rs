//! The sweeper: re-queues jobs whose lease expired (their worker died or froze), buries those
//! that exhausted `max_deliveries` or that no live worker can serve, and finishes what others
//! left undone. One process sweeps at a time (a lock key). Each pass visits the sessions whose
//! earliest lease deadline has passed (the `leasing` timer, kept by claims and by the sweeper
//! itself); every tenth pass walks the whole session registry (`ZSCAN` of a sorted set, never
//! the keyspace) as the safety net: a lease whose claimer died before watching it, a session
//! whose scheduling was lost, an idle session that expired, a stop whose stopper died, jobs no
//! live worker serves, ended outcomes to trim.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::protocol::messages::{self, Control, Done};
use super::protocol::schedule::Generation;
use super::protocol::sweep::{Burial, Buried, Bury, SessionState, Sweep, Swept};
use super::protocol::workers::{self, Fleet};
use super::protocol::{WireError, millis, reads, schedule, stop, timers};
use super::worker::Worker;
use crate::SessionId;

/// Every how many passes the sweeper walks the whole registry.
const FULL_PASS_EVERY: u64 = 10;

/// How many sessions with due leases one pass sweeps.
const DUE_SESSIONS: usize = 500;

pub(crate) async fn run(worker: Arc<Worker>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(worker.config.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pass: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = sweep(&worker, pass.is_multiple_of(FULL_PASS_EVERY)).await {
            tracing::warn!(error = %error.into_error(&worker.redis.errors), "sweeping failed");
        }
        pass += 1;
    }
}

async fn sweep(worker: &Worker, full: bool) -> Result<(), WireError> {
    let (redis, keys) = (&worker.redis, &worker.keys);
    let mut conn = redis.conn()?;
    // Held a little less than the period, so the next tick of any process may sweep.
    let hold = millis(worker.config.sweep_every * 9 / 10).max(1);
    let locked: Option<String> = redis::cmd("SET")
        .arg(keys.sweeper_lock())
        .arg(std::process::id())
        .arg("NX")
        .arg("PX")
        .arg(hold)
        .query_async(&mut conn)
        .await?;
    if locked.is_none() {
        return Ok(());
    }
    let fleet = match worker.config.unserved_grace {
        Some(grace) => Some(workers::fleet(redis, keys, grace).await?),
        None => None,
    };
    if !full {
        for session in timers::leases_due(redis, keys, DUE_SESSIONS).await? {
            sweep_session(worker, &session, None, fleet.as_ref(), false).await?;
        }
        return Ok(());
    }
    let mut cursor = 0;
    loop {
        let (next, page) = reads::sessions_page(redis, keys, cursor).await?;
        for (session, registered) in page {
            sweep_session(worker, &session, Some(registered), fleet.as_ref(), true).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Sweeps one session, then looks after what depends on it: its timers, its scheduling, its
/// registration. `registered`: its registry score, when the full pass (`full`) walks the
/// registry; the full pass also schedules a session with ready jobs.
async fn sweep_session(
    worker: &Worker,
    session: &str,
    registered: Option<u64>,
    fleet: Option<&Fleet>,
    full: bool,
) -> Result<(), WireError> {
    let (redis, keys, config) = (&worker.redis, &worker.keys, &worker.config);
    let Ok(id) = SessionId::new(session) else {
        // Not one of ours (ids are validated before they reach Redis).
        timers::settle(redis, keys, session, None).await?;
        schedule::forget(redis, keys, session, u64::MAX, Duration::ZERO).await?;
        return Ok(());
    };
    let session_keys = keys.session(&id);
    let swept = Sweep {
        session: &session_keys,
        max_deliveries: config.max_deliveries,
        backoff: config.redelivery_backoff,
        backoff_max: config.redelivery_backoff_max,
        unserved: config
            .unserved_grace
            .zip(fleet)
            .map(|(grace, fleet)| (grace, fleet.ready, fleet.served.as_slice())),
        result_ttl: config.result_ttl,
    }
    .call(redis)
    .await?;
    let look = match followup(&swept, full) {
        Followup::Forget => return gone(worker, &id, registered).await,
        Followup::FinishStop => {
            tracing::warn!(session = %id, "finishing a stop its stopper abandoned");
            stop::stop_session(redis, &session_keys).await?;
            // As its stopper would have: every process fires what still runs of it.
            let stop = Control::Stop {
                session: id.clone(),
                nonce: None,
            };
            messages::publish(redis, &keys.control_channel(), &stop).await?;
            return gone(worker, &id, registered).await;
        }
        Followup::Nothing => return Ok(()),
        Followup::Look(look) => look,
    };
    for (jobs, reason) in [
        (&swept.dead, Burial::Dead),
        (&swept.unserved, Burial::Unserved),
    ] {
        for job in jobs {
            let done = Done {
                session: id.clone(),
                run: job.run,
                outcome: None,
            }
            .to_string();
            let buried = Bury {
                session: &session_keys,
                job: *job,
                reason,
                max_deliveries: config.max_deliveries,
                grace: config.unserved_grace.unwrap_or_default(),
                done_channel: &keys.done_channel(&id),
                done: &done,
                session_ttl: config.session_ttl,
                dead_max_len: config.dead_letters_max_len,
            }
            .call(redis)
            .await?;
            if buried == Buried::Ended {
                match reason {
                    Burial::Dead => {
                        tracing::warn!(session = %id, %job, "dead-lettered a job whose workers kept dying")
                    }
                    Burial::Unserved => {
                        tracing::warn!(session = %id, %job, "failed a job no live worker serves")
                    }
                }
            }
        }
    }
    let watched = timers::settle(redis, keys, session, swept.next_lease).await?;
    if !watched {
        // A claim that raced the settle left its lease unwatched (its watch kept the due score
        // the settle then removed): look at the session's leases again.
        if let Some(deadline) = reads::earliest_lease(redis, &session_keys).await? {
            timers::watch(redis, keys, &id, deadline).await?;
        }
    }
    if let Some(due) = swept.next_due {
        // Arms (or re-arms, after a crash of the promoter) the session's timer.
        timers::arm(redis, keys, &id, due).await?;
    }
    if swept.requeued > 0 {
        tracing::info!(session = %id, requeued = swept.requeued, "re-queued expired leases");
    }
    if let Some(generation) = look.enlist {
        worker.client.enlist(&id, generation).await;
    }
    Ok(())
}

/// What the sweeper does after sweeping a session.
#[derive(Debug, PartialEq, Eq)]
enum Followup {
    /// The session is gone: forget it.
    Forget,
    /// Its stopper abandoned its stop: finish it, then forget the session.
    FinishStop,
    /// A stop is under way: leave it to its stopper.
    Nothing,
    /// It lives: look after its leases, timers and scheduling.
    Look(Look),
}

#[derive(Debug, PartialEq, Eq)]
struct Look {
    /// Enlist the session with this generation.
    enlist: Option<Generation>,
}

/// The sweeper's policy after a sweep (unit-tested). A session with ready jobs is (re)enlisted
/// by the full pass, and whenever the sweep re-queued jobs: one whose scheduling was lost (its
/// submitter died, its enlist was refused) would otherwise wait.
fn followup(swept: &Swept, full: bool) -> Followup {
    match swept.state {
        SessionState::Gone => Followup::Forget,
        SessionState::Abandoned => Followup::FinishStop,
        SessionState::Stopping => Followup::Nothing,
        SessionState::Live | SessionState::Idle => Followup::Look(Look {
            enlist: swept.ready.filter(|_| full || swept.requeued > 0),
        }),
    }
}

/// How recent a registration is left alone when its session does not exist (at most: less when
/// sessions expire sooner): a submission registers a session before it creates it.
const REGISTRATION_GRACE: Duration = Duration::from_secs(60);

/// A session that no longer exists (stopped, or expired, so it had no live run): forgotten,
/// and every process told to drop what it kept for it.
async fn gone(
    worker: &Worker,
    session: &SessionId,
    registered: Option<u64>,
) -> Result<(), WireError> {
    let (redis, keys) = (&worker.redis, &worker.keys);
    let grace = REGISTRATION_GRACE.min(worker.config.session_ttl);
    timers::settle(redis, keys, session.as_str(), None).await?;
    let registered = match registered {
        Some(score) => Some(score),
        None => reads::registration(redis, keys, session.as_str()).await?,
    };
    if let Some(score) = registered
        && schedule::forget(redis, keys, session.as_str(), score, grace).await?
    {
        let expired = Control::Expired {
            session: session.clone(),
        };
        messages::publish(redis, &keys.control_channel(), &expired).await?;
        tracing::debug!(%session, "a session that is gone was forgotten");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swept(state: SessionState, requeued: u64, ready: Option<u64>) -> Swept {
        Swept {
            state,
            requeued,
            dead: Vec::new(),
            unserved: Vec::new(),
            next_lease: None,
            next_due: None,
            ready: ready.and_then(Generation::of),
        }
    }

    #[test]
    fn gone_sessions_are_forgotten_and_abandoned_stops_finished() {
        assert_eq!(
            followup(&swept(SessionState::Gone, 0, None), true),
            Followup::Forget
        );
        assert_eq!(
            followup(&swept(SessionState::Abandoned, 0, None), false),
            Followup::FinishStop
        );
        assert_eq!(
            followup(&swept(SessionState::Stopping, 3, Some(9)), true),
            Followup::Nothing
        );
    }

    #[test]
    fn ready_sessions_are_enlisted_by_the_full_pass_or_after_a_requeue() {
        let look =
            |state, requeued, ready, full| match followup(&swept(state, requeued, ready), full) {
                Followup::Look(look) => look.enlist,
                other => panic!("{other:?}"),
            };
        assert_eq!(
            look(SessionState::Live, 0, Some(5), true),
            Generation::of(5)
        );
        assert_eq!(look(SessionState::Live, 0, Some(5), false), None);
        assert_eq!(
            look(SessionState::Idle, 2, Some(5), false),
            Generation::of(5)
        );
        assert_eq!(look(SessionState::Live, 2, None, true), None);
    }
}
