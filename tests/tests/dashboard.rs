//! The dashboard over HTTP, against a local runtime with real runs: every page and API answer,
//! the actions and their guards, redaction, paging, binding rules, live events.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use am2z::dashboard::{self, DashboardConfig, Running};
use am2z::runtime::inspect::{
    CancelOutcome, Page, RetryOutcome, RunDetail, RunState, RunSummary, SessionSummary, Shown,
};
use am2z::{Error, Executes, LocalRuntime, RunId, Runtime, SessionId};
use am2z_tests::http::{self, Call, get, post};
use am2z_tests::processors::AddOne;
use am2z_tests::shop::{Checkout, Order, heal, hold, vault};
use am2z_tests::suite::session;
use futures::FutureExt;
use hyper::{Method, StatusCode};

const TOKEN: &str = "a-long-random-actions-token";

/// How long a poll for a state may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

fn loopback() -> DashboardConfig {
    DashboardConfig::new().listen(SocketAddr::from(([127, 0, 0, 1], 0)))
}

async fn shop() -> LocalRuntime {
    let runtime = LocalRuntime::new();
    runtime.start().await.expect("the runtime starts");
    runtime.register(Checkout);
    runtime
}

async fn serve(runtime: &LocalRuntime, config: DashboardConfig) -> (Running, SocketAddr) {
    let running = dashboard::bind(runtime.clone(), config)
        .await
        .expect("the dashboard binds a loopback port");
    let addr = running.local_addr();
    (running, addr)
}

/// Polls `check` until it returns something; fails the test naming `what` after [`PATIENCE`].
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs an order whose charge fails; returns its run id.
async fn failed_order(runtime: &LocalRuntime, s: &SessionId, key: &str) -> RunId {
    let failure = runtime
        .execute_in_session(s, &Checkout, Order::new(key, 4200, "FR"))
        .await
        .expect_err("an order that is not healed fails");
    failure.meta.run_id
}

fn run_path(s: &SessionId, run: RunId) -> String {
    format!("/sessions/{s}/runs/{run}")
}

async fn detail(addr: SocketAddr, s: &SessionId, run: RunId) -> RunDetail {
    let answer = get(addr, &format!("/api{}", run_path(s, run))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json()
}

#[tokio::test]
async fn each_page_shows_the_runs_of_a_real_runtime() {
    let runtime = shop().await;
    let s = session("dash-pages");
    let paid_key = format!("{s}-paid");
    heal(&paid_key);
    let paid = runtime
        .execute_in_session(&s, &Checkout, Order::new(&paid_key, 1250, "FR"))
        .await
        .unwrap();
    let failed = failed_order(&runtime, &s, &format!("{s}-declined")).await;
    let (_running, addr) = serve(&runtime, loopback()).await;

    let overview = get(addr, "/").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        overview.body.contains(&format!("href=\"/sessions/{s}\"")),
        "{}",
        overview.body
    );
    assert!(
        overview
            .body
            .contains("<span class=\"chip\">charge_card</span>"),
        "the worker's processors"
    );
    assert!(overview.body.contains("this process"));

    let page = get(addr, &format!("/sessions/{s}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&format!(
        "data-run=\"{}\" data-state=\"completed\"",
        paid.meta.run_id
    )));
    assert!(
        page.body
            .contains(&format!("data-run=\"{failed}\" data-state=\"failed\""))
    );
    assert!(
        page.body.contains("declined by the gateway"),
        "the error column"
    );
    assert!(
        page.body.contains("<td>charge_card</td>"),
        "per-processor stats"
    );

    let run = get(addr, &run_path(&s, failed)).await;
    assert_eq!(run.status, StatusCode::OK);
    assert!(
        run.body.contains("class=\"group parallel\""),
        "the graph draws the parallel"
    );
    assert!(
        run.body.contains("class=\"group route\"") && run.body.contains(">otherwise<"),
        "and the route"
    );
    assert!(
        run.body.contains("node step step-failed"),
        "the failed step"
    );
    assert!(
        run.body.contains("node step step-completed"),
        "the steps before it"
    );
    assert!(
        run.body.contains("attempts 2/2"),
        "charge_card used both attempts"
    );
    assert!(
        run.body.contains("<ol class=\"causes\">"),
        "the error chain"
    );
    assert!(run.body.contains("declined by the gateway (HTTP 503)"));
    assert!(
        run.body.contains("&quot;cents&quot;: 4200"),
        "the input, as JSON"
    );
    assert!(
        run.body.contains("attempt 1 failed"),
        "the timeline shows the retry"
    );
    let started = run
        .body
        .find("run started")
        .expect("the timeline shows the run's start");
    let first_step = run.body.find("attempt 1 started").expect("and its steps'");
    assert!(started < first_step, "the run's start comes first");

    let done = get(addr, &run_path(&s, paid.meta.run_id)).await;
    assert!(done.body.contains("colissimo"), "the output: {}", done.body);
    assert!(done.body.contains("data-state=\"completed\""));

    let missing = get(addr, &run_path(&s, RunId::generate())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(addr, "/sessions/no%20spaces").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_json_api_pages_through_runs_and_sessions_with_cursors() {
    let runtime = shop().await;
    runtime.register(AddOne);
    let s = session("dash-paging");
    let mut submitted = Vec::new();
    for x in 0..130 {
        submitted.push(
            runtime
                .execute_in_session(&s, &AddOne, x)
                .await
                .unwrap()
                .meta
                .run_id,
        );
    }
    for i in 0..3 {
        failed_order(&runtime, &s, &format!("{s}-f{i}")).await;
    }
    for i in 0..4 {
        runtime
            .execute_in_session(&session(&format!("dash-paging-{i}")), &AddOne, 1)
            .await
            .unwrap();
    }
    let (_running, addr) = serve(&runtime, loopback()).await;

    let mut seen: Vec<RunId> = Vec::new();
    let mut path = format!("/api/sessions/{s}/runs?processor=add_one&limit=50");
    let mut pages = 0;
    loop {
        let page: Page<RunSummary> = get(addr, &path).await.json();
        pages += 1;
        assert!(page.items.len() <= 50);
        seen.extend(page.items.iter().map(|run| run.run));
        match page.next {
            Some(next) => {
                path = format!("/api/sessions/{s}/runs?processor=add_one&limit=50&after={next}")
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    submitted.reverse();
    assert_eq!(seen, submitted, "every run once, newest first");

    let failed: Page<RunSummary> = get(addr, &format!("/api/sessions/{s}/runs?state=failed"))
        .await
        .json();
    assert_eq!(failed.items.len(), 3);
    assert!(
        failed
            .items
            .iter()
            .all(|run| run.state == RunState::Failed && run.processor == "Checkout")
    );

    let first: Page<SessionSummary> = get(addr, "/api/sessions?limit=3").await.json();
    let next = first.next.expect("5 sessions do not fit in 3");
    let second: Page<SessionSummary> = get(addr, &format!("/api/sessions?limit=3&after={next}"))
        .await
        .json();
    assert_eq!(first.items.len() + second.items.len(), 5);
    assert!(second.next.is_none());

    let deep = get(
        addr,
        &format!(
            "/sessions/{s}?processor=add_one&limit=50&after={}",
            first_cursor(addr, &s).await
        ),
    )
    .await;
    assert_eq!(deep.status, StatusCode::OK);
    assert!(
        deep.body.contains("rel=\"first\""),
        "a deep page links back to the first"
    );

    let refused = get(addr, &format!("/api/sessions/{s}/runs?after=forged")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("cursor"), "{}", refused.body);
    assert_eq!(
        get(addr, &format!("/api/sessions/{s}/runs?state=finished"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

async fn first_cursor(addr: SocketAddr, s: &SessionId) -> String {
    let page: Page<RunSummary> = get(addr, &format!("/api/sessions/{s}/runs?limit=50"))
        .await
        .json();
    page.next.expect("more than one page").to_string()
}

#[tokio::test]
async fn actions_are_refused_without_the_token_with_a_wrong_one_and_by_get() {
    let runtime = shop().await;
    let s = session("dash-guard");
    let failed = failed_order(&runtime, &s, &format!("{s}-x")).await;
    let (_running, addr) = serve(&runtime, loopback().actions_token(TOKEN)).await;
    let retry = format!("/api{}/retry", run_path(&s, failed));
    let cancel = format!("/api{}/cancel", run_path(&s, failed));
    let stop = format!("/api/sessions/{s}/stop");

    for action in [&retry, &cancel, &stop] {
        assert_eq!(
            post(addr, action, None).await.status,
            StatusCode::FORBIDDEN,
            "{action}"
        );
        assert_eq!(
            post(addr, action, Some("a-long-random-actions-toke"))
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            post(addr, action, Some(&format!("{TOKEN}x"))).await.status,
            StatusCode::FORBIDDEN
        );
        let by_get = get(addr, action).await;
        assert_eq!(by_get.status, StatusCode::METHOD_NOT_ALLOWED, "{action}");
        assert_eq!(by_get.header("allow"), Some("POST"));
    }
    let untouched = detail(addr, &s, failed).await;
    assert_eq!(
        untouched.retried_as, None,
        "no refused call retried the run"
    );
    assert_eq!(untouched.summary.state, RunState::Failed);
    assert!(
        runtime.active_sessions().await.unwrap().contains(&s),
        "nor stopped the session"
    );

    // Without a configured token there are no actions at all.
    let (_read_only, addr) = serve(&runtime, loopback()).await;
    let refused = post(addr, &retry, Some(TOKEN)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("disabled"), "{}", refused.body);
    assert!(
        !get(addr, &run_path(&s, failed))
            .await
            .body
            .contains("data-action="),
        "no buttons"
    );
}

#[tokio::test]
async fn a_retry_through_the_api_completes_the_run() {
    let runtime = shop().await;
    let s = session("dash-retry");
    let key = format!("{s}-card");
    let failed = failed_order(&runtime, &s, &key).await;
    let (_running, addr) = serve(&runtime, loopback().actions_token(TOKEN)).await;
    let retry = format!("/api{}/retry", run_path(&s, failed));

    heal(&key);
    let answer = post(addr, &retry, Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let RetryOutcome::Retried { run: new } = answer.json() else {
        panic!("a first retry submits a run: {}", answer.body);
    };
    let done = until("the retried run to complete", || async {
        let run = detail(addr, &s, new).await;
        run.summary.state.is_terminal().then_some(run)
    })
    .await;
    assert_eq!(done.summary.state, RunState::Completed, "{:?}", done.error);
    let Shown::Value(output) = &done.output else {
        panic!("{:?}", done.output)
    };
    assert_eq!(output["shipping"], "colissimo");
    assert_eq!(done.retry_of, Some(failed));
    assert_eq!(detail(addr, &s, failed).await.retried_as, Some(new));

    let again = post(addr, &retry, Some(TOKEN)).await;
    assert_eq!(
        again.json::<RetryOutcome>(),
        RetryOutcome::AlreadyRetried { run: new }
    );
    let page = get(addr, &run_path(&s, failed)).await;
    assert!(
        page.body
            .contains(&format!("id=\"retried-as\" data-run=\"{new}\""))
    );
    assert!(
        !page.body.contains("id=\"retry\""),
        "a retried run offers no retry"
    );

    let completed = post(
        addr,
        &format!("/api{}/retry", run_path(&s, new)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        completed.status,
        StatusCode::BAD_REQUEST,
        "a completed run is not retried"
    );
    let unknown = post(
        addr,
        &format!("/api{}/retry", run_path(&s, RunId::generate())),
        Some(TOKEN),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_and_stop_session_act_on_live_runs() {
    let runtime = shop().await;
    let s = session("dash-cancel");
    let key = format!("{s}-held");
    heal(&key);
    let gate = hold(&key);
    let (_running, addr) = serve(&runtime, loopback().actions_token(TOKEN)).await;

    let held = {
        let (runtime, s, key) = (runtime.clone(), s.clone(), key.clone());
        tokio::spawn(async move {
            runtime
                .execute_in_session(&s, &Checkout, Order::new(&key, 10, "DE"))
                .await
        })
    };
    let run = until("the held run to be listed active", || async {
        let page: Page<RunSummary> = get(addr, &format!("/api/sessions/{s}/runs?state=active"))
            .await
            .json();
        page.items.first().map(|run| run.run)
    })
    .await;
    let page = get(addr, &run_path(&s, run)).await;
    assert!(
        page.body.contains("id=\"cancel\""),
        "a live run offers cancel"
    );
    assert!(
        page.body.contains("node step step-running"),
        "the graph shows the running step"
    );

    let cancelled = post(
        addr,
        &format!("/api{}/cancel", run_path(&s, run)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(cancelled.json::<CancelOutcome>(), CancelOutcome::Cancelled);
    let outcome = held.await.unwrap();
    assert!(matches!(
        outcome.unwrap_err().error,
        Error::Cancelled { .. }
    ));
    let again = post(
        addr,
        &format!("/api{}/cancel", run_path(&s, run)),
        Some(TOKEN),
    )
    .await;
    assert!(matches!(
        again.json::<CancelOutcome>(),
        CancelOutcome::AlreadyEnded { .. }
    ));

    let held = {
        let (runtime, s, key) = (runtime.clone(), s.clone(), key.clone());
        tokio::spawn(async move {
            runtime
                .execute_in_session(&s, &Checkout, Order::new(&key, 10, "DE"))
                .await
        })
    };
    until("the second held run to be listed active", || async {
        let page: Page<RunSummary> = get(addr, &format!("/api/sessions/{s}/runs?state=active"))
            .await
            .json();
        (!page.items.is_empty()).then_some(())
    })
    .await;
    let stopped = post(addr, &format!("/api/sessions/{s}/stop"), Some(TOKEN)).await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.body);
    assert!(stopped.body.contains(s.as_str()));
    let outcome = held.await.unwrap();
    assert!(matches!(
        outcome.unwrap_err().error,
        Error::SessionStopped { .. }
    ));
    gate.open();
}

#[tokio::test]
async fn redacted_values_are_never_shown() {
    let runtime = LocalRuntime::new();
    runtime.start().await.unwrap();
    let vault = vault();
    runtime.register(vault.clone());
    let s = session("dash-redact");
    let card = "4111111111111111".to_owned();
    let stored = runtime
        .execute_in_session(&s, &vault, card.clone())
        .await
        .unwrap();
    let (_running, addr) = serve(&runtime, loopback()).await;

    let page = get(addr, &run_path(&s, stored.meta.run_id)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body
            .matches("<span class=\"badge redacted\">redacted</span>")
            .count(),
        3,
        "input, output and state"
    );
    assert!(
        !page.body.contains(&card),
        "the card number never reaches the page"
    );
    assert!(!page.body.contains(&stored.output), "nor the output");

    let api = get(addr, &format!("/api{}", run_path(&s, stored.meta.run_id))).await;
    assert!(!api.body.contains(&card));
    let detail: RunDetail = api.json();
    assert_eq!(
        (detail.input, detail.output),
        (Shown::Redacted, Shown::Redacted)
    );
}

#[tokio::test]
async fn a_non_loopback_address_needs_the_opt_in() {
    let runtime = shop().await;
    let open = DashboardConfig::new().listen(SocketAddr::from(([0, 0, 0, 0], 0)));
    let refused = dashboard::bind(runtime.clone(), open.clone())
        .await
        .unwrap_err();
    let Error::Configuration { message } = &refused else {
        panic!("{refused:?}")
    };
    assert!(
        message.contains("allow_non_loopback"),
        "the error says how: {message}"
    );
    let also_refused = dashboard::serve(runtime.clone(), open.clone())
        .await
        .unwrap_err();
    assert!(matches!(also_refused, Error::Configuration { .. }));

    let running = dashboard::bind(runtime.clone(), open.allow_non_loopback(true))
        .await
        .unwrap();
    assert_ne!(running.local_addr().port(), 0);
    running.shutdown().await.unwrap();

    // On loopback, a request naming another host (DNS rebinding) is refused.
    let (_running, addr) = serve(&runtime, loopback()).await;
    let port = addr.port();
    let rebound = http::fetch(
        addr,
        Call::new(Method::GET, "/").host(&format!("evil.example:{port}")),
    )
    .await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN, "{}", rebound.body);
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let local = http::fetch(addr, Call::new(Method::GET, "/").host(&host)).await;
        assert_eq!(local.status, StatusCode::OK, "{host}");
    }

    // A port in use is a typed error too.
    let (_running, addr) = serve(&runtime, loopback()).await;
    let taken = dashboard::bind(runtime.clone(), DashboardConfig::new().listen(addr))
        .await
        .unwrap_err();
    assert!(matches!(taken, Error::Configuration { .. }), "{taken:?}");
}

#[tokio::test]
async fn the_router_mounts_in_your_own_app() {
    let runtime = shop().await;
    let s = session("dash-mount");
    let failed = failed_order(&runtime, &s, &format!("{s}-x")).await;
    let config = DashboardConfig::new().base_path("/ops");
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .nest("/ops", dashboard::router(runtime.clone(), &config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    assert_eq!(get(addr, "/health").await.body, "ok");
    let overview = get(addr, "/ops").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview
            .body
            .contains(&format!("href=\"/ops/sessions/{s}\""))
    );
    let session_page = get(addr, &format!("/ops/sessions/{s}")).await;
    assert!(
        session_page
            .body
            .contains(&format!("href=\"/ops/sessions/{s}/runs/{failed}\""))
    );
    assert_eq!(
        get(addr, "/ops/assets/style.css").await.status,
        StatusCode::OK
    );
    server.abort();
}

#[tokio::test]
async fn events_stream_live_until_the_dashboard_shuts_down() {
    let runtime = shop().await;
    runtime.register(AddOne);
    let s = session("dash-events");
    let (running, addr) = serve(&runtime, loopback()).await;

    let mut events = http::stream(addr, &format!("/api/events?session={s}")).await;
    assert_eq!(events.status, StatusCode::OK);
    assert_eq!(
        events.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    assert!(events.read_until("event: hello").await);
    let other = session("dash-events-other");
    runtime
        .execute_in_session(&other, &AddOne, 1)
        .await
        .unwrap();
    let run = runtime
        .execute_in_session(&s, &AddOne, 1)
        .await
        .unwrap()
        .meta
        .run_id;
    assert!(events.read_until("run_completed").await, "{}", events.text);
    assert!(events.text.contains(&run.to_string()));
    assert!(
        !events.text.contains(other.as_str()),
        "only the session asked for"
    );

    // The overview counts the run it saw end (the counters read events on their own task).
    until("the overview to count the runs", || async {
        let stats: serde_json::Value = get(addr, "/api/stats").await.json();
        let minutes = stats["activity"]["minutes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let completed: u64 = minutes.iter().filter_map(|m| m["completed"].as_u64()).sum();
        (completed >= 2).then_some(())
    })
    .await;

    running.shutdown().await.unwrap();
    assert!(
        events.read_to_end().await,
        "the stream ends with the dashboard"
    );
}

#[tokio::test]
async fn metrics_are_served_from_the_hook() {
    let runtime = shop().await;
    let (_plain, addr) = serve(&runtime, loopback()).await;
    assert_eq!(get(addr, "/metrics").await.status, StatusCode::NOT_FOUND);

    let probe = runtime.clone();
    let config = loopback().metrics(move || {
        let runtime = probe.clone();
        async move {
            let stats = runtime.stats().await?;
            Ok(format!("am2z_registered_processors {}\n", stats.registered))
        }
        .boxed()
    });
    let (_running, addr) = serve(&runtime, config).await;
    let metrics = get(addr, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        metrics.body.starts_with("am2z_registered_processors "),
        "{}",
        metrics.body
    );
}

/// Page loads over HTTP with 10 000 sessions and one session of 100 000 runs: prints the
/// median and 95th percentile of each page (run it with `--ignored --nocapture`; the figures
/// are in `docs/dashboard.md`). Nothing is asserted on time: the machine is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn page_loads_with_10_000_sessions_and_100_000_runs() {
    const SESSIONS: usize = 10_000;
    const RUNS: i64 = 100_000;
    const SAMPLES: usize = 40;
    let runtime = LocalRuntime::builder().history(RUNS as usize).build();
    runtime.start().await.expect("the runtime starts");
    runtime.register(AddOne);
    let started = Instant::now();
    let big = session("dash-big");
    for batch in 0..RUNS / 1000 {
        let inputs: Vec<i64> = (batch * 1000..(batch + 1) * 1000).collect();
        for outcome in runtime.execute_many(&big, &AddOne, inputs).await {
            outcome.expect("add_one runs");
        }
    }
    let small: Vec<SessionId> = (0..SESSIONS - 1)
        .map(|i| session(&format!("dash-many-{i}")))
        .collect();
    for chunk in small.chunks(500) {
        futures::future::join_all(
            chunk
                .iter()
                .map(|s| runtime.execute_in_session(s, &AddOne, 1)),
        )
        .await
        .into_iter()
        .for_each(|outcome| {
            outcome.expect("add_one runs");
        });
    }
    println!(
        "seeded {SESSIONS} sessions and {RUNS} runs in {:.1?}",
        started.elapsed()
    );
    let (_running, addr) = serve(&runtime, loopback()).await;

    // A cursor half-way through the big session (after 50 000 runs), and one deep in the
    // session listing (after 5 000 sessions), reached through the API's cursors.
    let mut deep_runs = None;
    for _ in 0..100 {
        let after = deep_runs
            .as_ref()
            .map_or(String::new(), |c| format!("&after={c}"));
        let page: Page<RunSummary> =
            get(addr, &format!("/api/sessions/{big}/runs?limit=500{after}"))
                .await
                .json();
        deep_runs = page.next.map(|c| c.to_string());
    }
    let deep_runs = deep_runs.expect("more than 50 000 runs");
    let mut deep_sessions = None;
    for _ in 0..10 {
        let after = deep_sessions
            .as_ref()
            .map_or(String::new(), |c| format!("&after={c}"));
        let page: Page<SessionSummary> = get(addr, &format!("/api/sessions?limit=500{after}"))
            .await
            .json();
        deep_sessions = page.next.map(|c| c.to_string());
    }
    let deep_sessions = deep_sessions.expect("more than 5 000 sessions");
    let any_run: Page<RunSummary> = get(
        addr,
        &format!("/api/sessions/{big}/runs?limit=1&after={deep_runs}"),
    )
    .await
    .json();
    let run = any_run.items[0].run;

    let pages = [
        ("overview", "/".to_owned()),
        (
            "overview, sessions 5 001-5 050",
            format!("/?after={deep_sessions}"),
        ),
        ("session, first page", format!("/sessions/{big}")),
        (
            "session, runs 50 001-50 050",
            format!("/sessions/{big}?after={deep_runs}"),
        ),
        (
            "session, failed only (none)",
            format!("/sessions/{big}?state=failed"),
        ),
        ("run", run_path(&big, run)),
        ("API: runs, first page", format!("/api/sessions/{big}/runs")),
        ("API: run", format!("/api{}", run_path(&big, run))),
    ];
    println!("| page | p50 | p95 | bytes |");
    println!("| --- | --- | --- | --- |");
    for (name, path) in pages {
        let mut took = Vec::with_capacity(SAMPLES);
        let mut bytes = 0;
        for _ in 0..SAMPLES {
            let start = Instant::now();
            let answer = get(addr, &path).await;
            took.push(start.elapsed());
            assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.body);
            bytes = answer.body.len();
        }
        took.sort();
        println!(
            "| {name} | {:.1?} | {:.1?} | {bytes} |",
            took[SAMPLES / 2],
            took[SAMPLES * 95 / 100]
        );
    }
}
