//! Forwards the events of runs executed here to Redis (the session's stream and the events
//! channel), in order, and lets a worker wait until a run's events are out before it
//! commits the run, so every process sees a run's events before its outcome.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::scripts::InvokeReloading;
use super::worker::millis;
use crate::{Event, EventKind, EventStream, RunId};

/// The most events forwarded in one round trip.
const BATCH: usize = 256;

/// How old an event may be when it is forwarded before the forwarder counts as behind: runs
/// then commit without waiting for their events, so a flood of one session's events does not
/// hold every other session's commits on this worker.
const BEHIND: Duration = Duration::from_millis(500);

/// Which runs' terminal events are out.
#[derive(Default)]
pub(crate) struct Barrier {
    state: Mutex<BarrierState>,
}

#[derive(Default)]
struct BarrierState {
    forwarded: HashSet<RunId>,
    waiting: HashMap<RunId, oneshot::Sender<()>>,
    /// How many times the forwarder fell behind and skipped events.
    lags: u64,
}

impl Barrier {
    fn forwarded(&self, run: RunId) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.waiting.remove(&run) {
            Some(waiter) => {
                let _ = waiter.send(());
            }
            None => {
                // Runs abandoned before their commit never collect their mark: bound the set.
                if state.forwarded.len() >= 10_000 {
                    state.forwarded.clear();
                }
                state.forwarded.insert(run);
            }
        }
    }

    /// The forwarder skipped events (it fell a whole ring behind) or is far behind: the
    /// terminal events of runs waiting now, or finished since, may be among the skipped or
    /// long in coming, so they stop waiting for them.
    fn lagged(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.lags += 1;
        for (_, waiter) in state.waiting.drain() {
            let _ = waiter.send(());
        }
    }

    /// A mark to pass to [`wait`](Self::wait), taken before the run starts.
    pub(crate) fn mark(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).lags
    }

    /// Waits until the terminal event of `run` has been forwarded (at most `limit`), unless
    /// the forwarder skipped events since `mark` (that event may be one of them).
    pub(crate) async fn wait(&self, run: RunId, mark: u64, limit: Duration) {
        let receiver = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.forwarded.remove(&run) || state.lags != mark {
                return;
            }
            let (sender, receiver) = oneshot::channel();
            state.waiting.insert(run, sender);
            receiver
        };
        if tokio::time::timeout(limit, receiver).await.is_err() {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .waiting
                .remove(&run);
            tracing::debug!(%run, "events of the run were not all forwarded in time");
        }
    }
}

/// Forwards `stream` (the embedded executor's events) until `stop` fires.
pub(crate) async fn run(inner: Arc<Inner>, mut stream: EventStream, stop: CancellationToken) {
    let mut missed = 0;
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            event = stream.next() => event,
        };
        let Some(first) = first else { return };
        if stream.missed() > missed {
            missed = stream.missed();
            tracing::warn!(
                missed,
                "events were produced faster than Redis took them; some were skipped"
            );
            inner.barrier.lagged();
        } else if first.at.elapsed().is_ok_and(|age| age > BEHIND) {
            inner.barrier.lagged();
        }
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match stream.next().now_or_never() {
                Some(Some(event)) => batch.push(event),
                _ => break,
            }
        }
        forward(&inner, &batch).await;
        for event in &batch {
            if let (Some(run), EventKind::RunCompleted { .. } | EventKind::RunFailed { .. }) =
                (event.run_id, &event.kind)
            {
                inner.barrier.forwarded(run);
            }
        }
    }
}

/// The stats field a finished step counts under (`<processor>:completed` / `:failed`).
fn stats_field(event: &Event) -> Option<String> {
    let outcome = match event.kind {
        EventKind::StepCompleted { .. } => "completed",
        EventKind::StepFailed { .. } => "failed",
        _ => return None,
    };
    Some(format!("{}:{outcome}", event.processor.as_deref()?))
}

async fn forward(inner: &Inner, batch: &[Event]) {
    let Ok(conn) = inner.conn() else { return };
    let channel = inner.keys.events_channel();
    let max_len = inner.config.events_max_len;
    let sends = batch.iter().filter_map(|event| {
        // Session lifecycle events are published by the runtime itself (once, cluster-wide),
        // not by each worker's executor.
        if matches!(
            event.kind,
            EventKind::SessionCreated | EventKind::SessionStopped
        ) {
            return None;
        }
        let json = serde_json::to_string(event).ok()?;
        let keys = inner.keys.session(&event.session);
        let mut conn = conn.clone();
        let script = &inner.scripts.event;
        let channel = &channel;
        let counted = stats_field(event);
        Some(async move {
            let sent: redis::RedisResult<i64> = script
                .key(keys.meta())
                .key(keys.events())
                .key(keys.stats())
                .arg(json)
                .arg(max_len)
                .arg(channel)
                .arg(counted.as_deref().unwrap_or(""))
                .invoke_reloading(&mut conn)
                .await;
            let counted_globally = match &counted {
                Some(field) => redis::pipe()
                    .hincr(inner.keys.stats(), field, 1)
                    .ignore()
                    .pexpire(inner.keys.stats(), millis(inner.config.session_ttl).try_into().unwrap_or(i64::MAX))
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await,
                None => Ok(()),
            };
            if let Err(error) = sent.map(|_| ()).and(counted_globally) {
                tracing::warn!(error = %inner.errors.scrub(&error.to_string()), "forwarding an event failed");
            }
        })
    });
    // Joined futures send in order on the one multiplexed connection.
    futures::future::join_all(sends).await;
}
