//! Inspection of the local runtime: the inspection suite on tokio's paused clock, and what
//! only the local runtime does (its history bound, a session of 100 000 runs).

use std::time::Duration;

use am2z::LocalRuntime;
use am2z_tests::suite::Harness;

struct Local;

impl Harness for Local {
    type Runtime = LocalRuntime;
    const SLACK: Duration = Duration::ZERO;
    async fn runtime() -> LocalRuntime {
        LocalRuntime::new()
    }
}

am2z_tests::inspect_suite!(Local, paused = true);

// What only the local runtime does: its history bound, its one worker, runs by name, events
// kept per run, and a large session.

mod local_only {
    use std::time::{Duration, Instant};

    use am2z::runtime::inspect::{PageRequest, RunFilter, RunState, Shown, StepState};
    use am2z::runtime::local::EVENTS_PER_RUN;
    use am2z::{Error, EventKind, Executes, Inspect, LocalRuntime, Runtime, processor_fn};
    use am2z_tests::processors::{AddOne, RejectNegative, SleepMs};
    use am2z_tests::suite::session;

    /// A session keeps at most `history` ended runs: the oldest go first.
    #[tokio::test]
    async fn ended_runs_beyond_the_history_bound_are_dropped_oldest_first() {
        let runtime = LocalRuntime::builder().history(5).build();
        runtime.start().await.unwrap();
        let s = session("history-bound");
        let mut runs = Vec::new();
        for x in 0..8 {
            runs.push(
                runtime
                    .execute_in_session(&s, &AddOne, x)
                    .await
                    .unwrap()
                    .meta
                    .run_id,
            );
        }
        let listed: Vec<_> = runtime
            .runs(&s, &RunFilter::all(), PageRequest::first(50))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|run| run.run)
            .collect();
        let newest: Vec<_> = runs[3..].iter().rev().copied().collect();
        assert_eq!(listed, newest);
        assert_eq!(runtime.run(&s, runs[0]).await.unwrap(), None);
        let sessions = runtime.sessions(PageRequest::first(10)).await.unwrap();
        assert_eq!(sessions.items[0].completed, 5);
    }

    /// The local runtime is one worker: this process, serving what is registered.
    #[tokio::test]
    async fn the_one_worker_is_this_process() {
        let runtime = LocalRuntime::new();
        assert!(
            runtime.workers().await.unwrap().is_empty(),
            "not started: no worker"
        );
        runtime.start().await.unwrap();
        runtime.register(SleepMs);
        runtime.register(AddOne);
        let workers = runtime.workers().await.unwrap();
        assert_eq!(workers.len(), 1);
        let worker = &workers[0];
        assert!(worker.this_process);
        assert_eq!(worker.pid, Some(std::process::id()));
        assert_eq!(worker.processors, vec!["add_one", "sleep_ms"]);
    }

    /// A run by name is recorded like a typed one: its input and output as JSON.
    #[tokio::test]
    async fn runs_by_name_are_recorded() {
        let runtime = LocalRuntime::new();
        runtime.start().await.unwrap();
        runtime.register(AddOne);
        let s = session("by-name");
        let result = runtime
            .execute_named::<i64, i64>(&s, "add_one", 41)
            .await
            .unwrap();
        let detail = runtime.run(&s, result.meta.run_id).await.unwrap().unwrap();
        assert_eq!(detail.summary.processor, "add_one");
        assert_eq!(detail.input, Shown::Value(serde_json::json!(41)));
        assert_eq!(detail.output, Shown::Value(serde_json::json!(42)));
        assert_eq!(detail.steps.len(), 1);
    }

    /// Data that is not serde is not shown; a run of a processor that is not registered cannot
    /// be retried, and the refusal says why.
    #[tokio::test]
    async fn unshowable_data_and_unregistered_processors_are_explained() {
        #[derive(Clone)]
        struct Opaque(u32);
        let runtime = LocalRuntime::new();
        runtime.start().await.unwrap();
        let s = session("opaque");
        let fails = processor_fn(|input: Opaque| async move {
            Err::<u32, _>(Error::execution("opaque", format!("{} refused", input.0)))
        })
        .named("opaque");
        let failure = runtime
            .execute_in_session(&s, &fails, Opaque(7))
            .await
            .unwrap_err();
        let detail = runtime.run(&s, failure.meta.run_id).await.unwrap().unwrap();
        assert_eq!(detail.input, Shown::Unavailable);
        assert_eq!(detail.summary.state, RunState::Failed);
        let refused = runtime
            .retry_run(&s, failure.meta.run_id)
            .await
            .unwrap_err();
        match refused {
            Error::Validation { message, .. } => {
                assert!(message.contains("not registered"), "{message}")
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    /// A run keeps its most recent events, up to `EVENTS_PER_RUN`.
    #[tokio::test]
    async fn a_run_keeps_its_most_recent_events() {
        let runtime = LocalRuntime::new();
        runtime.start().await.unwrap();
        let s = session("events-bound");
        async fn chatty(n: u32, ctx: &am2z::Ctx) -> Result<u32, Error> {
            for i in 0..n {
                ctx.emit("tick", i)?;
            }
            Ok(n)
        }
        let chatty = processor_fn(chatty);
        let result = runtime.execute_in_session(&s, &chatty, 300).await.unwrap();
        let detail = runtime.run(&s, result.meta.run_id).await.unwrap().unwrap();
        assert_eq!(detail.events.len(), EVENTS_PER_RUN);
        assert!(matches!(
            detail.events.last().map(|e| &e.kind),
            Some(EventKind::RunCompleted { .. })
        ));
        let ticks: Vec<u64> = detail
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Custom { payload, .. } => payload.as_u64(),
                _ => None,
            })
            .collect();
        // The last events are the step's and the run's completion; the ticks before them.
        assert_eq!(ticks.first(), Some(&(300 - (EVENTS_PER_RUN as u64 - 2))));
        assert_eq!(ticks.last(), Some(&299));
        // The step's start was dropped from the events, not from its progress.
        let step = &detail.steps[0];
        assert_eq!((step.state, step.attempts), (StepState::Completed, 1));
        assert!(step.started_at.is_some());
    }

    /// A run whose caller drops it (a timeout around `execute`) is recorded as cancelled, not
    /// left live.
    #[tokio::test(start_paused = true)]
    async fn a_run_dropped_by_its_caller_ends_cancelled() {
        let runtime = LocalRuntime::new();
        runtime.start().await.unwrap();
        let s = session("dropped");
        let outcome = tokio::time::timeout(
            Duration::from_secs(1),
            runtime.execute_in_session(&s, &SleepMs, 3_600_000),
        )
        .await;
        assert!(outcome.is_err(), "the caller gave up");
        let failed = runtime
            .runs(
                &s,
                &RunFilter::state(RunState::Failed),
                PageRequest::first(10),
            )
            .await
            .unwrap();
        assert_eq!(failed.items.len(), 1);
        let detail = runtime.run(&s, failed.items[0].run).await.unwrap().unwrap();
        assert!(matches!(
            detail.error.map(|e| e.error),
            Some(Error::Cancelled { .. })
        ));
        let live = runtime
            .runs(
                &s,
                &RunFilter::state(RunState::Active),
                PageRequest::first(10),
            )
            .await
            .unwrap();
        assert!(live.items.is_empty());
    }

    /// A session of 100 000 runs pages by state in pages of 500: every run once, newest
    /// first. Prints the time per page (no bound is asserted: the machine is shared).
    #[tokio::test]
    async fn a_session_of_100_000_runs_pages_by_state() {
        const RUNS: i64 = 100_000;
        let runtime = LocalRuntime::builder().history(100_000).build();
        runtime.start().await.unwrap();
        let s = session("large");
        let (mut completed, mut failed) = (Vec::new(), Vec::new());
        for x in 0..RUNS {
            // Every fourth run fails.
            let input = if x % 4 == 3 { -x } else { x };
            match runtime.execute_in_session(&s, &RejectNegative, input).await {
                Ok(result) => completed.push(result.meta.run_id),
                Err(failure) => failed.push(failure.meta.run_id),
            }
        }
        assert_eq!(failed.len(), 25_000);
        for (state, submitted) in [(RunState::Completed, completed), (RunState::Failed, failed)] {
            let mut listed = Vec::with_capacity(submitted.len());
            let mut page = PageRequest::first(500);
            let mut pages = 0u32;
            let begin = Instant::now();
            loop {
                let got = runtime
                    .runs(&s, &RunFilter::state(state), page)
                    .await
                    .unwrap();
                pages += 1;
                assert!(got.items.iter().all(|run| run.state == state));
                listed.extend(got.items.into_iter().map(|run| run.run));
                match got.next {
                    Some(next) => page = PageRequest::after(next, 500),
                    None => break,
                }
            }
            let per_page = begin.elapsed() / pages;
            println!(
                "{state}: {} runs in {pages} pages of 500, {per_page:?} per page",
                listed.len()
            );
            let newest_first: Vec<_> = submitted.into_iter().rev().collect();
            assert!(
                listed == newest_first,
                "every {state} run once, newest first"
            );
        }
        // The first page of everything, and one deep in the listing, without walking the rest.
        let begin = Instant::now();
        let first = runtime
            .runs(&s, &RunFilter::all(), PageRequest::first(500))
            .await
            .unwrap();
        println!("all: first page of 500 in {:?}", begin.elapsed());
        assert_eq!(first.items.len(), 500);
        let sessions = runtime.sessions(PageRequest::first(10)).await.unwrap();
        assert_eq!(
            (sessions.items[0].completed, sessions.items[0].failed),
            (75_000, 25_000)
        );
    }
}
