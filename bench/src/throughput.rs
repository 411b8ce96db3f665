//! Throughput of no-op one-step runs: the bench queues them all (as the BullMQ peer
//! `addBulk`s its jobs first), then spawns worker processes and watches the cluster-wide
//! completed count until every run is done.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use am2z::{Error, RedisRuntime, Runtime, SessionId};
use futures::{StreamExt, TryStreamExt};

use crate::Settings;
use crate::observe::{Counters, Observer};
use crate::report::{commands, result};
use crate::worker::WorkerProcess;
use crate::workflows::Noop;

/// Submissions in flight while queueing.
pub(crate) const SUBMIT_IN_FLIGHT: usize = 64;
/// How often the completed count is read (one `HGETALL` each, left out of the command counts).
const POLL: Duration = Duration::from_millis(2);

/// What one measured pass yields.
struct Pass {
    first_to_last: f64,
    start_to_last: f64,
    submit_rate: f64,
    cpu_submit_us: f64,
    cpu_process_us: f64,
    cmds_submit: f64,
    cmds_process: f64,
    /// CPU of the worker processes (start-up included) per run.
    worker_cpu_us: f64,
}

/// Queues `runs` no-op runs in one session; returns when all are queued.
pub(crate) async fn submit_all(
    client: &RedisRuntime,
    session: &SessionId,
    runs: u64,
) -> Result<(), Error> {
    futures::stream::iter(0..runs)
        .map(|x| async move { client.submit(session, &Noop, x).await.map(drop) })
        .buffer_unordered(SUBMIT_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// Cluster-wide completed `noop` steps under the client's prefix.
pub(crate) async fn completed(client: &RedisRuntime) -> Result<u64, Error> {
    Ok(client
        .queue_stats()
        .await?
        .get("noop")
        .map_or(0, |q| q.completed))
}

/// Redis CPU (µs) and commands per run.
fn per_run(counters: (f64, BTreeMap<String, u64>), runs: u64) -> (f64, f64) {
    let (cpu, calls) = counters;
    let total: u64 = calls.values().sum();
    (cpu * 1e6 / runs as f64, total as f64 / runs as f64)
}

async fn pass(
    settings: &Settings,
    observer: &mut Observer,
    label: &str,
    rep: usize,
    processes: usize,
    concurrency: usize,
) -> Result<Pass, Error> {
    let runs = settings.tp_n;
    // A prefix per pass: the cluster-wide completed count outlives `stop_session`.
    let prefix = settings.prefix(&format!("{label}-{rep}"));
    let client = settings.runtime(&prefix, false).await?;
    let session = SessionId::new("throughput")?;
    let c0 = observer.counters().await?;
    let submit_begin = Instant::now();
    submit_all(&client, &session, runs).await?;
    let submit_rate = runs as f64 / submit_begin.elapsed().as_secs_f64();
    let c1 = observer.counters().await?;

    let mut workers = Vec::with_capacity(processes);
    let start = Instant::now();
    for _ in 0..processes {
        workers.push(WorkerProcess::spawn(&settings.url, &prefix, concurrency).await?);
    }
    let (mut first, mut polls) = (None, 0u64);
    let deadline = start + Duration::from_secs(300);
    let last = loop {
        let done = completed(&client).await?;
        polls += 1;
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some(now);
        }
        if done >= runs {
            break now;
        }
        if now > deadline {
            return Err(Error::unavailable(
                "throughput",
                format!("{done} of {runs} runs completed in 300 s"),
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    let c2: Counters = observer.counters().await?;
    let worker_cpu: f64 = workers.iter().map(WorkerProcess::cpu_seconds).sum();
    for worker in workers {
        worker.stop().await?;
    }
    client.stop_session(&session).await?;
    client.stop().await?;

    let submitted = c0.delta(&c1);
    let mut processed = c1.delta(&c2);
    if let Some(hgetall) = processed.1.get_mut("hgetall") {
        *hgetall = hgetall.saturating_sub(polls); // the bench's own polls
    }
    commands(&format!("{label}.submit"), &submitted.1, runs as f64);
    commands(&format!("{label}.processing"), &processed.1, runs as f64);
    let (cpu_submit_us, cmds_submit) = per_run(submitted, runs);
    let (cpu_process_us, cmds_process) = per_run(processed, runs);
    let first = first.unwrap_or(start);
    Ok(Pass {
        first_to_last: (runs - 1) as f64 / (last - first).as_secs_f64().max(1e-9),
        start_to_last: runs as f64 / (last - start).as_secs_f64(),
        submit_rate,
        cpu_submit_us,
        cpu_process_us,
        cmds_submit,
        cmds_process,
        worker_cpu_us: worker_cpu * 1e6 / runs as f64,
    })
}

/// One worker process at each concurrency, then two worker processes at the last one.
pub(crate) async fn run(settings: &Settings, observer: &mut Observer) -> Result<(), Error> {
    let last = settings.concurrency.last().copied().unwrap_or(50);
    let mut setups: Vec<(String, usize, usize)> = settings
        .concurrency
        .iter()
        .map(|&c| (format!("throughput.p1.c{c}"), 1, c))
        .collect();
    setups.push((format!("throughput.p2.c{last}"), 2, last));
    let mut submit = (Vec::new(), Vec::new(), Vec::new());
    for (label, processes, concurrency) in setups {
        let mut passes = Vec::new();
        for rep in 0..settings.tp_reps {
            passes.push(pass(settings, observer, &label, rep, processes, concurrency).await?);
        }
        let column = |f: fn(&Pass) -> f64| passes.iter().map(f).collect::<Vec<_>>();
        result(
            &format!("{label}.first_to_last"),
            "runs/s",
            &column(|p| p.first_to_last),
        );
        result(
            &format!("{label}.worker_start_to_last"),
            "runs/s",
            &column(|p| p.start_to_last),
        );
        result(
            &format!("{label}.redis_cpu_per_run_processing"),
            "us",
            &column(|p| p.cpu_process_us),
        );
        result(
            &format!("{label}.redis_cmds_per_run_processing"),
            "cmds",
            &column(|p| p.cmds_process),
        );
        result(
            &format!("{label}.worker_cpu_per_run"),
            "us",
            &column(|p| p.worker_cpu_us),
        );
        submit.0.extend(column(|p| p.submit_rate));
        submit.1.extend(column(|p| p.cpu_submit_us));
        submit.2.extend(column(|p| p.cmds_submit));
    }
    let passes = (settings.concurrency.len() + 1) * settings.tp_reps;
    result(
        "throughput.runs_total",
        "runs",
        &[(passes as u64 * settings.tp_n) as f64],
    );
    result("submit.rate", "runs/s", &submit.0);
    result("submit.redis_cpu_per_run", "us", &submit.1);
    result("submit.redis_cmds_per_run", "cmds", &submit.2);
    Ok(())
}
