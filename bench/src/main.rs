//! The am2z benchmark suite: the peer scenarios on the Redis runtime, printed as
//! `RESULT` lines in the peer scripts' format (`bench/run.sh` runs this, the BullMQ peer and
//! `redis-benchmark` against one scratch Redis and writes `BENCHMARKS.md`).
//!
//! ```text
//! cargo run --release -p am2z-bench -- --quick                  # smoke run (CI): tiny counts
//! cargo run --release -p am2z-bench -- --redis redis://127.0.0.1:6390   # full figures
//! cargo run --release -p am2z-bench -- --redis <url> --profile  # the pass a profile covers
//! cargo run --release -p am2z-bench -- --only throughput --reps 1 # one round of a scenario
//! cargo run --release -p am2z-bench -- --only throughput --concurrency 50 # one concurrency
//! cargo run --release -p am2z-bench -- --only fanout10k_join --reps 1 # one latency scenario
//! am2z-bench worker <url> <prefix> <concurrency> [progress]     # a worker process (spawned)
//! ```
//!
//! The Redis URL defaults to `AM2Z_REDIS_URL`, then `REDIS_URL`, then
//! `redis://127.0.0.1:6379`. The bench never flushes: every scenario works under a key
//! prefix of its own and stops its sessions at the end, so it is safe on a shared Redis
//! (its counters are then shared too: figures are meaningful only on a Redis of its own).
//! Worker processes are this binary's `worker` subcommand; the bench stops each one it
//! spawned by closing its stdin, and kills it by its pid if it lingers.

mod footprint;
mod latency;
mod observe;
mod report;
mod throughput;
mod worker;
mod workflows;

use am2z::{Error, RedisConfig, RedisRuntime, Runtime};

use crate::observe::Observer;
use crate::report::note;
use crate::worker::KEY_TTL;
use crate::workflows::serve_all;

/// Counts for one invocation (quick or full).
pub(crate) struct Settings {
    pub(crate) url: String,
    /// Repetitions of each latency scenario (each yields its own p50/p99).
    pub(crate) reps: usize,
    /// Sequential one-step runs per rep (BullMQ peer: `LAT_N` 1000).
    pub(crate) lat_n: u64,
    /// Sequential chains / parallels per rep (BullMQ peer: `CHAIN_N` / `FLOW_N` 300).
    pub(crate) chain_n: u64,
    /// Sessions per rep (BullMQ peer: `SESS_N` 30).
    pub(crate) sess_n: u64,
    /// Children of the fan-out.
    pub(crate) fanout_children: u64,
    /// Fan-out runs per rep.
    pub(crate) fanout_runs: u64,
    /// Runs per throughput pass (BullMQ peer: `N` 20 000).
    pub(crate) tp_n: u64,
    /// Passes per throughput setup (BullMQ peer: 3).
    pub(crate) tp_reps: usize,
    /// Worker concurrencies (BullMQ peer: `CONC` 1,10,50).
    pub(crate) concurrency: Vec<usize>,
    /// Chains of 5 queued for the chain-under-load pass (5 steps each).
    pub(crate) chain_load_n: u64,
    /// Idle sessions for the memory and connection figures.
    pub(crate) idle_sessions: u64,
    /// The parts and latency scenarios `--only` named (`None`: all of them).
    only: Option<Vec<String>>,
    /// Makes key prefixes unique to this invocation.
    tag: String,
}

impl Settings {
    fn new(url: String, quick: bool) -> Self {
        let tag = format!("am2z-bench-{}", std::process::id());
        if quick {
            Settings {
                url,
                reps: 1,
                lat_n: 50,
                chain_n: 20,
                sess_n: 5,
                fanout_children: 1_000,
                fanout_runs: 1,
                tp_n: 300,
                tp_reps: 1,
                concurrency: vec![1, 10, 50],
                chain_load_n: 60,
                idle_sessions: 100,
                only: None,
                tag,
            }
        } else {
            Settings {
                url,
                reps: 5,
                lat_n: 1_000,
                chain_n: 300,
                sess_n: 30,
                fanout_children: 10_000,
                fanout_runs: 2,
                tp_n: 20_000,
                tp_reps: 3,
                concurrency: vec![1, 10, 50],
                chain_load_n: 4_000,
                idle_sessions: 10_000,
                only: None,
                tag,
            }
        }
    }

    /// Whether `--only` asked for `part` (`latency`, `throughput`, `idle`), or for none.
    pub(crate) fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|p| p == part))
    }

    /// Whether the latency scenario `name` runs: `--only latency` (or no `--only`) runs them
    /// all, `--only <name>` that one (`--only fanout10k_join`).
    pub(crate) fn wants_latency(&self, name: &str) -> bool {
        self.wants("latency") || (self.only.is_some() && self.wants(name))
    }

    /// A key prefix for one scenario of this invocation.
    pub(crate) fn prefix(&self, scenario: &str) -> String {
        format!("{}-{scenario}", self.tag)
    }

    /// A started runtime on `prefix`; a worker serving every bench processor unless
    /// `worker` is false (a client only: it submits and awaits).
    pub(crate) async fn runtime(&self, prefix: &str, worker: bool) -> Result<RedisRuntime, Error> {
        let runtime = RedisRuntime::new(
            RedisConfig::new(&self.url)
                .prefix(prefix)
                .worker(worker)
                .step_jobs(step_jobs())
                .result_ttl(KEY_TTL)
                .session_ttl(KEY_TTL),
        );
        if worker {
            serve_all(&runtime);
        }
        runtime.start().await?;
        Ok(runtime)
    }
}

fn usage() -> Error {
    Error::configuration(
        "usage: am2z-bench [--quick] [--redis <url>] [--only latency,throughput,idle,<latency scenario>] \
         [--profile] [--reps <n>] [--runs <n>] [--concurrency <c,...>] | am2z-bench worker <url> <prefix> <concurrency> [progress]",
    )
}

/// Whether runs go one job per step (`AM2Z_STEP_JOBS=0`: one job per run, for A/B runs).
pub(crate) fn step_jobs() -> bool {
    std::env::var("AM2Z_STEP_JOBS").map_or(true, |v| v.trim() != "0")
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::from)?;
    if args.first().map(String::as_str) == Some("worker") {
        let (url, prefix, concurrency, progress) = match args.as_slice() {
            [_, url, prefix, concurrency] => (url, prefix, concurrency, false),
            [_, url, prefix, concurrency, p] if p == "progress" => (url, prefix, concurrency, true),
            _ => return Err(usage()),
        };
        let concurrency = concurrency.parse().map_err(|_| usage())?;
        return tokio.block_on(worker::serve(url, prefix, concurrency, progress));
    }
    let mut quick = false;
    let mut url = std::env::var("AM2Z_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let mut only: Option<Vec<String>> = None;
    let mut profile = false;
    let mut runs: Option<u64> = None;
    let mut reps: Option<usize> = None;
    let mut concurrency: Option<Vec<usize>> = None;
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--profile" => profile = true,
            "--reps" => {
                let n = rest.next().ok_or_else(usage)?;
                reps = Some(n.parse().map_err(|_| usage())?);
            }
            "--runs" => {
                let n = rest.next().ok_or_else(usage)?;
                runs = Some(n.parse().map_err(|_| usage())?);
            }
            "--redis" => url = rest.next().ok_or_else(usage)?,
            "--concurrency" => {
                let list = rest.next().ok_or_else(usage)?;
                let parsed: Result<Vec<usize>, _> =
                    list.split(',').map(|c| c.trim().parse::<usize>()).collect();
                match parsed {
                    Ok(list) if !list.is_empty() && !list.contains(&0) => concurrency = Some(list),
                    _ => return Err(usage()),
                }
            }
            "--only" => {
                let list = rest.next().ok_or_else(usage)?;
                only = Some(list.split(',').map(str::to_owned).collect());
            }
            _ => return Err(usage()),
        }
    }
    let mut settings = Settings::new(url, quick);
    settings.only = only;
    if let Some(reps) = reps {
        settings.reps = reps.max(1);
        settings.tp_reps = reps.max(1);
    }
    if let Some(concurrency) = concurrency {
        settings.concurrency = concurrency;
    }
    if let Some(runs) = runs {
        settings.tp_n = runs;
        settings.chain_load_n = runs.div_ceil(5);
    }
    tokio.block_on(async {
        let mut observer = Observer::connect(&settings.url).await?;
        note(&format!(
            "am2z-bench {} quick={quick} reps={} lat_n={} chain_n={} tp_n={} tp_reps={} \
             chain_load_n={} idle_sessions={} step_jobs={}",
            env!("CARGO_PKG_VERSION"),
            settings.reps,
            settings.lat_n,
            settings.chain_n,
            settings.tp_n,
            settings.tp_reps,
            settings.chain_load_n,
            settings.idle_sessions,
            step_jobs(),
        ));
        if profile {
            throughput::profile(&settings, &mut observer).await?;
            note("am2z-bench done");
            return Ok(());
        }
        latency::run(&settings, &mut observer).await?;
        if settings.wants("throughput") {
            throughput::run(&settings, &mut observer).await?;
        }
        if settings.wants("idle") {
            footprint::run(&settings, &mut observer).await?;
        }
        note("am2z-bench done");
        Ok(())
    })
}
