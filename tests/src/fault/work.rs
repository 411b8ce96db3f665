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

// The step-job scenarios (`tests/redis_steps.rs`): chains and fan-outs whose steps the ledger
// tells apart, so it can count each step of a run and see which process ran it.

/// A step that records itself and returns at once.
async fn quick(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    ledger::record(ctx)?;
    Ok(Work {
        pid: std::process::id(),
        ..work
    })
}

/// The quick first step of [`SlowMiddle`].
#[processor(timeout = "60s")]
pub async fn enter_step(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    quick(work, ctx).await
}

/// The middle step of [`SlowMiddle`]: sleeps `ms`, so a scenario can kill its worker mid-step.
#[processor(timeout = "60s")]
pub async fn slow_step(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    step(work, ctx).await
}

/// The quick last step of [`SlowMiddle`].
#[processor(timeout = "60s")]
pub async fn exit_step(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    quick(work, ctx).await
}

/// Adds `add` to the work's id after sleeping `ms`: the branches of [`Fan3`] each add a
/// different power of ten, so the merged id shows every branch's result counted once.
async fn add_to_id(work: Work, add: u64, ctx: &Ctx) -> Result<Work, Error> {
    let done = step(work, ctx).await?;
    Ok(Work {
        id: done.id + add,
        ..done
    })
}

/// A branch of [`Fan3`]: id + 1.
#[processor(timeout = "60s")]
pub async fn branch_x(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    add_to_id(work, 1, ctx).await
}

/// A branch of [`Fan3`]: id + 10.
#[processor(timeout = "60s")]
pub async fn branch_y(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    add_to_id(work, 10, ctx).await
}

/// A branch of [`Fan3`]: id + 100.
#[processor(timeout = "60s")]
pub async fn branch_z(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    add_to_id(work, 100, ctx).await
}

/// The merge of [`Fan3`]: the ids summed (`3 × id + 111` when each branch counted once).
pub fn sum_branches(x: Work, y: Work, z: Work) -> Work {
    Work {
        id: x.id + y.id + z.id,
        ms: x.ms,
        pid: z.pid,
    }
}

/// An item of [`SpreadMap`] and [`PairedMap`]: sleeps `ms`, says which process ran it.
#[processor(timeout = "60s")]
pub async fn map_item(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    step(work, ctx).await
}

/// What the steps of [`GateChain`] carry: a number they transform, and the path of a flag
/// file the middle step waits for (so a scenario can hold a run at its second step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// The flag file `gate_wait` waits for; it creates `<flag>.entered` when it starts.
    pub flag: String,
    /// The number: `gate_enter` adds 1, `gate_wait` multiplies by 10, `gate_exit` adds 3.
    pub n: u64,
}

/// The first step of [`GateChain`]: n + 1.
#[processor(timeout = "60s")]
pub async fn gate_enter(gate: Gate, ctx: &Ctx) -> Result<Gate, Error> {
    ledger::record(ctx)?;
    Ok(Gate {
        n: gate.n + 1,
        ..gate
    })
}

/// The second step of [`GateChain`]: announces itself (`<flag>.entered`), waits up to 30 s for
/// the flag file, then n × 10.
#[processor(timeout = "60s")]
pub async fn gate_wait(gate: Gate, ctx: &Ctx) -> Result<Gate, Error> {
    ledger::record(ctx)?;
    std::fs::write(format!("{}.entered", gate.flag), ctx.run_id().to_string())
        .map_err(|e| Error::execution(ctx.processor(), format!("the entered flag: {e}")))?;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while !std::path::Path::new(&gate.flag).exists() {
        if tokio::time::Instant::now() >= until {
            return Err(Error::execution(ctx.processor(), "the gate never opened"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Gate {
        n: gate.n * 10,
        ..gate
    })
}

/// The last step of [`GateChain`]: n + 3.
#[processor(timeout = "60s")]
pub async fn gate_exit(gate: Gate, ctx: &Ctx) -> Result<Gate, Error> {
    ledger::record(ctx)?;
    Ok(Gate {
        n: gate.n + 3,
        ..gate
    })
}

workflow! {
    /// A quick step, a slow one (`ms`), a quick one.
    pub SlowMiddle(Work) -> Work {
        chain![enter_step, slow_step, exit_step]
    }

    /// Three branches, each adding its own amount to the id, summed.
    pub Fan3(Work) -> Work {
        parallel![branch_x, branch_y, branch_z] => sum_branches
    }

    /// `map_item` over the items, up to 16 at once.
    pub SpreadMap(Vec<Work>) -> Vec<Result<Work, Error>> {
        map![map_item, concurrency = 16]
    }

    /// `map_item` over the items, at most 2 at once.
    pub PairedMap(Vec<Work>) -> Vec<Result<Work, Error>> {
        map![map_item, concurrency = 2]
    }

    /// n → ((n + 1) × 10) + 3, held at the second step until the flag file exists.
    pub GateChain(Gate) -> Gate {
        chain![gate_enter, gate_wait, gate_exit]
    }
}

/// Appends `run <step>#<id> attempt pid nanos` to the process's ledger: one item of a map,
/// told apart from the others by its id (every item has the same step name).
fn record_item(ctx: &Ctx, id: u64) -> Result<(), Error> {
    use std::io::Write as _;
    let Some(path) = std::env::var_os(ledger::LEDGER_VAR) else {
        return Ok(());
    };
    let line = format!(
        "{} {}#{id} {} {} {}\n",
        ctx.run_id(),
        ctx.processor(),
        ctx.attempt(),
        std::process::id(),
        ledger::unix_nanos(std::time::SystemTime::now()),
    );
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .map_err(|e| Error::execution(ctx.processor(), format!("the ledger: {e}")))
}

/// An item of [`TrackedMap`]: records itself as `tracked_item#<id>`, sleeps `ms`.
#[processor(timeout = "60s")]
pub async fn tracked_item(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    record_item(ctx, work.id)?;
    tokio::time::sleep(Duration::from_millis(work.ms)).await;
    Ok(Work {
        pid: std::process::id(),
        ..work
    })
}

workflow! {
    /// `tracked_item` over the items, up to 16 at once.
    pub TrackedMap(Vec<Work>) -> Vec<Result<Work, Error>> {
        map![tracked_item, concurrency = 16]
    }
}

workflow! {
    /// A quick step, one that kills its process every time, a quick one.
    pub PoisonChain(Work) -> Work {
        chain![enter_step, abort_always, exit_step]
    }

    /// Two branches of `ms` beside one that kills its process every time.
    pub PoisonFan(Work) -> Work {
        parallel![branch_x, abort_always, branch_z] => sum_branches
    }
}

// The lifecycle scenarios (`tests/lifecycle.rs`): steps that park (a retry's backoff), wait
// out a `delay`, and hand off to the next step, so a stop lands among commits, parks,
// promotions and hand-offs.

/// Fails its first two attempts (each retry's backoff parks the job), then records itself.
#[processor(timeout = "60s", retries = 3, backoff = fixed("150ms"))]
pub async fn park_twice(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    ledger::record(ctx)?;
    if ctx.attempt() < 3 {
        return Err(Error::execution(ctx.processor(), "parks for a retry"));
    }
    Ok(Work {
        pid: std::process::id(),
        ..work
    })
}

/// Waits 400 ms before it starts (a parked `delay`), then records itself.
#[processor(timeout = "60s", delay = "400ms")]
pub async fn late_step(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    quick(work, ctx).await
}

workflow! {
    /// A quick step, one that parks twice for its retries, a delayed one, a quick one.
    pub ParkChain(Work) -> Work {
        chain![enter_step, park_twice, late_step, exit_step]
    }
}

/// A high-priority run that waits 300 ms (parked) before it starts: claimed ahead of a
/// session's backlog, so its promotion lands while the session is busy.
#[processor(timeout = "60s", priority = 10, delay = "300ms")]
pub async fn urgent_soon(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    quick(work, ctx).await
}

/// As [`urgent_soon`], waiting 900 ms.
#[processor(timeout = "60s", priority = 10, delay = "900ms")]
pub async fn urgent_later(work: Work, ctx: &Ctx) -> Result<Work, Error> {
    quick(work, ctx).await
}
