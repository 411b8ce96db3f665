//! Inspection (`am2z::runtime::Inspect`) on the Redis runtime, against the Redis on
//! 127.0.0.1:6379 (or `AM2Z_TEST_REDIS_URL`): listings paged through 100 000 runs, run
//! details, retry links (and two retries racing), a cancel reaching the step that runs it,
//! and the worker registry (a worker in another process included); and the inspection suite
//! (`inspect_suite!`) every runtime passes. Each test has its own key prefix and removes its
//! keys.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use am2z::runtime::{
    CancelOutcome, Inspect, PageRequest, RetryOutcome, RunFilter, RunState, Shown, StepState,
};
use am2z::{Error, Executes, RedisConfig, RedisRuntime, RunId, Runtime, SessionId, processor};
use am2z_tests::fault::{redis_cli, scan_keys};
use am2z_tests::flows::{Arith, NegateThenReject, ShoutSecret};
use am2z_tests::layout::Layout;
use am2z_tests::probe;
use am2z_tests::processors::{AddOne, AlwaysFails, KeepsSecret, Negate, SleepMs};
use am2z_tests::suite::session;
use futures::StreamExt;

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn config(prefix: &str) -> RedisConfig {
    RedisConfig::new(redis_url())
        .prefix(prefix)
        .worker_concurrency(16)
        .idle_poll(Duration::from_millis(50))
        .session_ttl(Duration::from_secs(300))
        .result_ttl(Duration::from_secs(300))
        // The seeded runs of a processor nobody serves must stay queued, however slow the test.
        .unserved_grace(None)
}

fn prefix() -> String {
    format!("am2z-inspect-{}", RunId::generate())
}

/// A started worker serving the test processors, and a started client (not a worker).
async fn pair(prefix: &str) -> (RedisRuntime, RedisRuntime) {
    let worker = RedisRuntime::new(config(prefix));
    worker.serve(AddOne);
    worker.serve(AlwaysFails);
    worker.serve(SleepMs);
    worker.serve(Arith);
    worker.serve(NegateThenReject);
    worker.start().await.expect("the worker starts");
    let client = RedisRuntime::new(config(prefix).worker(false));
    client.register(AddOne);
    client.register(AlwaysFails);
    client.register(SleepMs);
    client.register(Arith);
    client.register(NegateThenReject);
    client.register(Negate);
    client.start().await.expect("the client starts");
    (worker, client)
}

async fn finish(prefix: &str, sessions: &[&SessionId], runtimes: &[&RedisRuntime]) {
    for session in sessions {
        runtimes[0]
            .stop_session(session)
            .await
            .expect("stop_session");
    }
    for runtime in runtimes {
        runtime.stop().await.expect("stops");
    }
    for key in scan_keys(&redis_url(), &format!("{prefix}:*")) {
        redis_cli(&redis_url(), &["DEL", &key]);
    }
}

/// Polls `check` every 20 ms until it holds (at most `limit`).
async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 100 000 queued runs beside completed, failed and running ones: every listing pages
/// through them newest first, each run once, in its state; page latencies printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_100_000_runs_pages_through_by_state() {
    let prefix = prefix();
    let (worker, client) = pair(&prefix).await;
    let s = session("inspect-100k");

    for x in 0..30 {
        client
            .execute_in_session(&s, &AddOne, x)
            .await
            .expect("completes");
    }
    let mut told = Vec::new();
    for x in 0..20 {
        let failed = client
            .execute_in_session(&s, &AlwaysFails, x)
            .await
            .expect_err("fails");
        told.push(failed.attempts);
    }
    let running = client
        .submit(&s, &SleepMs, 600_000)
        .await
        .expect("submitted");
    until("the step to start", Duration::from_secs(30), async || {
        !probe::seen_with(s.as_str(), "start:").is_empty()
    })
    .await;

    // 100 000 runs of a processor no worker serves: they stay queued.
    let seeded = Instant::now();
    let submits = futures::stream::iter(0..100_000_i64)
        .map(|x| {
            let client = client.clone();
            let s = s.clone();
            async move { client.submit(&s, &Negate, x).await.map(|h| h.run_id) }
        })
        .buffer_unordered(4_096);
    let queued: Vec<RunId> = submits
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every submission is accepted");
    println!("seeded 100 000 runs in {:?}", seeded.elapsed());
    let queued: HashSet<RunId> = queued.into_iter().collect();

    // Queued, 500 a page.
    let mut seen = HashSet::new();
    let mut latencies = Vec::new();
    let mut page = PageRequest::first(500);
    let mut last_created = None;
    loop {
        let asked = Instant::now();
        let got = client
            .runs(&s, &RunFilter::state(RunState::Queued), page.clone())
            .await
            .expect("a page");
        latencies.push(asked.elapsed());
        for run in &got.items {
            assert_eq!(run.state, RunState::Queued);
            assert_eq!(run.processor, "negate");
            assert!(queued.contains(&run.run), "only the seeded runs are queued");
            assert!(seen.insert(run.run), "{} listed twice", run.run);
            if let Some(last) = last_created {
                assert!(run.created_at <= last, "newest first");
            }
            last_created = Some(run.created_at);
        }
        match got.next {
            Some(next) => page = PageRequest::after(next, 500),
            None => break,
        }
    }
    assert_eq!(seen.len(), 100_000);
    latencies.sort();
    println!(
        "queued: {} pages of 500; latency min {:?}, median {:?}, p95 {:?}, max {:?}",
        latencies.len(),
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 95 / 100],
        latencies[latencies.len() - 1]
    );

    // Active: one run among 100 001 live ones, found by resuming bounded scans.
    let (active, calls, took) = collect(&client, &s, RunFilter::state(RunState::Active)).await;
    println!("active: {calls} calls, {took:?} in all");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].run, running.run_id);
    assert_eq!(active[0].processor, "sleep_ms");
    let (delayed, _, _) = collect(&client, &s, RunFilter::state(RunState::Delayed)).await;
    assert!(delayed.is_empty());

    let (completed, _, _) = collect(&client, &s, RunFilter::state(RunState::Completed)).await;
    assert_eq!(completed.len(), 30);
    assert!(
        completed
            .iter()
            .all(|r| r.processor == "add_one" && r.ended_at.is_some())
    );
    assert!(completed.windows(2).all(|w| w[0].ended_at >= w[1].ended_at));
    let (failed, _, _) = collect(&client, &s, RunFilter::state(RunState::Failed)).await;
    assert_eq!(failed.len(), 20);
    assert!(
        failed
            .iter()
            .all(|r| r.processor == "always_fails" && r.error.is_some())
    );
    assert!(
        failed
            .iter()
            .all(|r| told.contains(&r.attempts) && r.attempts > 0),
        "the attempts the waiters were told: {told:?}, listed: {:?}",
        failed.iter().map(|r| r.attempts).collect::<Vec<_>>()
    );

    // By processor, every state.
    let only_sleep = RunFilter {
        state: None,
        processor: Some("sleep_ms".to_owned()),
    };
    let (sleeping, calls, _) = collect(&client, &s, only_sleep).await;
    println!("processor filter: {calls} calls");
    assert_eq!(sleeping.len(), 1);

    // Every run: live ones (newest first), then ended ones.
    let first = client
        .runs(&s, &RunFilter::all(), PageRequest::first(3))
        .await
        .expect("a page");
    assert_eq!(first.items.len(), 3);
    assert!(first.items.iter().all(|r| r.state == RunState::Queued));

    let sessions = client
        .sessions(PageRequest::first(10))
        .await
        .expect("sessions");
    let ours = sessions
        .items
        .iter()
        .find(|summary| summary.session == s)
        .expect("the session is listed");
    assert_eq!(ours.live_runs, 100_001);
    assert_eq!(
        (ours.completed, ours.failed, ours.dead_lettered),
        (30, 20, 0)
    );

    // A cursor this runtime did not write is refused.
    let forged = client
        .runs(
            &s,
            &RunFilter::all(),
            PageRequest::after(am2z::runtime::Cursor::new("zz"), 10),
        )
        .await;
    assert!(
        matches!(forged, Err(Error::Validation { .. })),
        "{forged:?}"
    );

    finish(&prefix, &[&s], &[&client, &worker]).await;
}

/// Every page of `filter`, following cursors: the runs, how many calls, how long in all.
async fn collect(
    runtime: &RedisRuntime,
    session: &SessionId,
    filter: RunFilter,
) -> (Vec<am2z::runtime::RunSummary>, usize, Duration) {
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut page = PageRequest::first(100);
    let mut calls = 0;
    loop {
        calls += 1;
        let got = runtime
            .runs(session, &filter, page.clone())
            .await
            .expect("a page");
        runs.extend(got.items);
        match got.next {
            Some(next) => page = PageRequest::after(next, 100),
            None => return (runs, calls, started.elapsed()),
        }
    }
}

/// A run's detail: its plan, steps, input, output, events; a failed chain's error chain and
/// the state its failed step got; no body outlives its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_details_show_plan_steps_values_and_errors() {
    let prefix = prefix();
    let (worker, client) = pair(&prefix).await;
    let s = session("inspect-detail");
    let layout = Layout::new(&redis_url(), &prefix, s.as_str());

    let done = client
        .execute_in_session(&s, &Arith, 5)
        .await
        .expect("completes");
    let detail = client
        .run(&s, done.meta.run_id)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(detail.summary.state, RunState::Completed);
    assert_eq!(detail.summary.processor, Arith.name_of());
    // The input is kept with the outcome (until `result_ttl` trims both).
    assert_eq!(detail.input, Shown::Value(serde_json::json!(5)));
    assert_eq!(detail.output, Shown::Value(serde_json::json!(22)));
    assert!(detail.plan.is_some());
    let names: Vec<&str> = detail.steps.iter().map(|s| s.processor.as_str()).collect();
    assert_eq!(names, ["add_one", "double", "add_ten"]);
    assert!(
        detail
            .steps
            .iter()
            .all(|s| s.state == StepState::Completed && s.attempts == 1),
        "{:?}",
        detail.steps
    );
    assert!(
        detail
            .events
            .iter()
            .all(|e| e.run_id == Some(done.meta.run_id))
    );
    assert!(
        detail.events.windows(2).all(|w| w[0].at <= w[1].at),
        "oldest first"
    );
    assert!(detail.error.is_none());
    // Only the run's entry body is kept: none of its step jobs' bodies outlives it.
    assert_eq!(
        layout.cli(&["HKEYS", &layout.key("bodies")]),
        done.meta.run_id.to_string()
    );

    // A runtime that does not know the processor trusts its submitter's word (no `redact`
    // flag in the entry body): it shows the run's data, but no plan.
    let stranger = RedisRuntime::new(config(&prefix).worker(false));
    stranger.start().await.expect("starts");
    let seen = stranger
        .run(&s, done.meta.run_id)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(seen.summary.state, RunState::Completed);
    assert_eq!(
        (seen.input, seen.output),
        (
            Shown::Value(serde_json::json!(5)),
            Shown::Value(serde_json::json!(22))
        )
    );
    assert!(seen.plan.is_none());
    stranger.stop().await.expect("stops");

    let failed = client
        .execute_in_session(&s, &NegateThenReject, 5)
        .await
        .expect_err("fails at its third step");
    let detail = client
        .run(&s, failed.meta.run_id)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(detail.summary.state, RunState::Failed);
    assert_eq!(detail.input, Shown::Value(serde_json::json!(5)));
    assert_eq!(detail.output, Shown::Unavailable);
    assert_eq!(detail.state, Shown::Value(serde_json::json!(-6)));
    let error = detail.error.expect("an error");
    assert!(matches!(error.error, Error::StepFailed { .. }));
    assert!(error.chain.len() >= 2, "{:?}", error.chain);
    let steps: Vec<StepState> = detail.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        steps,
        [
            StepState::Completed,
            StepState::Completed,
            StepState::Failed
        ]
    );
    // Each run's entry body stays with its outcome; no job outlives its run.
    assert_eq!(layout.cli(&["HLEN", &layout.key("bodies")]), "2");
    assert_eq!(layout.cli(&["HLEN", &layout.key("jobs")]), "0");

    assert!(
        client
            .run(&s, RunId::generate())
            .await
            .expect("read")
            .is_none()
    );
    finish(&prefix, &[&s], &[&client, &worker]).await;
}

/// The name a workflow's runs carry.
trait NameOf {
    fn name_of(&self) -> String;
}

impl<P: am2z::Processor> NameOf for P {
    fn name_of(&self) -> String {
        self.name().to_owned()
    }
}

/// A failed run retried: linked both ways, same processor and input; two retries racing
/// make one run; a retry again answers the same run; live, completed and unknown runs are
/// refused. A failed step run (its input kept past its first step) retries too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_link_both_ways_and_race_to_one_run() {
    let prefix = prefix();
    let (worker, client) = pair(&prefix).await;
    let other = RedisRuntime::new(config(&prefix).worker(false));
    other.register(AlwaysFails);
    other.start().await.expect("starts");
    let s = session("inspect-retry");

    let failed = client
        .execute_in_session(&s, &AlwaysFails, 41)
        .await
        .expect_err("fails");
    let old = failed.meta.run_id;
    let (a, b) = tokio::join!(client.retry_run(&s, old), other.retry_run(&s, old));
    let (a, b) = (a.expect("retried"), b.expect("retried"));
    let new = match (a, b) {
        (RetryOutcome::Retried { run }, RetryOutcome::AlreadyRetried { run: same })
        | (RetryOutcome::AlreadyRetried { run: same }, RetryOutcome::Retried { run }) => {
            assert_eq!(run, same, "both callers name the one new run");
            run
        }
        other => panic!("exactly one retry submits: {other:?}"),
    };
    assert_eq!(
        client.retry_run(&s, old).await.expect("answered"),
        RetryOutcome::AlreadyRetried { run: new }
    );
    until("the retry to fail", Duration::from_secs(30), async || {
        client
            .run(&s, new)
            .await
            .ok()
            .flatten()
            .is_some_and(|d| d.summary.state == RunState::Failed)
    })
    .await;
    let old_detail = client.run(&s, old).await.expect("read").expect("known");
    let new_detail = client.run(&s, new).await.expect("read").expect("known");
    assert_eq!(old_detail.retried_as, Some(new));
    assert_eq!(new_detail.retry_of, Some(old));
    assert_eq!(new_detail.summary.processor, "always_fails");
    assert_eq!(new_detail.input, Shown::Value(serde_json::json!(41)));

    let ok = client
        .execute_in_session(&s, &AddOne, 1)
        .await
        .expect("completes");
    assert!(matches!(
        client.retry_run(&s, ok.meta.run_id).await,
        Err(Error::Validation { .. })
    ));
    assert!(matches!(
        client.retry_run(&s, RunId::generate()).await,
        Err(Error::NotFound { .. })
    ));
    let live = client
        .submit(&s, &SleepMs, 600_000)
        .await
        .expect("submitted");
    assert!(matches!(
        client.retry_run(&s, live.run_id).await,
        Err(Error::Validation { .. })
    ));
    assert_eq!(
        client.cancel_run(&s, live.run_id).await.expect("cancelled"),
        CancelOutcome::Cancelled
    );

    // A step run: its entry input is kept past its first step, for the retry.
    let chain = client
        .execute_in_session(&s, &NegateThenReject, 7)
        .await
        .expect_err("fails");
    retried_chain_fails_again(&client, &client, &s, chain.meta.run_id).await;

    finish(&prefix, &[&s], &[&client, &other, &worker]).await;
}

/// `retrier` retries the failed `NegateThenReject` run `failed` (a step run that failed at its
/// third step); through `waiter`, the new run fails again the same way: the retry went to
/// the workers that have the run's graph, with its kept input.
async fn retried_chain_fails_again(
    retrier: &RedisRuntime,
    waiter: &RedisRuntime,
    s: &SessionId,
    failed: RunId,
) {
    let RetryOutcome::Retried { run } = retrier.retry_run(s, failed).await.expect("retried") else {
        panic!("a first retry submits");
    };
    let handle = am2z::RunHandle {
        session: s.clone(),
        run_id: run,
        processor: NegateThenReject.name_of(),
        epoch: None,
    };
    let again = waiter
        .wait::<i64>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect_err("fails again, the same way");
    assert!(matches!(again.error, Error::StepFailed { position: 2, .. }));
}

/// Whether `fails_until_fixed` answers (a retry after the fix completes).
static FIXED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Fails until [`FIXED`], then adds one.
#[processor]
async fn fails_until_fixed(x: i64) -> Result<i64, Error> {
    if !FIXED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::validation("x", "not fixed yet"));
    }
    Ok(x + 1)
}

/// A runtime that registered nothing (as an operator's tool does): it shows the data of runs
/// whose submitter did not flag them redacted, hides a flagged one's (a redacted processor,
/// a workflow with a redacted step) and, with no kept body to read the flag from, fails
/// closed; and it retries failed runs with what their end kept (whole runs, a step run past
/// its entry job, a cancelled one), which a worker then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_registered_nothing_shows_flagged_data_and_retries() {
    let prefix = prefix();
    let worker = RedisRuntime::new(config(&prefix));
    worker.serve(FailsUntilFixed);
    worker.serve(NegateThenReject);
    worker.serve(KeepsSecret);
    worker.serve(ShoutSecret);
    worker.serve(SleepMs);
    worker.start().await.expect("the worker starts");
    let stranger = RedisRuntime::new(config(&prefix).worker(false));
    stranger.start().await.expect("starts");
    let s = session("inspect-stranger");
    let layout = Layout::new(&redis_url(), &prefix, s.as_str());
    let seen = async |run: RunId| stranger.run(&s, run).await.expect("read").expect("known");

    // Redaction as the submitter said.
    let secret = "hunter2-card-4242";
    let alone = worker
        .execute_in_session(&s, &KeepsSecret, secret.to_owned())
        .await
        .expect("runs");
    let within = worker
        .execute_in_session(&s, &ShoutSecret, secret.to_owned())
        .await
        .expect("runs");
    for run in [alone.meta.run_id, within.meta.run_id] {
        let hidden = seen(run).await;
        assert_eq!(hidden.summary.state, RunState::Completed);
        assert_eq!(
            (&hidden.input, &hidden.output),
            (&Shown::Redacted, &Shown::Redacted)
        );
        let json = serde_json::to_string(&hidden).expect("a detail is JSON");
        assert!(
            !json.contains("hunter2") && !json.contains("HUNTER2"),
            "nothing of the secret shows: {json}"
        );
    }

    // A failed run: its data shown; retried by the stranger, it completes on the worker.
    let failed = worker
        .execute_in_session(&s, &FailsUntilFixed, 20)
        .await
        .expect_err("fails before the fix");
    let old = failed.meta.run_id;
    let detail = seen(old).await;
    assert_eq!(detail.summary.state, RunState::Failed);
    assert_eq!(detail.input, Shown::Value(serde_json::json!(20)));
    assert!(detail.plan.is_none());
    FIXED.store(true, std::sync::atomic::Ordering::SeqCst);
    let RetryOutcome::Retried { run: new } = stranger.retry_run(&s, old).await.expect("retried")
    else {
        panic!("a first retry submits");
    };
    let handle = am2z::RunHandle {
        session: s.clone(),
        run_id: new,
        processor: FailsUntilFixed.name_of(),
        epoch: None,
    };
    let retried = worker
        .wait::<i64>(&handle, Some(Duration::from_secs(30)))
        .await
        .expect("the retry completes on the worker");
    assert_eq!(retried.output, 21);
    let detail = seen(new).await;
    assert_eq!(detail.retry_of, Some(old));
    assert_eq!(detail.output, Shown::Value(serde_json::json!(21)));

    // A step run that failed past its entry job: its entry fingerprint was kept in its run
    // hash, so the retry goes to the workers that have its graph.
    let chain = worker
        .execute_in_session(&s, &NegateThenReject, 7)
        .await
        .expect_err("fails at its third step");
    retried_chain_fails_again(&stranger, &worker, &s, chain.meta.run_id).await;

    // A run the stranger cancelled: retried, a worker takes it again.
    let live = worker
        .submit(&s, &SleepMs, 600_000)
        .await
        .expect("submitted");
    assert_eq!(
        stranger
            .cancel_run(&s, live.run_id)
            .await
            .expect("cancelled"),
        CancelOutcome::Cancelled
    );
    let RetryOutcome::Retried { run: rerun } =
        stranger.retry_run(&s, live.run_id).await.expect("retried")
    else {
        panic!("a first retry submits");
    };
    until(
        "the retried run to start",
        Duration::from_secs(30),
        async || seen(rerun).await.summary.state == RunState::Active,
    )
    .await;
    assert_eq!(
        stranger.cancel_run(&s, rerun).await.expect("cancelled"),
        CancelOutcome::Cancelled
    );

    // With its entry body gone, nothing says whether a run redacts: hidden (fail closed).
    let key = layout.key("bodies");
    layout.cli(&["HDEL", &key, &old.to_string()]);
    let closed = seen(old).await;
    assert_eq!(
        (closed.input, closed.output),
        (Shown::Redacted, Shown::Redacted)
    );

    finish(&prefix, &[&s], &[&stranger, &worker]).await;
}

/// Cancelling a run whose step runs on a worker: the step's token fires there, the run ends
/// once with `Cancelled` (its waiter told), a second cancel says how it ended; a queued run
/// is cancelled with its job removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_fires_the_running_steps_token_and_ends_the_run_once() {
    let prefix = prefix();
    let (worker, client) = pair(&prefix).await;
    let s = session("inspect-cancel");
    let layout = Layout::new(&redis_url(), &prefix, s.as_str());

    let handle = client
        .submit(&s, &SleepMs, 600_000)
        .await
        .expect("submitted");
    until("the step to start", Duration::from_secs(30), async || {
        !probe::seen_with(s.as_str(), "start:").is_empty()
    })
    .await;
    let listed = client
        .runs(
            &s,
            &RunFilter::state(RunState::Active),
            PageRequest::first(10),
        )
        .await
        .expect("a page");
    assert_eq!(listed.items.len(), 1);
    let waiting = {
        let client = client.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            client
                .wait::<i64>(&handle, Some(Duration::from_secs(60)))
                .await
        })
    };
    assert_eq!(
        client
            .cancel_run(&s, handle.run_id)
            .await
            .expect("cancelled"),
        CancelOutcome::Cancelled
    );
    // Its entry job went with it (invariant 12): a late commit of the step is refused.
    assert!(layout.header(&handle.run_id.to_string()).is_none());
    until("the token to fire", Duration::from_secs(30), async || {
        probe::seen(s.as_str())
            .iter()
            .any(|what| what == "cancelled")
    })
    .await;
    let outcome = waiting.await.expect("the waiter ends");
    let failure = outcome.expect_err("cancelled");
    assert!(
        matches!(failure.error, Error::Cancelled { .. }),
        "{failure:?}"
    );
    assert_eq!(
        client
            .cancel_run(&s, handle.run_id)
            .await
            .expect("answered"),
        CancelOutcome::AlreadyEnded {
            state: RunState::Failed
        }
    );
    let detail = client
        .run(&s, handle.run_id)
        .await
        .expect("read")
        .expect("known");
    assert_eq!(detail.summary.state, RunState::Failed);
    assert!(matches!(
        detail.error.map(|e| e.error),
        Some(Error::Cancelled { .. })
    ));
    assert_eq!(detail.input, Shown::Value(serde_json::json!(600_000)));

    // A queued run (nobody serves `negate`): cancelled, its job gone.
    let queued = client.submit(&s, &Negate, 3).await.expect("submitted");
    assert!(layout.header(&queued.run_id.to_string()).is_some());
    assert_eq!(
        client
            .cancel_run(&s, queued.run_id)
            .await
            .expect("cancelled"),
        CancelOutcome::Cancelled
    );
    assert!(layout.header(&queued.run_id.to_string()).is_none());
    assert_eq!(layout.state(&queued.run_id.to_string()), "gone");
    assert!(matches!(
        client.cancel_run(&s, RunId::generate()).await,
        Err(Error::NotFound { .. })
    ));
    // A completed run stays completed.
    let ok = client
        .execute_in_session(&s, &AddOne, 1)
        .await
        .expect("completes");
    assert_eq!(
        client
            .cancel_run(&s, ok.meta.run_id)
            .await
            .expect("answered"),
        CancelOutcome::AlreadyEnded {
            state: RunState::Completed
        }
    );
    // The worker took no lease it kept: nothing of the run is left in flight.
    until("the lease to go", Duration::from_secs(30), async || {
        layout.leased() == 0
    })
    .await;

    finish(&prefix, &[&s], &[&client, &worker]).await;
}

/// The worker registry: host, pid and processors of each live worker, this process's marked;
/// a worker in another process (`fault_worker`) listed with its own pid, and gone once it
/// stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_listed_with_host_pid_and_processors() {
    let prefix = prefix();
    let (worker, client) = pair(&prefix).await;
    until(
        "the worker's heartbeat",
        Duration::from_secs(30),
        async || !client.workers().await.expect("workers").is_empty(),
    )
    .await;
    let listed = client.workers().await.expect("workers");
    assert_eq!(
        listed.len(),
        1,
        "only the worker, not the client: {listed:?}"
    );
    let ours = &listed[0];
    assert_eq!(ours.pid, Some(std::process::id()));
    assert!(ours.this_process);
    assert!(ours.host.is_some());
    for name in ["add_one", "always_fails", "sleep_ms"] {
        assert!(
            ours.processors.iter().any(|p| p == name),
            "{:?}",
            ours.processors
        );
    }
    let sorted = {
        let mut p = ours.processors.clone();
        p.sort();
        p
    };
    assert_eq!(ours.processors, sorted);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fault_worker"))
        .env("AM2Z_REDIS_URL", redis_url())
        .env("AM2Z_QUEUE_PREFIX", &prefix)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the worker process starts");
    let pid = child.id();
    until(
        "the other process's heartbeat",
        Duration::from_secs(60),
        async || {
            client
                .workers()
                .await
                .expect("workers")
                .iter()
                .any(|w| w.pid == Some(pid))
        },
    )
    .await;
    let listed = client.workers().await.expect("workers");
    let theirs = listed.iter().find(|w| w.pid == Some(pid)).expect("listed");
    assert!(!theirs.this_process);
    assert!(
        theirs.processors.iter().any(|p| p == "step_a"),
        "{theirs:?}"
    );
    // Its stdin closing makes it drain and leave.
    drop(child.stdin.take());
    let _ = child.wait();
    until(
        "the other process to leave",
        Duration::from_secs(60),
        async || {
            client
                .workers()
                .await
                .expect("workers")
                .iter()
                .all(|w| w.pid != Some(pid))
        },
    )
    .await;

    finish(&prefix, &[], &[&client, &worker]).await;
}

/// The inspection suite, unchanged, on a runtime that is its own worker.
mod suite {
    use std::time::Duration;

    use am2z::RedisRuntime;
    use am2z_tests::processors::AddOne;
    use am2z_tests::suite::Harness;

    struct Redis;

    impl Harness for Redis {
        type Runtime = RedisRuntime;
        const SLACK: Duration = Duration::from_millis(150);
        async fn runtime() -> RedisRuntime {
            let runtime = RedisRuntime::new(super::config(&super::prefix()));
            runtime.serve(AddOne);
            runtime
        }
    }

    am2z_tests::inspect_suite!(Redis, paused = false);
}
