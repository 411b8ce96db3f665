//! A Redis client process: submits checkout runs (and one deep recursion), then awaits every
//! outcome with a deadline. It never executes anything itself: run `redis_worker` beside it.
//!
//! ```text
//! cargo run -p examples --example redis_worker &       # one or more workers
//! cargo run -p examples --example redis_client -- 20   # 20 checkouts
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use am2z::{Error, RedisConfig, RedisRuntime, Runtime, SessionId};

use examples::redis_flows::{Checkout, Countdown, Order, Receipt};

#[tokio::main]
#[allow(clippy::print_stdout)] // an example reports on stdout
async fn main() -> Result<(), Error> {
    let runs: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let runtime = RedisRuntime::new(RedisConfig::from_env()?.worker(false));
    runtime.start().await?;
    let session = SessionId::new(format!("client-{}", std::process::id()))?;
    let outcome = checkouts(&runtime, &session, runs).await;
    // Whatever happened, the session's keys go.
    runtime.stop_session(&session).await?;
    runtime.stop().await?;
    outcome
}

#[allow(clippy::print_stdout)] // an example reports on stdout
async fn checkouts(runtime: &RedisRuntime, session: &SessionId, runs: u64) -> Result<(), Error> {
    let begin = Instant::now();
    let mut handles = Vec::new();
    for id in 0..runs {
        let order = Order {
            id,
            email: format!("buyer{id}@example.com"),
            amount_cents: 1_000 + id,
        };
        handles.push(runtime.submit(session, &Checkout, order).await?);
    }
    let deadline = Some(Duration::from_secs(30));
    let mut by_worker: BTreeMap<u32, u64> = BTreeMap::new();
    for handle in &handles {
        let receipt = runtime.wait::<Receipt>(handle, deadline).await?;
        *by_worker.entry(receipt.output.worker_pid).or_default() += 1;
    }
    println!(
        "{runs} checkouts in {:?}; runs per worker pid: {by_worker:?}",
        begin.elapsed()
    );

    let deep = runtime.submit(session, &Countdown, 20).await?;
    let result = runtime.wait::<u32>(&deep, deadline).await?;
    println!(
        "countdown(20) = {} through 20 nested ctx.calls",
        result.output
    );
    Ok(())
}
