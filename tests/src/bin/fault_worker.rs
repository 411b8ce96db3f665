//! The worker process of the fault scenarios (docs/faults.md): a real OS process, so `kill -9`,
//! `kill -STOP` and SIGTERM are real. Configured by the environment (`AM2Z_REDIS_URL`,
//! `AM2Z_QUEUE_PREFIX`, `AM2Z_WORKER_CONCURRENCY` and the harness's `AM2Z_FAULT_*` knobs, see
//! `am2z_tests::fault::worker`). It prints `ready <pid>` once serving, `counts <committed>
//! <refused>` whenever those change, and `exit <committed> <refused>` after draining on
//! SIGTERM (or when its stdin closes: the parent is gone).
//!
//! Role `awaiter` (`AM2Z_FAULT_ROLE=awaiter`) serves nothing: it waits for the runs in
//! `AM2Z_FAULT_HANDLES` and prints `done <id> <pid>` or `failed <error>` for each.
#![allow(clippy::print_stdout)] // the parent reads this process's stdout

use std::io::Write;
use std::time::Duration;

use am2z::{Processor as _, RedisRuntime, RunHandle, Runtime};
use am2z_tests::fault::work::{
    AbortAlways, Chain3, Fan3, FanOut, GateChain, PairedMap, ParkChain, PoisonChain, PoisonFan,
    SlowMiddle, SpreadMap, StepA, StepB, StepC, TrackedMap, UrgentLater, UrgentSoon, Versioned,
    VersionedOld, Work,
};
use am2z_tests::fault::worker::{CONTRACT_VAR, HANDLES_VAR, Knobs, ROLE_VAR, SERVES_VAR};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let knobs = Knobs::from_env();
        let config = knobs
            .config("redis://127.0.0.1:6379", "unset")
            .with_env()
            .expect("the settings");
        match std::env::var(ROLE_VAR).as_deref() {
            Ok("awaiter") => awaiter(RedisRuntime::new(config.worker(false))).await,
            _ => worker(RedisRuntime::new(config), &knobs).await,
        }
    });
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn worker(runtime: RedisRuntime, knobs: &Knobs) {
    // `AM2Z_FAULT_SERVES=a,b`: serve only the processors so named (a deploy of another
    // service on the same prefix); unset: serve everything.
    let only: Option<Vec<String>> = std::env::var(SERVES_VAR)
        .ok()
        .map(|names| names.split(',').map(str::to_owned).collect());
    macro_rules! serve {
        ($($processor:expr),+ $(,)?) => {
            $(
                if only.as_ref().is_none_or(|names| names.iter().any(|n| n == $processor.name())) {
                    runtime.serve($processor);
                }
            )+
        };
    }
    serve!(
        StepA,
        StepB,
        StepC,
        Chain3,
        FanOut,
        AbortAlways,
        SlowMiddle,
        Fan3,
        SpreadMap,
        PairedMap,
        GateChain,
        TrackedMap,
        PoisonChain,
        PoisonFan,
        ParkChain,
        UrgentSoon,
        UrgentLater,
    );
    if std::env::var(CONTRACT_VAR).is_ok_and(|c| c == "old") {
        serve!(VersionedOld);
    } else {
        serve!(Versioned);
    }
    // Redis may not be up yet (or be restarting): a supervised worker waits for it.
    while let Err(error) = runtime.start().await {
        eprintln!("fault worker: start failed ({error}); retrying");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(&format!("ready {}", std::process::id()));
    let reporter = {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let mut last = (0, 0);
            loop {
                let now = (runtime.committed_runs(), runtime.refused_commits());
                if now != last {
                    say(&format!("counts {} {}", now.0, now.1));
                    last = now;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
            line.clear();
        }
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = stdin_closed => {}
    }
    if let Err(error) = runtime.drain(knobs.drain).await {
        eprintln!("fault worker: drain failed ({error})");
    }
    reporter.abort();
    say(&format!(
        "exit {} {}",
        runtime.committed_runs(),
        runtime.refused_commits()
    ));
    std::process::exit(0);
}

async fn awaiter(runtime: RedisRuntime) {
    runtime.start().await.expect("the awaiter starts");
    let handles: Vec<RunHandle> =
        serde_json::from_str(&std::env::var(HANDLES_VAR).expect("handles"))
            .expect("handles decode");
    say(&format!("ready {}", std::process::id()));
    for handle in handles {
        match runtime
            .wait::<Work>(&handle, Some(Duration::from_secs(30)))
            .await
        {
            Ok(result) => say(&format!("done {} {}", result.output.id, result.output.pid)),
            Err(failure) => say(&format!("failed {}", failure.error)),
        }
    }
    let _ = runtime.stop().await;
}
