//! The inspection suite: [`am2z::Inspect`] as every runtime answers it, written once, generic
//! over the runtime. [`inspect_suite!`](macro@crate::inspect_suite) instantiates it for a
//! [`Harness`] whose runtime also implements [`Inspect`].
//!
//! Live runs are observed by polling the listings until the expected state shows (never by
//! sleeping a guessed time), with a generous bound that only catches a hang.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use am2z::runtime::inspect::{
    CancelOutcome, Cursor, PageRequest, RetryOutcome, RunDetail, RunFilter, RunState, RunSummary,
    Shown, StepState,
};
use am2z::{Error, EventKind, Executes, Inspect, RunId, Runtime, SessionId};

use crate::flows::*;
use crate::processors::*;
use crate::suite::{Harness, SuiteRuntime, session};

/// A runtime the inspection suite can drive.
pub trait InspectRuntime:
    SuiteRuntime
    + Inspect
    + Executes<FailsFirstTime>
    + Executes<OneAtATime>
    + Executes<StartsLate>
    + Executes<KeepsSecret>
    + Executes<ShoutSecret>
{
}

impl<R> InspectRuntime for R where
    R: SuiteRuntime
        + Inspect
        + Executes<FailsFirstTime>
        + Executes<OneAtATime>
        + Executes<StartsLate>
        + Executes<KeepsSecret>
        + Executes<ShoutSecret>
{
}

async fn started<H: Harness>() -> H::Runtime {
    let runtime = H::runtime().await;
    runtime.start().await.expect("the runtime starts");
    runtime
}

async fn shut_down<R: Runtime>(runtime: &R, sessions: &[&SessionId]) {
    for s in sessions {
        runtime.stop_session(s).await.expect("stop_session");
    }
    runtime.stop().await.expect("stop");
}

/// Polls `probe` until it answers `Some`. The bound only catches a hang; it is no timing
/// expectation.
async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every run of `session` matching `filter`, walking all pages of `limit`.
async fn all_runs<R: Inspect>(
    runtime: &R,
    session: &SessionId,
    filter: &RunFilter,
    limit: usize,
) -> Vec<RunSummary> {
    let mut runs = Vec::new();
    let mut page = PageRequest::first(limit);
    loop {
        let listed = runtime
            .runs(session, filter, page)
            .await
            .expect("runs are listed");
        assert!(
            listed.items.len() <= limit,
            "a page holds at most its limit"
        );
        runs.extend(listed.items);
        match listed.next {
            Some(next) => page = PageRequest::after(next, limit),
            None => return runs,
        }
    }
}

fn by_processor(name: &str) -> RunFilter {
    RunFilter {
        state: None,
        processor: Some(name.to_owned()),
    }
}

/// The id of the run of `processor` in `session`, once the runtime lists it.
async fn listed_run<R: Inspect>(runtime: &R, session: &SessionId, processor: &str) -> RunId {
    until(&format!("a run of `{processor}` to be listed"), || async {
        runtime
            .runs(session, &by_processor(processor), PageRequest::first(10))
            .await
            .expect("runs are listed")
            .items
            .first()
            .map(|run| run.run)
    })
    .await
}

/// Waits until `run` is listed in `state`, and answers its summary there.
async fn listed_in<R: Inspect>(
    runtime: &R,
    session: &SessionId,
    run: RunId,
    state: RunState,
) -> RunSummary {
    until(&format!("run {run} to be listed as {state}"), || async {
        all_runs(runtime, session, &RunFilter::state(state), 100)
            .await
            .into_iter()
            .find(|summary| summary.run == run)
    })
    .await
}

/// Waits until `run` has ended, and answers its detail.
async fn ended<R: Inspect>(runtime: &R, session: &SessionId, run: RunId) -> RunDetail {
    until(&format!("run {run} to end"), || async {
        runtime
            .run(session, run)
            .await
            .expect("run detail")
            .filter(|detail| detail.summary.state.is_terminal())
    })
    .await
}

async fn detail<R: Inspect>(runtime: &R, session: &SessionId, run: RunId) -> RunDetail {
    runtime
        .run(session, run)
        .await
        .expect("run detail")
        .unwrap_or_else(|| panic!("run {run} is known"))
}

fn is_validation(error: &Error) -> bool {
    matches!(error, Error::Validation { .. })
}

// ---------------------------------------------------------------------------------------------

/// `sessions` lists every session with runs, with its counts of live and ended runs; its pages
/// hold no session twice; a cursor it did not write is refused.
pub async fn sessions_are_listed_with_their_counts<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    let (a, b) = (session("inspect-sessions-a"), session("inspect-sessions-b"));
    for x in 0..3 {
        runtime
            .execute_in_session(&a, &AddOne, x)
            .await
            .expect("runs");
    }
    runtime
        .execute_in_session(&a, &AlwaysFails, 1)
        .await
        .expect_err("fails");
    runtime
        .execute_in_session(&b, &AddOne, 1)
        .await
        .expect("runs");

    let mut seen = Vec::new();
    let mut page = PageRequest::first(1);
    loop {
        let listed = runtime.sessions(page).await.expect("sessions are listed");
        assert!(listed.items.len() <= 1);
        seen.extend(listed.items);
        match listed.next {
            Some(next) => page = PageRequest::after(next, 1),
            None => break,
        }
    }
    let ids: Vec<&SessionId> = seen.iter().map(|s| &s.session).collect();
    let unique: BTreeSet<&SessionId> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "no session is listed twice: {ids:?}"
    );
    let summary_a = seen.iter().find(|s| s.session == a).expect("a is listed");
    assert_eq!(
        (summary_a.live_runs, summary_a.completed, summary_a.failed),
        (0, 3, 1)
    );
    let summary_b = seen.iter().find(|s| s.session == b).expect("b is listed");
    assert_eq!((summary_b.completed, summary_b.failed), (1, 0));

    let refused = runtime
        .sessions(PageRequest::after(Cursor::new("not-a-cursor"), 10))
        .await
        .expect_err("a foreign cursor is refused");
    assert!(is_validation(&refused), "{refused:?}");
    shut_down(&runtime, &[&a, &b]).await;
}

/// Runs are listed by every state: queued (waiting for a concurrency slot), active, delayed,
/// completed and failed; each listing holds exactly the runs in that state.
pub async fn runs_are_listed_by_state<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    let s = session("inspect-states");
    let done = runtime
        .execute_in_session(&s, &AddOne, 1)
        .await
        .expect("completes");
    let failed = runtime
        .execute_in_session(&s, &AlwaysFails, 1)
        .await
        .expect_err("fails");

    let holder = {
        let (runtime, s) = (runtime.clone(), s.clone());
        tokio::spawn(async move {
            runtime
                .execute_in_session(&s, &OneAtATime, 3_600_000)
                .await
                .map(|r| r.output)
        })
    };
    let holding = listed_run(&runtime, &s, "one_at_a_time").await;
    listed_in(&runtime, &s, holding, RunState::Active).await;
    let waiter = {
        let (runtime, s) = (runtime.clone(), s.clone());
        tokio::spawn(async move {
            runtime
                .execute_in_session(&s, &OneAtATime, 1)
                .await
                .map(|r| r.output)
        })
    };
    let waiting = until("the second run of `one_at_a_time` to be listed", || async {
        runtime
            .runs(&s, &by_processor("one_at_a_time"), PageRequest::first(10))
            .await
            .expect("runs")
            .items
            .iter()
            .map(|run| run.run)
            .find(|run| *run != holding)
    })
    .await;
    let late = {
        let (runtime, s) = (runtime.clone(), s.clone());
        tokio::spawn(async move {
            runtime
                .execute_in_session(&s, &StartsLate, 7)
                .await
                .map(|r| r.output)
        })
    };
    let delayed = listed_run(&runtime, &s, "starts_late").await;

    let queued = listed_in(&runtime, &s, waiting, RunState::Queued).await;
    assert_eq!(queued.processor, "one_at_a_time");
    assert_eq!(queued.ended_at, None);
    let active = listed_in(&runtime, &s, holding, RunState::Active).await;
    assert_eq!(active.attempts, 1);
    listed_in(&runtime, &s, delayed, RunState::Delayed).await;
    let completed = listed_in(&runtime, &s, done.meta.run_id, RunState::Completed).await;
    assert_eq!(completed.processor, "add_one");
    assert!(completed.ended_at.is_some());
    let failed_summary = listed_in(&runtime, &s, failed.meta.run_id, RunState::Failed).await;
    assert_eq!(failed_summary.attempts, 2, "always_fails makes 2 attempts");
    assert_eq!(
        failed_summary.error.as_deref(),
        Some(failed.error.to_string().as_str())
    );

    // Each state's listing holds exactly its runs.
    for (state, expected) in [
        (RunState::Completed, vec![done.meta.run_id]),
        (RunState::Failed, vec![failed.meta.run_id]),
        (RunState::Active, vec![holding]),
        (RunState::Queued, vec![waiting]),
        (RunState::Delayed, vec![delayed]),
        (RunState::DeadLettered, vec![]),
    ] {
        let listed: Vec<RunId> = all_runs(&runtime, &s, &RunFilter::state(state), 10)
            .await
            .into_iter()
            .map(|run| run.run)
            .collect();
        assert_eq!(listed, expected, "runs listed as {state}");
    }
    let of_one: Vec<RunId> = all_runs(
        &runtime,
        &s,
        &RunFilter {
            state: Some(RunState::Failed),
            processor: Some("add_one".to_owned()),
        },
        10,
    )
    .await
    .into_iter()
    .map(|run| run.run)
    .collect();
    assert!(of_one.is_empty(), "the filters combine: {of_one:?}");
    assert_eq!(all_runs(&runtime, &s, &RunFilter::all(), 2).await.len(), 5);

    runtime.stop_session(&s).await.expect("stop_session");
    for task in [holder, waiter, late] {
        let outcome = task.await.expect("the task ends");
        assert!(outcome.is_err(), "stopping the session ends its live runs");
    }
    runtime.stop().await.expect("stop");
}

/// Pages are newest first, hold no run twice and skip none, stay stable while new runs
/// arrive, and a cursor the runtime did not write is refused.
pub async fn runs_page_without_duplicates_or_gaps<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    let s = session("inspect-paging");
    let mut submitted = Vec::new();
    for x in 0..23 {
        let result = runtime
            .execute_in_session(&s, &AddOne, x)
            .await
            .expect("runs");
        submitted.push(result.meta.run_id);
    }
    let newest_first: Vec<RunId> = submitted.iter().rev().copied().collect();

    let mut listed = Vec::new();
    let mut page = PageRequest::first(5);
    let mut pages = 0;
    loop {
        let got = runtime
            .runs(&s, &RunFilter::all(), page)
            .await
            .expect("runs are listed");
        pages += 1;
        listed.extend(got.items.iter().map(|run| run.run));
        // New runs arriving between pages go before the first page, not into later ones.
        runtime
            .execute_in_session(&s, &AddOne, 100)
            .await
            .expect("runs");
        match got.next {
            Some(next) => page = PageRequest::after(next, 5),
            None => break,
        }
    }
    assert_eq!(pages, 5, "23 runs in pages of 5");
    assert_eq!(listed, newest_first, "every run once, newest first");

    let summaries = all_runs(&runtime, &s, &RunFilter::state(RunState::Completed), 500).await;
    assert_eq!(summaries.len(), 23 + pages);
    assert!(
        summaries
            .windows(2)
            .all(|w| w[0].created_at >= w[1].created_at),
        "newest first"
    );

    for bad in ["", "garbage", "run:x", "session:1"] {
        let refused = runtime
            .runs(
                &s,
                &RunFilter::all(),
                PageRequest::after(Cursor::new(bad), 5),
            )
            .await
            .expect_err("a cursor the runtime did not write is refused");
        assert!(is_validation(&refused), "{bad:?}: {refused:?}");
    }
    shut_down(&runtime, &[&s]).await;
}

/// The detail of a chain: its plan, each step's state and attempts, the output as JSON; of a
/// failed chain: the failed step, the steps never reached, the error chain; events oldest
/// first.
pub async fn run_detail_shows_plan_steps_output_and_error<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    let s = session("inspect-detail");
    let ok = runtime
        .execute_in_session(&s, &Arith, 5)
        .await
        .expect("runs");
    assert_eq!(ok.output, 22);
    let done = detail(&runtime, &s, ok.meta.run_id).await;
    assert_eq!(done.summary.state, RunState::Completed);
    assert_eq!(done.summary.processor, "Arith");
    let plan = done.plan.as_ref().expect("the plan of a known processor");
    assert_eq!(plan.step_names(), vec!["add_one", "double", "add_ten"]);
    let steps: Vec<(&str, StepState, u32)> = done
        .steps
        .iter()
        .map(|step| (step.processor.as_str(), step.state, step.attempts))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("add_one", StepState::Completed, 1),
            ("double", StepState::Completed, 1),
            ("add_ten", StepState::Completed, 1),
        ]
    );
    assert!(
        done.steps
            .iter()
            .all(|step| step.started_at.is_some() && step.finished_at.is_some())
    );
    assert_eq!(done.input, Shown::Value(serde_json::json!(5)));
    assert_eq!(done.output, Shown::Value(serde_json::json!(22)));
    assert_eq!(done.error, None);
    assert_eq!(done.summary.attempts, 3);
    let times: Vec<_> = done.events.iter().map(|event| event.at).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "events oldest first"
    );
    let started: Vec<&str> = done
        .events
        .iter()
        .filter(|event| matches!(event.kind, EventKind::StepStarted { .. }))
        .filter_map(|event| event.processor.as_deref())
        .collect();
    assert_eq!(started, vec!["add_one", "double", "add_ten"]);
    assert!(
        done.events
            .iter()
            .all(|event| event.run_id == Some(ok.meta.run_id))
    );

    let failure = runtime
        .execute_in_session(&s, &NegateThenReject, 3)
        .await
        .expect_err("reject_negative fails");
    let failed = ended(&runtime, &s, failure.meta.run_id).await;
    assert_eq!(failed.summary.state, RunState::Failed);
    let steps: Vec<(&str, StepState)> = failed
        .steps
        .iter()
        .map(|step| (step.processor.as_str(), step.state))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("add_one", StepState::Completed),
            ("negate", StepState::Completed),
            ("reject_negative", StepState::Failed),
        ]
    );
    let failed_step = &failed.steps[2];
    assert!(failed_step.error.is_some());
    let error = failed.error.as_ref().expect("a failed run has its error");
    assert_eq!(
        error.chain.first().map(String::as_str),
        Some(failure.error.to_string().as_str())
    );
    assert_eq!(failed.summary.error, Some(failure.error.to_string()));
    assert_eq!(failed.output, Shown::Unavailable);
    assert!(matches!(
        failed.events.last().map(|event| &event.kind),
        Some(EventKind::RunFailed { .. })
    ));
    shut_down(&runtime, &[&s]).await;
}

/// A failed run retried by an operator runs again with the same processor and input, as a new
/// run linked both ways; retrying again answers the same new run; a completed or live run is
/// refused.
pub async fn retry_resubmits_a_failed_run_once<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    runtime.register(FailsFirstTime);
    let s = session("inspect-retry");
    let failure = runtime
        .execute_in_session(&s, &FailsFirstTime, 41)
        .await
        .expect_err("fails the first time");
    let original = failure.meta.run_id;
    let retried = match runtime.retry_run(&s, original).await.expect("retried") {
        RetryOutcome::Retried { run } => run,
        other => panic!("a first retry submits a new run, got {other:?}"),
    };
    assert_ne!(retried, original);
    let again = ended(&runtime, &s, retried).await;
    assert_eq!(again.summary.state, RunState::Completed, "{again:?}");
    assert_eq!(again.summary.processor, "fails_first_time");
    assert_eq!(again.input, Shown::Value(serde_json::json!(41)));
    assert_eq!(again.output, Shown::Value(serde_json::json!(41)));
    assert_eq!(again.retry_of, Some(original));
    assert_eq!(
        detail(&runtime, &s, original).await.retried_as,
        Some(retried)
    );
    assert_eq!(
        runtime.retry_run(&s, original).await.expect("idempotent"),
        RetryOutcome::AlreadyRetried { run: retried }
    );
    let listed = all_runs(&runtime, &s, &by_processor("fails_first_time"), 10).await;
    assert_eq!(listed.len(), 2, "one retry, however often it is asked for");

    let refused = runtime
        .retry_run(&s, retried)
        .await
        .expect_err("a completed run is not retried");
    assert!(is_validation(&refused), "{refused:?}");

    let sleeper = {
        let (runtime, s) = (runtime.clone(), s.clone());
        tokio::spawn(async move { runtime.execute_in_session(&s, &SleepMs, 3_600_000).await })
    };
    let live = listed_run(&runtime, &s, "sleep_ms").await;
    let refused = runtime
        .retry_run(&s, live)
        .await
        .expect_err("a live run is not retried");
    assert!(is_validation(&refused), "{refused:?}");
    runtime.stop_session(&s).await.expect("stop_session");
    assert!(sleeper.await.expect("the task ends").is_err());
    runtime.stop().await.expect("stop");
}

/// Cancelling a live run fires its token and ends it with `Error::Cancelled`; cancelling it
/// again answers that it had ended.
pub async fn cancel_ends_a_live_run<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    let s = session("inspect-cancel");
    let other = runtime
        .execute_in_session(&s, &AddOne, 1)
        .await
        .expect("runs");
    let sleeper = {
        let (runtime, s) = (runtime.clone(), s.clone());
        tokio::spawn(async move { runtime.execute_in_session(&s, &SleepMs, 3_600_000).await })
    };
    let live = listed_run(&runtime, &s, "sleep_ms").await;
    listed_in(&runtime, &s, live, RunState::Active).await;
    assert_eq!(
        runtime.cancel_run(&s, live).await.expect("cancelled"),
        CancelOutcome::Cancelled
    );
    let failure = sleeper
        .await
        .expect("the task ends")
        .expect_err("a cancelled run fails");
    assert!(
        matches!(failure.error, Error::Cancelled { .. }),
        "{:?}",
        failure.error
    );
    let cancelled = ended(&runtime, &s, live).await;
    assert_eq!(cancelled.summary.state, RunState::Failed);
    assert!(matches!(
        cancelled.error.as_ref().map(|e| &e.error),
        Some(Error::Cancelled { .. })
    ));
    assert_eq!(
        runtime.cancel_run(&s, live).await.expect("idempotent"),
        CancelOutcome::AlreadyEnded {
            state: RunState::Failed
        }
    );
    assert_eq!(
        runtime
            .cancel_run(&s, other.meta.run_id)
            .await
            .expect("an ended run"),
        CancelOutcome::AlreadyEnded {
            state: RunState::Completed
        }
    );
    // The session lives on.
    runtime
        .execute_in_session(&s, &AddOne, 2)
        .await
        .expect("runs");
    shut_down(&runtime, &[&s]).await;
}

/// An unknown run: `run` answers `None`, `retry_run` and `cancel_run` answer `NotFound`.
pub async fn unknown_runs_are_not_found<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    let s = session("inspect-unknown");
    let known = runtime
        .execute_in_session(&s, &AddOne, 1)
        .await
        .expect("runs");
    let unknown = RunId::generate();
    assert_eq!(runtime.run(&s, unknown).await.expect("answers"), None);
    let elsewhere = session("inspect-unknown-other");
    assert_eq!(
        runtime
            .run(&elsewhere, known.meta.run_id)
            .await
            .expect("answers"),
        None,
        "a run is found in its own session only"
    );
    for error in [
        runtime.retry_run(&s, unknown).await.expect_err("unknown"),
        runtime.cancel_run(&s, unknown).await.expect_err("unknown"),
    ] {
        assert!(matches!(error, Error::NotFound { .. }), "{error:?}");
    }
    shut_down(&runtime, &[&s]).await;
}

/// A redacted processor's data, and a workflow's with a redacted step, are hidden in the
/// detail: input, output, state and custom event payloads.
pub async fn redacted_processors_hide_their_data<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    let s = session("inspect-redact");
    let secret = "hunter2-card-4242";
    let alone = runtime
        .execute_in_session(&s, &KeepsSecret, secret.to_owned())
        .await
        .expect("runs");
    let within = runtime
        .execute_in_session(&s, &ShoutSecret, secret.to_owned())
        .await
        .expect("runs");
    let shown_elsewhere = runtime
        .execute_in_session(&s, &AddOne, 1)
        .await
        .expect("runs");
    for run in [alone.meta.run_id, within.meta.run_id] {
        let hidden = detail(&runtime, &s, run).await;
        assert_eq!(hidden.input, Shown::Redacted);
        assert_eq!(hidden.output, Shown::Redacted);
        assert_eq!(hidden.state, Shown::Redacted);
        assert!(
            hidden
                .events
                .iter()
                .any(|event| matches!(&event.kind, EventKind::Custom { name, .. } if name == "secret.kept")),
            "the event is kept, its payload hidden"
        );
        let json = serde_json::to_string(&hidden).expect("a detail is JSON");
        assert!(
            !json.contains("hunter2") && !json.contains("HUNTER2"),
            "nothing of the secret shows: {json}"
        );
    }
    let shown = detail(&runtime, &s, shown_elsewhere.meta.run_id).await;
    assert_eq!(shown.input, Shown::Value(serde_json::json!(1)));
    shut_down(&runtime, &[&s]).await;
}

/// `stop_session` leaves nothing to inspect: the session is not listed, nor are its runs.
pub async fn stop_session_leaves_nothing_listed<H: Harness>()
where
    H::Runtime: InspectRuntime,
{
    let runtime = started::<H>().await;
    let (s, kept) = (session("inspect-stop"), session("inspect-stop-kept"));
    let run = runtime
        .execute_in_session(&s, &AddOne, 1)
        .await
        .expect("runs");
    runtime
        .execute_in_session(&s, &AlwaysFails, 1)
        .await
        .expect_err("fails");
    runtime
        .execute_in_session(&kept, &AddOne, 1)
        .await
        .expect("runs");
    runtime.stop_session(&s).await.expect("stop_session");

    let mut listed = Vec::new();
    let mut page = PageRequest::first(50);
    loop {
        let got = runtime.sessions(page).await.expect("sessions");
        listed.extend(got.items.into_iter().map(|summary| summary.session));
        match got.next {
            Some(next) => page = PageRequest::after(next, 50),
            None => break,
        }
    }
    assert!(!listed.contains(&s), "a stopped session is not listed");
    assert!(listed.contains(&kept), "other sessions are");
    assert!(
        all_runs(&runtime, &s, &RunFilter::all(), 50)
            .await
            .is_empty(),
        "nor are its runs"
    );
    assert_eq!(
        runtime.run(&s, run.meta.run_id).await.expect("answers"),
        None
    );
    shut_down(&runtime, &[&kept]).await;
}

/// Instantiates the inspection suite for a harness whose runtime implements
/// [`Inspect`](am2z::Inspect): `inspect_suite!(Local, paused = true);` makes one
/// `#[tokio::test]` per behaviour.
#[macro_export]
macro_rules! inspect_suite {
    ($harness:ty, paused = $paused:tt) => {
        $crate::inspect_suite!(@tests $harness, $paused,
            sessions_are_listed_with_their_counts,
            runs_are_listed_by_state,
            runs_page_without_duplicates_or_gaps,
            run_detail_shows_plan_steps_output_and_error,
            retry_resubmits_a_failed_run_once,
            cancel_ends_a_live_run,
            unknown_runs_are_not_found,
            redacted_processors_hide_their_data,
            stop_session_leaves_nothing_listed,
        );
    };
    (@tests $harness:ty, $paused:tt, $($test:ident),+ $(,)?) => {
        $(
            #[tokio::test(start_paused = $paused)]
            async fn $test() {
                $crate::inspect_suite::$test::<$harness>().await;
            }
        )+
    };
}
