//! Throughput under load: the bench queues all the runs first (as the BullMQ peer
//! `addBulk`s its jobs), then spawns worker processes and follows the runs they commit (each
//! reports its count on its stdout: nothing of the bench's reaches Redis while they work).
//!
//! Per setup, over its passes: runs/s, Redis CPU, commands and script calls per run (and per
//! step for the chain of 5), queueing and processing apart and summed, and the worker
//! processes' CPU per run; `CMDSTAT` lines break Redis' side down by command.

use std::time::{Duration, Instant};

use am2z::{Error, RedisRuntime, Runtime, SessionId};
use futures::{StreamExt, TryStreamExt};

use crate::Settings;
use crate::observe::{Delta, Observer};
use crate::report::{commands, note, result};
use crate::worker::WorkerProcess;
use crate::workflows::{Chain5, Noop};

/// Submissions in flight while queueing.
pub(crate) const SUBMIT_IN_FLIGHT: usize = 64;
/// How often the parent looks at the workers' reported counts (no Redis involved).
const POLL: Duration = Duration::from_millis(1);

/// What the runs are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// A no-op processor: one job per run.
    OneStep,
    /// `chain![inc ×5]`: five step jobs per run.
    Chain5,
}

impl Workload {
    fn steps(self) -> u64 {
        match self {
            Workload::OneStep => 1,
            Workload::Chain5 => 5,
        }
    }
}

/// One measured setup.
pub(crate) struct Setup {
    /// `RESULT` name prefix, e.g. `throughput.p1.c50`.
    pub(crate) label: String,
    pub(crate) workload: Workload,
    pub(crate) processes: usize,
    pub(crate) concurrency: usize,
    pub(crate) runs: u64,
    pub(crate) reps: usize,
}

/// What one measured pass yields.
struct Pass {
    first_to_last: f64,
    start_to_last: f64,
    submit_rate: f64,
    submitted: Delta,
    processed: Delta,
    /// CPU of the worker processes (start-up included), seconds.
    worker_cpu: f64,
}

/// Which part of a pass.
#[derive(Clone, Copy)]
enum Phase {
    /// Queueing the runs.
    Submit,
    /// The workers' start, claims, execution and commits.
    Processing,
    /// Both.
    Both,
}

impl Phase {
    fn of(self, pass: &Pass) -> Delta {
        match self {
            Phase::Submit => pass.submitted.clone(),
            Phase::Processing => pass.processed.clone(),
            Phase::Both => {
                let mut both = pass.submitted.clone();
                both.add(&pass.processed);
                both
            }
        }
    }
}

/// Queues `runs` no-op runs in one session; returns when all are queued.
pub(crate) async fn submit_all(
    client: &RedisRuntime,
    session: &SessionId,
    workload: Workload,
    runs: u64,
) -> Result<(), Error> {
    futures::stream::iter(0..runs)
        .map(|x| async move {
            match workload {
                Workload::OneStep => client.submit(session, &Noop, x).await.map(drop),
                Workload::Chain5 => client.submit(session, &Chain5, x).await.map(drop),
            }
        })
        .buffer_unordered(SUBMIT_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// Waits until `workers` together committed `runs` runs: the times of the first and of the
/// last completion seen.
pub(crate) async fn follow(
    workers: &[WorkerProcess],
    runs: u64,
    limit: Duration,
) -> Result<(Instant, Instant), Error> {
    let begin = Instant::now();
    let mut first = None;
    loop {
        let done: u64 = workers.iter().map(WorkerProcess::done).sum();
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some(now);
        }
        if done >= runs {
            return Ok((first.unwrap_or(now), now));
        }
        if now - begin > limit {
            return Err(Error::unavailable(
                "throughput",
                format!("{done} of {runs} runs completed in {limit:?}"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn pass(
    settings: &Settings,
    observer: &mut Observer,
    setup: &Setup,
    rep: usize,
) -> Result<Pass, Error> {
    let runs = setup.runs;
    // A prefix per pass, so no pass sees another's leftovers.
    let prefix = settings.prefix(&format!("{}-{rep}", setup.label));
    let client = settings.runtime(&prefix, false).await?;
    let session = SessionId::new("throughput")?;
    let c0 = observer.counters().await?;
    let submit_begin = Instant::now();
    submit_all(&client, &session, setup.workload, runs).await?;
    let submit_rate = runs as f64 / submit_begin.elapsed().as_secs_f64();
    let c1 = observer.counters().await?;

    let mut workers = Vec::with_capacity(setup.processes);
    let start = Instant::now();
    for _ in 0..setup.processes {
        let worker = WorkerProcess::spawn(&settings.url, &prefix, setup.concurrency, true).await?;
        workers.push(worker);
    }
    let followed = follow(&workers, runs, Duration::from_secs(300)).await;
    let c2 = observer.counters().await?;
    let worker_cpu: f64 = workers.iter().map(WorkerProcess::cpu_seconds).sum();
    for worker in workers {
        worker.stop().await?;
    }
    let (first, last) = followed?;
    client.stop_session(&session).await?;
    client.stop().await?;
    Ok(Pass {
        first_to_last: (runs - 1) as f64 / (last - first).as_secs_f64().max(1e-9),
        start_to_last: runs as f64 / (last - start).as_secs_f64(),
        submit_rate,
        submitted: c0.delta(&c1),
        processed: c1.delta(&c2),
        worker_cpu,
    })
}

/// Runs `setup`'s passes and prints its figures.
pub(crate) async fn measure(
    settings: &Settings,
    observer: &mut Observer,
    setup: &Setup,
) -> Result<(), Error> {
    let mut passes = Vec::new();
    for rep in 0..setup.reps {
        passes.push(pass(settings, observer, setup, rep).await?);
    }
    let label = &setup.label;
    let runs = setup.runs as f64;
    let column = |f: &dyn Fn(&Pass) -> f64| passes.iter().map(f).collect::<Vec<_>>();
    result(
        &format!("{label}.first_to_last"),
        "runs/s",
        &column(&|p| p.first_to_last),
    );
    result(
        &format!("{label}.worker_start_to_last"),
        "runs/s",
        &column(&|p| p.start_to_last),
    );
    result(
        &format!("{label}.submit_rate"),
        "runs/s",
        &column(&|p| p.submit_rate),
    );
    let steps = setup.workload.steps() as f64;
    let units: &[(&str, f64)] = if setup.workload.steps() > 1 {
        &[("run", 1.0), ("step", steps)]
    } else {
        &[("run", 1.0)]
    };
    for &(unit, per) in units {
        for (suffix, phase) in [
            ("_submit", Phase::Submit),
            ("_processing", Phase::Processing),
            ("", Phase::Both),
        ] {
            let of = |p: &Pass| phase.of(p);
            let name = |what: &str| format!("{label}.{what}_per_{unit}{suffix}");
            let div = runs * per;
            result(
                &name("redis_cpu"),
                "us",
                &column(&|p| of(p).cpu_seconds * 1e6 / div),
            );
            result(
                &name("redis_cmds"),
                "cmds",
                &column(&|p| of(p).calls() as f64 / div),
            );
            result(
                &name("script_calls"),
                "calls",
                &column(&|p| of(p).script_calls() as f64 / div),
            );
        }
    }
    result(
        &format!("{label}.worker_cpu_per_run"),
        "us",
        &column(&|p| p.worker_cpu * 1e6 / runs),
    );
    // By command, over all passes.
    let total_runs = runs * passes.len() as f64;
    let (mut submitted, mut processed) = (Delta::default(), Delta::default());
    for p in &passes {
        submitted.add(&p.submitted);
        processed.add(&p.processed);
    }
    commands(&format!("{label}.submit"), &submitted, total_runs);
    commands(&format!("{label}.processing"), &processed, total_runs);
    let mut both = submitted;
    both.add(&processed);
    commands(label, &both, total_runs);
    Ok(())
}

/// One worker process at each concurrency, two at the last one, and the chain of 5 under
/// load at the last one.
pub(crate) async fn run(settings: &Settings, observer: &mut Observer) -> Result<(), Error> {
    let last = settings.concurrency.last().copied().unwrap_or(50);
    let mut setups: Vec<Setup> = settings
        .concurrency
        .iter()
        .map(|&c| Setup {
            label: format!("throughput.p1.c{c}"),
            workload: Workload::OneStep,
            processes: 1,
            concurrency: c,
            runs: settings.tp_n,
            reps: settings.tp_reps,
        })
        .collect();
    setups.push(Setup {
        label: format!("throughput.p2.c{last}"),
        workload: Workload::OneStep,
        processes: 2,
        concurrency: last,
        runs: settings.tp_n,
        reps: settings.tp_reps,
    });
    setups.push(chain_load(settings, last));
    for setup in &setups {
        measure(settings, observer, setup).await?;
    }
    Ok(())
}

/// The chain of 5 under load: `chain_load_n` chains queued, one worker process.
fn chain_load(settings: &Settings, concurrency: usize) -> Setup {
    Setup {
        label: format!("chain5_load.p1.c{concurrency}"),
        workload: Workload::Chain5,
        processes: 1,
        concurrency,
        runs: settings.chain_load_n,
        reps: settings.tp_reps,
    }
}

/// `--profile`: the one-step throughput pass at the last concurrency, once (the one a
/// profile of the worker and of Redis is taken over: `bench/run.sh --profile`).
pub(crate) async fn profile(settings: &Settings, observer: &mut Observer) -> Result<(), Error> {
    let c = settings.concurrency.last().copied().unwrap_or(50);
    note(&format!(
        "profile pass: {} one-step runs queued, then one worker process at concurrency {c}",
        settings.tp_n
    ));
    let setup = Setup {
        label: format!("profile.p1.c{c}"),
        workload: Workload::OneStep,
        processes: 1,
        concurrency: c,
        runs: settings.tp_n,
        reps: 1,
    };
    measure(settings, observer, &setup).await
}
