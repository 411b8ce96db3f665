//! What the scenarios run: no-op steps, so the figures are the runtime's own cost.

use am2z::{Error, processor, workflow};

/// The cheapest possible step.
#[processor]
pub(crate) async fn noop(x: u64) -> Result<u64, Error> {
    Ok(x)
}

/// A step that does one addition, so a chain's output shows every step ran.
#[processor]
pub(crate) async fn inc(x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

/// The fan-in step of the parallel of 3 (BullMQ's flow parent).
#[processor]
pub(crate) async fn join3(outputs: (u64, u64, u64)) -> Result<u64, Error> {
    Ok(outputs.0 + outputs.1 + outputs.2)
}

/// The fan-in step of the fan-out: counts the children that succeeded.
#[processor]
pub(crate) async fn join_all(outputs: Vec<Result<u64, Error>>) -> Result<u64, Error> {
    Ok(outputs.iter().filter(|o| o.is_ok()).count() as u64)
}

workflow! {
    /// Five steps in sequence (BullMQ: five jobs, each added when the previous completes).
    pub(crate) Chain5(u64) -> u64 {
        chain![inc, inc, inc, inc, inc]
    }

    /// Three branches on the same input, then a join step (BullMQ: a flow, parent + 3 children).
    pub(crate) Parallel3(u64) -> u64 {
        chain![parallel![inc, inc, inc], join3]
    }

    /// One child step per item, then a join step over all of them.
    pub(crate) FanOut(Vec<u64>) -> u64 {
        chain![map![inc, concurrency = 256], join_all]
    }
}

/// Lets `runtime` execute every processor the scenarios submit.
pub(crate) fn serve_all(runtime: &am2z::RedisRuntime) {
    runtime.serve(Noop);
    runtime.serve(Chain5);
    runtime.serve(Parallel3);
    runtime.serve(FanOut);
}
