//! Memory and connections with many idle sessions: one run in each of N sessions, executed
//! by one worker process; then the worker's RSS, Redis' `used_memory` and each process's
//! connections, measured while the sessions sit idle; then every session is stopped.

use std::time::{Duration, Instant};

use am2z::{Error, Runtime, SessionId};
use futures::{StreamExt, TryStreamExt};

use crate::Settings;
use crate::observe::{Observer, rss_bytes};
use crate::report::{note, result};
use crate::throughput::{SUBMIT_IN_FLIGHT, follow};
use crate::worker::WorkerProcess;
use crate::workflows::Noop;

/// Creates `settings.idle_sessions` sessions and measures what they cost at rest.
pub(crate) async fn run(settings: &Settings, observer: &mut Observer) -> Result<(), Error> {
    let sessions = settings.idle_sessions;
    let prefix = settings.prefix("idle");
    let memory_before = observer.used_memory().await?;
    let worker = WorkerProcess::spawn(&settings.url, &prefix, 50, true).await?;
    let rss_before = rss_bytes(worker.pid);
    let client = settings.runtime(&prefix, false).await?;

    let ids: Vec<SessionId> = (0..sessions)
        .map(|i| SessionId::new(format!("idle-{i}")))
        .collect::<Result<_, _>>()?;
    let client_ref = &client;
    futures::stream::iter(ids.iter().enumerate())
        .map(|(i, session)| async move {
            client_ref.submit(session, &Noop, i as u64).await.map(drop)
        })
        .buffer_unordered(SUBMIT_IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    follow(
        std::slice::from_ref(&worker),
        sessions,
        Duration::from_secs(300),
    )
    .await?;
    // Let the last commits and event writes land before measuring the rest state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = client.active_sessions().await?.len();
    let memory_after = observer.used_memory().await?;
    let rss_after = rss_bytes(worker.pid);
    let worker_conns = observer.connections_of(worker.pid).await?;
    let client_conns = observer.connections_of(std::process::id()).await?;
    note(&format!("{live} live sessions under prefix {prefix}"));

    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    result("idle_sessions.count", "sessions", &[live as f64]);
    result("idle_sessions.worker_rss", "MiB", &[mb(rss_after)]);
    result("idle_sessions.worker_rss_before", "MiB", &[mb(rss_before)]);
    result(
        "idle_sessions.redis_used_memory_delta",
        "MiB",
        &[mb(memory_after.saturating_sub(memory_before))],
    );
    result(
        "idle_sessions.redis_bytes_per_session",
        "B",
        &[memory_after.saturating_sub(memory_before) as f64 / sessions.max(1) as f64],
    );
    result(
        "idle_sessions.connections_worker_process",
        "conns",
        &[worker_conns as f64],
    );
    result(
        "idle_sessions.connections_client_process",
        "conns",
        &[client_conns as f64],
    );

    let stop_begin = Instant::now();
    client.stop_all_sessions().await?;
    let stop_ms = stop_begin.elapsed().as_secs_f64() * 1e3;
    result(
        "idle_sessions.stop_all_per_session",
        "ms",
        &[stop_ms / sessions.max(1) as f64],
    );
    let stopped = worker.stop().await;
    client.stop().await?;
    stopped
}
