//! The conformance suite on the local runtime, on tokio's paused clock: timeouts and backoff
//! are measured exactly.

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

am2z_tests::conformance_suite!(Local, paused = true);

// Local-only behaviours: settings of `LocalRuntimeBuilder`.

mod local_only {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use am2z::{Error, Executes, LocalRuntime, Runtime, processor_fn};
    use am2z_tests::suite::session;

    /// With one worker slot, waiting attempts are served by priority, then arrival.
    #[tokio::test(start_paused = true)]
    async fn worker_slots_serve_higher_priority_first() {
        let runtime = LocalRuntime::builder().worker_slots(1).build();
        runtime.start().await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let step = |name: &'static str, priority: i32| {
            let order = Arc::clone(&order);
            processor_fn(move |ms: u64| {
                let order = Arc::clone(&order);
                async move {
                    order.lock().unwrap().push(name);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok::<_, Error>(ms)
                }
            })
            .named(name)
            .with_config(am2z::ProcessorConfig::new().priority(priority))
        };
        let (blocker, low, high) = (step("blocker", 0), step("low", 1), step("high", 9));
        let s = session("priority");
        let (a, b, c) = tokio::join!(
            runtime.execute_in_session(&s, &blocker, 100),
            async {
                tokio::task::yield_now().await;
                runtime.execute_in_session(&s, &low, 1).await
            },
            async {
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                runtime.execute_in_session(&s, &high, 1).await
            },
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(*order.lock().unwrap(), ["blocker", "high", "low"]);
    }

    /// `stop` cancels in-flight runs with a typed error, and the runtime starts again.
    #[tokio::test(start_paused = true)]
    async fn stop_cancels_in_flight_runs() {
        let runtime = LocalRuntime::new();
        runtime.start().await.unwrap();
        let slow = processor_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Error>(ms)
        })
        .named("slow");
        let s = session("stop");
        let (outcome, ()) = tokio::join!(runtime.execute_in_session(&s, &slow, 60_000), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            runtime.stop().await.unwrap();
        });
        let failure = outcome.expect_err("cancelled by stop");
        assert!(
            matches!(failure.error, Error::Cancelled { .. }),
            "{failure:?}"
        );
        runtime.start().await.unwrap();
        assert_eq!(
            runtime
                .execute_in_session(&s, &slow, 1)
                .await
                .unwrap()
                .output,
            1
        );
    }

    /// The depth limit is a setting.
    #[tokio::test]
    async fn call_depth_limit_is_configurable() {
        let runtime = LocalRuntime::builder().max_call_depth(3).build();
        runtime.start().await.unwrap();
        let failure = runtime
            .execute(&am2z_tests::processors::Recurse, 0)
            .await
            .expect_err("stopped at depth 3");
        assert!(
            matches!(
                failure.error.root_cause(),
                Error::DepthExceeded {
                    limit: 3,
                    depth: 4,
                    ..
                }
            ),
            "{failure:?}"
        );
    }

    /// A subscriber that stops reading falls behind and skips the oldest events (counted in
    /// `missed`), while the runtime and a subscriber that keeps reading lose nothing.
    #[tokio::test(start_paused = true)]
    async fn a_slow_subscriber_skips_events_without_slowing_anyone() {
        use futures::StreamExt;

        let runtime = LocalRuntime::builder().event_capacity(16).build();
        runtime.start().await.unwrap();
        let s = session("slow-subscriber");
        let mut slow = runtime.subscribe_session(&s);
        let mut fast = runtime.subscribe_session(&s);
        let reader = tokio::spawn(async move {
            let mut completed = 0;
            while let Some(event) = fast.next().await {
                if matches!(event.kind, am2z::EventKind::RunCompleted { .. }) {
                    completed += 1;
                    if completed == 200 {
                        break;
                    }
                }
            }
            (completed, fast.missed())
        });
        for x in 0..200 {
            runtime
                .execute_in_session(&s, &am2z_tests::processors::AddOne, x)
                .await
                .unwrap();
            // Let the fast reader keep up, as a live consumer does.
            tokio::task::yield_now().await;
        }
        assert_eq!(reader.await.unwrap(), (200, 0));
        // 801 events (the session's creation, then run-started, started, completed and
        // run-completed for each of the 200 runs) went past a ring of 16: the slow one keeps
        // only the newest 16, the last four runs' events.
        let newest = slow
            .next()
            .await
            .expect("the newest events are still there");
        assert_eq!(slow.missed(), 801 - 16);
        // Event 786 is the first of run 196's four: its run-started.
        assert!(
            matches!(newest.kind, am2z::EventKind::RunStarted),
            "{newest:?}"
        );
    }
}
