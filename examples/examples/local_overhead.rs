//! Per-run overhead of the local runtime, beside the same async fns called directly.
//!
//! ```text
//! cargo run --release -p examples --example local_overhead           # full: 21 samples × 20 000 runs
//! cargo run --release -p examples --example local_overhead -- --quick  # smoke run
//! ```
//!
//! Each scenario is timed as batches of runs on a current-thread tokio runtime; the table gives
//! the median time per run over the batches, for the runtime and for direct calls measured in
//! the same process, interleaved, so machine noise hits both alike.

use std::hint::black_box;
use std::time::{Duration, Instant};

use am2z::{Chain, Error, Executes, LocalRuntime, Parallel, Runtime, processor};

#[processor]
async fn noop(x: u64) -> Result<u64, Error> {
    Ok(x)
}

#[processor]
async fn inc(x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

fn add3(out: (u64, u64, u64)) -> u64 {
    out.0 + out.1 + out.2
}

struct Scenario {
    name: &'static str,
    target: Duration,
    runtime_ns: Vec<f64>,
    direct_ns: Vec<f64>,
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

async fn per_run<F, Fut>(runs: u32, mut one: F) -> f64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = u64>,
{
    let begin = Instant::now();
    for i in 0..runs {
        black_box(one(black_box(u64::from(i))).await);
    }
    begin.elapsed().as_nanos() as f64 / f64::from(runs)
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
        let chain3 = Chain::new(Inc, Inc).then(Inc);
        let fan3 = Parallel::new((Inc, Inc, Inc));

        let mut scenarios = [
            Scenario { name: "single step (no-op)", target: Duration::from_micros(2), runtime_ns: vec![], direct_ns: vec![] },
            Scenario { name: "chain of 3", target: Duration::from_micros(5), runtime_ns: vec![], direct_ns: vec![] },
            Scenario { name: "parallel of 3", target: Duration::from_micros(10), runtime_ns: vec![], direct_ns: vec![] },
        ];
        // Warm up allocators, caches and lazily made state.
        for x in 0..1_000 {
            runtime.execute(&Noop, x).await?;
            runtime.execute(&chain3, x).await?;
            runtime.execute(&fan3, x).await?;
        }
        let (rt, chain3, fan3) = (&runtime, &chain3, &fan3);
        for _ in 0..samples {
            let [single, chain, parallel] = &mut scenarios;
            single.runtime_ns.push(
                per_run(runs, move |x| async move {
                    rt.execute(&Noop, x).await.map(|r| r.output).unwrap_or_default()
                })
                .await,
            );
            single.direct_ns.push(per_run(runs, |x| async move { noop(x).await.unwrap_or_default() }).await);
            chain.runtime_ns.push(
                per_run(runs, move |x| async move {
                    rt.execute(chain3, x).await.map(|r| r.output).unwrap_or_default()
                })
                .await,
            );
            chain.direct_ns.push(
                per_run(runs, |x| async move {
                    let a = inc(x).await.unwrap_or_default();
                    let b = inc(a).await.unwrap_or_default();
                    inc(b).await.unwrap_or_default()
                })
                .await,
            );
            parallel.runtime_ns.push(
                per_run(runs, move |x| async move {
                    rt.execute(fan3, x).await.map(|r| add3(r.output)).unwrap_or_default()
                })
                .await,
            );
            parallel.direct_ns.push(
                per_run(runs, |x| async move {
                    let joined = futures::future::try_join3(inc(x), inc(x), inc(x)).await;
                    joined.map(add3).unwrap_or_default()
                })
                .await,
            );
        }
        runtime.stop().await?;

        println!("local runtime overhead: median of {samples} batches × {runs} runs, current-thread tokio\n");
        println!("| scenario | am2z per run | direct call | overhead | ratio | target (overhead) | met |");
        println!("|---|---|---|---|---|---|---|");
        for s in &mut scenarios {
            let am2z = median(&mut s.runtime_ns);
            let direct = median(&mut s.direct_ns);
            let overhead = am2z - direct;
            let met = overhead <= s.target.as_nanos() as f64;
            println!(
                "| {} | {:.0} ns | {:.0} ns | {:.0} ns | {:.1}× | ≤ {} µs | {} |",
                s.name,
                am2z,
                direct,
                overhead,
                am2z / direct.max(1.0),
                s.target.as_micros(),
                if met { "yes" } else { "no" },
            );
        }
        Ok(())
    })
}
