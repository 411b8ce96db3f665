//! Per-run overhead of the local runtime, beside the same async fns called directly.
//!
//! ```text
//! cargo run --release -p examples --example local_overhead             # 21 batches × 20 000 runs
//! cargo run --release -p examples --example local_overhead -- --quick  # smoke run
//! ```
//!
//! Each scenario is timed as batches of runs on a current-thread tokio runtime; the table gives
//! the median time per run over the batches, for the runtime and for direct calls of the same
//! fns measured in the same process, batch by batch, so machine noise hits both alike.

use std::hint::black_box;
use std::time::{Duration, Instant};

use am2z::{Chain, Error, Executes, LocalRuntime, Parallel, Runtime, processor, workflow};

#[processor]
async fn noop(x: u64) -> Result<u64, Error> {
    Ok(x)
}

#[processor]
async fn inc(x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

workflow! {
    /// The chain of 3, declared as users declare it.
    Chain3(u64) -> u64 {
        chain![inc, inc, inc]
    }

    /// The parallel of 3, declared as users declare it.
    Parallel3(u64) -> (u64, u64, u64) {
        parallel![inc, inc, inc]
    }
}

fn add3(out: (u64, u64, u64)) -> u64 {
    out.0 + out.1 + out.2
}

/// Median nanoseconds per call of `one` over `samples` batches of `runs` calls.
async fn per_run<F, Fut>(samples: usize, runs: u32, mut one: F) -> f64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = u64>,
{
    let mut batches = Vec::with_capacity(samples);
    for _ in 0..samples {
        let begin = Instant::now();
        for i in 0..runs {
            black_box(one(black_box(u64::from(i))).await);
        }
        batches.push(begin.elapsed().as_nanos() as f64 / f64::from(runs));
    }
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

async fn direct_chain3(x: u64) -> u64 {
    let a = inc(x).await.unwrap_or_default();
    let b = inc(a).await.unwrap_or_default();
    inc(b).await.unwrap_or_default()
}

async fn direct_parallel3(x: u64) -> u64 {
    futures::future::try_join3(inc(x), inc(x), inc(x))
        .await
        .map(add3)
        .unwrap_or_default()
}

#[allow(clippy::print_stdout)] // a benchmark reports on stdout
fn main() -> Result<(), Error> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (samples, runs) = if quick { (3, 2_000) } else { (21, 20_000) };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::from)?;
    tokio.block_on(async move {
        let runtime = LocalRuntime::new();
        runtime.start().await?;
        let rt = &runtime;
        let chain3 = &Chain::new(Inc, Inc).then(Inc);
        let fan3 = &Parallel::new((Inc, Inc, Inc));
        // Warm up allocators, caches and lazily made state.
        for x in 0..1_000 {
            rt.execute(&Noop, x).await?;
            rt.execute(chain3, x).await?;
            rt.execute(&Chain3, x).await?;
            rt.execute(fan3, x).await?;
            rt.execute(&Parallel3, x).await?;
        }

        let single = (
            per_run(samples, runs, |x| async move {
                rt.execute(&Noop, x).await.map(|r| r.output).unwrap_or_default()
            })
            .await,
            per_run(samples, runs, |x| async move { noop(x).await.unwrap_or_default() }).await,
        );
        let chain_combinator = (
            per_run(samples, runs, |x| async move {
                rt.execute(chain3, x).await.map(|r| r.output).unwrap_or_default()
            })
            .await,
            per_run(samples, runs, direct_chain3).await,
        );
        let chain_macro = (
            per_run(samples, runs, |x| async move {
                rt.execute(&Chain3, x).await.map(|r| r.output).unwrap_or_default()
            })
            .await,
            per_run(samples, runs, direct_chain3).await,
        );
        let parallel_combinator = (
            per_run(samples, runs, |x| async move {
                rt.execute(fan3, x).await.map(|r| add3(r.output)).unwrap_or_default()
            })
            .await,
            per_run(samples, runs, direct_parallel3).await,
        );
        let parallel_macro = (
            per_run(samples, runs, |x| async move {
                rt.execute(&Parallel3, x).await.map(|r| add3(r.output)).unwrap_or_default()
            })
            .await,
            per_run(samples, runs, direct_parallel3).await,
        );
        runtime.stop().await?;

        println!("local runtime overhead: median of {samples} batches × {runs} runs, current-thread tokio\n");
        println!("| scenario | am2z per run | direct call | overhead | target (overhead) | met |");
        println!("|---|---|---|---|---|---|");
        let rows = [
            ("single step (no-op)", single, 2),
            ("chain of 3 (`Chain`)", chain_combinator, 5),
            ("chain of 3 (`workflow!`)", chain_macro, 5),
            ("parallel of 3 (`Parallel`)", parallel_combinator, 10),
            ("parallel of 3 (`workflow!`)", parallel_macro, 10),
        ];
        for (name, (am2z, direct), target_us) in rows {
            let overhead = am2z - direct;
            let met = overhead <= Duration::from_micros(target_us).as_nanos() as f64;
            println!(
                "| {name} | {am2z:.0} ns | {direct:.0} ns | {overhead:.0} ns | ≤ {target_us} µs | {} |",
                if met { "yes" } else { "no" },
            );
        }
        Ok(())
    })
}
