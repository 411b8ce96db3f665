//! The lifecycle invariants that must hold on every runtime (docs/faults.md
//! scenarios 30 and 31), written once, generic over the runtime.
//! [`lifecycle_suite!`](macro@crate::lifecycle_suite) instantiates them for a [`LifecycleHarness`].
//!
//! - `ctx.call` never deadlocks under limits: a step calling another while its session may run
//!   one step at a time, and a processor with `concurrency = 1` calling itself, complete (or
//!   fail typed) instead of waiting forever.
//! - A cancelled step's token fires and the step's own code sees it: when a sibling of a
//!   fail-fast parallel fails, and when its session is stopped, a step looping on
//!   `ctx.is_cancelled()` gets to record that it saw the cancellation before its future is
//!   dropped (within the runtime's cancel grace, 1 s by default).

use std::time::Duration;

use am2z::{Ctx, Error, Executes, Processor, RunId, Runtime, SessionId, processor, workflow};

use crate::probe::{record, seen};

/// How long a run that must not hang may take before the test calls it a hang (the machine is
/// shared: generous).
const HANG_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Processors

/// `n + 1`: the callee of [`calls_a_step`].
#[processor]
pub async fn lc_callee(n: u64, ctx: &Ctx) -> Result<u64, Error> {
    record(ctx, format!("callee:{n}"));
    Ok(n + 1)
}

/// Calls [`lc_callee`] on `n` (`ctx.call`) and returns its result × 10.
#[processor]
pub async fn calls_a_step(n: u64, ctx: &Ctx) -> Result<u64, Error> {
    record(ctx, format!("caller:{n}"));
    let got = ctx.call(&LcCallee, n).await?;
    Ok(got * 10)
}

/// At most one at a time; calls itself (`ctx.call`) until `depth` reaches 3, then returns
/// the depth it reached (so a complete run of `0` returns 3).
#[processor(concurrency = 1)]
pub async fn recurse_one_at_a_time(depth: u32, ctx: &Ctx) -> Result<u32, Error> {
    record(ctx, format!("depth:{depth}"));
    if depth >= 3 {
        return Ok(depth);
    }
    ctx.call(&RecurseOneAtATime, depth + 1).await
}

/// Loops until its cancellation token fires (for at most 30 s), recording `started:<tag>`
/// when it begins and `observed:<tag>` when it sees the cancellation, then returns.
#[processor(timeout = "60s")]
pub async fn watches_its_token(tag: String, ctx: &Ctx) -> Result<String, Error> {
    record(ctx, format!("started:{tag}"));
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < until {
        if ctx.is_cancelled() {
            record(ctx, format!("observed:{tag}"));
            return Err(Error::Cancelled {
                reason: "observed".to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    record(ctx, format!("never-cancelled:{tag}"));
    Ok(tag)
}

/// Waits until [`watches_its_token`] of the same run has started (its `started:<tag>`), then
/// fails (not retryable): the failing sibling of [`WatchedFailFast`].
#[processor]
pub async fn fails_once_watched(tag: String, ctx: &Ctx) -> Result<String, Error> {
    let started = format!("started:{tag}");
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen(ctx.session_id().as_str()).contains(&started) {
        if tokio::time::Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    record(ctx, format!("failing:{tag}"));
    Err(Error::validation("tag", "the sibling fails on purpose"))
}

/// The tag in capitals: the step after [`watches_its_token`] in [`WatchedChain`].
#[processor]
pub async fn lc_shout(tag: String) -> Result<String, Error> {
    Ok(tag.to_uppercase())
}

workflow! {
    /// A step that watches its token beside one that fails once the first has started
    /// (all-or-nothing: fail-fast).
    pub WatchedFailFast(String) -> (String, String) {
        parallel![watches_its_token, fails_once_watched]
    }

    /// A step that watches its token, then one more (a run executed step by step on Redis).
    pub WatchedChain(String) -> String {
        chain![watches_its_token, lc_shout]
    }
}

// ---------------------------------------------------------------------------------------------
// The harness

/// A runtime the lifecycle suite can drive.
pub trait LifecycleRuntime:
    Runtime
    + Clone
    + Executes<CallsAStep>
    + Executes<RecurseOneAtATime>
    + Executes<WatchedFailFast>
    + Executes<WatchedChain>
{
}

impl<R> LifecycleRuntime for R where
    R: Runtime
        + Clone
        + Executes<CallsAStep>
        + Executes<RecurseOneAtATime>
        + Executes<WatchedFailFast>
        + Executes<WatchedChain>
{
}

/// How the runtimes under test are made.
pub trait LifecycleHarness {
    /// The runtime.
    type Runtime: LifecycleRuntime;
    /// A new runtime, not yet started, with default limits.
    fn runtime() -> impl Future<Output = Self::Runtime>;
    /// A new runtime, not yet started, on which a session runs at most one step at a time
    /// (Redis: `session_concurrency(1)`; local: one worker slot).
    fn one_step_at_a_time() -> impl Future<Output = Self::Runtime>;
    /// Removes whatever the runtime left behind (Redis: its prefix's keys), after `stop`.
    fn clean_up(runtime: &Self::Runtime) -> impl Future<Output = ()>;
}

fn session(test: &str) -> SessionId {
    SessionId::new(format!("{test}-{}", RunId::generate())).expect("a valid session id")
}

/// Polls `condition` every 5 ms for up to `within`; whether it held.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A run must end (ok or typed failure) within the hang guard, never wait forever.
async fn ends<R, P>(runtime: &R, session: &SessionId, processor: &P, input: P::Input) -> String
where
    R: Runtime + Executes<P>,
    P: Processor,
    P::Output: std::fmt::Debug,
{
    match tokio::time::timeout(
        HANG_GUARD,
        runtime.execute_in_session(session, processor, input),
    )
    .await
    {
        Ok(Ok(result)) => format!("ok {:?}", result.output),
        Ok(Err(failure)) => format!("failed {}", failure.error),
        Err(_) => panic!(
            "`{}` in session {session} waited {HANG_GUARD:?} without an outcome: a deadlock \
             (seen: {:?})",
            processor.name(),
            seen(session.as_str())
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 6. `ctx.call` never deadlocks under limits

/// A step that `ctx.call`s another, in a session that runs one step at a time: the call
/// completes (the callee runs and the caller gets its result) or fails typed, never hangs.
pub async fn a_call_completes_when_its_session_runs_one_step_at_a_time<H: LifecycleHarness>() {
    let runtime = H::one_step_at_a_time().await;
    runtime.start().await.expect("the runtime starts");
    let s = session("call-one-slot");
    let outcome = ends(&runtime, &s, &CallsAStep, 41).await;
    // Completing is the expected way; a typed failure would also honour the invariant.
    if outcome.starts_with("ok") {
        assert_eq!(outcome, "ok 420", "the callee's result, × 10");
        assert!(seen(s.as_str()).contains(&"callee:41".to_owned()));
    }
    let _ = runtime.stop_session(&s).await;
    runtime.stop().await.expect("the runtime stops");
    H::clean_up(&runtime).await;
}

/// A processor limited to one at a time that calls itself (depth 3): it completes (each
/// level's result returned up) or fails typed, never waits forever for its own permit.
pub async fn a_limited_processor_calling_itself_completes<H: LifecycleHarness>() {
    let runtime = H::runtime().await;
    runtime.start().await.expect("the runtime starts");
    let s = session("recurse-one");
    let outcome = ends(&runtime, &s, &RecurseOneAtATime, 0).await;
    if outcome.starts_with("ok") {
        assert_eq!(outcome, "ok 3");
        let depths: Vec<String> = seen(s.as_str())
            .into_iter()
            .filter(|e| e.starts_with("depth:"))
            .collect();
        assert_eq!(depths, ["depth:0", "depth:1", "depth:2", "depth:3"]);
    }
    let _ = runtime.stop_session(&s).await;
    runtime.stop().await.expect("the runtime stops");
    H::clean_up(&runtime).await;
}

// ---------------------------------------------------------------------------------------------
// 7. A cancelled step's token fires, and the step sees it

/// When a fail-fast parallel's sibling fails, the running branch's token fires and its code
/// records the observation before it is dropped.
pub async fn a_fail_fast_sibling_lets_the_running_branch_see_its_token<H: LifecycleHarness>() {
    let runtime = H::runtime().await;
    runtime.start().await.expect("the runtime starts");
    let s = session("fail-fast-token");
    let tag = format!("ff-{}", RunId::generate());
    let failure = tokio::time::timeout(
        HANG_GUARD,
        runtime.execute_in_session(&s, &WatchedFailFast, tag.clone()),
    )
    .await
    .expect("the parallel ends")
    .expect_err("the parallel fails with its sibling");
    assert!(
        matches!(failure.error.root_cause(), Error::Validation { .. }),
        "the sibling's error: {failure:?}"
    );
    let (started, observed) = (format!("started:{tag}"), format!("observed:{tag}"));
    assert!(
        seen(s.as_str()).contains(&started),
        "{:?}",
        seen(s.as_str())
    );
    // The default cancel grace is 1 s; allow for a loaded machine.
    let saw = eventually(Duration::from_secs(10), || {
        seen(s.as_str()).contains(&observed)
    })
    .await;
    assert!(
        saw,
        "the running branch never saw its token fire before being dropped: {:?}",
        seen(s.as_str())
    );
    let _ = runtime.stop_session(&s).await;
    runtime.stop().await.expect("the runtime stops");
    H::clean_up(&runtime).await;
}

/// When its session is stopped, a running step's token fires and its code records the
/// observation before it is dropped.
pub async fn a_stopped_session_lets_its_running_step_see_its_token<H: LifecycleHarness>() {
    let runtime = H::runtime().await;
    runtime.start().await.expect("the runtime starts");
    let s = session("stop-token");
    let tag = format!("st-{}", RunId::generate());
    let run = tokio::spawn({
        let (runtime, s, tag) = (runtime.clone(), s.clone(), tag.clone());
        async move { runtime.execute_in_session(&s, &WatchedChain, tag).await }
    });
    let started = format!("started:{tag}");
    assert!(
        eventually(HANG_GUARD, || seen(s.as_str()).contains(&started)).await,
        "the step started"
    );
    runtime.stop_session(&s).await.expect("stop_session");
    let outcome = tokio::time::timeout(HANG_GUARD, run)
        .await
        .expect("the run ends")
        .expect("the task");
    let failure = outcome.expect_err("the stopped run fails");
    assert!(
        matches!(failure.error, Error::SessionStopped { .. }),
        "{failure:?}"
    );
    let observed = format!("observed:{tag}");
    let saw = eventually(Duration::from_secs(10), || {
        seen(s.as_str()).contains(&observed)
    })
    .await;
    assert!(
        saw,
        "the running step never saw its token fire before being dropped: {:?}",
        seen(s.as_str())
    );
    runtime.stop().await.expect("the runtime stops");
    H::clean_up(&runtime).await;
}

/// Turns the lifecycle suite into `#[tokio::test]`s (multi-threaded, real clock) for a
/// [`LifecycleHarness`].
#[macro_export]
macro_rules! lifecycle_suite {
    ($harness:ty) => {
        $crate::lifecycle_suite!(@tests $harness,
            a_call_completes_when_its_session_runs_one_step_at_a_time,
            a_limited_processor_calling_itself_completes,
            a_fail_fast_sibling_lets_the_running_branch_see_its_token,
            a_stopped_session_lets_its_running_step_see_its_token,
        );
    };
    (@tests $harness:ty, $($test:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::lifecycle_suite::$test::<$harness>().await;
            }
        )+
    };
}
