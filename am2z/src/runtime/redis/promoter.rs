//! The promoter: moves delayed jobs (a redelivery's backoff, a step's `delay` or retry
//! backoff) to their session's ready queue when they fall due, on Redis' clock. Sessions with
//! delayed jobs sit in a global timer set scored by their earliest due time; the sweeper
//! re-arms timers on every pass, so a promoter that dies between taking a timer and re-arming
//! it loses nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::protocol::release::Promote;
use super::protocol::{WireError, timers};
use super::worker::Worker;
use crate::SessionId;

/// How often the promoter looks for due timers.
const TICK: Duration = Duration::from_millis(50);

/// How many sessions one look takes, and how many jobs one call promotes.
const SESSIONS: usize = 100;
const JOBS: u64 = 500;

pub(crate) async fn run(worker: Arc<Worker>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = promote_due(&worker).await {
            tracing::warn!(error = %error.into_error(&worker.redis.errors), "promoting delayed jobs failed");
        }
    }
}

async fn promote_due(worker: &Worker) -> Result<(), WireError> {
    let (redis, keys) = (&worker.redis, &worker.keys);
    for session in timers::due(redis, keys, SESSIONS).await? {
        let Ok(session) = SessionId::new(&session) else {
            continue;
        };
        let promoted = Promote {
            session: &keys.session(&session),
            most: JOBS,
        }
        .call(redis)
        .await?;
        if let Some(due) = promoted.next_due {
            timers::arm(redis, keys, &session, due).await?;
        }
        if let Some(generation) = promoted.enlist {
            tracing::debug!(%session, moved = promoted.moved, "delayed jobs are due");
            worker.client.enlist(&session, generation).await;
        }
    }
    Ok(())
}
