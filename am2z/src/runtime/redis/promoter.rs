//! The promoter: moves delayed jobs (waiting out a redelivery backoff) to their session's
//! ready queue when they fall due, on Redis' clock. Sessions with delayed jobs sit in a global
//! timer set scored by their earliest due time; the sweeper re-arms timers on every pass, so
//! a promoter that dies between taking a timer and re-arming it loses nothing.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::{Error, SessionId};

/// How often the promoter looks for due timers.
const TICK: Duration = Duration::from_millis(50);

pub(crate) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = promote_due(&inner).await {
            tracing::warn!(%error, "promoting delayed jobs failed");
        }
    }
}

async fn promote_due(inner: &Inner) -> Result<(), Error> {
    let mut conn = inner.conn()?;
    let due: Vec<String> = inner
        .scripts
        .due
        .key(inner.keys.timers())
        .invoke_async(&mut conn)
        .await
        .map_err(|e| inner.errors.unavailable(&e))?;
    for session in due {
        let Ok(session) = SessionId::new(&session) else {
            continue;
        };
        let keys = inner.keys.session(&session);
        let (moved, next_due): (i64, i64) = inner
            .scripts
            .promote
            .key(keys.delayed())
            .key(keys.queue())
            .key(keys.meta())
            .arg(keys.job_prefix())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        if next_due > 0 {
            arm(inner, &mut conn, &session, next_due).await?;
        }
        if moved > 0 {
            tracing::debug!(%session, moved, "delayed jobs are due");
            inner.enlist(&mut conn, &session).await;
        }
    }
    Ok(())
}

/// Sets `session`'s timer to `due` (ms on Redis' clock) unless an earlier one is set.
pub(crate) async fn arm(
    inner: &Inner,
    conn: &mut ConnectionManager,
    session: &SessionId,
    due: i64,
) -> Result<(), Error> {
    redis::pipe()
        .cmd("ZADD")
        .arg(inner.keys.timers())
        .arg("LT")
        .arg(due)
        .arg(session.as_str())
        .ignore()
        .cmd("PEXPIRE")
        .arg(inner.keys.timers())
        .arg(inner.registry_ttl_ms())
        .ignore()
        .query_async::<()>(conn)
        .await
        .map_err(|e| inner.errors.unavailable(&e))
}
