//! Tracing across processes (`docs/tracing.md`), with am2z's `otel` feature (this crate
//! enables it): a run submitted under a span by a client `RedisRuntime` and executed by a
//! separate worker `RedisRuntime` is one trace; its steps' spans are children of the
//! worker's run span, itself the child of the submitter's span, carried in the job's body
//! through Redis. A malformed `traceparent` is ignored and the run still runs. And every
//! connection a runtime opens carries its name (`CLIENT SETNAME am2z:<role>:<pid>`).
//!
//! One test runs the worker in another process (`trace_worker`, which prints the spans it
//! exported); the others, for speed, run the client and the worker as two runtimes of this
//! process (each with its own connections, nothing shared but Redis) seen by one in-memory
//! exporter. That worker is started outside any span, so its spans can only reach the
//! submitter's trace through the context the job carries (they are checked to have a remote
//! parent). Runs against the shared Redis (127.0.0.1:6379 or
//! `AM2Z_TEST_REDIS_URL`), each test under its own prefix, whose keys it deletes.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use am2z::{Ctx, Error, Executes, RedisConfig, RedisRuntime, RunId, Runtime, SessionId, processor};
use am2z_tests::fault::{redis_cli, scan_keys};
use am2z_tests::flows::Arith;
use am2z_tests::processors::AddOne;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The process's spans, exported as they end (one subscriber for the whole test binary).
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("am2z-tests"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only global subscriber");
        exporter
    })
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> Option<String> {
    attribute(span, key).map(|v| v.as_str().into_owned())
}

/// The spans named `name` of `session`.
fn spans_of(session: &SessionId, name: &str) -> Vec<SpanData> {
    let session = session.to_string();
    exporter()
        .get_finished_spans()
        .expect("the exporter reads")
        .into_iter()
        .filter(|s| s.name == name && text(s, "session").as_deref() == Some(session.as_str()))
        .collect()
}

/// Polls until `session` has at least `n` spans named `name` (a worker's span ends just
/// after its commit, which the waiter may hear first).
async fn until_spans(session: &SessionId, name: &str, n: usize) -> Vec<SpanData> {
    let begin = Instant::now();
    loop {
        let spans = spans_of(session, name);
        if spans.len() >= n {
            return spans;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(20),
            "{n} `{name}` spans of {session} within 20 s; got {}",
            spans.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client that only submits and awaits, and a worker serving `serve`, under a fresh prefix.
struct Scene {
    url: String,
    prefix: String,
    client: RedisRuntime,
    worker: RedisRuntime,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        exporter();
        let url = redis_url();
        let prefix = format!("am2z-trace-{tag}-{}", RunId::generate());
        let config = || {
            RedisConfig::new(url.clone())
                .prefix(prefix.clone())
                .idle_poll(Duration::from_millis(50))
                .session_ttl(Duration::from_secs(120))
                .result_ttl(Duration::from_secs(120))
        };
        Scene {
            client: RedisRuntime::new(config().worker(false)),
            worker: RedisRuntime::new(config()),
            url,
            prefix,
        }
    }

    fn session(&self, name: &str) -> SessionId {
        SessionId::new(format!("{name}-{}", RunId::generate())).expect("a valid session id")
    }

    async fn finish(self, session: &SessionId) {
        self.client
            .stop_session(session)
            .await
            .expect("stop_session");
        self.worker.stop().await.expect("the worker stops");
        self.client.stop().await.expect("the client stops");
        for key in scan_keys(&self.url, &format!("{}:*", self.prefix)) {
            redis_cli(&self.url, &["DEL", &key]);
        }
    }
}

/// The trace id and span id of `span` as OpenTelemetry sees it.
fn ids(span: &tracing::Span) -> (TraceId, SpanId) {
    let context = span.context();
    let otel = context.span();
    let otel = otel.span_context();
    assert!(otel.is_valid(), "the span is in a trace");
    (otel.trace_id(), otel.span_id())
}

/// A chain submitted under a span by a client runtime, executed one job per step by another
/// runtime: every step's span is in the submitter's trace, the child of its job's run span,
/// which is the child of the submitter's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_submitted_under_a_span_is_one_trace_across_runtimes() {
    let scene = Scene::new("chain");
    scene.worker.serve(Arith);
    // Started outside any span: its tasks inherit none.
    scene.worker.start().await.expect("the worker starts");
    scene.client.start().await.expect("the client starts");
    let session = scene.session("chain");

    let submitter = tracing::info_span!("submitter");
    let (trace, parent) = ids(&submitter);
    let handle = scene
        .client
        .submit(&session, &Arith, 5)
        .instrument(submitter.clone())
        .await
        .expect("submitted");
    let output = scene
        .client
        .wait::<i64>(&handle, Some(Duration::from_secs(20)))
        .await
        .expect("the run completes")
        .output;
    assert_eq!(output, 22, "(5 + 1) × 2 + 10");

    let steps = until_spans(&session, "am2z.step", 3).await;
    let runs = until_spans(&session, "am2z.run", 3).await;
    let mut processors: Vec<String> = steps
        .iter()
        .map(|s| text(s, "processor").unwrap_or_default())
        .collect();
    processors.sort();
    assert_eq!(
        processors,
        ["add_one", "add_ten", "double"],
        "one span per step"
    );
    let run_id = handle.run_id.to_string();
    for step in &steps {
        assert_eq!(step.span_context.trace_id(), trace, "the submitter's trace");
        assert_eq!(text(step, "run").as_deref(), Some(run_id.as_str()));
        assert_eq!(
            attribute(step, "attempt")
                .map(ToString::to_string)
                .as_deref(),
            Some("1")
        );
        let run = runs
            .iter()
            .find(|r| r.span_context.span_id() == step.parent_span_id)
            .expect("a step's parent is a run span of this worker");
        assert_eq!(run.span_context.trace_id(), trace);
        assert_eq!(
            run.parent_span_id, parent,
            "a run span's parent: the submitter"
        );
        assert!(
            run.parent_span_is_remote,
            "reached through the job, not in-process"
        );
        assert_eq!(text(run, "run").as_deref(), Some(run_id.as_str()));
        assert_eq!(text(run, "processor").as_deref(), Some("Arith"));
    }
    scene.finish(&session).await;
}

/// A span the `trace_worker` process exported.
#[derive(Debug)]
struct Exported {
    name: String,
    trace: String,
    id: String,
    parent: String,
    remote: bool,
    session: String,
    processor: String,
}

/// The same chain executed by a worker in another process (`trace_worker`, whose spans go to
/// its own exporter and are read back from its output): its run and step spans are in the
/// submitter's trace, the run spans children of the submitter's span, the steps of the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_submitted_in_one_process_and_executed_in_another_is_one_trace() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let scene = Scene::new("process");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trace_worker"))
        .env("AM2Z_REDIS_URL", &scene.url)
        .env("AM2Z_QUEUE_PREFIX", &scene.prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the worker process starts");
    let mut lines = BufReader::new(child.stdout.take().expect("its stdout")).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(first.as_deref(), Some("ready"), "the worker serves");

    scene.client.start().await.expect("the client starts");
    let session = scene.session("process");
    let submitter = tracing::info_span!("submitter");
    let (trace, parent) = ids(&submitter);
    let handle = scene
        .client
        .submit(&session, &Arith, 5)
        .instrument(submitter.clone())
        .await
        .expect("submitted");
    let outcome = scene
        .client
        .wait::<i64>(&handle, Some(Duration::from_secs(20)))
        .await;

    // Stops the worker (it finishes what it runs), then reads what it exported.
    drop(child.stdin.take());
    let mut exported = Vec::new();
    for line in lines.map_while(Result::ok) {
        if line == "end" {
            break;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        if let ["span", name, trace, id, parent, remote, session, processor] = fields[..] {
            exported.push(Exported {
                name: name.to_owned(),
                trace: trace.to_owned(),
                id: id.to_owned(),
                parent: parent.to_owned(),
                remote: remote == "1",
                session: session.to_owned(),
                processor: processor.to_owned(),
            });
        }
    }
    let status = child.wait().expect("the worker exits");
    assert!(status.success(), "the worker exits cleanly: {status}");
    assert_eq!(outcome.expect("the run completes").output, 22);

    let ours = |name: &str| -> Vec<&Exported> {
        exported
            .iter()
            .filter(|s| s.name == name && s.session == session.to_string())
            .collect()
    };
    let (runs, steps) = (ours("am2z.run"), ours("am2z.step"));
    let mut processors: Vec<&str> = steps.iter().map(|s| s.processor.as_str()).collect();
    processors.sort_unstable();
    assert_eq!(processors, ["add_one", "add_ten", "double"], "{exported:?}");
    assert_eq!(runs.len(), 3, "one run span per job: {runs:?}");
    let (trace, parent) = (trace.to_string(), parent.to_string());
    for run in &runs {
        assert_eq!(run.trace, trace, "the submitter's trace");
        assert_eq!(run.parent, parent, "the child of the submitter's span");
        assert!(run.remote, "whose context came through Redis");
    }
    for step in &steps {
        assert_eq!(step.trace, trace);
        assert!(
            runs.iter().any(|run| run.id == step.parent),
            "a step's parent is a run span: {step:?}"
        );
    }
    scene.finish(&session).await;
}

/// On the local runtime: one `am2z.run` span (session, run, the workflow's name) in the
/// caller's span, and each step's `am2z.step` its child, with its own processor and attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runs_nest_their_steps_under_the_run_span() {
    exporter();
    let runtime = am2z::LocalRuntime::new();
    runtime.start().await.expect("starts");
    let session = SessionId::new(format!("local-{}", RunId::generate())).expect("a session id");
    let caller = tracing::info_span!("caller");
    let (trace, parent) = ids(&caller);
    let result = runtime
        .execute_in_session(&session, &Arith, 5)
        .instrument(caller.clone())
        .await
        .expect("the run completes");
    assert_eq!(result.output, 22);
    let runs = until_spans(&session, "am2z.run", 1).await;
    let steps = until_spans(&session, "am2z.step", 3).await;
    let [run] = &runs[..] else {
        panic!("one run span: {runs:?}")
    };
    assert_eq!(run.span_context.trace_id(), trace);
    assert_eq!(run.parent_span_id, parent, "in the caller's span");
    assert!(!run.parent_span_is_remote);
    assert_eq!(text(run, "processor").as_deref(), Some("Arith"));
    let run_id = result.meta.run_id.to_string();
    assert_eq!(text(run, "run").as_deref(), Some(run_id.as_str()));
    let mut processors = Vec::new();
    for step in &steps {
        assert_eq!(
            step.parent_span_id,
            run.span_context.span_id(),
            "under the run"
        );
        assert_eq!(text(step, "run").as_deref(), Some(run_id.as_str()));
        processors.push(text(step, "processor").unwrap_or_default());
    }
    processors.sort();
    assert_eq!(processors, ["add_one", "add_ten", "double"]);
    runtime.stop().await.expect("stops");
}

/// Calls `add_one` through `ctx.call`: a child run on Redis.
#[processor]
async fn calls_add_one(x: i64, ctx: &Ctx) -> Result<i64, Error> {
    ctx.call(&AddOne, x).await
}

/// A `ctx.call` runs as a child run (a job of its own): the child's run span is in the same
/// trace, the child of the calling step's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_call_is_in_its_callers_trace_under_the_calling_step() {
    let scene = Scene::new("call");
    scene.worker.serve(CallsAddOne);
    scene.worker.serve(AddOne);
    scene.worker.start().await.expect("the worker starts");
    scene.client.start().await.expect("the client starts");
    let session = scene.session("call");

    let submitter = tracing::info_span!("submitter");
    let (trace, parent) = ids(&submitter);
    let handle = scene
        .client
        .submit(&session, &CallsAddOne, 41)
        .instrument(submitter.clone())
        .await
        .expect("submitted");
    let output = scene
        .client
        .wait::<i64>(&handle, Some(Duration::from_secs(20)))
        .await
        .expect("the run completes")
        .output;
    assert_eq!(output, 42);

    let steps = until_spans(&session, "am2z.step", 2).await;
    let runs = until_spans(&session, "am2z.run", 2).await;
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| text(s, "processor").as_deref() == Some(name))
            .unwrap_or_else(|| panic!("a span of step `{name}`"))
    };
    let run = |processor: &str| {
        runs.iter()
            .find(|s| text(s, "processor").as_deref() == Some(processor))
            .unwrap_or_else(|| panic!("a run span of `{processor}`"))
    };
    let (caller, callee) = (step("calls_add_one"), step("add_one"));
    let (caller_run, callee_run) = (run("calls_add_one"), run("add_one"));
    for span in [caller, callee, caller_run, callee_run] {
        assert_eq!(span.span_context.trace_id(), trace, "{}", span.name);
    }
    assert_eq!(caller_run.parent_span_id, parent);
    assert_eq!(caller.parent_span_id, caller_run.span_context.span_id());
    assert_eq!(
        callee_run.parent_span_id,
        caller.span_context.span_id(),
        "the child run is under the calling step"
    );
    assert!(callee_run.parent_span_is_remote);
    assert_eq!(callee.parent_span_id, callee_run.span_context.span_id());
    // A child run runs under its caller's run id.
    let run_id = handle.run_id.to_string();
    assert_eq!(text(callee_run, "run").as_deref(), Some(run_id.as_str()));
    scene.finish(&session).await;
}

/// The job's body carries the submitter's `traceparent`; a malformed one (written over it
/// before any worker ran) is ignored: the run completes, in a trace of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_is_ignored_and_the_run_still_runs() {
    let scene = Scene::new("malformed");
    scene.worker.serve(Arith);
    scene.client.start().await.expect("the client starts");
    let session = scene.session("malformed");
    let submitter = tracing::info_span!("submitter");
    let (trace, parent) = ids(&submitter);
    let handle = scene
        .client
        .submit(&session, &Arith, 5)
        .instrument(submitter.clone())
        .await
        .expect("submitted");

    // Queued (no worker yet): its body carries the submitter's context.
    let bodies = format!("{}:{{{session}}}:bodies", scene.prefix);
    let job = handle.run_id.to_string();
    let body = redis_cli(&scene.url, &["HGET", &bodies, &job]);
    let carried = format!("{{\"trace\":\"00-{trace}-{parent}-01\"}}\n5");
    assert_eq!(
        body, carried,
        "the body carries the submitter's traceparent"
    );
    redis_cli(
        &scene.url,
        &[
            "HSET",
            &bodies,
            &job,
            "{\"trace\":\"00-not-a-trace-01\"}\n5",
        ],
    );

    scene.worker.start().await.expect("the worker starts");
    let output = scene
        .client
        .wait::<i64>(&handle, Some(Duration::from_secs(20)))
        .await
        .expect("the run completes")
        .output;
    assert_eq!(output, 22);
    let runs = until_spans(&session, "am2z.run", 3).await;
    let first = runs
        .iter()
        .find(|r| r.parent_span_id == SpanId::INVALID)
        .expect("the first job's run span is a root: the malformed context was ignored");
    assert_ne!(first.span_context.trace_id(), trace);
    // Its successors carry the malformed text on, ignored alike: none is in the submitter's
    // trace.
    assert!(runs.iter().all(|r| r.span_context.trace_id() != trace));
    scene.finish(&session).await;
}

/// The `name=` of every connection in `CLIENT LIST`.
fn connection_names(url: &str) -> Vec<String> {
    redis_cli(url, &["CLIENT", "LIST"])
        .lines()
        .filter_map(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("name="))
                .map(str::to_owned)
        })
        .collect()
}

/// A worker runtime's command connection is `am2z:worker:<pid>` and its subscriber
/// `am2z:sub:<pid>`; a client runtime's command connection is `am2z:client:<pid>`. After the
/// subscriber is killed, the new one is named again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_is_named_by_role_and_process() {
    let scene = Scene::new("names");
    let pid = std::process::id();
    let named = |name: &str| {
        let name = format!("am2z:{name}:{pid}");
        connection_names(&scene.url).contains(&name)
    };
    scene.worker.start().await.expect("the worker starts");
    assert!(named("worker"), "{:?}", connection_names(&scene.url));
    assert!(named("sub"), "{:?}", connection_names(&scene.url));
    scene.client.start().await.expect("the client starts");
    assert!(named("client"), "{:?}", connection_names(&scene.url));
    let session = scene.session("names");
    scene.finish(&session).await;
}

/// A user whose ACL forbids `CLIENT SETNAME`: the runtime starts and runs all the same, its
/// connections unnamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_does_not_fail_start() {
    let url = redis_url();
    let user = format!("am2z-noname-{}", RunId::generate());
    redis_cli(
        &url,
        &[
            "ACL",
            "SETUSER",
            &user,
            "on",
            ">secret",
            "~*",
            "&*",
            "+@all",
            "-client|setname",
        ],
    );
    let address = url.trim_start_matches("redis://");
    let address = address.rsplit('@').next().unwrap_or(address);
    let limited = format!("redis://{user}:secret@{address}");
    let prefix = format!("am2z-trace-noname-{}", RunId::generate());
    let runtime = RedisRuntime::new(
        RedisConfig::new(limited)
            .prefix(prefix.clone())
            .idle_poll(Duration::from_millis(50)),
    );
    runtime.serve(Arith);
    let started = runtime.start().await;
    let session = SessionId::new(format!("noname-{}", RunId::generate())).expect("a session id");
    let outcome = match &started {
        Ok(()) => Some(runtime.execute_in_session(&session, &Arith, 5).await),
        Err(_) => None,
    };
    if started.is_ok() {
        runtime.stop_session(&session).await.expect("stop_session");
        runtime.stop().await.expect("stops");
    }
    redis_cli(&url, &["ACL", "DELUSER", &user]);
    for key in scan_keys(&url, &format!("{prefix}:*")) {
        redis_cli(&url, &["DEL", &key]);
    }
    started.expect("the runtime starts without its names");
    let output = outcome.expect("ran").expect("the run completes").output;
    assert_eq!(output, 22);
}

/// On a Redis Cluster of the test's own (3 masters, 1 replica each): the worker's command
/// connection and its sharded subscriber are named on every master, and naming opens no
/// connection to a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_masters_connections_are_named_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| am2z_tests::fault::ClusterSpec::default().start())
        .await
        .expect("the cluster starts");
    let pid = std::process::id();
    let names = |port: u16| -> Vec<String> {
        cluster
            .cli(port, &["CLIENT", "LIST"])
            .lines()
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|field| field.strip_prefix("name="))
                    .map(str::to_owned)
            })
            .filter(|name| name.starts_with("am2z:"))
            .collect()
    };
    let runtime = RedisRuntime::new(
        RedisConfig::cluster(cluster.seeds())
            .prefix(format!("am2z-trace-cluster-{}", RunId::generate()))
            .idle_poll(Duration::from_millis(50)),
    );
    runtime.start().await.expect("the runtime starts");
    let masters = cluster.masters();
    for &port in &masters {
        let mut found = names(port);
        found.sort();
        assert_eq!(
            found,
            [format!("am2z:sub:{pid}"), format!("am2z:worker:{pid}")],
            "master {port}"
        );
    }
    for node in cluster.nodes() {
        if !masters.contains(&node.port) {
            assert_eq!(
                names(node.port),
                Vec::<String>::new(),
                "replica {}",
                node.port
            );
        }
    }
    runtime.stop().await.expect("the runtime stops");
}

/// On a Redis server of the test's own, every connection killed: the worker's new subscriber
/// connection and its reconnected command connection are named again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnected_connections_are_named_again() {
    let server = am2z_tests::fault::RedisServer::start();
    let runtime = RedisRuntime::new(
        RedisConfig::new(server.url())
            .prefix("am2z-trace-renamed")
            .idle_poll(Duration::from_millis(50)),
    );
    runtime.start().await.expect("the runtime starts");
    let pid = std::process::id();
    let ids = |role: &str| -> Vec<String> {
        let name = format!("name=am2z:{role}:{pid}");
        server
            .cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|line| line.split(' ').any(|field| field == name))
            .filter_map(|line| line.split(' ').next().map(str::to_owned))
            .collect()
    };
    let before = (ids("worker"), ids("sub"));
    assert_eq!((before.0.len(), before.1.len()), (1, 1), "{before:?}");
    server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let begin = Instant::now();
    loop {
        let now = (ids("worker"), ids("sub"));
        // New connections (new ids), named.
        if now.0.len() == 1 && now.1.len() == 1 && now.0 != before.0 && now.1 != before.1 {
            break;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(20),
            "named again within 20 s: {now:?} (before {before:?}); {}",
            server.cli(&["CLIENT", "LIST"])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runtime.stop().await.expect("the runtime stops");
}
