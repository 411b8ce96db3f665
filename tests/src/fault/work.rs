//! What fault workers execute: short steps that write the execution ledger, composed into the
//! chains and fan-outs the scenarios submit, and the processors that misbehave on purpose. The
//! test process names the same items to submit, so client and worker share contract
//! fingerprints (they hash the data types' paths).

use std::time::Duration;

use am2z::{Ctx, Error, processor, workflow};
use serde::{Deserialize, Serialize};

use super::ledger;

/// One unit of work: sleep `ms` in each step; the output says which process did the last step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// The scenario's own number for the run.
    pub id: u64,
    /// How long each step sleeps.
    pub ms: u64,
    /// The process that executed the last step (0 before any).
    pub pid: u32,
}

impl Work {
    /// Work `id` whose steps each take `ms`.
    pub fn new(id: u64, ms: u64) -> Work {
        Work { id, ms, pid: 0 }
    }
}

/// The input of the *previous* contract of `versioned` (what an older worker binary decodes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldWork {
    /// The old shape had a label, not an id.
    pub label: String,
}

async fn step(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    ledger::record(ctx)?;
    tokio::time::sleep(Duration::from_millis(work.ms)).await;
    Ok(Work {
        pid: std::process::id(),
        ..work
    })
}

/// The first step of [`Chain3`], and the single-step run.
#[processor(timeout = "60s")]
pub async fn step_a(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    step(work, ctx).await
}

/// The second step of [`Chain3`], a branch of [`FanOut`].
#[processor(timeout = "60s")]
pub async fn step_b(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    step(work, ctx).await
}

/// The third step of [`Chain3`], a branch of [`FanOut`].
#[processor(timeout = "60s")]
pub async fn step_c(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    step(work, ctx).await
}

/// The merge of [`FanOut`]: the first branch's work (a plain fn: merges are not steps).
pub fn join_work(first: Work, _second: Work) -> Work {
    first
}

/// Kills its own process (`abort`) every time it runs: the job that must be dead-lettered
/// after `max_deliveries` process deaths.
#[processor]
pub async fn abort_always(_work: Work, ctx: &Ctx) -> Result<Work, Error> {
    ledger::record(ctx)?;
    std::process::abort()
}

/// The current contract of `versioned` (takes [`Work`]).
#[processor(timeout = "60s")]
pub async fn versioned(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    step(work, ctx).await
}

/// An older worker binary's `versioned`: same name, another input type (another contract).
#[processor(name = "versioned")]
pub async fn versioned_old(old: OldWork, ctx: &Ctx) -> Result<Work, Error> {
    ledger::record(ctx)?;
    Ok(Work {
        id: old.label.len() as u64,
        ms: 0,
        pid: std::process::id(),
    })
}

/// A processor no fault worker serves (scenario 14's unknown name).
#[processor]
pub async fn nobody_serves(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    step(work, ctx).await
}

workflow! {
    /// Three steps in a row.
    pub Chain3(Work) -> Work {
        chain![step_a, step_b, step_c]
    }

    /// Two branches at once, joined.
    pub FanOut(Work) -> Work {
        parallel![step_b, step_c] => join_work
    }
}
