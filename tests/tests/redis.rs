//! The conformance suite on the Redis runtime, with workers in the test process, against the
//! Redis on 127.0.0.1:6379 (or `AM2Z_TEST_REDIS_URL`). Each runtime gets its own key prefix,
//! so tests never see each other's keys; every key a test makes carries a short TTL, and the
//! Redis-only tests below also delete what they made and check that nothing is left.

use std::time::Duration;

use am2z::{RedisConfig, RedisRuntime, RunId};
use am2z_tests::flows::Arith;
use am2z_tests::processors::AddOne;
use am2z_tests::suite::Harness;

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `redis-cli` against the test Redis, its output trimmed.
fn redis_cli(args: &[&str]) -> String {
    am2z_tests::fault::redis_cli(&redis_url(), args)
}

/// Settings for a test runtime: its own prefix, short TTLs, a quick idle poll.
fn test_config(url: &str) -> RedisConfig {
    RedisConfig::new(url)
        .prefix(format!("am2z-test-{}", RunId::generate()))
        .worker_concurrency(64)
        .idle_poll(Duration::from_millis(50))
        .session_ttl(Duration::from_secs(120))
        .result_ttl(Duration::from_secs(120))
}

/// Stops `session` (deleting its keys) through `client`, then both runtimes.
async fn shut_down(session: &am2z::SessionId, client: &RedisRuntime, worker: &RedisRuntime) {
    use am2z::Runtime;
    client.stop_session(session).await.expect("stop_session");
    client.stop().await.expect("the client stops");
    worker.stop().await.expect("the worker stops");
}

struct Redis;

impl Harness for Redis {
    type Runtime = RedisRuntime;
    const SLACK: Duration = Duration::from_millis(150);
    async fn runtime() -> RedisRuntime {
        let runtime = RedisRuntime::new(test_config(&redis_url()));
        // What this worker serves by name (`execute` serves what it runs by itself).
        runtime.serve(AddOne);
        runtime.serve(Arith);
        runtime
    }
}

am2z_tests::conformance_suite!(Redis, paused = false);

// Redis-only behaviours.

mod redis_only {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use am2z::{Error, Executes, RedisRuntime, Runtime, SessionId};
    use am2z_tests::fault::{RedisServer, ServerSpec, redis_cli, scan_keys};
    use am2z_tests::layout::Layout;
    use am2z_tests::processors::{AddOne, SleepMs};
    use am2z_tests::suite::session;

    use super::{redis_url, test_config};

    /// Deletes every key of `prefix` (test cleanup).
    fn delete_prefix(url: &str, prefix: &str) {
        for key in scan_keys(url, &format!("{prefix}:*")) {
            redis_cli(url, &["DEL", &key]);
        }
    }

    /// A `redis-server` of our own on a free loopback port, without persistence (a restart
    /// comes back empty), stopped on drop.
    fn own_redis() -> RedisServer {
        ServerSpec::default().arg("appendonly", "no").start()
    }

    /// When Redis goes away and comes back, the runtime reconnects by itself: calls during
    /// the outage fail fast with a typed error, and work flows again afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnects_after_redis_restarts() {
        let mut redis = own_redis();
        let runtime = RedisRuntime::new(test_config(&redis.url()));
        runtime.start().await.unwrap();
        let s = session("restart");
        assert_eq!(
            runtime
                .execute_in_session(&s, &AddOne, 1)
                .await
                .unwrap()
                .output,
            2
        );
        redis.restart();
        let begin = Instant::now();
        loop {
            let outcome = tokio::time::timeout(
                Duration::from_secs(5),
                runtime.execute_in_session(&s, &AddOne, 2),
            )
            .await
            .expect("a call never hangs");
            match outcome {
                Ok(result) => {
                    assert_eq!(result.output, 3);
                    break;
                }
                Err(failure) => {
                    // During the outage: unavailable. The restarted server kept nothing (no
                    // persistence), so a sweeper that looks at the session before the next
                    // submission recreates it may announce it gone: a typed stop, not a hang.
                    assert!(
                        matches!(
                            failure.error,
                            Error::Unavailable { .. } | Error::SessionStopped { .. }
                        ),
                        "{failure:?}"
                    );
                    assert!(begin.elapsed() < Duration::from_secs(20), "reconnected");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        runtime.stop().await.unwrap();
    }

    /// After `stop_session` no key of the session remains, while a session running beside
    /// it is untouched and finishes.
    #[tokio::test]
    async fn stop_session_leaves_no_keys_and_spares_others() {
        let url = redis_url();
        let runtime = RedisRuntime::new(test_config(&url));
        let prefix = runtime.config().queue_prefix().to_owned();
        runtime.start().await.unwrap();
        let (doomed, bystander) = (session("doomed"), session("bystander"));
        for x in 0..5 {
            runtime
                .execute_in_session(&doomed, &AddOne, x)
                .await
                .unwrap();
        }
        // In flight when the session stops: a long run.
        let long = tokio::spawn({
            let (runtime, doomed) = (runtime.clone(), doomed.clone());
            async move { runtime.execute_in_session(&doomed, &SleepMs, 60_000).await }
        });
        let beside = tokio::spawn({
            let (runtime, bystander) = (runtime.clone(), bystander.clone());
            async move { runtime.execute_in_session(&bystander, &SleepMs, 300).await }
        });
        let doomed_pattern = format!("{prefix}:{{{doomed}}}:*");
        let bystander_pattern = format!("{prefix}:{{{bystander}}}:*");
        while runtime.runs_in_flight() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!scan_keys(&url, &doomed_pattern).is_empty());

        runtime.stop_session(&doomed).await.unwrap();
        assert_eq!(scan_keys(&url, &doomed_pattern), Vec::<String>::new());
        let failure = long.await.unwrap().expect_err("stopped");
        assert!(
            matches!(failure.error, Error::SessionStopped { .. }),
            "{failure:?}"
        );
        assert_eq!(beside.await.unwrap().expect("untouched").output, 300);
        assert!(!scan_keys(&url, &bystander_pattern).is_empty());
        // Still nothing after the stopped run's worker tried to commit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(scan_keys(&url, &doomed_pattern), Vec::<String>::new());
        assert!(!runtime.active_sessions().await.unwrap().contains(&doomed));

        runtime.stop_all_sessions().await.unwrap();
        runtime.stop().await.unwrap();
        // Only the global keys of the prefix are left (their hash tags start with `:`, which
        // no session id can); delete them.
        let left = scan_keys(&url, &format!("{prefix}:*"));
        assert!(
            left.iter().all(|k| k.starts_with(&format!("{prefix}:{{:"))),
            "{left:?}"
        );
        delete_prefix(&url, &prefix);
        assert!(scan_keys(&url, &format!("{prefix}:*")).is_empty());
    }

    /// However many sessions a process serves, it holds a fixed handful of connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_sessions_use_a_handful_of_connections() {
        let redis = own_redis();
        let runtime = RedisRuntime::new(test_config(&redis.url()).worker_concurrency(64));
        runtime.start().await.unwrap();
        let sessions: Vec<SessionId> = (0..1000).map(|i| session(&format!("s{i}"))).collect();
        let outcomes = futures::future::join_all(
            sessions
                .iter()
                .enumerate()
                .map(|(i, s)| runtime.execute_in_session(s, &AddOne, i as i64)),
        )
        .await;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            assert_eq!(outcome.unwrap().output, i as i64 + 1);
        }
        assert_eq!(runtime.active_sessions().await.unwrap().len(), 1000);
        let clients = redis_cli(&redis.url(), &["CLIENT", "LIST"]);
        // One line per connection; one of them is this redis-cli.
        let ours = clients
            .lines()
            .filter(|l| !l.contains("cmd=client"))
            .count();
        eprintln!("connections with 1000 sessions: {ours}");
        assert!(ours <= 5, "{ours} connections:\n{clients}");
        runtime.stop_all_sessions().await.unwrap();
        assert!(runtime.active_sessions().await.unwrap().is_empty());
        runtime.stop().await.unwrap();
    }

    /// A run submitted by one runtime is executed by the workers of two others and awaited
    /// by a fourth; outcomes carry the submitter's run id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submitted_by_one_executed_by_others_awaited_by_another() {
        let url = redis_url();
        // Four slots each: neither worker can take all twenty runs at once.
        let base = test_config(&url).worker_concurrency(4);
        let prefix = base.queue_prefix().to_owned();
        let client = |worker: bool| RedisRuntime::new(base.clone().worker(worker));
        let (submitter, awaiter) = (client(false), client(false));
        let (b, c) = (client(true), client(true));
        for worker in [&b, &c] {
            worker.serve(SleepMs);
        }
        for runtime in [&submitter, &awaiter, &b, &c] {
            runtime.start().await.unwrap();
        }
        let s = session("relay");
        let mut handles = Vec::new();
        for _ in 0..20 {
            handles.push(submitter.submit(&s, &SleepMs, 30).await.unwrap());
        }
        for handle in &handles {
            let result = awaiter
                .wait::<i64>(handle, Some(Duration::from_secs(10)))
                .await
                .expect("completed");
            assert_eq!(result.output, 30);
            assert_eq!(result.meta.run_id, handle.run_id);
            assert_eq!(result.meta.session_id, s);
        }
        // A worker counts its commit when Redis answers, which may be just after the awaiter
        // heard of it.
        let begin = std::time::Instant::now();
        while b.committed_runs() + c.committed_runs() < 20 {
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "all commits counted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (by_b, by_c) = (b.committed_runs(), c.committed_runs());
        assert_eq!(by_b + by_c, 20);
        assert!(
            by_b > 0 && by_c > 0,
            "both workers took work: {by_b} + {by_c}"
        );
        assert_eq!(submitter.committed_runs() + awaiter.committed_runs(), 0);
        // Stats are cluster-wide: a client that executed nothing sees every finished step.
        let stats = awaiter.queue_stats().await.unwrap();
        assert_eq!(stats["sleep_ms"].completed, 20);
        let session_stats = awaiter.session_stats(&s).await.unwrap();
        assert_eq!(session_stats.processors["sleep_ms"].completed, 20);

        // A client-only runtime never executes; a deadline ends the wait with a typed error.
        let waiting = submitter.submit(&s, &AddOne, 1).await.unwrap();
        let failure = awaiter
            .wait::<i64>(&waiting, Some(Duration::from_millis(200)))
            .await
            .expect_err("nobody serves add_one");
        assert!(
            matches!(failure.error, Error::Timeout { .. }),
            "{failure:?}"
        );

        submitter.stop_session(&s).await.unwrap();
        for runtime in [&submitter, &awaiter, &b, &c] {
            runtime.stop().await.unwrap();
        }
        delete_prefix(&url, &prefix);
    }

    /// A subscriber of a runtime that executes nothing sees the lifecycle, progress and
    /// custom events of runs executed by another runtime's workers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_see_events_from_other_workers() {
        let config = test_config(&redis_url());
        let (observer, worker) = (
            RedisRuntime::new(config.clone().worker(false)),
            RedisRuntime::new(config),
        );
        worker.serve(am2z_tests::processors::Reports);
        observer.start().await.unwrap();
        worker.start().await.unwrap();
        let s = session("observed");
        let mut events = observer.subscribe_session(&s);
        let handle = observer
            .submit(&s, &am2z_tests::processors::Reports, 3)
            .await
            .unwrap();
        let mut kinds = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut events),
        )
        .await
        {
            if event.run_id.is_some() {
                assert_eq!(event.run_id, Some(handle.run_id));
            }
            let kind = serde_json::to_value(&event.kind).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned();
            let done = kind == "run_completed";
            kinds.push(kind);
            if done {
                break;
            }
        }
        assert_eq!(
            kinds,
            [
                "session_created",
                "run_started",
                "step_started",
                "progress",
                "progress",
                "progress",
                "progress",
                "custom",
                "step_completed",
                "run_completed"
            ]
        );
        assert_eq!(observer.committed_runs(), 0);
        observer.stop_session(&s).await.unwrap();
        for runtime in [&observer, &worker] {
            runtime.stop().await.unwrap();
        }
    }

    /// A worker only claims jobs whose contract fingerprint it serves; others stay queued
    /// without consuming a delivery, and a worker that has the contract runs them.
    #[tokio::test]
    async fn unknown_contracts_are_left_for_workers_that_have_them() {
        let url = redis_url();
        let base = test_config(&url);
        let prefix = base.queue_prefix().to_owned();
        let client = RedisRuntime::new(base.clone().worker(false));
        let stranger = RedisRuntime::new(base.clone());
        stranger.serve(SleepMs);
        client.start().await.unwrap();
        stranger.start().await.unwrap();
        let s = session("contracts");
        let handle = client.submit(&s, &AddOne, 41).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let layout = Layout::new(&url, &prefix, s.as_str());
        let job = handle.run_id.to_string();
        assert_eq!(layout.header(&job).expect("queued").deliveries, 0);
        assert_eq!(layout.state(&job), "queued");

        // Jobs it cannot run at the head of the queue do not hide one it can run.
        let mut blocked = Vec::new();
        for x in 0..20 {
            blocked.push(client.submit(&s, &AddOne, x).await.unwrap());
        }
        let runnable = client.submit(&s, &SleepMs, 5).await.unwrap();
        let slept = client
            .wait::<i64>(&runnable, Some(Duration::from_secs(10)))
            .await
            .expect("the runnable job behind them ran");
        assert_eq!(slept.output, 5);

        let knows = RedisRuntime::new(base.clone());
        knows.serve(AddOne);
        knows.start().await.unwrap();
        let result = client
            .wait::<i64>(&handle, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(result.output, 42);
        for (x, handle) in blocked.iter().enumerate() {
            let result = client
                .wait::<i64>(handle, Some(Duration::from_secs(10)))
                .await
                .unwrap();
            assert_eq!(result.output, x as i64 + 1);
        }
        for runtime in [&client, &stranger, &knows] {
            runtime.stop_all_sessions().await.unwrap();
            runtime.stop().await.unwrap();
        }
        delete_prefix(&url, &prefix);
    }

    /// Dropping the last handle of a started runtime ends its loops and closes its
    /// connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_last_handle_closes_everything() {
        let redis = own_redis();
        let clients = || {
            redis_cli(&redis.url(), &["CLIENT", "LIST"])
                .lines()
                .filter(|l| !l.contains("cmd=client"))
                .count()
        };
        let runtime = RedisRuntime::new(test_config(&redis.url()));
        runtime.start().await.unwrap();
        let clone = runtime.clone();
        assert_eq!(clone.execute(&AddOne, 1).await.unwrap().output, 2);
        assert!(clients() > 0);
        drop(runtime);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(clients() > 0, "a clone still holds it");
        drop(clone);
        let begin = Instant::now();
        while clients() > 0 {
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "connections closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A session's events are kept in its stream, for observers that replay.
    #[tokio::test]
    async fn events_are_kept_in_the_session_stream() {
        let url = redis_url();
        let runtime = RedisRuntime::new(test_config(&url));
        let prefix = runtime.config().queue_prefix().to_owned();
        runtime.start().await.unwrap();
        let s = session("stream");
        runtime.execute_in_session(&s, &AddOne, 1).await.unwrap();
        let stream = format!("{prefix}:{{{s}}}:events");
        let entries = redis_cli(&url, &["XRANGE", &stream, "-", "+"]);
        let kinds: BTreeSet<&str> = [
            "session_created",
            "run_started",
            "step_started",
            "step_completed",
            "run_completed",
        ]
        .into_iter()
        .filter(|k| entries.contains(&format!("\"type\":\"{k}\"")))
        .collect();
        assert_eq!(kinds.len(), 5, "{entries}");
        // Replay, in pages.
        let all = runtime.replay(&s, None, 100).await.unwrap();
        assert_eq!(all.len(), 5, "{all:?}");
        assert!(matches!(all[0].1.kind, am2z::EventKind::SessionCreated));
        assert!(matches!(all[1].1.kind, am2z::EventKind::RunStarted));
        assert!(matches!(
            all[4].1.kind,
            am2z::EventKind::RunCompleted { .. }
        ));
        let first = runtime.replay(&s, None, 1).await.unwrap();
        let rest = runtime.replay(&s, Some(&first[0].0), 100).await.unwrap();
        assert_eq!(first.len() + rest.len(), 5);
        assert_eq!(rest[0].1, all[1].1);
        // One event a page: a worker's batch shares one stream entry, and paging through it
        // neither skips nor repeats an event.
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = runtime.replay(&s, after.as_deref(), 1).await.unwrap();
            let Some((cursor, event)) = page.into_iter().next() else {
                break;
            };
            paged.push(event);
            after = Some(cursor);
        }
        let all: Vec<_> = all.into_iter().map(|(_, e)| e).collect();
        assert_eq!(paged, all);
        for hostile in ["", "x", "1-2/x", "1/2", "((1-2"] {
            let refused = runtime.replay(&s, Some(hostile), 10).await.unwrap_err();
            assert!(
                matches!(refused, am2z::Error::Validation { .. }),
                "{hostile}: {refused}"
            );
        }
        runtime.stop_session(&s).await.unwrap();
        runtime.stop().await.unwrap();
        delete_prefix(&url, &prefix);
    }
}

// Limits, recovery and hostile inputs.

mod redis_limits {
    use std::time::Duration;

    use am2z::{Ctx, Error, Executes, RedisRuntime, Runtime, SessionId, processor};
    use am2z_tests::layout::Layout;
    use am2z_tests::probe::{seen, seen_with};
    use am2z_tests::processors::{AddOne, Limited, RateLimited, SleepMs};
    use am2z_tests::suite::session;

    use super::{redis_cli, redis_url, shut_down, test_config};

    /// Every key under `prefix` expires by itself (none would outlive its session).
    /// Every key of `session` (which has no live run left) expires by itself.
    fn assert_all_expire(prefix: &str, session: &SessionId) {
        let keys = redis_cli(&["--scan", "--pattern", &format!("{prefix}:{{{session}}}:*")]);
        assert!(!keys.is_empty(), "the session keeps its outcomes");
        for key in keys.lines() {
            let ttl: i64 = redis_cli(&["PTTL", key]).parse().expect("a ttl");
            assert!(ttl > 0 || ttl == -2, "{key} has no TTL ({ttl})");
        }
    }

    /// Counts down through `ctx.call`, one level per call.
    #[processor]
    async fn countdown(n: u32, ctx: &Ctx) -> Result<u32, Error> {
        if n == 0 {
            return Ok(0);
        }
        Ok(ctx.call(&Countdown, n - 1).await? + 1)
    }

    /// Recursion 20 deep through `ctx.call` completes on a worker with one slot: nested calls
    /// run inline, no slot is held waiting for a child.
    #[tokio::test]
    async fn recursion_twenty_deep_needs_one_worker_slot() {
        let runtime = RedisRuntime::new(
            test_config(&redis_url())
                .worker_concurrency(1)
                .max_call_depth(20),
        );
        runtime.start().await.unwrap();
        let s = session("countdown");
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            runtime.execute_in_session(&s, &Countdown, 20),
        )
        .await
        .expect("no deadlock")
        .expect("completes");
        assert_eq!(result.output, 20);
        let failure = runtime
            .execute_in_session(&s, &Countdown, 21)
            .await
            .expect_err("one level too deep");
        assert!(
            matches!(
                failure.error.root_cause(),
                Error::DepthExceeded {
                    depth: 21,
                    limit: 20,
                    ..
                }
            ),
            "{failure:?}"
        );
        runtime.stop_session(&s).await.unwrap();
        runtime.stop().await.unwrap();
    }

    /// A session's queue quota refuses more runs with a typed error; other sessions are not
    /// affected.
    #[tokio::test]
    async fn queue_quota_refuses_extra_runs() {
        let client = RedisRuntime::new(
            test_config(&redis_url())
                .worker(false)
                .max_queued_per_session(2),
        );
        client.start().await.unwrap();
        let (full, other) = (session("full"), session("other"));
        client.submit(&full, &AddOne, 1).await.unwrap();
        client.submit(&full, &AddOne, 2).await.unwrap();
        let error = client
            .submit(&full, &AddOne, 3)
            .await
            .expect_err("over quota");
        assert!(matches!(error, Error::Resource { .. }), "{error:?}");
        client
            .submit(&other, &AddOne, 1)
            .await
            .expect("another session has room");
        client.stop_all_sessions().await.unwrap();
        client.stop().await.unwrap();
    }

    /// A session's concurrency quota holds across every worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_concurrency_holds_across_workers() {
        let config = test_config(&redis_url()).session_concurrency(1);
        let (a, b) = (
            RedisRuntime::new(config.clone()),
            RedisRuntime::new(config.clone()),
        );
        for runtime in [&a, &b] {
            runtime.serve(SleepMs);
            runtime.start().await.unwrap();
        }
        let s = session("one-at-a-time");
        let outcomes =
            futures::future::join_all((0..6).map(|_| a.execute_in_session(&s, &SleepMs, 30))).await;
        assert!(outcomes.iter().all(Result::is_ok));
        let log = seen(s.as_str());
        assert_eq!(log.len(), 12, "{log:?}");
        for pair in log.chunks(2) {
            assert!(
                pair[0].starts_with("start:") && pair[1].starts_with("done:"),
                "{log:?}"
            );
        }
        a.stop_session(&s).await.unwrap();
        for runtime in [&a, &b] {
            runtime.stop().await.unwrap();
        }
    }

    /// A processor's `concurrency` and `rate` hold across every worker, not per process:
    /// two workers together run at most two `limited` steps at once, and start at most two
    /// `rate_limited` steps per second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processor_limits_hold_across_workers() {
        // Four slots each: neither worker can take all eight runs at once.
        let config = test_config(&redis_url()).worker_concurrency(4);
        let client = RedisRuntime::new(config.clone().worker(false));
        let workers = [
            RedisRuntime::new(config.clone()),
            RedisRuntime::new(config.clone()),
        ];
        for worker in &workers {
            worker.serve(Limited);
            worker.serve(RateLimited);
            worker.start().await.unwrap();
        }
        client.start().await.unwrap();

        let s = session("shared-concurrency");
        let mut handles = Vec::new();
        for _ in 0..8 {
            handles.push(client.submit(&s, &Limited, 60).await.unwrap());
        }
        for handle in &handles {
            client
                .wait::<i64>(handle, Some(Duration::from_secs(20)))
                .await
                .unwrap();
        }
        let (mut in_flight, mut most) = (0, 0);
        for entry in seen(s.as_str()) {
            in_flight += if entry == "enter" { 1 } else { -1 };
            most = most.max(in_flight);
        }
        assert_eq!(most, 2, "two at once across both workers");
        for worker in &workers {
            assert!(
                worker.committed_runs() > 0,
                "each worker took some of the work"
            );
        }

        let r = session("shared-rate");
        let mut handles = Vec::new();
        for x in 0..4 {
            handles.push(client.submit(&r, &RateLimited, x).await.unwrap());
        }
        for handle in &handles {
            client
                .wait::<i64>(handle, Some(Duration::from_secs(20)))
                .await
                .unwrap();
        }
        let mut starts: Vec<u64> = seen_with(r.as_str(), "t:")
            .iter()
            .map(|t| t.parse::<u64>().unwrap() / 1000)
            .collect();
        starts.sort_unstable();
        assert!(starts[1] - starts[0] < 150, "{starts:?}");
        // The log runs on Redis' clock and a start is recorded when the admission reply
        // arrives, so reply latency can shave a few ms off the gap seen here (and a loaded
        // machine add some).
        assert!((990..1400).contains(&(starts[2] - starts[0])), "{starts:?}");

        for session in [&s, &r] {
            client.stop_session(session).await.unwrap();
        }
        client.stop().await.unwrap();
        for worker in &workers {
            worker.stop().await.unwrap();
        }
    }

    /// Between its full passes the sweeper visits only the sessions whose earliest lease
    /// deadline has passed: an expired lease there is re-queued within a pass, and a session
    /// left without leases leaves the index.
    #[tokio::test]
    async fn the_sweeper_follows_lease_deadlines() {
        let config = test_config(&redis_url()).sweep_every(Duration::from_millis(200));
        let prefix = config.queue_prefix().to_owned();
        let client = RedisRuntime::new(config.clone().worker(false));
        let worker = RedisRuntime::new(config);
        worker.serve(SleepMs); // not add_one: the job stays put once re-queued
        client.start().await.unwrap();
        worker.start().await.unwrap();
        // Past the first (full) pass.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = session("deadlines");
        let handle = client.submit(&s, &AddOne, 1).await.unwrap();
        let layout = Layout::new(&redis_url(), &prefix, s.as_str());
        let run = handle.run_id.to_string();
        layout.expire_lease(&run, 1, 5);
        let leasing = layout.global("{:leasing}");
        redis_cli(&["ZADD", &leasing, "1", s.as_str()]);
        let begin = std::time::Instant::now();
        while layout.state(&run) != "queued" {
            assert!(
                begin.elapsed() < Duration::from_millis(1_200),
                "re-queued by a fast pass, before the next full one"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while !redis_cli(&["ZSCORE", &leasing, s.as_str()]).is_empty() {
            assert!(begin.elapsed() < Duration::from_secs(2), "left the index");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shut_down(&s, &client, &worker).await;
    }

    /// A step is counted once, by the commit that carries its outcome: a run whose lease
    /// moved on while its step ran (as if another worker had taken it over) finishes its
    /// step and sends its events, but its commit is refused and counts nothing (the job runs
    /// again elsewhere, and that commit counts it); the runs whose commits land count theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_commit_counts_no_step() {
        let config = test_config(&redis_url());
        let prefix = config.queue_prefix().to_owned();
        let client = RedisRuntime::new(config.clone().worker(false));
        let worker = RedisRuntime::new(config);
        worker.serve(SleepMs);
        client.start().await.unwrap();
        worker.start().await.unwrap();
        let s = session("refused-count");
        let layout = Layout::new(&redis_url(), &prefix, s.as_str());
        // Four runs that end together, so their commits likely share a call: the refused
        // one is left out of the `done` message the others' waiters hear.
        let handles: Vec<_> =
            futures::future::join_all((0..4).map(|_| client.submit(&s, &SleepMs, 600)))
                .await
                .into_iter()
                .map(|submitted| submitted.expect("submitted"))
                .collect();
        // The last one: the first to end would likely commit alone.
        let run = handles[3].run_id.to_string();
        let begin = std::time::Instant::now();
        while worker.runs_in_flight() < 4 {
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "the steps started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The lease moves on under its step: its worker's token is stale now.
        let mut header = layout.header(&run).expect("the job is leased");
        header.token += 1;
        layout.set_header(&run, &header);
        for handle in &handles[..3] {
            let outcome = client
                .wait::<i64>(handle, Some(Duration::from_secs(10)))
                .await
                .expect("completes");
            assert_eq!(outcome.output, 600);
        }
        while worker.refused_commits() == 0 {
            assert!(
                begin.elapsed() < Duration::from_secs(10),
                "the commit was refused"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            seen(s.as_str())
                .iter()
                .filter(|e| e.starts_with("done:"))
                .count()
                >= 4,
            "the taken-over step ran to its end too"
        );
        // Its run did not end: no `done` line announced it.
        let pending = client
            .wait::<i64>(&handles[3], Some(Duration::from_millis(300)))
            .await
            .expect_err("the taken-over run goes on");
        assert!(
            matches!(pending.error, Error::Timeout { .. }),
            "{pending:?}"
        );
        let stats = client.session_stats(&s).await.unwrap();
        assert_eq!(
            stats.processors["sleep_ms"].completed, 3,
            "the three commits that landed count their steps; the refused one counts nothing"
        );
        shut_down(&s, &client, &worker).await;
    }

    /// A job lost a second time waits out a redelivery backoff in the delayed set; the
    /// promoter then offers it again and it completes.
    #[tokio::test]
    async fn repeated_redeliveries_back_off() {
        let config = test_config(&redis_url())
            .sweep_every(Duration::from_millis(50))
            .redelivery_backoff(Duration::from_millis(400), Duration::from_secs(2));
        let prefix = config.queue_prefix().to_owned();
        let client = RedisRuntime::new(config.clone().worker(false));
        client.start().await.unwrap();
        let s = session("backoff");
        let handle = client.submit(&s, &AddOne, 1).await.unwrap();
        let layout = Layout::new(&redis_url(), &prefix, s.as_str());
        let run = handle.run_id.to_string();
        layout.expire_lease(&run, 2, 2);
        let worker = RedisRuntime::new(config);
        worker.serve(AddOne);
        let begin = std::time::Instant::now();
        worker.start().await.unwrap();
        while layout.state(&run) != "delayed" {
            assert!(
                begin.elapsed() < Duration::from_secs(2),
                "the job went to the delayed set"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let result = client
            .wait::<i64>(&handle, Some(Duration::from_secs(10)))
            .await
            .expect("promoted and run");
        assert_eq!(result.output, 2);
        assert!(
            begin.elapsed() >= Duration::from_millis(400),
            "{:?}",
            begin.elapsed()
        );
        assert_all_expire(&prefix, &s);
        shut_down(&s, &client, &worker).await;
    }

    /// Higher-priority runs are claimed first from a session's queue.
    #[tokio::test]
    async fn priorities_order_the_queue() {
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let step = |name: &'static str, priority: i32| {
            let order = std::sync::Arc::clone(&order);
            am2z::processor_fn(move |x: i64| {
                order.lock().unwrap().push(format!("{name}:{x}"));
                async move { Ok::<_, Error>(x) }
            })
            .named(name)
            .with_config(am2z::ProcessorConfig::new().priority(priority))
        };
        let (low, high) = (step("low", 1), step("high", 9));
        let config = test_config(&redis_url()).worker_concurrency(1);
        let client = RedisRuntime::new(config.clone().worker(false));
        client.start().await.unwrap();
        let s = session("priorities");
        let mut handles = Vec::new();
        for x in 0..3 {
            handles.push(client.submit(&s, &low, x).await.unwrap());
        }
        for x in 0..3 {
            handles.push(client.submit(&s, &high, x).await.unwrap());
        }
        let worker = RedisRuntime::new(config);
        worker.serve(low.clone());
        worker.serve(high.clone());
        worker.start().await.unwrap();
        for handle in &handles {
            client
                .wait::<i64>(handle, Some(Duration::from_secs(10)))
                .await
                .unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["high:0", "high:1", "high:2", "low:0", "low:1", "low:2"]
        );
        shut_down(&s, &client, &worker).await;
    }

    /// `stop_session` from one runtime stops the session's step running on another runtime's
    /// worker at once (its token fires and its future is dropped, as on the local runtime),
    /// ends its waiters with "session stopped", and the worker's late commit is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_session_cancels_steps_on_other_workers() {
        let config = test_config(&redis_url());
        let (client, worker) = (
            RedisRuntime::new(config.clone().worker(false)),
            RedisRuntime::new(config),
        );
        worker.serve(SleepMs);
        client.start().await.unwrap();
        worker.start().await.unwrap();
        let s = session("remote-stop");
        let handle = client.submit(&s, &SleepMs, 60_000).await.unwrap();
        while worker.runs_in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client.stop_session(&s).await.unwrap();
        let failure = client
            .wait::<i64>(&handle, Some(Duration::from_secs(5)))
            .await
            .expect_err("stopped");
        assert!(
            matches!(failure.error, Error::SessionStopped { .. }),
            "{failure:?}"
        );
        let begin = std::time::Instant::now();
        while worker.runs_in_flight() > 0 {
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "the worker let go of the run"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(1),
            "stopped at once, not after 60 s"
        );
        assert_eq!(worker.refused_commits(), 1, "its result was refused");
        assert!(!seen(s.as_str()).iter().any(|e| e.starts_with("done:")));
        for runtime in [&client, &worker] {
            runtime.stop().await.unwrap();
        }
    }

    /// Sessions are served in fair turns: a session with thousands of queued runs does not
    /// starve a session that arrives after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flooded_session_does_not_starve_others() {
        let config = test_config(&redis_url()).worker_concurrency(4);
        let prefix = config.queue_prefix().to_owned();
        let client = RedisRuntime::new(config.clone().worker(false));
        client.start().await.unwrap();
        let (flood, small) = (session("flood"), session("small"));
        let floods =
            futures::future::join_all((0..3_000).map(|x| client.submit(&flood, &AddOne, x))).await;
        assert!(floods.iter().all(Result::is_ok));
        let worker = RedisRuntime::new(config);
        worker.serve(AddOne);
        worker.start().await.unwrap();
        let mut handles = Vec::new();
        for x in 0..10 {
            handles.push(client.submit(&small, &AddOne, x).await.unwrap());
        }
        for handle in &handles {
            client
                .wait::<i64>(handle, Some(Duration::from_secs(20)))
                .await
                .unwrap();
        }
        let queued: usize = redis_cli(&["ZCARD", &format!("{prefix}:{{{flood}}}:queue")])
            .parse()
            .unwrap();
        assert!(
            queued > 1_500,
            "the small session finished while {queued} flood runs still waited"
        );
        for session in [&flood, &small] {
            client.stop_session(session).await.unwrap();
        }
        for runtime in [&client, &worker] {
            runtime.stop().await.unwrap();
        }
    }

    /// A job that no live worker serves fails with a typed error after the grace period;
    /// while no worker is alive at all, jobs simply wait.
    #[tokio::test]
    async fn unserved_jobs_fail_after_a_grace_period() {
        let config = test_config(&redis_url())
            .sweep_every(Duration::from_millis(50))
            .unserved_grace(Some(Duration::from_millis(300)));
        let client = RedisRuntime::new(config.clone().worker(false));
        client.start().await.unwrap();
        let s = session("unserved");
        let orphan = client.submit(&s, &AddOne, 1).await.unwrap();
        // Nobody alive: it waits.
        let waited = client
            .wait::<i64>(&orphan, Some(Duration::from_millis(500)))
            .await
            .expect_err("still waiting");
        assert!(matches!(waited.error, Error::Timeout { .. }), "{waited:?}");
        // A worker that serves something else comes up: the job fails, typed.
        let stranger = RedisRuntime::new(config);
        stranger.serve(SleepMs);
        stranger.start().await.unwrap();
        let failure = client
            .wait::<i64>(&orphan, Some(Duration::from_secs(10)))
            .await
            .expect_err("unserved");
        assert!(
            matches!(&failure.error, Error::NotFound { name, .. } if name == "add_one"),
            "{failure:?}"
        );
        client.stop_session(&s).await.unwrap();
        for runtime in [&client, &stranger] {
            runtime.stop().await.unwrap();
        }
    }

    /// A corrupt payload fails its run with a typed error at the first attempt; its siblings
    /// are unaffected.
    #[tokio::test]
    async fn corrupt_input_fails_its_run_only() {
        let config = test_config(&redis_url());
        let prefix = config.queue_prefix().to_owned();
        let client = RedisRuntime::new(config.clone().worker(false));
        client.start().await.unwrap();
        let s = session("corrupt");
        let bad = client.submit(&s, &AddOne, 1).await.unwrap();
        let good = client.submit(&s, &AddOne, 2).await.unwrap();
        let layout = Layout::new(&redis_url(), &prefix, s.as_str());
        layout.set_input(&bad.run_id.to_string(), b"{\x01not json");
        let worker = RedisRuntime::new(config);
        worker.serve(AddOne);
        worker.start().await.unwrap();
        let failure = client
            .wait::<i64>(&bad, Some(Duration::from_secs(10)))
            .await
            .expect_err("corrupt");
        assert!(
            matches!(failure.error, Error::Serialization { .. }),
            "{failure:?}"
        );
        assert_eq!(failure.meta.run_id, bad.run_id);
        let ok = client
            .wait::<i64>(&good, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(ok.output, 3);
        shut_down(&s, &client, &worker).await;
    }

    /// A lease whose worker vanished is re-queued by the sweeper and completed; one that has
    /// used up its deliveries is dead-lettered with a typed error.
    #[tokio::test]
    async fn expired_leases_are_retried_then_dead_lettered() {
        let config = test_config(&redis_url())
            .max_deliveries(3)
            .sweep_every(Duration::from_millis(50));
        let prefix = config.queue_prefix().to_owned();
        let client = RedisRuntime::new(config.clone().worker(false));
        client.start().await.unwrap();
        let s = session("lost");
        let (retried, buried) = (
            client.submit(&s, &AddOne, 1).await.unwrap(),
            client.submit(&s, &AddOne, 2).await.unwrap(),
        );
        // Fake what a worker that died mid-run leaves behind: leased jobs, expired leases.
        let layout = Layout::new(&redis_url(), &prefix, s.as_str());
        for (handle, deliveries) in [(&retried, 1), (&buried, 3)] {
            layout.expire_lease(&handle.run_id.to_string(), deliveries, 5);
        }
        let worker = RedisRuntime::new(config);
        worker.serve(AddOne);
        worker.start().await.unwrap();
        let ok = client
            .wait::<i64>(&retried, Some(Duration::from_secs(10)))
            .await
            .expect("re-queued and run");
        assert_eq!(ok.output, 2);
        let failure = client
            .wait::<i64>(&buried, Some(Duration::from_secs(10)))
            .await
            .expect_err("dead-lettered");
        assert!(
            matches!(&failure.error, Error::Unavailable { message, .. } if message.contains("dead-lettered")),
            "{failure:?}"
        );
        assert_eq!(layout.dead(), vec![buried.run_id.to_string()]);
        assert_all_expire(&prefix, &s);
        shut_down(&s, &client, &worker).await;
    }
}

mod redis_edges {
    use std::time::Duration;

    use am2z::{Error, Executes, RedisRuntime, Runtime, processor};
    use am2z_tests::suite::session;

    use super::{redis_url, test_config};

    /// Returns a text of `n` bytes.
    #[processor]
    async fn inflate(n: usize) -> Result<String, Error> {
        Ok("x".repeat(n))
    }

    /// Oversized inputs are refused before anything is written; oversized outcomes fail
    /// their run with the same typed error.
    #[tokio::test]
    async fn oversized_payloads_get_a_typed_error() {
        let runtime = RedisRuntime::new(test_config(&redis_url()).max_payload_bytes(1_000));
        runtime.start().await.unwrap();
        let s = session("oversized");
        let error = runtime
            .submit(&s, &am2z_tests::processors::Shout, "y".repeat(2_000))
            .await
            .expect_err("too big");
        assert!(matches!(error, Error::Resource { .. }), "{error:?}");
        assert!(
            !runtime.active_sessions().await.unwrap().contains(&s),
            "nothing written"
        );
        let failure = runtime
            .execute_in_session(&s, &Inflate, 5_000)
            .await
            .expect_err("outcome too big");
        assert!(
            matches!(failure.error, Error::Resource { .. }),
            "{failure:?}"
        );
        assert_eq!(
            runtime
                .execute_in_session(&s, &Inflate, 10)
                .await
                .unwrap()
                .output
                .len(),
            10
        );
        runtime.stop_session(&s).await.unwrap();
        runtime.stop().await.unwrap();
    }

    /// An idle session expires by its TTL; the sweeper then drops it from the registry and
    /// workers drop what they held for it.
    #[tokio::test]
    async fn idle_sessions_expire() {
        let runtime = RedisRuntime::new(
            test_config(&redis_url())
                .session_ttl(Duration::from_secs(1))
                .sweep_every(Duration::from_millis(100)),
        );
        runtime.start().await.unwrap();
        let s = session("idle");
        runtime
            .execute_in_session(&s, &am2z_tests::processors::AddOne, 1)
            .await
            .unwrap();
        assert!(runtime.active_sessions().await.unwrap().contains(&s));
        let begin = std::time::Instant::now();
        while runtime.active_sessions().await.unwrap().contains(&s) {
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "the idle session expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Workers drop what they held for it too.
        while !runtime
            .session_stats(&s)
            .await
            .unwrap()
            .processors
            .is_empty()
        {
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "the worker forgot the session"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        runtime.stop().await.unwrap();
    }
}

/// Runs of compositions go one job per step: what only step jobs do.
mod redis_step_jobs {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use am2z::{Error, Executes, RedisRuntime, Runtime, SessionId, processor, workflow};
    use am2z_tests::processors::AddOne;
    use am2z_tests::suite::session;

    use super::{redis_cli, redis_url, test_config};

    /// Waits until a job of `s` waits in its delayed set, then runs another run through the
    /// worker's one slot meanwhile.
    async fn another_run_while_parked(runtime: &RedisRuntime, prefix: &str, s: &SessionId) {
        let delayed = format!("{prefix}:{{{}}}:delayed", s.as_str());
        let parked = Instant::now();
        while redis_cli(&["ZCARD", &delayed]) != "1" {
            assert!(
                parked.elapsed() < Duration::from_secs(5),
                "nothing waited in the delayed set"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let other = runtime
            .execute_in_session(s, &AddOne, 1)
            .await
            .expect("another run");
        assert_eq!(other.output, 2, "the one slot ran another run meanwhile");
    }

    static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

    /// Fails its first two attempts, then adds one; waits 300 ms, then 600 ms, between them.
    #[processor(retries = 3, backoff = exponential(base = "300ms", multiplier = 2, max = "10s"))]
    async fn flaky_add(x: i64) -> Result<i64, Error> {
        if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) % 3 < 2 {
            return Err(Error::execution("flaky_add", "not yet"));
        }
        Ok(x + 1)
    }

    /// Doubles, after waiting out its `delay`.
    #[processor(delay = "300ms")]
    async fn late_double(x: i64) -> Result<i64, Error> {
        Ok(x * 2)
    }

    workflow! {
        /// A retried step, then a delayed one.
        pub Patient(i64) -> i64 {
            chain![flaky_add, late_double]
        }
    }

    static SLOW_STARTS: AtomicU32 = AtomicU32::new(0);

    /// Adds one, slowly.
    #[processor]
    async fn slow_add(x: i64) -> Result<i64, Error> {
        SLOW_STARTS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(x + 1)
    }

    workflow! {
        /// Three slow steps.
        pub SlowThree(i64) -> i64 {
            chain![slow_add, slow_add, slow_add]
        }
    }

    /// A draining worker finishes and commits the step it runs, but is handed no successor:
    /// it leaves after one step, not after the whole chain, and another worker finishes the
    /// run from the step that follows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_draining_worker_finishes_its_step_and_takes_no_successor() {
        let config = test_config(&redis_url()).worker_concurrency(1);
        let first = RedisRuntime::new(config.clone());
        first.serve(SlowThree);
        first.start().await.unwrap();
        let s = session("drain-steps");
        let handle = first.submit(&s, &SlowThree, 0).await.unwrap();
        let begin = std::time::Instant::now();
        while SLOW_STARTS.load(Ordering::SeqCst) == 0 {
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "the chain started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let draining = Instant::now();
        first.drain(Duration::from_secs(10)).await.unwrap();
        let drained_in = draining.elapsed();
        assert_eq!(
            SLOW_STARTS.load(Ordering::SeqCst),
            1,
            "no successor was started"
        );
        assert!(drained_in < Duration::from_millis(800), "{drained_in:?}");
        let second = RedisRuntime::new(config);
        second.serve(SlowThree);
        second.start().await.unwrap();
        let result = second
            .wait::<i64>(&handle, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(result.output, 3);
        assert_eq!(SLOW_STARTS.load(Ordering::SeqCst), 3, "each step ran once");
        second.stop_session(&s).await.unwrap();
        second.stop().await.unwrap();
    }

    /// A step's retry backoff and `delay` wait in Redis' due-time set, not in the worker's
    /// slot: while one run waits, another run goes through the worker's only slot; the
    /// waiting run then resumes at the right attempt and counts every attempt once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn step_waits_free_the_slot_and_resume_at_the_next_attempt() {
        let config = test_config(&redis_url()).worker_concurrency(1);
        let prefix = config.queue_prefix().to_owned();
        let runtime = RedisRuntime::new(config);
        runtime.serve(Patient);
        runtime.serve(AddOne);
        runtime.start().await.unwrap();
        let s = session("patient");
        let begin = Instant::now();
        let handle = runtime.submit(&s, &Patient, 4).await.unwrap();
        // While the chain's first step waits for its second attempt, the job is in the
        // delayed set and the one slot runs another run.
        another_run_while_parked(&runtime, &prefix, &s).await;
        let result = runtime
            .wait::<i64>(&handle, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        let took = begin.elapsed();
        assert_eq!(result.output, 10, "(4 + 1) × 2");
        assert_eq!(
            result.attempts, 4,
            "three attempts of flaky_add, one of late_double"
        );
        assert_eq!(result.meta.version, 2, "two steps completed");
        // 300 + 600 ms of backoff and a 300 ms delay, each waited once.
        assert!(took >= Duration::from_millis(1_200), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        runtime.stop_session(&s).await.unwrap();
        runtime.stop().await.unwrap();
    }

    static LEAF_CALLS: AtomicU32 = AtomicU32::new(0);

    /// Fails its first two attempts, waiting 300 ms then 600 ms between attempts.
    #[processor(retries = 3, backoff = exponential(base = "300ms", multiplier = 2, max = "10s"))]
    async fn flaky_leaf(x: i64) -> Result<i64, Error> {
        if LEAF_CALLS.fetch_add(1, Ordering::SeqCst) % 3 < 2 {
            return Err(Error::execution("flaky_leaf", "not yet"));
        }
        Ok(x + 1)
    }

    /// A single processor's run is one job, and its retry backoff waits in Redis too: the one
    /// slot runs another run meanwhile, and the outcome counts all three attempts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_steps_retry_wait_frees_the_slot() {
        let config = test_config(&redis_url()).worker_concurrency(1);
        let prefix = config.queue_prefix().to_owned();
        let runtime = RedisRuntime::new(config);
        runtime.serve(FlakyLeaf);
        runtime.serve(AddOne);
        runtime.start().await.unwrap();
        let s = session("flaky-leaf");
        let handle = runtime.submit(&s, &FlakyLeaf, 1).await.unwrap();
        another_run_while_parked(&runtime, &prefix, &s).await;
        let result = runtime
            .wait::<i64>(&handle, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(result.output, 2);
        assert_eq!(result.attempts, 3);
        runtime.stop_session(&s).await.unwrap();
        runtime.stop().await.unwrap();
    }
}

/// `ctx.call` on Redis: the callee runs as a child job of the calling run.
mod redis_child_calls {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use am2z::{Ctx, Error, RedisRuntime, RunId, Runtime, processor};
    use am2z_tests::layout::Layout;
    use am2z_tests::suite::session;

    use super::{redis_url, test_config};

    /// What the callee saw: its run id and call depth.
    static SEEN: Mutex<Vec<(RunId, u32)>> = Mutex::new(Vec::new());

    /// Doubles, slowly, noting the run and depth it ran at.
    #[processor]
    async fn slow_double(x: i64, ctx: &Ctx) -> Result<i64, Error> {
        SEEN.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((ctx.run_id(), ctx.call_depth()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(x * 2)
    }

    /// Delegates to `slow_double` through `ctx.call`.
    #[processor]
    async fn delegate(x: i64, ctx: &Ctx) -> Result<i64, Error> {
        ctx.call(&SlowDouble, x).await
    }

    /// The callee is a job of its own (queued in the caller's session, marked as the caller
    /// run's child) that runs under the caller's run id one level deeper; with one slot, the
    /// caller waiting for it does not hold the slot the child needs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_is_a_child_job_of_the_calling_run() {
        let config = test_config(&redis_url()).worker_concurrency(1);
        let prefix = config.queue_prefix().to_owned();
        let runtime = RedisRuntime::new(config);
        runtime.serve(Delegate);
        runtime.serve(SlowDouble);
        runtime.start().await.unwrap();
        let s = session("child-call");
        let handle = runtime.submit(&s, &Delegate, 21).await.unwrap();
        let caller = handle.run_id.to_string();
        let layout = Layout::new(&redis_url(), &prefix, s.as_str());
        let begin = Instant::now();
        let child = loop {
            // A child run's body names its caller and the depth it runs at.
            let found = layout.jobs().into_iter().find_map(|job| {
                let call = layout.body_meta(&job)?.get("call")?.clone();
                (call[0] == caller.as_str()).then_some(call)
            });
            if let Some(found) = found {
                break found;
            }
            assert!(
                begin.elapsed() < Duration::from_secs(5),
                "no child job of {caller}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(child[1], 1, "one call level deeper");
        let result = runtime
            .wait::<i64>(&handle, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(result.output, 42);
        let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(
            seen,
            vec![(handle.run_id, 1)],
            "the caller's run, one level deeper"
        );
        runtime.stop_session(&s).await.unwrap();
        runtime.stop().await.unwrap();
    }
}

// The hot path: how work reaches Redis.

mod redis_hot_path {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use am2z::{Error, Executes, RedisRuntime, Runtime, processor, workflow};
    use am2z_tests::fault::{RedisServer, ServerSpec};
    use am2z_tests::processors::AddOne;
    use am2z_tests::suite::session;

    use super::{shut_down, test_config};

    fn own_redis() -> RedisServer {
        ServerSpec::default().arg("appendonly", "no").start()
    }

    /// Script calls made so far (`EVALSHA` and `EVAL`, as `INFO commandstats` counts them).
    fn script_calls(server: &RedisServer) -> u64 {
        server
            .cli(&["INFO", "commandstats"])
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// The payloads published on `channel` while it listens (a `redis-cli SUBSCRIBE`).
    /// What a marker payload of [`Listening::up_to_now`] starts with.
    const MARKER: &str = "am2z-listening-end-";

    struct Listening {
        child: Child,
        payloads: Arc<Mutex<Vec<String>>>,
    }

    impl Listening {
        fn start(server: &RedisServer, channel: &str) -> Listening {
            let mut child = Command::new("redis-cli")
                .args(["-p", &server.port().to_string(), "SUBSCRIBE", channel])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-cli runs");
            let stdout = child.stdout.take().expect("piped");
            let payloads = Arc::<Mutex<Vec<String>>>::default();
            let (subscribed, live) = std::sync::mpsc::channel();
            let seen = Arc::clone(&payloads);
            let channel = channel.to_owned();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
                while let Some(line) = lines.next() {
                    match line.as_str() {
                        "subscribe" => {
                            let _ = subscribed.send(());
                        }
                        "message" => {
                            let (Some(_channel), Some(payload)) = (lines.next(), lines.next())
                            else {
                                return;
                            };
                            seen.lock().unwrap_or_else(|p| p.into_inner()).push(payload);
                        }
                        _ => {}
                    }
                }
                drop(channel);
            });
            live.recv_timeout(std::time::Duration::from_secs(10))
                .expect("subscribed");
            Listening { child, payloads }
        }

        /// Every payload published on `channel` before now: those before a marker published
        /// now (a subscriber gets a channel's messages in the order Redis ran the publishes).
        async fn up_to_now(&self, server: &RedisServer, channel: &str) -> Vec<String> {
            let marker = format!("{MARKER}{}", am2z::RunId::generate());
            server.cli(&["PUBLISH", channel, &marker]);
            let asked = std::time::Instant::now();
            loop {
                let payloads = self.payloads();
                if let Some(at) = payloads.iter().position(|p| *p == marker) {
                    // Without the markers of earlier calls.
                    return payloads[..at]
                        .iter()
                        .filter(|p| !p.starts_with(MARKER))
                        .cloned()
                        .collect();
                }
                assert!(
                    asked.elapsed() < Duration::from_secs(10),
                    "the marker reached the listener"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        fn payloads(&self) -> Vec<String> {
            self.payloads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        }
    }

    impl Drop for Listening {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Runs submitted to one session at once go to Redis together: a few `submit.lua` calls
    /// for hundreds of runs, queued in the order they were submitted. "At once" is one poll
    /// of a single-threaded runtime: every submission reaches the session's gathering before
    /// its first call goes (on several threads, how many gather behind each call depends on
    /// how fast Redis answers).
    #[tokio::test]
    async fn concurrent_submissions_share_their_sessions_calls() {
        const RUNS: usize = 300;
        let server = own_redis();
        let config = test_config(&server.url());
        let prefix = config.queue_prefix().to_owned();
        let client = RedisRuntime::new(config.worker(false));
        client.start().await.unwrap();
        let s = session("batched");
        server.cli(&["CONFIG", "RESETSTAT"]);
        let handles =
            futures::future::join_all((0..RUNS).map(|x| client.submit(&s, &AddOne, x as i64)))
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
        let calls = script_calls(&server);
        // One call per run would be 300 (and as many registrations); gathered, the runs, the
        // session's registration and its enlist take 4.
        assert!(calls <= 4, "{calls} script calls for {RUNS} runs");
        let queue = server.cli(&["ZRANGE", &format!("{prefix}:{{{s}}}:queue"), "0", "-1"]);
        let queued: Vec<&str> = queue.lines().collect();
        let submitted: Vec<String> = handles.iter().map(|h| h.run_id.to_string()).collect();
        assert_eq!(queued, submitted, "queued in the order submitted");
        client.stop_session(&s).await.unwrap();
        client.stop().await.unwrap();
    }

    /// How many connections listen on `channel` (`PUBSUB NUMSUB`).
    fn listeners(server: &RedisServer, channel: &str) -> u64 {
        let reply = server.cli(&["PUBSUB", "NUMSUB", channel]);
        let count = reply.lines().last().map(str::trim);
        count
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("PUBSUB NUMSUB {channel} answered {reply:?}"))
    }

    /// Returns once nothing listens on `channel`: an on-demand channel is let go a while
    /// after its last user left.
    async fn let_go(server: &RedisServer, channel: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while listeners(server, channel) != 0 {
            assert!(Instant::now() < deadline, "{channel} was never let go");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A started worker serving `AddOne`, and a started client.
    async fn worker_and_client(config: &am2z::RedisConfig) -> (RedisRuntime, RedisRuntime) {
        let worker = RedisRuntime::new(config.clone());
        worker.serve(AddOne);
        worker.start().await.expect("the worker starts");
        let client = RedisRuntime::new(config.clone().worker(false));
        client.start().await.expect("the client starts");
        (worker, client)
    }

    /// A process listens to the prefix's `events` channel only while something in it
    /// observes events (Redis writes every batch to every subscriber): not before, yes while a
    /// subscriber lives (and it sees the events of a run another process executes), and not
    /// again once the last subscriber has been gone a while.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_events_channel_is_listened_to_only_while_observed() {
        let server = own_redis();
        let config = test_config(&server.url());
        let channel = format!("{}:events", config.queue_prefix());
        let listening = || listeners(&server, &channel);
        let (worker, client) = worker_and_client(&config).await;
        let s = session("observed");
        client.execute_in_session(&s, &AddOne, 1).await.unwrap();
        assert_eq!(listening(), 0, "nothing observes events yet");

        let mut events = client.subscribe_session(&s);
        let handle = client.submit(&s, &AddOne, 2).await.unwrap();
        assert_eq!(
            listening(),
            1,
            "the observing client listens, the worker does not"
        );
        let completed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = futures::StreamExt::next(&mut events).await {
                if event.run_id == Some(handle.run_id)
                    && matches!(event.kind, am2z::EventKind::RunCompleted { .. })
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(completed, Ok(true), "the worker's events reach the client");

        drop(events);
        let_go(&server, &channel).await;
        shut_down(&s, &client, &worker).await;
    }

    /// A process listens to the prefix's `done` channel only while a caller in it awaits a
    /// run's outcome: a worker that awaits nothing is sent no `done` message. A caller that
    /// starts to wait still hears its run end, whether the run ends before or after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_done_channel_is_listened_to_only_while_an_outcome_is_awaited() {
        let server = own_redis();
        let config = test_config(&server.url());
        let channel = format!("{}:done", config.queue_prefix());
        let listening = || listeners(&server, &channel);
        let (worker, client) = worker_and_client(&config).await;
        let s = session("awaited");
        let handles = futures::future::try_join_all((0..20).map(|x| client.submit(&s, &AddOne, x)))
            .await
            .unwrap();
        assert_eq!(listening(), 0, "nothing awaits an outcome yet");

        // Runs that ended, or may end, before the wait began.
        for (x, handle) in (0..).zip(&handles) {
            let ended = client
                .wait::<i64>(handle, Some(Duration::from_secs(10)))
                .await
                .unwrap();
            assert_eq!(ended.output, x + 1);
        }
        let result = client.execute_in_session(&s, &AddOne, 41).await.unwrap();
        assert_eq!(result.output, 42);
        assert_eq!(
            listening(),
            1,
            "the waiting client listens, the worker does not"
        );

        let_go(&server, &channel).await;
        shut_down(&s, &client, &worker).await;
    }

    /// An idle worker's poll of Redis leaves its other slots free: a run its own process
    /// submits while a poll is in flight is still leased by the submission, not queued and
    /// woken for. With a poll every 5 ms, 200 runs in a row overlap many polls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_poll_leaves_slots_for_runs_submitted_here() {
        let server = own_redis();
        let config = test_config(&server.url())
            .worker_concurrency(4)
            .idle_poll(Duration::from_millis(5));
        let worker = RedisRuntime::new(config.clone());
        worker.serve(AddOne);
        worker.start().await.unwrap();
        let channel = format!("{}:wake", config.queue_prefix());
        let wakes = Listening::start(&server, &channel);
        let here = session("polled");
        for x in 0..200 {
            let result = worker.execute_in_session(&here, &AddOne, x).await.unwrap();
            assert_eq!(result.output, x + 1);
        }
        assert_eq!(
            wakes.up_to_now(&server, &channel).await,
            Vec::<String>::new(),
            "every run leased by its submission"
        );
        worker.stop_session(&here).await.unwrap();
        worker.stop().await.unwrap();
    }

    /// A run submitted by a process that serves it and has a free slot is leased to it by
    /// the submission itself: it runs with no wake (and no claim). A run submitted by a
    /// process that does not serve it wakes the workers, as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_the_submitter_can_start_needs_no_wake() {
        let server = own_redis();
        let config = test_config(&server.url()).worker_concurrency(4);
        let prefix = config.queue_prefix().to_owned();
        let worker = RedisRuntime::new(config.clone());
        worker.serve(AddOne);
        worker.start().await.unwrap();
        let channel = format!("{prefix}:wake");
        let wakes = Listening::start(&server, &channel);
        let here = session("here");
        for x in 0..5 {
            let result = worker.execute_in_session(&here, &AddOne, x).await.unwrap();
            assert_eq!(result.output, x + 1);
        }
        let handle = worker.submit(&here, &AddOne, 10).await.unwrap();
        let waited = worker
            .wait::<i64>(&handle, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(waited.output, 11);
        assert_eq!(
            wakes.up_to_now(&server, &channel).await,
            Vec::<String>::new(),
            "no wake for runs started here"
        );

        // The control: submitted elsewhere, the same run needs the wake.
        let client = RedisRuntime::new(config.worker(false));
        client.start().await.unwrap();
        let there = session("there");
        let result = client.execute_in_session(&there, &AddOne, 1).await.unwrap();
        assert_eq!(result.output, 2);
        assert_eq!(
            wakes.up_to_now(&server, &channel).await,
            vec![there.to_string()],
            "woken by the client's run"
        );
        for s in [&here, &there] {
            client.stop_session(s).await.unwrap();
        }
        client.stop().await.unwrap();
        worker.stop().await.unwrap();
    }

    /// Every command Redis runs while it listens (a `redis-cli MONITOR`), Lua's included.
    struct Monitor {
        child: Child,
        lines: std::sync::mpsc::Receiver<String>,
    }

    impl Monitor {
        fn start(server: &RedisServer) -> Monitor {
            let mut child = Command::new("redis-cli")
                .args(["-p", &server.port().to_string(), "MONITOR"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-cli runs");
            let stdout = child.stdout.take().expect("piped");
            let (send, lines) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if send.send(line).is_err() {
                        return;
                    }
                }
            });
            let ok = lines
                .recv_timeout(Duration::from_secs(10))
                .expect("monitoring");
            assert_eq!(ok, "OK");
            Monitor { child, lines }
        }

        /// The commands run so far on keys containing `key_part`, counted by name
        /// (lowercase): everything up to an `ECHO` sent now, which Redis runs after them.
        fn on_keys(&self, server: &RedisServer, key_part: &str) -> BTreeMap<String, usize> {
            let marker = format!("am2z-monitor-end-{}", am2z::RunId::generate());
            server.cli(&["ECHO", &marker]);
            let mut counts = BTreeMap::new();
            loop {
                let line = self
                    .lines
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the monitor sees the marker");
                if line.contains(&marker) {
                    return counts;
                }
                // `<time> [<db> <client>] "COMMAND" "key" ...`
                let mut quoted = line.split('"').skip(1).step_by(2);
                let (Some(command), Some(key)) = (quoted.next(), quoted.next()) else {
                    continue;
                };
                if key.contains(key_part) {
                    *counts.entry(command.to_lowercase()).or_default() += 1;
                }
            }
        }
    }

    impl Drop for Monitor {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Adds one.
    #[processor]
    async fn hot_plus_one(x: u64) -> Result<u64, Error> {
        Ok(x + 1)
    }

    /// Adds ten.
    #[processor]
    async fn hot_plus_ten(x: u64) -> Result<u64, Error> {
        Ok(x + 10)
    }

    /// Adds a hundred.
    #[processor]
    async fn hot_plus_hundred(x: u64) -> Result<u64, Error> {
        Ok(x + 100)
    }

    /// The branches' results summed.
    fn hot_sum(a: u64, b: u64, c: u64) -> u64 {
        a + b + c
    }

    workflow! {
        /// Three branches, then their merge: `3 × x + 111`.
        pub HotFan3(u64) -> u64 {
            parallel![hot_plus_one, hot_plus_ten, hot_plus_hundred] => hot_sum
        }

        /// `hot_plus_one` over the items, 64 at once (the others held, released as items
        /// arrive).
        pub HotMap(Vec<u64>) -> Vec<Result<u64, Error>> {
            map![hot_plus_one, concurrency = 64]
        }
    }

    /// A map's commits do its bookkeeping (version, attempts, arrivals, the closed check,
    /// held items released) once per call and run, not once per item: on the run's hash, an
    /// item costs its result slot's `HSETNX` and a share of a few commands per call, and no
    /// counter is incremented item by item. Every item still arrives exactly once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_maps_items_share_their_runs_bookkeeping() {
        const ITEMS: u64 = 1_000;
        let server = own_redis();
        let config = test_config(&server.url()).worker_concurrency(64);
        let worker = RedisRuntime::new(config);
        worker.serve(HotMap);
        worker.start().await.unwrap();
        let s = session("wide");
        let monitor = Monitor::start(&server);
        let result = worker
            .execute_in_session(&s, &HotMap, (0..ITEMS).collect())
            .await
            .unwrap();
        let counts = monitor.on_keys(&server, ":run:");
        drop(monitor);
        let want: Vec<u64> = (1..=ITEMS).collect();
        let got: Vec<u64> = result.output.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, want, "every item once, in order");
        let count = |command: &str| counts.get(command).copied().unwrap_or(0);
        let total: usize = counts.values().sum();
        eprintln!("[hot path] commands on the run hash for {ITEMS} items: {counts:?}");
        // One result slot per item, and the held items' start (`h:`), each written once.
        assert_eq!(count("hsetnx"), ITEMS as usize + 1, "{counts:?}");
        // Counters move once per call, written back with the call's one `HSET`.
        assert_eq!(
            count("hincrby"),
            0,
            "no counter moved item by item: {counts:?}"
        );
        assert_eq!(count("hget"), 0, "no field read item by item: {counts:?}");
        // The one `HEXISTS`: the start's check that its held items were staged.
        assert!(count("hexists") <= 1, "{counts:?}");
        // Even a call that carries one item costs the run's hash five commands (its slot,
        // the state read, the held items read, the write-back and the released items freed);
        // item by item it was nine or more.
        assert!(
            total <= 5 * ITEMS as usize,
            "{total} commands on the run hash for {ITEMS} items: {counts:?}"
        );
        worker.stop_session(&s).await.unwrap();
        worker.stop().await.unwrap();
    }

    /// The commit that starts a parallel hands its committing worker as many of the branches
    /// as it has free slots: with enough of them no branch is queued, so no wake is sent (and
    /// no claim is needed); with one slot the others are queued and the workers woken, and
    /// the run still completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parallels_branches_go_to_the_starting_workers_free_slots() {
        let server = own_redis();
        for (slots, woken) in [(4, false), (1, true)] {
            // No idle poll during the test: the claimer claims only when woken, so it holds
            // no slot while the runs start.
            let config = test_config(&server.url())
                .worker_concurrency(slots)
                .idle_poll(Duration::from_secs(3_600));
            let prefix = config.queue_prefix().to_owned();
            let worker = RedisRuntime::new(config);
            worker.serve(HotFan3);
            worker.start().await.unwrap();
            let channel = format!("{prefix}:wake");
            let wakes = Listening::start(&server, &channel);
            let s = session("fan");
            for x in 0..5 {
                let result = worker.execute_in_session(&s, &HotFan3, x).await.unwrap();
                assert_eq!(result.output, 3 * x + 111, "with {slots} slots");
            }
            let heard = wakes.up_to_now(&server, &channel).await;
            assert_eq!(
                !heard.is_empty(),
                woken,
                "with {slots} slots: wakes {heard:?}"
            );
            worker.stop_session(&s).await.unwrap();
            worker.stop().await.unwrap();
        }
    }
}

// Leasing ahead: a worker leases more jobs than it runs, so a slot freed by a finished job
// starts the next one at once instead of a commit's round trip later.

mod redis_lease_ahead {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use am2z::{Error, RedisRuntime, RunHandle, Runtime, SessionId, processor};
    use am2z_tests::layout::Layout;
    use am2z_tests::suite::session;

    use super::{redis_cli, redis_url, test_config};

    /// The input that waits for its test's gate to open.
    const HELD: u64 = u64::MAX;

    /// What one test's runs see (tests of a binary may share a process): whether its gate is
    /// open, how many of its runs execute now and the most that ever did, the most jobs its
    /// first worker held leased while one ran, and how many runs started.
    struct Probe {
        open: AtomicBool,
        held: AtomicBool,
        running: AtomicU32,
        most_running: AtomicU32,
        most_leased: AtomicUsize,
        starts: AtomicU32,
        worker: OnceLock<RedisRuntime>,
    }

    impl Probe {
        const fn new() -> Self {
            Probe {
                open: AtomicBool::new(false),
                held: AtomicBool::new(false),
                running: AtomicU32::new(0),
                most_running: AtomicU32::new(0),
                most_leased: AtomicUsize::new(0),
                starts: AtomicU32::new(0),
                worker: OnceLock::new(),
            }
        }
    }

    static PROBES: [Probe; 3] = [Probe::new(), Probe::new(), Probe::new()];

    /// Counts itself on probe `p` and returns `x`; the input [`HELD`] first waits for the
    /// probe's gate to open.
    #[processor]
    async fn paced(input: (usize, u64)) -> Result<u64, Error> {
        let (p, x) = input;
        let probe = &PROBES[p];
        probe.starts.fetch_add(1, Ordering::SeqCst);
        let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
        probe.most_running.fetch_max(now, Ordering::SeqCst);
        if let Some(worker) = probe.worker.get() {
            probe
                .most_leased
                .fetch_max(worker.runs_in_flight(), Ordering::SeqCst);
        }
        if x == HELD {
            probe.held.store(true, Ordering::SeqCst);
        }
        while x == HELD && !probe.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        probe.running.fetch_sub(1, Ordering::SeqCst);
        Ok(x)
    }

    /// Waits until `what` holds, failing the test after 10 s.
    async fn until(what: &str, mut holds: impl FnMut() -> bool) {
        let begin = Instant::now();
        while !holds() {
            assert!(begin.elapsed() < Duration::from_secs(10), "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The jobs in `set` (finite scores: not the member that keeps `leases` a skip list).
    fn count(layout: &Layout, set: &str) -> u32 {
        redis_cli(&["ZCOUNT", &layout.key(set), "-inf", "(+inf"])
            .parse()
            .unwrap_or(0)
    }

    /// Waits until probe `p`'s held run is the only job leased, and every one of the 31 runs
    /// that has not started is queued (a job leased ahead of the held run may have taken the slot
    /// before it).
    async fn until_only_the_held_run_is_leased(p: usize, layout: &Layout) {
        until(
            "only the held run is leased; the runs not started are queued",
            || {
                let not_started = 31 - PROBES[p].starts.load(Ordering::SeqCst);
                count(layout, "leases") == 1 && count(layout, "queue") == not_started
            },
        )
        .await;
    }

    /// A second worker on the session's prefix, serving [`Paced`].
    async fn another_worker(layout: &Layout) -> RedisRuntime {
        let other = RedisRuntime::new(test_config(&redis_url()).prefix(layout.prefix()));
        other.serve(Paced);
        other.start().await.expect("another worker starts");
        other
    }

    /// A started worker running one job at a time with `ahead` jobs leased ahead, recorded in
    /// probe `p`; a client; the session and its layout.
    async fn one_at_a_time(
        p: usize,
        ahead: usize,
    ) -> (RedisRuntime, RedisRuntime, SessionId, Layout) {
        let config = test_config(&redis_url())
            .worker_concurrency(1)
            .lease_ahead(ahead);
        let layout_prefix = config.queue_prefix().to_owned();
        let worker = RedisRuntime::new(config.clone());
        worker.serve(Paced);
        worker.start().await.expect("the worker starts");
        let _ = PROBES[p].worker.set(worker.clone());
        let client = RedisRuntime::new(config.worker(false));
        client.start().await.expect("the client starts");
        let s = session(&format!("ahead-{p}"));
        let layout = Layout::new(&redis_url(), &layout_prefix, s.as_str());
        (worker, client, s, layout)
    }

    /// Submits 20 runs, the held one, then 10 more; returns the handles of all 31 once the
    /// held one runs (on the one execution slot: jobs leased together start in any order, so
    /// some of the first 20 may still wait).
    async fn queue_behind_a_held_run(
        p: usize,
        client: &RedisRuntime,
        s: &SessionId,
    ) -> Vec<RunHandle> {
        let mut handles = Vec::new();
        for x in (0..20).chain([HELD]).chain(20..30) {
            handles.push(client.submit(s, &Paced, (p, x)).await.expect("submitted"));
        }
        until("the held run runs", || {
            PROBES[p].held.load(Ordering::SeqCst)
        })
        .await;
        handles
    }

    /// Waits for every run of `handles` through `runtime`, each answering its input.
    async fn all_complete(runtime: &RedisRuntime, handles: &[RunHandle]) {
        for handle in handles {
            runtime
                .wait::<u64>(handle, Some(Duration::from_secs(10)))
                .await
                .expect("completes");
        }
    }

    /// A worker running one job at a time leases more than one while 300 short runs flow
    /// through it, never runs two at once, and runs each run once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_slot_runs_jobs_leased_ahead_one_at_a_time() {
        let probe = &PROBES[0];
        probe.open.store(true, Ordering::SeqCst);
        let (worker, client, s, _) = one_at_a_time(0, 8).await;
        let mut handles = Vec::new();
        for x in 0..300 {
            handles.push(client.submit(&s, &Paced, (0, x)).await.expect("submitted"));
        }
        all_complete(&client, &handles).await;
        assert_eq!(
            probe.most_running.load(Ordering::SeqCst),
            1,
            "one at a time"
        );
        assert!(
            probe.most_leased.load(Ordering::SeqCst) > 1,
            "jobs were leased ahead of the one running"
        );
        assert_eq!(probe.starts.load(Ordering::SeqCst), 300, "each run once");
        client.stop_session(&s).await.expect("stopped");
        client.stop().await.expect("the client stops");
        worker.stop().await.expect("the worker stops");
    }

    /// Jobs leased ahead of a run that turns out long go back to the queue (within a
    /// second), and the worker leases no more ahead while it is stuck: another worker runs
    /// them meanwhile. Each run executes once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_waiting_behind_a_long_run_go_to_another_worker() {
        let probe = &PROBES[1];
        let (worker, client, s, layout) = one_at_a_time(1, 4).await;
        let handles = queue_behind_a_held_run(1, &client, &s).await;
        until_only_the_held_run_is_leased(1, &layout).await;
        let other = another_worker(&layout).await;
        all_complete(&client, &handles[..20]).await;
        all_complete(&client, &handles[21..]).await;
        assert_eq!(
            probe.running.load(Ordering::SeqCst),
            1,
            "still held: another worker ran them"
        );
        probe.open.store(true, Ordering::SeqCst);
        all_complete(&client, &handles).await;
        assert_eq!(probe.starts.load(Ordering::SeqCst), 31, "each run once");
        client.stop_session(&s).await.expect("stopped");
        client.stop().await.expect("the client stops");
        worker.stop().await.expect("the worker stops");
        other.stop().await.expect("the other worker stops");
    }

    /// A draining worker gives back the jobs it leased ahead, finishes the run it runs, and
    /// another worker runs the rest, each once. (It gives them back at once; a job leased
    /// ahead that waited a second would be given back anyway, so this test does not tell the
    /// two apart: it checks that a drain loses and repeats nothing.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_draining_worker_gives_back_the_jobs_it_leased_ahead() {
        let probe = &PROBES[2];
        let (worker, client, s, layout) = one_at_a_time(2, 8).await;
        let handles = queue_behind_a_held_run(2, &client, &s).await;
        let draining = tokio::spawn({
            let worker = worker.clone();
            async move { worker.drain(Duration::from_secs(10)).await }
        });
        until_only_the_held_run_is_leased(2, &layout).await;
        probe.open.store(true, Ordering::SeqCst);
        draining.await.expect("joined").expect("drained");
        let other = another_worker(&layout).await;
        all_complete(&other, &handles).await;
        assert_eq!(probe.starts.load(Ordering::SeqCst), 31, "each run once");
        other.stop_session(&s).await.expect("stopped");
        other.stop().await.expect("the other worker stops");
        client.stop().await.expect("the client stops");
    }
}
