//! One processor, then a chain of three, on the local runtime.
//!
//! ```text
//! cargo run -p examples --example quickstart
//! ```

use am2z::{Error, LocalRuntime, Runtime, SessionId, processor, workflow};

/// Adds one.
#[processor(description = "Adds one", timeout = "1s")]
async fn add_one(x: i64) -> Result<i64, Error> {
    Ok(x + 1)
}

/// Doubles.
#[processor]
async fn double(x: i64) -> Result<i64, Error> {
    Ok(x * 2)
}

/// Adds ten.
#[processor]
async fn add_ten(x: i64) -> Result<i64, Error> {
    Ok(x + 10)
}

workflow! {
    /// 5 → +1 → ×2 → +10: every edge checked by rustc.
    pub Arithmetic(i64) -> i64 {
        chain![add_one, double, add_ten]
    }
}

#[tokio::main]
#[allow(clippy::print_stdout)] // an example reports on stdout
async fn main() -> Result<(), Error> {
    let runtime = LocalRuntime::new();
    runtime.start().await?;

    // One processor.
    let one = AddOne::run(&runtime, 41).await?;
    println!(
        "add_one(41) = {} (run {}, session `{}`, {} attempt, {:?})",
        one.output, one.meta.run_id, one.meta.session_id, one.attempts, one.execution_time
    );

    // A chain, in its own session.
    let session = SessionId::new("quickstart")?;
    let chain = Arithmetic::run_in_session(&runtime, &session, 5).await?;
    println!(
        "arithmetic(5) = {} after {} steps (version {})",
        chain.output, chain.attempts, chain.meta.version
    );

    runtime.stop_session(&session).await?;
    runtime.stop().await?;
    Ok(())
}
