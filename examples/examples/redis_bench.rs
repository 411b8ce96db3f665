//! One-step latency and throughput of the Redis runtime, with the worker in this process
//! (so every run is a full round trip: submit script, claim, execute, fenced commit, done
//! message, outcome read).
//!
//! ```text
//! cargo run --release -p examples --example redis_bench             # 2 000 + 20 000 runs
//! cargo run --release -p examples --example redis_bench -- --quick  # smoke run
//! ```
//!
//! Uses `AM2Z_REDIS_URL` / `REDIS_URL` (default `redis://127.0.0.1:6379`) under a prefix of
//! its own, and deletes its sessions at the end.

use std::time::{Duration, Instant};

use am2z::{Error, Executes, RedisConfig, RedisRuntime, RunId, Runtime, SessionId, processor};
use futures::StreamExt;

/// The cheapest possible step.
#[processor]
async fn noop(x: u64) -> Result<u64, Error> {
    Ok(x)
}

#[tokio::main]
#[allow(clippy::print_stdout)] // an example reports on stdout
async fn main() -> Result<(), Error> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (sequential, total, in_flight) = if quick {
        (200, 2_000, 64)
    } else {
        (2_000, 20_000, 256)
    };
    let config = RedisConfig::default()
        .with_env()?
        .prefix(format!("am2z-bench-{}", RunId::generate()))
        .worker_concurrency(64)
        .result_ttl(Duration::from_secs(60))
        .session_ttl(Duration::from_secs(120));
    let runtime = RedisRuntime::new(config);
    runtime.start().await?;
    let sessions: Vec<SessionId> = (0..16)
        .map(|i| SessionId::new(format!("bench-{i}")))
        .collect::<Result<_, _>>()?;

    // Warm up connections, scripts and the allocator.
    for x in 0..100 {
        runtime.execute_in_session(&sessions[0], &Noop, x).await?;
    }

    let mut latencies = Vec::with_capacity(sequential);
    for x in 0..sequential as u64 {
        let begin = Instant::now();
        runtime.execute_in_session(&sessions[0], &Noop, x).await?;
        latencies.push(begin.elapsed());
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];

    let begin = Instant::now();
    let failures = futures::stream::iter(0..total as u64)
        .map(|x| {
            let runtime = &runtime;
            let session = &sessions[x as usize % sessions.len()];
            async move { runtime.execute_in_session(session, &Noop, x).await.is_err() }
        })
        .buffer_unordered(in_flight)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let elapsed = begin.elapsed();

    println!("Redis runtime, one-step runs (worker in-process, concurrency 64)");
    println!(
        "  latency, {sequential} sequential runs: p50 {:?}  p90 {:?}  p99 {:?}",
        at(0.50),
        at(0.90),
        at(0.99)
    );
    println!(
        "  throughput, {total} runs ({in_flight} in flight, {} sessions): {:.0} runs/s in {elapsed:?}, {failures} failed",
        sessions.len(),
        total as f64 / elapsed.as_secs_f64()
    );
    runtime.stop_all_sessions().await?;
    runtime.stop().await?;
    Ok(())
}
