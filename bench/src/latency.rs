//! Submit → outcome latencies, one run at a time, with the worker in the bench process (as
//! the BullMQ peer keeps its Worker, Queue and QueueEvents in one Node process), plus the
//! one-step run against a worker in another process.

use std::time::Instant;

use am2z::{Error, Executes, RedisRuntime, Runtime, SessionId};

use crate::Settings;
use crate::observe::Observer;
use crate::report::{commands, p50_p99, result};
use crate::worker::WorkerProcess;
use crate::workflows::{Chain5, FanOut, Noop, Parallel3};

/// Runs before each scenario's samples, not counted.
const WARM_UP: u64 = 20;

/// Checks an output, so a smoke run fails if a scenario stops doing its work.
fn expect(what: &str, got: u64, want: u64) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(Error::validation(
            what,
            format!("returned {got}, expected {want}"),
        ))
    }
}

/// One kind of run, measured alone.
#[derive(Clone, Copy)]
enum Scenario {
    OneStep,
    Chain5,
    Parallel3,
    FanOut,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::OneStep => "one_step",
            Scenario::Chain5 => "chain5",
            Scenario::Parallel3 => "parallel3_join",
            Scenario::FanOut => "fanout10k_join",
        }
    }

    /// Steps a run executes (for per-step figures).
    fn steps(self, children: u64) -> u64 {
        match self {
            Scenario::OneStep => 1,
            Scenario::Chain5 => 5,
            Scenario::Parallel3 => 4,
            Scenario::FanOut => children + 1,
        }
    }

    async fn once(
        self,
        runtime: &RedisRuntime,
        session: &SessionId,
        x: u64,
        children: u64,
    ) -> Result<(), Error> {
        match self {
            Scenario::OneStep => {
                let out = runtime.execute_in_session(session, &Noop, x).await?;
                expect("noop", out.output, x)
            }
            Scenario::Chain5 => {
                let out = runtime.execute_in_session(session, &Chain5, x).await?;
                expect("chain of 5", out.output, x + 5)
            }
            Scenario::Parallel3 => {
                let out = runtime.execute_in_session(session, &Parallel3, x).await?;
                expect("parallel of 3", out.output, 3 * x + 3)
            }
            Scenario::FanOut => {
                let items = (0..children).collect();
                let out = runtime.execute_in_session(session, &FanOut, items).await?;
                expect("fan-out", out.output, children)
            }
        }
    }
}

/// `samples` sequential runs of `scenario` per rep: p50 and p99 per rep, and Redis CPU and
/// commands per step over all reps.
async fn measure(
    settings: &Settings,
    observer: &mut Observer,
    runtime: &RedisRuntime,
    label: &str,
    scenario: Scenario,
    samples: u64,
) -> Result<(), Error> {
    let session = SessionId::new(label)?;
    let children = settings.fanout_children;
    for x in 0..WARM_UP.min(samples) {
        scenario.once(runtime, &session, x, children).await?;
    }
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    let before = observer.counters().await?;
    for _ in 0..settings.reps {
        let mut lat = Vec::with_capacity(samples as usize);
        for x in 0..samples {
            let begin = Instant::now();
            scenario.once(runtime, &session, x, children).await?;
            lat.push(begin.elapsed());
        }
        let (p50, p99) = p50_p99(&lat);
        p50s.push(p50);
        p99s.push(p99);
    }
    let after = observer.counters().await?;
    result(&format!("{label}.p50"), "ms", &p50s);
    result(&format!("{label}.p99"), "ms", &p99s);
    let steps = (settings.reps as u64 * samples * scenario.steps(children)) as f64;
    let delta = before.delta(&after);
    result(
        &format!("{label}.redis_cpu_per_step"),
        "us",
        &[delta.cpu_seconds * 1e6 / steps],
    );
    result(
        &format!("{label}.redis_cmds_per_step"),
        "cmds",
        &[delta.calls() as f64 / steps],
    );
    result(
        &format!("{label}.script_calls_per_step"),
        "calls",
        &[delta.script_calls() as f64 / steps],
    );
    commands(label, &delta, steps);
    runtime.stop_session(&session).await
}

/// Every latency scenario `--only` asks for (all by default).
pub(crate) async fn run(settings: &Settings, observer: &mut Observer) -> Result<(), Error> {
    let url = &settings.url;
    let local = [
        (Scenario::OneStep, settings.lat_n),
        (Scenario::Chain5, settings.chain_n),
        (Scenario::Parallel3, settings.chain_n),
        (Scenario::FanOut, settings.fanout_runs),
    ];
    let wanted: Vec<_> = local
        .into_iter()
        .filter(|(scenario, _)| settings.wants_latency(scenario.name()))
        .collect();
    let sessions = settings.wants_latency("session_run_stop");
    if !wanted.is_empty() || sessions {
        let rt = settings.runtime(&settings.prefix("lat"), true).await?;
        for (scenario, samples) in wanted {
            measure(settings, observer, &rt, scenario.name(), scenario, samples).await?;
        }
        if sessions {
            session(settings, observer, &rt).await?;
        }
        rt.stop_all_sessions().await?;
        rt.stop().await?;
    }
    if !settings.wants_latency("one_step_worker_process") {
        return Ok(());
    }
    // The same one-step run, executed by a worker process at concurrency 1.
    let prefix = settings.prefix("lat-remote");
    let client = settings.runtime(&prefix, false).await?;
    let worker = WorkerProcess::spawn(url, &prefix, 1, false).await?;
    let measured = measure(
        settings,
        observer,
        &client,
        "one_step_worker_process",
        Scenario::OneStep,
        settings.lat_n,
    )
    .await;
    let stopped = worker.stop().await;
    client.stop_all_sessions().await?;
    client.stop().await?;
    measured.and(stopped)
}

/// A new session, one run in it, `stop_session`: p50 and p99 of the whole, per rep, and
/// Redis' CPU and commands per session.
async fn session(
    settings: &Settings,
    observer: &mut Observer,
    runtime: &RedisRuntime,
) -> Result<(), Error> {
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    let before = observer.counters().await?;
    for rep in 0..settings.reps {
        let mut lat = Vec::with_capacity(settings.sess_n as usize);
        for i in 0..settings.sess_n {
            let session = SessionId::new(format!("sess-{rep}-{i}"))?;
            let begin = Instant::now();
            let out = runtime.execute_in_session(&session, &Noop, i).await?;
            runtime.stop_session(&session).await?;
            lat.push(begin.elapsed());
            expect("noop", out.output, i)?;
        }
        let (p50, p99) = p50_p99(&lat);
        p50s.push(p50);
        p99s.push(p99);
    }
    let after = observer.counters().await?;
    result("session_run_stop.p50", "ms", &p50s);
    result("session_run_stop.p99", "ms", &p99s);
    let sessions = (settings.reps as u64 * settings.sess_n) as f64;
    let delta = before.delta(&after);
    result(
        "session_run_stop.redis_cpu_per_session",
        "us",
        &[delta.cpu_seconds * 1e6 / sessions],
    );
    result(
        "session_run_stop.redis_cmds_per_session",
        "cmds",
        &[delta.calls() as f64 / sessions],
    );
    commands("session_run_stop", &delta, sessions);
    Ok(())
}
