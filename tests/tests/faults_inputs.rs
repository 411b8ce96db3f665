//! docs/faults.md's bad-input, isolation and security scenarios (12, 15, 16, 19, 20, 21, 22,
//! 23): client and worker runtimes in this process, each test against a `redis-server` of its
//! own (so it can count keys, commands and connections, and set a password or TLS). Every
//! scenario prints a one-line `SCENARIO` summary (see with `--nocapture`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use am2z::{
    Error, EventKind, Executes, RedisConfig, RedisRuntime, RunId, Runtime, SessionId, processor,
    workflow,
};
use am2z_tests::fault::{RedisServer, ServerSpec, TlsFiles, free_port, long_profile};
use am2z_tests::layout::Layout;
use am2z_tests::processors::AddOne;
use am2z_tests::suite::session;
use futures::StreamExt;

/// Settings for a test runtime against `url`: its own prefix, short leases and sweeps.
fn config(url: &str) -> RedisConfig {
    RedisConfig::new(url)
        .prefix(format!("am2z-inputs-{}", RunId::generate()))
        .lease(Duration::from_secs(2))
        .sweep_every(Duration::from_millis(200))
        .idle_poll(Duration::from_millis(50))
        .session_ttl(Duration::from_secs(120))
        .result_ttl(Duration::from_secs(120))
}

/// A started runtime.
async fn started(config: RedisConfig) -> RedisRuntime {
    let runtime = RedisRuntime::new(config);
    runtime.start().await.expect("the runtime starts");
    runtime
}

/// Keys of `session` under `prefix` on `server`.
fn session_keys(server: &RedisServer, prefix: &str, session: &SessionId) -> Vec<String> {
    server.keys(&format!("{prefix}:{{{session}}}:*"))
}

/// Stops `session` and the runtimes, then checks the session left no key.
async fn finish(
    server: &RedisServer,
    session: &SessionId,
    client: &RedisRuntime,
    others: &[&RedisRuntime],
) {
    let prefix = client.config().queue_prefix().to_owned();
    client.stop_session(session).await.expect("stop_session");
    client.stop().await.expect("the client stops");
    for other in others {
        other.stop().await.expect("the runtime stops");
    }
    assert_eq!(
        session_keys(server, &prefix, session),
        Vec::<String>::new(),
        "a stopped session leaves zero keys"
    );
}

/// Every value stored under `prefix` (strings, hash fields and values, list, set and sorted
/// set members, stream entries), one per line of `redis-cli`'s output; a stream entry that
/// holds a worker's batch of events (a JSON array) counts as each of its events.
fn stored_values(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut values = Vec::new();
    for key in server.keys(&format!("{prefix}:*")) {
        let dump = match server.cli(&["TYPE", &key]).as_str() {
            "string" => server.cli(&["GET", &key]),
            "hash" => server.cli(&["HGETALL", &key]),
            "list" => server.cli(&["LRANGE", &key, "0", "-1"]),
            "set" => server.cli(&["SMEMBERS", &key]),
            "zset" => server.cli(&["ZRANGE", &key, "0", "-1"]),
            "stream" => server.cli(&["XRANGE", &key, "-", "+"]),
            _ => String::new(),
        };
        for line in dump.lines() {
            match serde_json::from_str::<Vec<serde_json::Value>>(line) {
                Ok(batch) if line.starts_with('[') => {
                    values.extend(batch.iter().map(serde_json::Value::to_string));
                }
                _ => values.push(line.to_owned()),
            }
        }
        values.push(key);
    }
    values
}

/// The one-line figures of a scenario, for the report.
fn summary(scenario: u32, test: &str, figures: &[(&str, String)]) {
    let figures: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("SCENARIO {scenario} {test}: {}", figures.join(" "));
}

mod corrupt_payloads {
    use super::*;

    /// Scenario 12: invalid JSON, a value of the wrong shape, random bytes (NUL and invalid
    /// UTF-8 among them) and a deleted body in queued jobs fail those runs at their first
    /// delivery with a typed error saying what was wrong, dead-letter them, and leave the
    /// siblings claimed in the same batch untouched.
    #[tokio::test]
    async fn corrupt_payloads_are_dead_lettered_at_the_first_attempt() {
        let server = RedisServer::start();
        // A lease longer than the deadline below: a redelivery could not happen in time. One
        // slot: a corrupt job must not hold it (it has no events to wait for).
        let config = config(&server.url())
            .lease(Duration::from_secs(30))
            .max_deliveries(3)
            .worker_concurrency(1);
        let prefix = config.queue_prefix().to_owned();
        let client = started(config.clone().worker(false)).await;
        let s = session("corrupt");
        let runs: usize = if long_profile() { 120 } else { 8 };
        let mut handles = Vec::new();
        for x in 0..runs {
            handles.push(client.submit(&s, &AddOne, x as i64).await.expect("queued"));
        }
        let random: Vec<u8> = {
            let mut state: u32 = 0x9E37_79B9;
            (0..256)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state.to_le_bytes()[0]
                })
                .chain([0, 0xff, 0xfe, b'"'])
                .collect()
        };
        let corruptions: [(&str, Option<&[u8]>); 4] = [
            ("invalid JSON", Some(b"{\"not json")),
            ("wrong shape", Some(b"{\"x\": [1, 2]}")),
            ("random bytes", Some(&random)),
            ("body missing", None),
        ];
        // Corrupt every other job, so bad and good ones share a claim batch.
        let corrupt = |i: usize| i.is_multiple_of(2);
        let layout = Layout::new(&server.url(), &prefix, s.as_str());
        for (i, handle) in handles.iter().enumerate().filter(|(i, _)| corrupt(*i)) {
            let job = handle.run_id.to_string();
            match corruptions[i / 2 % corruptions.len()].1 {
                Some(bytes) => layout.set_input(&job, bytes),
                None => layout.delete_body(&job),
            }
        }
        let worker = started(config.clone()).await;
        worker.serve(AddOne);
        let begin = Instant::now();
        for (i, handle) in handles.iter().enumerate().filter(|(i, _)| corrupt(*i)) {
            let what = corruptions[i / 2 % corruptions.len()].0;
            let failure = client
                .wait::<i64>(handle, Some(Duration::from_secs(15)))
                .await
                .expect_err("a corrupt input fails its run");
            match &failure.error {
                Error::Serialization { message } => {
                    assert!(
                        message.contains("add_one") && message.contains("i64"),
                        "{what}: the error names the processor and the type: {message}"
                    );
                }
                other => panic!("{what}: expected Error::Serialization, got {other:?}"),
            }
            assert_eq!(failure.meta.run_id, handle.run_id);
        }
        for (i, handle) in handles.iter().enumerate().filter(|(i, _)| !corrupt(*i)) {
            let ok = client
                .wait::<i64>(handle, Some(Duration::from_secs(15)))
                .await
                .expect("siblings are unaffected");
            assert_eq!(ok.output, i as i64 + 1);
        }
        let recovery = begin.elapsed();
        assert!(
            recovery < Duration::from_secs(30),
            "every outcome came at the first delivery (a redelivery waits out a 30 s lease)"
        );
        if !long_profile() {
            // Each corrupt job waiting out the 2 s events barrier would take 8 s here.
            assert!(
                recovery < Duration::from_secs(4),
                "corrupt jobs do not hold the worker's slot: {recovery:?}"
            );
        }
        let mut dead = layout.dead();
        dead.sort_unstable();
        let mut expected: Vec<String> = handles
            .iter()
            .enumerate()
            .filter(|(i, _)| corrupt(*i))
            .map(|(_, h)| h.run_id.to_string())
            .collect();
        expected.sort();
        assert_eq!(dead, expected, "each corrupt job dead-lettered once");
        assert_eq!(worker.committed_runs(), runs as u64, "one commit per run");
        assert_eq!(worker.refused_commits(), 0);
        summary(
            12,
            "corrupt_payloads_are_dead_lettered_at_the_first_attempt",
            &[
                ("runs", runs.to_string()),
                ("faults", expected.len().to_string()),
                ("lost", "0".into()),
                ("double_commits", "0".into()),
                ("duplicate_executions", "0".into()),
                ("dead_lettered", dead.len().to_string()),
                ("recovery_ms", recovery.as_millis().to_string()),
            ],
        );
        finish(&server, &s, &client, &[&worker]).await;
    }
}

mod panics_and_overruns {
    use super::*;

    static PANICKED: AtomicU32 = AtomicU32::new(0);

    /// Panics at its first attempt, then returns `x + 100 × attempt`.
    #[processor(retries = 3)]
    async fn panics_once(x: i64, ctx: &am2z::Ctx) -> Result<i64, Error> {
        if ctx.attempt() == 1 {
            PANICKED.fetch_add(1, Ordering::SeqCst);
            panic!("boom at {x}");
        }
        Ok(x + 100 * i64::from(ctx.attempt()))
    }

    /// Scenario 15: a panicking processor costs one failed attempt, is retried by its policy,
    /// and the worker (one slot) keeps serving: a panic that exhausts the policy fails its
    /// run with `Error::Panicked`, and the next run still completes.
    #[tokio::test]
    async fn a_panic_fails_one_attempt_and_the_worker_keeps_serving() {
        let server = RedisServer::start();
        let config = config(&server.url()).worker_concurrency(1);
        let client = started(config.clone().worker(false)).await;
        let worker = started(config).await;
        worker.serve(PanicsOnce);
        worker.serve(am2z_tests::processors::Panics);
        worker.serve(AddOne);
        let s = session("panics");
        let begin = Instant::now();
        let retried = client
            .execute_in_session(&s, &PanicsOnce, 1)
            .await
            .expect("the retry succeeds");
        assert_eq!(retried.output, 201, "the second attempt's result");
        assert_eq!(retried.attempts, 2);
        assert_eq!(PANICKED.load(Ordering::SeqCst), 1);
        let failure = client
            .execute_in_session(&s, &am2z_tests::processors::Panics, 7)
            .await
            .expect_err("it always panics");
        assert!(
            matches!(failure.error.root_cause(), Error::Panicked { message, .. } if message.contains("boom at 7")),
            "{failure:?}"
        );
        assert_eq!(failure.attempts, 2, "retried by its policy (2 attempts)");
        for x in 0..3 {
            let ok = client
                .execute_in_session(&s, &AddOne, x)
                .await
                .expect("the worker keeps serving");
            assert_eq!(ok.output, x + 1);
        }
        let recovery = begin.elapsed();
        // The client hears an outcome from the commit's `done` message, which may reach it
        // before the worker has read the commit's reply: let the worker read it (a leaked slot
        // or a missing commit still fails below).
        let answered = Instant::now();
        while (worker.committed_runs() < 5 || worker.runs_in_flight() > 0)
            && answered.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(worker.committed_runs(), 5, "one commit per run");
        assert_eq!(worker.runs_in_flight(), 0, "no slot leaked");
        summary(
            15,
            "a_panic_fails_one_attempt_and_the_worker_keeps_serving",
            &[
                ("runs", "5".into()),
                ("faults", "3 panics".into()),
                ("lost", "0".into()),
                ("double_commits", "0".into()),
                ("duplicate_executions", "0".into()),
                ("elapsed_ms", recovery.as_millis().to_string()),
            ],
        );
        finish(&server, &s, &client, &[&worker]).await;
    }

    static BLOCKING_STARTED: AtomicU32 = AtomicU32::new(0);
    static BLOCKING_FINISHED: AtomicU32 = AtomicU32::new(0);
    static DEAF_STARTED: AtomicU32 = AtomicU32::new(0);
    static DEAF_FINISHED: AtomicU32 = AtomicU32::new(0);

    /// Its first attempt blocks its thread for 3× its timeout (never yielding, so it cannot
    /// notice the token) and then returns; later attempts return at once.
    #[processor(timeout = "300ms", retries = 2)]
    async fn blocks_past_its_timeout(x: i64, ctx: &am2z::Ctx) -> Result<i64, Error> {
        BLOCKING_STARTED.fetch_add(1, Ordering::SeqCst);
        if ctx.attempt() == 1 {
            std::thread::sleep(Duration::from_millis(900));
        }
        BLOCKING_FINISHED.fetch_add(1, Ordering::SeqCst);
        Ok(x + 1000 * i64::from(ctx.attempt()))
    }

    /// Its first attempt sleeps 3× its timeout without looking at its token; later attempts
    /// return at once.
    #[processor(timeout = "300ms", retries = 2)]
    async fn sleeps_past_its_timeout(x: i64, ctx: &am2z::Ctx) -> Result<i64, Error> {
        DEAF_STARTED.fetch_add(1, Ordering::SeqCst);
        if ctx.attempt() == 1 {
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        DEAF_FINISHED.fetch_add(1, Ordering::SeqCst);
        Ok(x + 1000 * i64::from(ctx.attempt()))
    }

    /// Scenario 16: a processor that ignores cancellation and overruns its timeout has that
    /// attempt marked timed out (`Error::Timeout` in its `StepRetrying` event), its late result
    /// is not used, and the retry's result is committed once. Both ways of ignoring the token:
    /// blocking the thread (the late result is produced, and refused) and never looking at it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overrun_times_out_and_only_the_retry_commits() {
        let server = RedisServer::start();
        let config = config(&server.url());
        let client = started(config.clone().worker(false)).await;
        let worker = started(config).await;
        worker.serve(BlocksPastItsTimeout);
        worker.serve(SleepsPastItsTimeout);
        let s = session("overrun");
        let mut events = client.subscribe_session(&s);
        let begin = Instant::now();
        let blocked = client
            .execute_in_session(&s, &BlocksPastItsTimeout, 1)
            .await
            .expect("the retry succeeds");
        let deaf = client
            .execute_in_session(&s, &SleepsPastItsTimeout, 2)
            .await
            .expect("the retry succeeds");
        let elapsed = begin.elapsed();
        assert_eq!(blocked.output, 2001, "the retry's result, not the late one");
        assert_eq!(deaf.output, 2002, "the retry's result");
        assert_eq!((blocked.attempts, deaf.attempts), (2, 2));
        assert_eq!(BLOCKING_STARTED.load(Ordering::SeqCst), 2);
        assert_eq!(
            BLOCKING_FINISHED.load(Ordering::SeqCst),
            2,
            "the blocked attempt did produce its late result"
        );
        assert_eq!(DEAF_STARTED.load(Ordering::SeqCst), 2);
        // The deaf attempt's future was dropped at its timeout: its body never finished.
        assert_eq!(DEAF_FINISHED.load(Ordering::SeqCst), 1);
        // The client hears a run's `done` from Redis, possibly before the worker has read the
        // reply of the commit that published it and counted it: wait for the count, then
        // check it is exactly one per run.
        let counted = Instant::now() + Duration::from_secs(10);
        while worker.committed_runs() < 2 && Instant::now() < counted {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(worker.committed_runs(), 2, "one commit per run");
        assert_eq!(worker.refused_commits(), 0);
        let mut timed_out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while timed_out.len() < 2 && Instant::now() < deadline {
            let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), events.next()).await
            else {
                continue;
            };
            if let EventKind::StepRetrying { attempt, error, .. } = &event.kind {
                assert_eq!(*attempt, 1);
                assert!(
                    matches!(error.root_cause(), Error::Timeout { limit, .. } if *limit == Duration::from_millis(300)),
                    "{error:?}"
                );
                timed_out.push(event.processor.clone());
            }
        }
        assert_eq!(
            timed_out.len(),
            2,
            "each overrun attempt was marked timed out"
        );
        summary(
            16,
            "an_overrun_times_out_and_only_the_retry_commits",
            &[
                ("runs", "2".into()),
                ("faults", "2 overruns".into()),
                ("executions", "4".into()),
                ("commits", worker.committed_runs().to_string()),
                ("late_results_refused", "1".into()),
                ("lost", "0".into()),
                ("double_commits", "0".into()),
                ("elapsed_ms", elapsed.as_millis().to_string()),
            ],
        );
        finish(&server, &s, &client, &[&worker]).await;
    }
}

mod recursion {
    use super::*;

    /// Calls itself, one level deeper each time.
    #[processor]
    async fn itself(depth: u32, ctx: &am2z::Ctx) -> Result<u32, Error> {
        ctx.call(&Itself, depth + 1).await
    }

    /// A → B.
    #[processor]
    async fn ping(n: u32, ctx: &am2z::Ctx) -> Result<u32, Error> {
        ctx.call(&Pong, n + 1).await
    }

    /// B → A.
    #[processor]
    async fn pong(n: u32, ctx: &am2z::Ctx) -> Result<u32, Error> {
        ctx.call(&Ping, n + 1).await
    }

    /// Scenario 19: a processor calling itself, and A → B → A, stop at `max_call_depth` with
    /// `Error::DepthExceeded`, on a worker with one slot and without deadlock; the worker then
    /// serves the next run.
    #[tokio::test]
    async fn recursion_stops_at_the_depth_cap_without_deadlock() {
        let server = RedisServer::start();
        let config = config(&server.url())
            .worker_concurrency(1)
            .max_call_depth(6);
        let client = started(config.clone().worker(false)).await;
        let worker = started(config).await;
        worker.serve(Itself);
        worker.serve(Ping);
        worker.serve(Pong);
        worker.serve(AddOne);
        let s = session("recursion");
        let begin = Instant::now();
        let direct = tokio::time::timeout(
            Duration::from_secs(20),
            client.execute_in_session(&s, &Itself, 0),
        )
        .await
        .expect("no deadlock")
        .expect_err("stopped by the cap");
        assert!(
            matches!(
                direct.error.root_cause(),
                Error::DepthExceeded {
                    depth: 7,
                    limit: 6,
                    ..
                }
            ),
            "{direct:?}"
        );
        let mutual = tokio::time::timeout(
            Duration::from_secs(20),
            client.execute_in_session(&s, &Ping, 0),
        )
        .await
        .expect("no deadlock")
        .expect_err("stopped by the cap");
        match mutual.error.root_cause() {
            Error::DepthExceeded {
                depth: 7,
                limit: 6,
                processor,
            } => assert!(processor == "ping" || processor == "pong", "{processor}"),
            other => panic!("expected DepthExceeded, got {other:?}"),
        }
        let next = client
            .execute_in_session(&s, &AddOne, 1)
            .await
            .expect("the worker serves the next run");
        assert_eq!(next.output, 2);
        summary(
            19,
            "recursion_stops_at_the_depth_cap_without_deadlock",
            &[
                ("runs", "3".into()),
                ("lost", "0".into()),
                ("double_commits", "0".into()),
                ("elapsed_ms", begin.elapsed().as_millis().to_string()),
            ],
        );
        finish(&server, &s, &client, &[&worker]).await;
    }
}

mod hostile_sessions {
    use super::*;

    /// Ids that must never reach Redis.
    fn hostile_ids() -> Vec<String> {
        let mut ids: Vec<String> = [
            "a*",
            "a?",
            "[ab]",
            "{x}",
            "}",
            "{",
            ":",
            "a:b",
            "",
            "a\0b",
            "\0",
            "a\nb",
            "\n",
            "a\r\nPING",
            "a b",
            " ",
            "\t",
            "a/b",
            "a\\b",
            "a%b",
            "a'b",
            "a\"b",
            "é",
            "a\u{202e}",
            "a\u{200b}",
            "ａ",
            "a：b",
            "*",
            "?",
            "a]",
            "-\u{7f}",
            "$",
            "#",
            "\u{feff}",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        ids.push("x".repeat(10_000));
        ids.push("x".repeat(am2z::MAX_SESSION_ID_LEN + 1));
        ids
    }

    /// What a caller holding a raw id does: validate, then submit.
    async fn submit_raw(runtime: &RedisRuntime, raw: &str) -> Result<am2z::RunHandle, Error> {
        let session = SessionId::new(raw)?;
        runtime.submit(&session, &AddOne, 1).await
    }

    /// Calls of every command but `INFO` (which the test itself sends), from
    /// `INFO commandstats`.
    fn commands(server: &RedisServer) -> u64 {
        server
            .cli(&["INFO", "commandstats"])
            .lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter_map(|l| {
                l.split_once("calls=")
                    .and_then(|(_, rest)| rest.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    }

    /// Scenario 20 (hostile ids): every hostile id is refused with a typed validation error
    /// before any Redis call: against a port where nothing listens the error is still the
    /// validation error, and a server of the test's own sees no command.
    #[tokio::test]
    async fn hostile_session_ids_are_refused_before_any_redis_call() {
        let nowhere = RedisRuntime::new(config(&format!("redis://127.0.0.1:{}", free_port())));
        for raw in hostile_ids() {
            let error = submit_raw(&nowhere, &raw).await.expect_err("refused");
            assert!(
                matches!(&error, Error::Validation { field, .. } if field == "session_id"),
                "{raw:?} gave {error:?}"
            );
            let json = serde_json::to_string(&raw).expect("a JSON string");
            assert!(serde_json::from_str::<SessionId>(&json).is_err(), "{raw:?}");
            let handle = format!(
                r#"{{"session":{json},"run_id":"{}","processor":"add_one"}}"#,
                RunId::generate()
            );
            assert!(
                serde_json::from_str::<am2z::RunHandle>(&handle).is_err(),
                "a handle carrying {raw:?} is refused"
            );
        }

        let server = RedisServer::start();
        let client = started(config(&server.url()).worker(false)).await;
        let before = commands(&server);
        let mut refused = 0;
        for raw in hostile_ids() {
            let error = submit_raw(&client, &raw).await.expect_err("refused");
            assert!(matches!(error, Error::Validation { .. }), "{error:?}");
            refused += 1;
        }
        let after = commands(&server);
        assert_eq!(after, before, "no command reached Redis");
        assert_eq!(server.cli(&["DBSIZE"]), "0", "nothing was written");
        summary(
            20,
            "hostile_session_ids_are_refused_before_any_redis_call",
            &[
                ("ids_refused", refused.to_string()),
                ("redis_commands", (after - before).to_string()),
            ],
        );
        client.stop().await.expect("stops");
    }

    /// Scenario 20 (valid ids): sessions whose ids differ by one character, or are prefixes
    /// of each other, own disjoint key sets on one Cluster slot each (`CLUSTER KEYSLOT` on a
    /// cluster-enabled server); stopping one leaves the others' keys as they were.
    #[tokio::test]
    async fn valid_ids_own_disjoint_keys_on_one_slot_each() {
        let server = RedisServer::start();
        let config = config(&server.url());
        let prefix = config.queue_prefix().to_owned();
        let client = started(config.clone().worker(false)).await;
        let worker = started(config).await;
        worker.serve(AddOne);
        let tag = RunId::generate().to_string()[..8].to_owned();
        let ids: Vec<SessionId> = ["", ".", "-", "_", "a", "A", ".a", "-x", "x.y"]
            .iter()
            .map(|suffix| format!("{tag}{suffix}"))
            .chain([format!("{tag}{}", "z".repeat(am2z::MAX_SESSION_ID_LEN - 8))])
            .map(|id| SessionId::new(id).expect("valid"))
            .collect();
        for id in &ids {
            client
                .execute_in_session(id, &AddOne, 1)
                .await
                .expect("runs");
            // A run no worker serves stays queued, so its job key exists too.
            client
                .submit(id, &am2z_tests::processors::Shout, "x".to_owned())
                .await
                .expect("queued");
        }
        worker.stop().await.expect("stops");
        let all = server.keys(&format!("{prefix}:*"));
        let mut owner = std::collections::HashMap::new();
        let slots = ServerSpec::default().arg("cluster-enabled", "yes").start();
        for id in &ids {
            let keys = session_keys(&server, &prefix, id);
            assert!(keys.len() >= 5, "{id}: {keys:?}");
            let slot = slots.cli(&["CLUSTER", "KEYSLOT", &format!("{{{id}}}")]);
            for key in &keys {
                assert!(
                    owner.insert(key.clone(), id.clone()).is_none(),
                    "{key} belongs to two sessions"
                );
                assert_eq!(
                    slots.cli(&["CLUSTER", "KEYSLOT", key]),
                    slot,
                    "{key} is on its session's slot"
                );
            }
        }
        for key in &all {
            assert!(
                owner.contains_key(key)
                    || key.starts_with(&format!("{prefix}:{{:"))
                    || !key.contains('{'),
                "{key} is a session key no session owns"
            );
        }
        let (stopped, kept) = ids.split_first().expect("ids");
        let before: Vec<Vec<String>> = kept
            .iter()
            .map(|id| session_keys(&server, &prefix, id))
            .collect();
        client.stop_session(stopped).await.expect("stop_session");
        assert_eq!(
            session_keys(&server, &prefix, stopped),
            Vec::<String>::new()
        );
        let after: Vec<Vec<String>> = kept
            .iter()
            .map(|id| session_keys(&server, &prefix, id))
            .collect();
        assert_eq!(
            before, after,
            "stopping one session spares the others' keys"
        );
        summary(
            20,
            "valid_ids_own_disjoint_keys_on_one_slot_each",
            &[
                ("sessions", ids.len().to_string()),
                ("keys_checked", owner.len().to_string()),
            ],
        );
        for id in kept {
            client.stop_session(id).await.expect("stop_session");
            assert_eq!(session_keys(&server, &prefix, id), Vec::<String>::new());
        }
        client.stop().await.expect("stops");
    }
}

mod oversized {
    use super::*;

    /// Returns a text of `n` bytes.
    #[processor]
    async fn inflate(n: usize) -> Result<String, Error> {
        Ok("x".repeat(n))
    }

    /// The length of a text.
    #[processor]
    async fn measure(text: String) -> Result<usize, Error> {
        Ok(text.len())
    }

    /// Publishes a custom event of `n` bytes.
    #[processor]
    async fn announce(n: usize, ctx: &am2z::Ctx) -> Result<usize, Error> {
        ctx.emit("announce", "x".repeat(n))?;
        Ok(n)
    }

    workflow! {
        /// A big intermediate state, a small output.
        Balloon(usize) -> usize {
            chain![inflate, measure]
        }
    }

    /// The largest value stored under `prefix`.
    fn largest_value(server: &RedisServer, prefix: &str) -> usize {
        stored_values(server, prefix)
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
    }

    /// Scenario 21: an oversized input is refused with `Error::Resource` before anything is
    /// written (the server's keys are unchanged); an oversized output fails its run with the
    /// same error and nothing of the output is stored; an oversized custom event is refused
    /// to the processor with the same error; so is a state between two steps (stored in
    /// Redis when the run goes one job per step), and nothing of it is written.
    #[tokio::test]
    async fn oversized_payloads_are_refused_before_any_write() {
        const LIMIT: usize = 1_000;
        let server = RedisServer::start();
        let config = config(&server.url()).max_payload_bytes(LIMIT);
        let prefix = config.queue_prefix().to_owned();
        let client = started(config.clone().worker(false)).await;
        let s = session("oversized");
        let keys_before = server.keys("*");
        let error = client
            .submit(&s, &am2z_tests::processors::Shout, "y".repeat(2 * LIMIT))
            .await
            .expect_err("too big");
        assert!(
            matches!(&error, Error::Resource { message, .. } if message.contains("1000")),
            "{error:?}"
        );
        assert_eq!(server.keys("*"), keys_before, "nothing was written");

        let worker = started(config).await;
        worker.serve(Inflate);
        worker.serve(Balloon);
        worker.serve(Announce);
        let failure = client
            .execute_in_session(&s, &Inflate, 5 * LIMIT)
            .await
            .expect_err("the outcome is too big");
        assert!(
            matches!(&failure.error, Error::Resource { message, .. } if message.contains("limit is 1000")),
            "{failure:?}"
        );
        let event = client
            .execute_in_session(&s, &Announce, 2 * LIMIT)
            .await
            .expect_err("the event is too big");
        assert!(
            matches!(event.error.root_cause(), Error::Resource { message, .. } if message.contains("event")),
            "{event:?}"
        );
        let small = client
            .execute_in_session(&s, &Announce, 10)
            .await
            .expect("a small event is published");
        assert_eq!(small.output, 10);
        // Step by step, the state between two steps is stored in Redis, so it is bounded
        // like an input: the run fails with the typed error and the state is never written.
        let big_state = client
            .execute_in_session(&s, &Balloon, 5 * LIMIT)
            .await
            .expect_err("the intermediate state is too big to store");
        assert!(
            matches!(&big_state.error, Error::Resource { message, .. } if message.contains("limit is 1000")),
            "{big_state:?}"
        );
        let small_state = client
            .execute_in_session(&s, &Balloon, LIMIT / 2)
            .await
            .expect("a small intermediate state crosses Redis");
        assert_eq!(small_state.output, LIMIT / 2);
        let largest = largest_value(&server, &prefix);
        assert!(
            largest < LIMIT,
            "no value near the oversized payloads was stored (largest {largest} bytes)"
        );
        assert_eq!(
            Layout::new(&server.url(), &prefix, s.as_str()).jobs(),
            Vec::<String>::new(),
            "no job left half-done"
        );
        summary(
            21,
            "oversized_payloads_are_refused_before_any_write",
            &[
                ("refused_inputs", "1".into()),
                ("failed_outputs", "1".into()),
                ("refused_events", "1".into()),
                ("largest_stored_bytes", largest.to_string()),
                ("lost", "0".into()),
            ],
        );
        finish(&server, &s, &client, &[&worker]).await;
    }
}

mod secrets {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    const SECRET: &str = "SENTINEL-5eCr3t";

    /// Every log line of this test binary, from when [`capture_logs`] is first called.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    /// Installs (once) a global subscriber at TRACE level that keeps every log line. Global,
    /// not scoped to this test's thread: tracing caches which call sites are enabled, and a
    /// scoped subscriber misses call sites first hit by tests running alongside.
    fn capture_logs() -> Captured {
        static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Captured::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            logs
        })
        .clone()
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
    }

    /// Fails, so the error paths log too.
    #[processor(retries = 2)]
    async fn refuses(_x: i64) -> Result<i64, Error> {
        Err(Error::execution("refuses", "always"))
    }

    fn assert_hidden(what: &str, text: &str) {
        assert!(!text.contains(SECRET), "the secret shows in {what}: {text}");
        assert!(
            !text.contains("5eCr3t"),
            "part of the secret shows in {what}"
        );
    }

    /// Scenario 22: a Redis password never appears in `Debug` / `Display` of the config and
    /// the runtime, in errors (connection refused, wrong password, TLS misconfiguration), in
    /// `tracing` output at TRACE level, or in stats.
    #[tokio::test]
    async fn the_password_never_leaks() {
        let logs = capture_logs();

        let server = ServerSpec::default().password(SECRET).start();
        let url = format!("redis://:{SECRET}@127.0.0.1:{}", server.port());
        let config = config(&url);
        assert_hidden("the config's Debug", &format!("{config:?}"));
        assert_hidden("the config's Display", &config.to_string());

        // Nothing listens (and `start` does not wait for it to come up).
        let nowhere = RedisRuntime::new(
            config
                .clone()
                .url(format!("redis://:{SECRET}@127.0.0.1:{}", free_port()))
                .start_timeout(Duration::ZERO),
        );
        assert_hidden("the runtime's Debug", &format!("{nowhere:?}"));
        let refused = nowhere.start().await.expect_err("nothing listens");
        assert!(matches!(refused, Error::Unavailable { .. }), "{refused:?}");
        assert_hidden("a connection error", &format!("{refused:?} {refused}"));

        // The wrong password (the sentinel is what the client sends).
        let other = ServerSpec::default().password("the-right-one").start();
        let wrong = RedisRuntime::new(
            config
                .clone()
                .url(format!("redis://:{SECRET}@127.0.0.1:{}", other.port())),
        );
        let denied = wrong.start().await.expect_err("wrong password");
        assert!(
            matches!(&denied, Error::Configuration { message } if message.contains("authentication")),
            "{denied:?}"
        );
        assert_hidden("an authentication error", &format!("{denied:?} {denied}"));

        // TLS misconfigured: a CA file that holds no certificate, and a `redis://` URL.
        let dir = std::env::temp_dir().join(format!("am2z-secret-{}", RunId::generate()));
        std::fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("written");
        let no_ca = RedisRuntime::new(config.clone().tls_ca(&junk));
        let tls_error = no_ca.start().await.expect_err("no CA in that file");
        assert!(
            matches!(tls_error, Error::Configuration { .. }),
            "{tls_error:?}"
        );
        assert_hidden(
            "a TLS configuration error",
            &format!("{tls_error:?} {tls_error}"),
        );
        let _ = std::fs::remove_dir_all(&dir);

        // The right password: a workflow runs, failures included, and stats are read.
        let client = started(config.clone().worker(false)).await;
        let worker = started(config).await;
        worker.serve(AddOne);
        worker.serve(Refuses);
        let s = session("secret");
        client
            .execute_in_session(&s, &AddOne, 1)
            .await
            .expect("runs with the password");
        let failure = client
            .execute_in_session(&s, &Refuses, 1)
            .await
            .expect_err("refuses");
        assert_hidden("a run failure", &format!("{failure:?}"));
        let stats = client.stats().await.expect("stats");
        let session_stats = client.session_stats(&s).await.expect("session stats");
        let queue_stats = client.queue_stats().await.expect("queue stats");
        assert_hidden(
            "stats",
            &format!("{stats:?} {session_stats:?} {queue_stats:?} {worker:?} {client:?}"),
        );
        let stored = stored_values(&server, client.config().queue_prefix());
        assert!(!stored.is_empty());
        assert_hidden("what the runtime stored in Redis", &stored.join("\n"));
        finish(&server, &s, &client, &[&worker]).await;
        drop((nowhere, wrong, no_ca));
        let logs = logs.text();
        assert!(
            !logs.is_empty(),
            "the capturing subscriber saw the runtime's logs"
        );
        assert_hidden("the tracing output", &logs);
        summary(
            22,
            "the_password_never_leaks",
            &[
                ("log_bytes_checked", logs.len().to_string()),
                ("leaks", "0".into()),
            ],
        );
    }
}

mod tls {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;

    use super::*;

    /// A CA and a server certificate for 127.0.0.1 signed by it, plus an unrelated CA, made
    /// with the `openssl` CLI in a directory removed on drop.
    struct Certificates {
        dir: PathBuf,
        files: TlsFiles,
        other_ca: PathBuf,
    }

    impl Drop for Certificates {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn make_ca(dir: &Path, name: &str) {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=am2z test {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }

    fn certificates() -> Certificates {
        let dir = std::env::temp_dir().join(format!("am2z-tls-{}", RunId::generate()));
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");
        make_ca(&dir, "ca");
        make_ca(&dir, "other-ca");
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("written");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Certificates {
            files: TlsFiles {
                cert: dir.join("server.pem"),
                key: dir.join("server.key"),
                ca: dir.join("ca.pem"),
            },
            other_ca: dir.join("other-ca.pem"),
            dir,
        }
    }

    /// A loopback TCP relay to `port` that counts the connections it accepts (the server's
    /// own counter skips connections whose TLS handshake failed).
    async fn counting_relay(port: u16) -> (u16, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a relay port");
        let relay_port = listener.local_addr().expect("bound").port();
        let accepted = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        (relay_port, accepted)
    }

    /// Starts a runtime with `config` pointed at `url` through a counting relay: it must fail
    /// promptly, after a bounded number of connection attempts.
    async fn refused(
        server: &RedisServer,
        config: RedisConfig,
        url: &str,
    ) -> (Error, Duration, u32) {
        let (relay, accepted) = counting_relay(server.port()).await;
        let url = url.replace(&format!(":{}", server.port()), &format!(":{relay}"));
        let runtime = RedisRuntime::new(config.url(url));
        let begin = Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(30), runtime.start())
            .await
            .expect("start returns, it does not hang")
            .expect_err("start fails");
        let took = begin.elapsed();
        let attempts = accepted.load(Ordering::SeqCst);
        eprintln!("scenario 23: {error}");
        assert!(took < Duration::from_secs(20), "{error}: took {took:?}");
        assert!(
            (1..=8).contains(&attempts),
            "{error}: {attempts} connection attempts"
        );
        (error, took, attempts)
    }

    /// Scenario 23: a `rediss://` runtime trusting the test CA runs a workflow end to end; a
    /// wrong CA, plaintext to the TLS port and a wrong password each fail `start` promptly
    /// with a clear typed error, after a bounded number of connection attempts.
    #[tokio::test]
    async fn tls_works_and_each_misconfiguration_is_a_clear_error() {
        const PASSWORD: &str = "tls-pass-0";
        let certificates = certificates();
        let server = ServerSpec::default()
            .tls(certificates.files.clone())
            .password(PASSWORD)
            .start();
        let secure = format!("rediss://:{PASSWORD}@127.0.0.1:{}", server.port());
        let good = config(&secure).tls_ca(&certificates.files.ca);

        let begin = Instant::now();
        let client = started(good.clone().worker(false)).await;
        let worker = started(good.clone()).await;
        worker.serve(AddOne);
        worker.serve(am2z_tests::flows::Arith);
        let s = session("tls");
        let ok = client
            .execute_in_session(&s, &am2z_tests::flows::Arith, 5)
            .await
            .expect("a workflow runs over TLS");
        assert_eq!(ok.output, 22);
        let end_to_end = begin.elapsed();

        let (error, wrong_ca_took, wrong_ca_attempts) = refused(
            &server,
            good.clone().tls_ca(&certificates.other_ca),
            &secure,
        )
        .await;
        assert!(
            matches!(&error, Error::Configuration { message }
                if message.contains("TLS") && message.contains("certificate")),
            "{error:?}"
        );
        assert!(!format!("{error:?}").contains(PASSWORD));

        let plaintext = format!("redis://:{PASSWORD}@127.0.0.1:{}", server.port());
        let (error, plaintext_took, plaintext_attempts) =
            refused(&server, config(&plaintext), &plaintext).await;
        assert!(
            matches!(&error, Error::Unavailable { message, .. } if message.contains("rediss://")),
            "{error:?}"
        );
        assert!(!error.to_string().contains(PASSWORD));

        let wrong_password = format!("rediss://:not-{PASSWORD}@127.0.0.1:{}", server.port());
        let (error, wrong_password_took, wrong_password_attempts) = refused(
            &server,
            config(&wrong_password).tls_ca(&certificates.files.ca),
            &wrong_password,
        )
        .await;
        assert!(
            matches!(&error, Error::Configuration { message } if message.contains("authentication failed")),
            "{error:?}"
        );
        assert!(!error.to_string().contains(PASSWORD));

        summary(
            23,
            "tls_works_and_each_misconfiguration_is_a_clear_error",
            &[
                ("end_to_end_ms", end_to_end.as_millis().to_string()),
                (
                    "wrong_ca",
                    format!("{}ms/{wrong_ca_attempts}conn", wrong_ca_took.as_millis()),
                ),
                (
                    "plaintext",
                    format!("{}ms/{plaintext_attempts}conn", plaintext_took.as_millis()),
                ),
                (
                    "wrong_password",
                    format!(
                        "{}ms/{wrong_password_attempts}conn",
                        wrong_password_took.as_millis()
                    ),
                ),
            ],
        );
        finish(&server, &s, &client, &[&worker]).await;
    }
}
