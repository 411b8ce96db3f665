//! The conformance suite: every line of docs/behaviours.md as a test, written once, generic over
//! the runtime. [`conformance_suite!`](crate::conformance_suite) instantiates it for a harness.

use std::time::Duration;

use am2z::{Error, EventKind, Executes, Processor, Registration, RunId, Runtime, SessionId};
use futures::StreamExt;

use crate::flows::*;
use crate::probe::{seen, seen_with};
use crate::processors::*;

/// Declares [`SuiteRuntime`] once from the list of what the suite runs.
macro_rules! suite_runtime {
    ($($processor:ty),+ $(,)?) => {
        /// A runtime the suite can drive: started, with every processor of the suite runnable.
        pub trait SuiteRuntime: Runtime + Clone $(+ Executes<$processor>)+ {}

        impl<R> SuiteRuntime for R where R: Runtime + Clone $(+ Executes<$processor>)+ {}
    };
}

suite_runtime!(
    AddOne,
    Arith,
    NegateThenReject,
    TextFan,
    TextMerged,
    FailFast,
    Collected,
    ChannelRoute,
    StrictChannelRoute,
    TierRoute,
    Nested,
    Inverts,
    Whoami,
    SleepMs,
    TooSlow,
    Flaky,
    AlwaysFails,
    BacksOff,
    Judged,
    InvalidEmail,
    DeclinesCard,
    ParseNumber,
    Panics,
    Reports,
    Recurse,
    CallWithFallback,
    Limited,
    RateLimited,
    Delayed,
);

/// How a runtime under test is made.
pub trait Harness {
    /// The runtime.
    type Runtime: SuiteRuntime;
    /// How much later than ideal a timed event may be seen (zero on a paused clock).
    const SLACK: Duration;
    /// A new, not yet started runtime.
    fn runtime() -> impl Future<Output = Self::Runtime>;
}

/// A session id no other test uses.
pub fn session(test: &str) -> SessionId {
    SessionId::new(format!("{test}-{}", RunId::generate())).expect("test session ids are valid")
}

async fn started<H: Harness>() -> H::Runtime {
    let runtime = H::runtime().await;
    runtime.start().await.expect("the runtime starts");
    runtime
}

/// The gaps between times recorded in microseconds, rounded to the millisecond (tokio's timer
/// resolution).
fn gaps_ms(times_us: &[String]) -> Vec<u64> {
    let times: Vec<i64> = times_us
        .iter()
        .map(|t| t.parse().expect("a time in µs"))
        .collect();
    times
        .windows(2)
        .map(|w| u64::try_from((w[1] - w[0] + 500) / 1000).unwrap_or(0))
        .collect()
}

fn within(measured: u64, ideal: u64, slack: Duration) -> bool {
    let slack = u64::try_from(slack.as_millis()).unwrap_or(u64::MAX);
    measured >= ideal && measured <= ideal + slack
}

// ---------------------------------------------------------------------------------------------
// Lifecycle and registration

/// `start` twice is harmless; `stop` when not started is harmless; start → stop → start →
/// execute works.
pub async fn lifecycle_is_idempotent_and_restartable<H: Harness>() {
    let runtime = H::runtime().await;
    runtime.stop().await.expect("stop before start is harmless");
    runtime.start().await.expect("start");
    runtime.start().await.expect("start twice is harmless");
    assert!(runtime.is_running());
    runtime.stop().await.expect("stop");
    runtime.stop().await.expect("stop twice is harmless");
    assert!(!runtime.is_running());
    runtime.start().await.expect("restart");
    let result = runtime
        .execute(&AddOne, 41)
        .await
        .expect("runs after a restart");
    assert_eq!(result.output, 42);
    runtime.stop().await.expect("stop");
}

/// Executing before `start` is a typed configuration error, not a hang.
pub async fn execute_before_start_is_a_typed_error<H: Harness>() {
    let runtime = H::runtime().await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), runtime.execute(&AddOne, 1))
        .await
        .expect("execute before start returns at once");
    let failure = outcome.expect_err("execute before start fails");
    assert!(
        matches!(&failure.error, Error::Configuration { message } if message.contains("start")),
        "{failure:?}"
    );
}

/// Registering a workflow registers every processor it contains; registering a name again
/// replaces it; unregistering an unknown name is harmless.
pub async fn registration_covers_contents_and_replaces<H: Harness>() {
    let runtime = started::<H>().await;
    runtime.register(Nested);
    let names = runtime.registered();
    for name in ["gold_discount", "add_one", "double", "standard_price"] {
        assert!(
            names.contains(&name.to_owned()),
            "{name} missing from {names:?}"
        );
    }

    runtime.register(AddOne);
    let before = runtime.processor_info("add_one").expect("registered");
    assert_eq!(before.config.description, Some("Adds one"));
    assert_eq!(before.config.retry.max_attempts, 1);
    let replacement = am2z::processor_fn(|x: i64| async move { Ok::<_, Error>(x + 1) })
        .named("add_one")
        .description("Adds one, patiently")
        .retries(5)
        .timeout(Duration::from_secs(3));
    runtime.register_many([Registration::of(replacement)]);
    let after = runtime.processor_info("add_one").expect("still registered");
    assert_eq!(after.config.description, Some("Adds one, patiently"));
    assert_eq!(after.config.retry.max_attempts, 5);
    assert_eq!(after.config.timeout, Some(Duration::from_secs(3)));

    assert!(!runtime.unregister("no_such_processor"));
    assert!(runtime.unregister("add_one"));
    assert!(runtime.processor_info("add_one").is_none());
}

/// A processor's description, timeout, retry policy and queue config are readable.
pub async fn processor_configuration_is_readable<H: Harness>() {
    let runtime = started::<H>().await;
    runtime.register_many([
        Registration::of(BacksOff),
        Registration::of(TooSlow),
        Registration::of(Limited),
        Registration::of(RateLimited),
        Registration::of(Delayed),
    ]);
    let backs_off = runtime
        .processor_info("backs_off")
        .expect("registered")
        .config;
    assert_eq!(backs_off.retry.max_attempts, 4);
    assert_eq!(
        backs_off.retry.backoff,
        am2z::Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10))
    );
    let too_slow = runtime
        .processor_info("too_slow")
        .expect("registered")
        .config;
    assert_eq!(too_slow.timeout, Some(Duration::from_millis(100)));
    let limited = runtime
        .processor_info("limited")
        .expect("registered")
        .config;
    assert_eq!(limited.concurrency, Some(2));
    let rate = runtime
        .processor_info("rate_limited")
        .expect("registered")
        .config;
    assert_eq!(
        rate.rate_limit,
        Some(am2z::RateLimit {
            max: 2,
            per: Duration::from_secs(1)
        })
    );
    let delayed = runtime
        .processor_info("delayed")
        .expect("registered")
        .config;
    assert_eq!(delayed.delay, Some(Duration::from_millis(300)));
}

/// Processors registered after start are usable by name.
pub async fn processors_registered_after_start_are_usable<H: Harness>() {
    let runtime = started::<H>().await;
    runtime.register(Arith);
    let session = session("late-registration");
    let result = runtime
        .execute_named::<i64, i64>(&session, "add_one", 1)
        .await
        .expect("registered after start, runs by name");
    assert_eq!(result.output, 2);
    let result = runtime
        .execute_named::<i64, i64>(&session, Arith.name(), 5)
        .await
        .expect("a composition runs by name");
    assert_eq!(result.output, 22);
}

// ---------------------------------------------------------------------------------------------
// Execution

/// A single processor returns its output, the run metadata, the attempt count and the time.
pub async fn single_processor_returns_output_and_metadata<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("single");
    let result = runtime
        .execute_in_session(&session, &AddOne, 1)
        .await
        .expect("runs");
    assert_eq!(result.output, 2);
    assert_eq!(result.meta.session_id, session);
    assert_eq!(result.meta.version, 1);
    assert!(result.meta.updated_at >= result.meta.created_at);
    assert_eq!(result.attempts, 1);
    assert!(result.execution_time < Duration::from_secs(5));
    let again = runtime
        .execute_in_session(&session, &AddOne, 1)
        .await
        .expect("runs");
    assert_ne!(
        again.meta.run_id, result.meta.run_id,
        "each run has its own id"
    );
}

/// An unknown name (by-name API) is a typed not-found error naming it and what exists.
pub async fn unknown_name_is_not_found_and_lists_registered<H: Harness>() {
    let runtime = started::<H>().await;
    runtime.register(AddOne);
    runtime.register(Double);
    let failure = runtime
        .execute_named::<i64, i64>(&session("unknown"), "add_onee", 1)
        .await
        .expect_err("unknown name fails");
    match &failure.error {
        Error::NotFound {
            what,
            name,
            available,
        } => {
            assert_eq!(what, "processor");
            assert_eq!(name, "add_onee");
            assert!(available.contains(&"add_one".to_owned()), "{available:?}");
            assert!(available.contains(&"double".to_owned()), "{available:?}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(failure.to_string().contains("add_onee"));
}

/// `execute_many` returns outcomes in input order, with per-item failures.
pub async fn execute_many_keeps_order_and_isolates_failures<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("many");
    let outcomes = runtime
        .execute_many(
            &session,
            &ParseNumber,
            vec!["3".into(), "x".into(), "-1".into(), "7".into()],
        )
        .await;
    assert_eq!(outcomes.len(), 4);
    assert_eq!(outcomes[0].as_ref().map(|r| r.output).ok(), Some(3));
    assert!(matches!(
        outcomes[1].as_ref().map_err(|f| &f.error),
        Err(Error::Validation { .. })
    ));
    assert!(matches!(
        outcomes[2].as_ref().map_err(|f| &f.error),
        Err(Error::Business { .. })
    ));
    assert_eq!(outcomes[3].as_ref().map(|r| r.output).ok(), Some(7));
}

/// Independent executions run concurrently: 10 runs of a 50 ms processor finish in well under
/// 10 × 50 ms.
pub async fn independent_runs_are_concurrent<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("concurrent");
    let begin = tokio::time::Instant::now();
    let outcomes = futures::future::join_all(
        (0..10).map(|_| runtime.execute_in_session(&session, &SleepMs, 50)),
    )
    .await;
    let elapsed = begin.elapsed();
    assert!(outcomes.iter().all(Result::is_ok));
    assert!(
        elapsed < Duration::from_millis(250),
        "10 × 50 ms took {elapsed:?}"
    );
}

/// `ctx.call` returns what the processor returns, and a fallback is one `or_else` away.
pub async fn ctx_call_returns_result_and_allows_fallback<H: Harness>() {
    let runtime = started::<H>().await;
    let result = runtime.execute(&CallWithFallback, 4).await.expect("runs");
    // add_one(4) = 5, always_fails → fallback −1.
    assert_eq!(result.output, 5 * 100 - 1);
}

/// Call depth is limited (default 10); exceeding it is a typed error, never a deadlock.
pub async fn call_depth_is_limited<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("depth");
    let failure = tokio::time::timeout(
        Duration::from_secs(10),
        runtime.execute_in_session(&session, &Recurse, 0),
    )
    .await
    .expect("no deadlock")
    .expect_err("recursion is stopped");
    match failure.error.root_cause() {
        Error::DepthExceeded {
            processor,
            depth,
            limit,
        } => {
            assert_eq!(processor, "recurse");
            assert_eq!(*limit, 10);
            assert_eq!(*depth, 11);
        }
        other => panic!("expected DepthExceeded, got {other:?}"),
    }
    let depths = seen_with(session.as_str(), "depth:");
    assert_eq!(depths.len(), 11, "depths 0..=10 ran: {depths:?}");
    assert_eq!(depths.last().map(String::as_str), Some("10"));
}

// ---------------------------------------------------------------------------------------------
// Composition

/// Chain: 5 → +1 → ×2 → +10 = 22, one version per step.
pub async fn chain_runs_steps_in_order<H: Harness>() {
    let runtime = started::<H>().await;
    let result = runtime.execute(&Arith, 5).await.expect("runs");
    assert_eq!(result.output, 22);
    assert_eq!(result.meta.version, 3, "one version per step");
    assert_eq!(result.attempts, 3);
}

/// A failing step stops the chain; the error names the step and its position, and carries
/// the state the step received.
pub async fn chain_failure_names_step_position_and_state<H: Harness>() {
    let runtime = started::<H>().await;
    let failure = runtime
        .execute(&NegateThenReject, 5)
        .await
        .expect_err("fails");
    match &failure.error {
        Error::StepFailed {
            step,
            position,
            source,
            state_before,
        } => {
            assert_eq!(step, "reject_negative");
            assert_eq!(*position, 2);
            assert!(matches!(**source, Error::Validation { .. }), "{source:?}");
            let state = state_before
                .as_ref()
                .expect("the state before the step is kept");
            let before = state
                .downcast::<i64>()
                .or_else(|| state.decode::<i64>().ok());
            assert_eq!(before, Some(-6));
        }
        other => panic!("expected StepFailed, got {other:?}"),
    }
    assert_eq!(failure.meta.version, 2, "the two steps before it completed");
    assert!(matches!(failure.error.root_cause(), Error::Validation { field, .. } if field == "x"));
}

/// Parallel: every branch gets the same input; the outputs are joined into a tuple or merged.
pub async fn parallel_joins_every_branch<H: Harness>() {
    let runtime = started::<H>().await;
    let tuple = runtime
        .execute(&TextFan, "am2z".to_owned())
        .await
        .expect("runs");
    assert_eq!(tuple.output, (4, "AM2Z".to_owned()));
    let merged = runtime
        .execute(&TextMerged, "am2z".to_owned())
        .await
        .expect("runs");
    assert_eq!(merged.output, "AM2Z:4");
}

/// A failing branch fails the parallel and cancels the others.
pub async fn parallel_failure_cancels_other_branches<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("fail-fast");
    let begin = tokio::time::Instant::now();
    let failure = runtime
        .execute_in_session(&session, &FailFast, 10_000)
        .await
        .expect_err("fails");
    assert!(
        begin.elapsed() < Duration::from_secs(5),
        "did not wait for the slow branch"
    );
    match &failure.error {
        Error::StepFailed { step, position, .. } => {
            assert_eq!(step, "always_fails");
            assert_eq!(*position, 1);
        }
        other => panic!("expected StepFailed, got {other:?}"),
    }
    let log = seen(session.as_str());
    assert!(
        !log.iter().any(|e| e.starts_with("done:")),
        "the slow branch was stopped: {log:?}"
    );
}

/// With the collect policy every branch runs and each result is kept.
pub async fn parallel_collect_keeps_every_result<H: Harness>() {
    let runtime = started::<H>().await;
    let (failed, added) = runtime.execute(&Collected, 1).await.expect("runs").output;
    assert!(matches!(failed, Err(Error::Execution { .. })));
    assert_eq!(added, Ok(2));
}

/// Route: the selector picks an arm; unknown keys go to the fallback; with no fallback the
/// error names the key.
pub async fn route_selects_arm_or_fallback<H: Harness>() {
    let runtime = started::<H>().await;
    let web = Order {
        tier: Tier::Standard,
        channel: "web".into(),
        amount: 100,
    };
    let shop = Order {
        channel: "shop".into(),
        ..web.clone()
    };
    assert_eq!(
        runtime
            .execute(&ChannelRoute, web.clone())
            .await
            .expect("web")
            .output,
        101
    );
    assert_eq!(
        runtime
            .execute(&ChannelRoute, shop.clone())
            .await
            .expect("fallback")
            .output,
        100
    );
    let failure = runtime
        .execute(&StrictChannelRoute, shop)
        .await
        .expect_err("no arm");
    match &failure.error {
        Error::NotFound {
            name, available, ..
        } => {
            assert_eq!(name, "shop");
            assert_eq!(available, &["web".to_owned()]);
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let gold = Order {
        tier: Tier::Gold,
        ..web
    };
    assert_eq!(
        runtime
            .execute(&TierRoute, gold)
            .await
            .expect("gold")
            .output,
        80
    );
}

/// Map: one processor over a list, per-item results, in order.
pub async fn map_gives_per_item_results<H: Harness>() {
    let runtime = started::<H>().await;
    let result = runtime
        .execute(&Inverts, vec![1, 0, 4, 5])
        .await
        .expect("runs");
    let output = result.output;
    assert_eq!(output.len(), 4);
    assert_eq!(output[0], Ok(1000));
    assert!(matches!(output[1], Err(Error::Validation { .. })));
    assert_eq!(output[2], Ok(250));
    assert_eq!(output[3], Ok(200));
    assert_eq!(result.meta.version, 3, "three items succeeded");
}

/// Map honours its concurrency bound (and a processor's own limit).
pub async fn concurrency_limits_are_honoured<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("limited");
    let outcomes = futures::future::join_all(
        (0..6).map(|_| runtime.execute_in_session(&session, &Limited, 20)),
    )
    .await;
    assert!(outcomes.iter().all(Result::is_ok));
    let mut in_flight = 0;
    let mut most = 0;
    for entry in seen(session.as_str()) {
        in_flight += if entry == "enter" { 1 } else { -1 };
        most = most.max(in_flight);
    }
    assert_eq!(
        most, 2,
        "`concurrency = 2` allows two at once, and they were used"
    );
}

/// Compositions nest: a parallel inside a chain inside a route.
pub async fn compositions_nest<H: Harness>() {
    let runtime = started::<H>().await;
    let gold = Order {
        tier: Tier::Gold,
        channel: "web".into(),
        amount: 100,
    };
    // gold: 100 × 0.8 = 80 → (81, 160)
    assert_eq!(
        runtime
            .execute(&Nested, gold.clone())
            .await
            .expect("runs")
            .output,
        (81, 160)
    );
    let standard = Order {
        tier: Tier::Standard,
        ..gold
    };
    assert_eq!(
        runtime
            .execute(&Nested, standard)
            .await
            .expect("runs")
            .output,
        (101, 200)
    );
}

/// The plan of a composition names its processors and edges, with a stable fingerprint.
pub async fn plans_describe_the_graph<H: Harness>() {
    let plan = Nested.plan();
    assert_eq!(
        plan.step_names(),
        ["gold_discount", "add_one", "double", "standard_price"]
    );
    assert_eq!(plan.fingerprint, Nested.plan().fingerprint);
    assert_ne!(plan.fingerprint, Arith.plan().fingerprint);
    let wire = serde_json::to_string(&plan).expect("plans serialise");
    let back: am2z::Plan = serde_json::from_str(&wire).expect("plans deserialise");
    assert_eq!(back, plan);
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// A run carries its session id, which processors can read; two sessions never see each
/// other's data, even through nested calls.
pub async fn sessions_are_isolated<H: Harness>() {
    let runtime = started::<H>().await;
    let (a, b) = (session("tenant-a"), session("tenant-b"));
    let (ra, rb) = tokio::join!(
        runtime.execute_in_session(&a, &Whoami, "x".to_owned()),
        runtime.execute_in_session(&b, &Whoami, "y".to_owned()),
    );
    let (ra, rb) = (ra.expect("a runs"), rb.expect("b runs"));
    assert_eq!(ra.meta.session_id, a);
    assert_eq!(rb.meta.session_id, b);
    assert_eq!(ra.output, format!("{a}|x|{a}:{}:x", ra.meta.run_id));
    assert_eq!(rb.output, format!("{b}|y|{b}:{}:y", rb.meta.run_id));
}

/// `active_sessions` lists sessions with work; `stop_session` removes one, cancels its runs
/// (their callers get "session stopped") and leaves the others running.
pub async fn stop_session_cancels_its_runs_only<H: Harness>() {
    let runtime = started::<H>().await;
    let (doomed, bystander) = (session("doomed"), session("bystander"));
    let mut events = runtime.subscribe_session(&doomed);
    let doomed_run = tokio::spawn({
        let (runtime, doomed) = (runtime.clone(), doomed.clone());
        async move { runtime.execute_in_session(&doomed, &SleepMs, 60_000).await }
    });
    let bystander_run = tokio::spawn({
        let (runtime, bystander) = (runtime.clone(), bystander.clone());
        async move { runtime.execute_in_session(&bystander, &SleepMs, 200).await }
    });
    // Wait until the doomed step is running.
    loop {
        let event = events.next().await.expect("events flow");
        if matches!(event.kind, EventKind::StepStarted { .. }) {
            break;
        }
    }
    let active = runtime.active_sessions().await.expect("lists");
    assert!(
        active.contains(&doomed) && active.contains(&bystander),
        "{active:?}"
    );

    runtime.stop_session(&doomed).await.expect("stops");
    let failure = doomed_run.await.expect("joins").expect_err("stopped");
    assert_eq!(
        failure.error,
        Error::SessionStopped {
            session: doomed.to_string()
        }
    );
    let active = runtime.active_sessions().await.expect("lists");
    assert!(!active.contains(&doomed), "{active:?}");
    assert_eq!(
        bystander_run
            .await
            .expect("joins")
            .expect("untouched")
            .output,
        200
    );

    runtime
        .stop_session(&session("never-existed"))
        .await
        .expect("unknown session is harmless");
    runtime.stop_all_sessions().await.expect("stop all");
    assert!(runtime.active_sessions().await.expect("lists").is_empty());
    // A stopped session id can be used again, as a new session.
    assert!(
        runtime
            .execute_in_session(&doomed, &AddOne, 1)
            .await
            .is_ok()
    );
}

/// `session_stats` reports per processor name.
pub async fn session_stats_are_keyed_by_processor<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("stats");
    runtime
        .execute_in_session(&session, &Arith, 1)
        .await
        .expect("runs");
    runtime
        .execute_in_session(&session, &AlwaysFails, 1)
        .await
        .expect_err("fails");
    let stats = runtime.session_stats(&session).await.expect("stats");
    let names: Vec<&str> = stats.processors.keys().map(String::as_str).collect();
    assert_eq!(names, ["add_one", "add_ten", "always_fails", "double"]);
    assert_eq!(stats.processors["add_one"].completed, 1);
    assert_eq!(stats.processors["always_fails"].failed, 1);
    assert_eq!(stats.processors["always_fails"].active, 0);
    let other = runtime
        .session_stats(&self::session("other"))
        .await
        .expect("stats");
    assert!(other.processors.is_empty());
}

/// The output of one run can be the input of the next in the same session.
pub async fn state_feeds_the_next_run<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("feed");
    let first = runtime
        .execute_in_session(&session, &Arith, 0)
        .await
        .expect("runs");
    let second = runtime
        .execute_in_session(&session, &Arith, first.output)
        .await
        .expect("runs");
    assert_eq!(first.output, 12);
    assert_eq!(second.output, 36);
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Validation and business errors reach the caller as the same variant with their fields, and
/// so do errors raised with `?`; non-retryable errors are not retried.
pub async fn domain_errors_keep_variant_and_fields<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("domain");
    let failure = runtime
        .execute_in_session(&session, &InvalidEmail, "bob".into())
        .await
        .expect_err("fails");
    assert_eq!(failure.error, Error::validation("email", "`bob` has no @"));
    assert_eq!(failure.attempts, 1, "validation errors are not retried");

    let failure = runtime
        .execute_in_session(&session, &DeclinesCard, 250)
        .await
        .expect_err("fails");
    match &failure.error {
        Error::Business { code, details, .. } => {
            assert_eq!(code, "card_declined");
            assert_eq!(details["amount"], 250);
        }
        other => panic!("expected Business, got {other:?}"),
    }
    assert_eq!(failure.attempts, 1, "business errors are not retried");
    assert_eq!(seen_with(session.as_str(), "attempt:"), ["1", "1"]);

    let failure = runtime
        .execute_in_session(&session, &ParseNumber, "-4".into())
        .await
        .expect_err("fails");
    assert!(matches!(&failure.error, Error::Business { code, .. } if code == "not_positive"));
}

/// A panicking processor gives a typed error; the runtime keeps working.
pub async fn panics_become_typed_errors<H: Harness>() {
    let runtime = started::<H>().await;
    let failure = runtime.execute(&Panics, 7).await.expect_err("panics");
    match &failure.error {
        Error::Panicked { processor, message } => {
            assert_eq!(processor, "panics");
            assert!(message.contains("boom at 7"), "{message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(
        failure.attempts, 2,
        "a panic is a failed attempt, retried by policy"
    );
    assert_eq!(
        runtime
            .execute(&Panics, -1)
            .await
            .expect("still works")
            .output,
        -1
    );
    assert_eq!(
        runtime
            .execute(&AddOne, 1)
            .await
            .expect("still works")
            .output,
        2
    );
}

/// Timeouts are exact: a 100 ms limit on a 200 ms processor fails with a typed timeout naming
/// the processor and the limit, and the processor's token fires.
pub async fn timeouts_are_exact_and_fire_the_token<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("timeout");
    let begin = tokio::time::Instant::now();
    let failure = runtime
        .execute_in_session(&session, &TooSlow, 200)
        .await
        .expect_err("times out");
    let elapsed = u64::try_from(begin.elapsed().as_millis()).unwrap_or(u64::MAX);
    assert_eq!(
        failure.error,
        Error::Timeout {
            processor: "too_slow".into(),
            limit: Duration::from_millis(100)
        }
    );
    assert!(
        within(elapsed, 100, H::SLACK),
        "timed out after {elapsed} ms"
    );
    // Let the watcher task observe the token.
    for _ in 0..100 {
        if !seen_with(session.as_str(), "token-fired:").is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        seen_with(session.as_str(), "token-fired:").len(),
        1,
        "the token fired"
    );
    assert!(!seen(session.as_str()).contains(&"finished".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// Retries

/// 3 attempts, failing twice then succeeding: success, and attempts 1, 2, 3 were seen.
pub async fn retries_until_success<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("flaky");
    let result = runtime
        .execute_in_session(&session, &Flaky, FlakyPlan { failures: 2 })
        .await;
    let result = result.expect("succeeds on the third attempt");
    assert_eq!(result.output, 3);
    assert_eq!(result.attempts, 3);
    assert_eq!(seen_with(session.as_str(), "attempt:"), ["1", "2", "3"]);
}

/// 2 attempts, always failing: the caller gets attempt 2's error and the count 2.
pub async fn exhausted_retries_return_the_last_error<H: Harness>() {
    let runtime = started::<H>().await;
    let failure = runtime.execute(&AlwaysFails, 1).await.expect_err("fails");
    assert_eq!(failure.error, Error::execution("always_fails", "attempt 2"));
    assert_eq!(failure.attempts, 2);
}

/// Exponential backoff, base 100 ms × 2: waits of at least 100, 200, 400 ms.
pub async fn exponential_backoff_spaces_attempts<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("backoff");
    let failure = runtime
        .execute_in_session(&session, &BacksOff, 0)
        .await
        .expect_err("fails");
    assert_eq!(failure.attempts, 4);
    let gaps = gaps_ms(&seen_with(session.as_str(), "t:"));
    assert_eq!(gaps.len(), 3);
    for (gap, ideal) in gaps.iter().zip([100, 200, 400]) {
        assert!(
            within(*gap, ideal, H::SLACK),
            "gaps {gaps:?}, expected 100, 200, 400"
        );
    }
}

/// The retry predicate gets the error and the next attempt number; false stops at once, and it
/// can retry errors that are not retryable by themselves.
pub async fn retry_predicate_decides<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("judged");
    let failure = runtime
        .execute_in_session(&session, &Judged, 0)
        .await
        .expect_err("fails");
    // below_three: retry into attempt 2, refuse attempt 3.
    assert_eq!(seen_with(session.as_str(), "attempt:"), ["1", "2"]);
    assert_eq!(failure.attempts, 2);
    assert!(matches!(failure.error, Error::Validation { .. }));
}

/// The caller sees only the final outcome; events show every attempt.
pub async fn events_show_every_attempt<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("attempt-events");
    let mut events = runtime.subscribe_session(&session);
    let result = runtime
        .execute_in_session(&session, &Flaky, FlakyPlan { failures: 2 })
        .await
        .expect("succeeds");
    assert_eq!(result.output, 3);
    let mut kinds = Vec::new();
    while let Some(event) = events.next().await {
        match event.kind {
            EventKind::StepStarted { attempt } => kinds.push(format!("started {attempt}")),
            EventKind::StepRetrying {
                attempt,
                next_attempt,
                ..
            } => {
                kinds.push(format!("retrying {attempt}->{next_attempt}"));
            }
            EventKind::StepCompleted { attempt, .. } => kinds.push(format!("completed {attempt}")),
            EventKind::RunCompleted { .. } => break,
            _ => {}
        }
    }
    assert_eq!(
        kinds,
        [
            "started 1",
            "retrying 1->2",
            "started 2",
            "retrying 2->3",
            "started 3",
            "completed 3"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Events and observability

/// Events for every lifecycle step, progress in order and custom payloads; each carries
/// session, run and processor.
pub async fn events_describe_the_run<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("events");
    let mut events = runtime.subscribe();
    let result = runtime
        .execute_in_session(&session, &Reports, 9)
        .await
        .expect("runs");
    let failure = runtime
        .execute_in_session(&session, &InvalidEmail, "x".into())
        .await
        .expect_err("fails");
    runtime.stop_session(&session).await.expect("stops");

    let mut seen_kinds = Vec::new();
    // Each run's events, in order: they must begin with one `RunStarted`, and have no other.
    let mut by_run: Vec<(am2z::RunId, Vec<bool>)> = Vec::new();
    while let Some(event) = events.next().await {
        if event.session != session {
            continue;
        }
        let step_event = !matches!(
            event.kind,
            EventKind::SessionCreated | EventKind::SessionStopped
        );
        if step_event {
            assert!(event.run_id.is_some(), "{event:?}");
        }
        if let Some(run) = event.run_id {
            let started = matches!(event.kind, EventKind::RunStarted);
            match by_run.iter_mut().find(|(r, _)| *r == run) {
                Some((_, kinds)) => kinds.push(started),
                None => by_run.push((run, vec![started])),
            }
        }
        match event.kind {
            EventKind::SessionCreated => seen_kinds.push("session-created".to_owned()),
            EventKind::RunStarted => {
                let expected = match event.processor.as_deref() {
                    Some("reports") => result.meta.run_id,
                    Some("invalid_email") => failure.meta.run_id,
                    other => panic!("RunStarted names the run's processor, not {other:?}"),
                };
                assert_eq!(event.run_id, Some(expected), "{event:?}");
                seen_kinds.push(format!(
                    "run-started {}",
                    event.processor.as_deref().unwrap_or("?")
                ));
            }
            EventKind::StepStarted { .. } => {
                seen_kinds.push(format!(
                    "started {}",
                    event.processor.as_deref().unwrap_or("?")
                ));
            }
            EventKind::Progress { value } => {
                assert_eq!(event.run_id, Some(result.meta.run_id));
                assert_eq!(event.processor.as_deref(), Some("reports"));
                seen_kinds.push(format!("progress {value}"));
            }
            EventKind::Custom { name, payload } => {
                assert_eq!(payload, serde_json::json!({ "order": 9 }));
                seen_kinds.push(format!("custom {name}"));
            }
            EventKind::StepCompleted { execution_time, .. } => {
                assert!(execution_time < Duration::from_secs(5));
                seen_kinds.push(format!(
                    "completed {}",
                    event.processor.as_deref().unwrap_or("?")
                ));
            }
            EventKind::StepFailed { error, .. } => {
                assert!(matches!(error, Error::Validation { .. }));
                seen_kinds.push(format!(
                    "failed {}",
                    event.processor.as_deref().unwrap_or("?")
                ));
            }
            EventKind::SessionStopped => {
                seen_kinds.push("session-stopped".to_owned());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        seen_kinds,
        [
            "session-created",
            "run-started reports",
            "started reports",
            "progress 25",
            "progress 50",
            "progress 75",
            "progress 100",
            "custom order.created",
            "completed reports",
            "run-started invalid_email",
            "started invalid_email",
            "failed invalid_email",
            "session-stopped",
        ]
    );
    let runs: Vec<am2z::RunId> = by_run.iter().map(|(run, _)| *run).collect();
    assert_eq!(runs, [result.meta.run_id, failure.meta.run_id]);
    for (run, started) in &by_run {
        assert_eq!(
            started.first(),
            Some(&true),
            "run {run} begins with RunStarted"
        );
        assert_eq!(
            started.iter().filter(|s| **s).count(),
            1,
            "run {run} has one RunStarted"
        );
    }
}

/// Several subscribers each get every event; a dropped one stops receiving; a slow one does
/// not block the runtime or the others.
pub async fn subscribers_are_independent<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("subscribers");
    let mut first = runtime.subscribe_session(&session);
    let mut second = runtime.subscribe_session(&session);
    let slow = runtime.subscribe_session(&session); // never read
    let dropped = runtime.subscribe_session(&session);
    drop(dropped);
    for _ in 0..50 {
        runtime
            .execute_in_session(&session, &AddOne, 1)
            .await
            .expect("runs despite a slow reader");
    }
    async fn runs_completed(stream: &mut am2z::EventStream, expected: usize) -> usize {
        let mut completed = 0;
        while completed < expected {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(event)) if matches!(event.kind, EventKind::RunCompleted { .. }) => {
                    completed += 1
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        completed
    }
    assert_eq!(runs_completed(&mut first, 50).await, 50);
    assert_eq!(runs_completed(&mut second, 50).await, 50);
    drop(slow);
}

/// Stats: registered, running, completed, failed, uptime; queue stats per processor.
pub async fn stats_count_work<H: Harness>() {
    let runtime = started::<H>().await;
    runtime.register(AddOne);
    runtime.register(AlwaysFails);
    let session = session("runtime-stats");
    for x in 0..3 {
        runtime
            .execute_in_session(&session, &AddOne, x)
            .await
            .expect("runs");
    }
    runtime
        .execute_in_session(&session, &AlwaysFails, 0)
        .await
        .expect_err("fails");
    let stats = runtime.stats().await.expect("stats");
    assert!(stats.registered >= 2);
    assert!(stats.completed >= 3);
    assert!(stats.failed >= 1);
    assert_eq!(stats.running, 0);
    let queues = runtime.queue_stats().await.expect("queue stats");
    let add_one = queues.get("add_one").expect("add_one has stats");
    assert!(add_one.completed >= 3);
    assert_eq!(
        (add_one.active, add_one.waiting, add_one.delayed),
        (0, 0, 0)
    );
    assert!(queues.get("always_fails").expect("stats").failed >= 1);
}

/// A rate limit spaces starts; a delay defers the first attempt.
pub async fn rate_limits_and_delays_apply<H: Harness>() {
    let runtime = started::<H>().await;
    let session = session("rate");
    let outcomes = futures::future::join_all(
        (0..4).map(|x| runtime.execute_in_session(&session, &RateLimited, x)),
    )
    .await;
    assert!(outcomes.iter().all(Result::is_ok));
    let mut starts: Vec<String> = seen_with(session.as_str(), "t:");
    starts.sort_by_key(|t| t.parse::<i64>().expect("µs"));
    let gaps = gaps_ms(&starts);
    // "2/s": two at once, the next two one second after the first two.
    assert_eq!(gaps.len(), 3);
    assert!(within(gaps[0], 0, H::SLACK), "start gaps {gaps:?}");
    assert!(
        within(gaps[0] + gaps[1], 1000, H::SLACK),
        "start gaps {gaps:?}"
    );

    let delayed_session = self::session("delay");
    let begin = tokio::time::Instant::now();
    runtime
        .execute_in_session(&delayed_session, &Delayed, 1)
        .await
        .expect("runs");
    let waited = u64::try_from(begin.elapsed().as_millis()).unwrap_or(u64::MAX);
    assert!(within(waited, 300, H::SLACK), "delayed {waited} ms");
}

/// Instantiates the whole suite as `#[tokio::test]`s for a [`Harness`], or runs it in order.
///
/// - `conformance_suite!(Harness, paused = false)` (an item): one `#[tokio::test]` per
///   behaviour; `paused` runs each on tokio's paused clock (in-process runtimes only).
/// - `conformance_suite!(in sequence Harness)` (a statement, in an async test): every
///   behaviour one after the other, each named on stderr as it starts: for a harness whose
///   runtimes share something costly to make (a Redis Cluster started by the test).
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty, paused = $paused:tt) => {
        $crate::conformance_suite!(@list @tests $harness, $paused,);
    };
    (in sequence $harness:ty) => {
        $crate::conformance_suite!(@list @sequence $harness,);
    };
    (@list $($head:tt)*) => {
        $crate::conformance_suite!($($head)*
            lifecycle_is_idempotent_and_restartable,
            execute_before_start_is_a_typed_error,
            registration_covers_contents_and_replaces,
            processor_configuration_is_readable,
            processors_registered_after_start_are_usable,
            single_processor_returns_output_and_metadata,
            unknown_name_is_not_found_and_lists_registered,
            execute_many_keeps_order_and_isolates_failures,
            independent_runs_are_concurrent,
            ctx_call_returns_result_and_allows_fallback,
            call_depth_is_limited,
            chain_runs_steps_in_order,
            chain_failure_names_step_position_and_state,
            parallel_joins_every_branch,
            parallel_failure_cancels_other_branches,
            parallel_collect_keeps_every_result,
            route_selects_arm_or_fallback,
            map_gives_per_item_results,
            concurrency_limits_are_honoured,
            compositions_nest,
            plans_describe_the_graph,
            sessions_are_isolated,
            stop_session_cancels_its_runs_only,
            session_stats_are_keyed_by_processor,
            state_feeds_the_next_run,
            domain_errors_keep_variant_and_fields,
            panics_become_typed_errors,
            timeouts_are_exact_and_fire_the_token,
            retries_until_success,
            exhausted_retries_return_the_last_error,
            exponential_backoff_spaces_attempts,
            retry_predicate_decides,
            events_show_every_attempt,
            events_describe_the_run,
            subscribers_are_independent,
            stats_count_work,
            rate_limits_and_delays_apply,
        );
    };
    (@sequence $harness:ty, $($test:ident),+ $(,)?) => {
        $(
            eprintln!("conformance: {}", stringify!($test));
            $crate::suite::$test::<$harness>().await;
        )+
    };
    (@tests $harness:ty, $paused:tt, $($test:ident),+ $(,)?) => {
        $(
            #[tokio::test(start_paused = $paused)]
            async fn $test() {
                $crate::suite::$test::<$harness>().await;
            }
        )+
    };
}
