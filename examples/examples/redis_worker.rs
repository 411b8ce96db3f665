//! A Redis worker process: serves the example workflows until SIGTERM or ctrl-c, then drains
//! (no new claims; runs that finish in time commit; the rest are released at once for other
//! workers).
//!
//! ```text
//! AM2Z_REDIS_URL=redis://127.0.0.1:6379 AM2Z_WORKER_CONCURRENCY=16 \
//!     cargo run -p examples --example redis_worker
//! ```
//!
//! Settings come from the environment (`AM2Z_REDIS_URL` / `REDIS_URL`, `AM2Z_QUEUE_PREFIX`,
//! `AM2Z_WORKER_CONCURRENCY`, `AM2Z_MAX_CALL_DEPTH`, `AM2Z_DEFAULT_TIMEOUT`), plus
//! `AM2Z_DRAIN_SECS` (default 10): how long a draining worker lets runs finish.

use std::time::Duration;

use am2z::{Error, RedisConfig, RedisRuntime, Runtime};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let drain = std::env::var("AM2Z_DRAIN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs);

    // Code defaults (deep enough for `countdown(20)`), then the environment's overrides.
    let config = RedisConfig::default().max_call_depth(32).with_env()?;
    let runtime = RedisRuntime::new(config);
    examples::redis_flows::serve_all(&runtime);
    // Redis may come up after the worker: wait for it (a bad configuration stops us at once).
    let mut backoff = Duration::from_millis(100);
    loop {
        match runtime.start().await {
            Ok(()) => break,
            Err(error @ Error::Unavailable { .. }) => {
                tracing::warn!(%error, retry_in = ?backoff, "redis is not reachable yet");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown_signal() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
    tracing::info!(redis = %runtime.config(), pid = std::process::id(), "worker serving");

    shutdown_signal().await;
    tracing::info!(in_flight = runtime.runs_in_flight(), ?drain, "draining");
    runtime.drain(drain).await?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; ctrl-c only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
