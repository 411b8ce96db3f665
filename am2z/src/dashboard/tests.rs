//! The dashboard against a fake [`Inspect`] whose answers the tests choose: what each page
//! shows, how actions are guarded, the headers, the event stream. (`tests/tests/dashboard.rs`
//! runs it against real runtimes.)

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use super::{DashboardConfig, router};
use crate::runtime::{
    CancelOutcome, Cursor, ErrorDetail, Inspect, Page, PageRequest, RetryOutcome, RunDetail,
    RunFilter, RunState, RunSummary, SessionSummary, Shown, StepDetail, StepState, WorkerInfo,
};
use crate::{
    Chain, Error, Event, EventKind, EventStream, LocalRuntime, Parallel, Processor, ProcessorInfo,
    QueueStats, Registration, RunId, RunOutcome, Runtime, RuntimeStats, SessionId, SessionStats,
    processor_fn,
};

/// What the fake answers.
#[derive(Default)]
struct Data {
    sessions: Vec<SessionSummary>,
    runs: Vec<RunDetail>,
    retried: Vec<RunId>,
}

/// A runtime whose inspection answers come from [`Data`]; everything else is a local runtime
/// (which also carries the events).
#[derive(Clone)]
struct Fake {
    local: LocalRuntime,
    data: Arc<Mutex<Data>>,
}

impl Runtime for Fake {
    fn register_many(&self, registrations: impl IntoIterator<Item = Registration>) {
        self.local.register_many(registrations);
    }
    fn unregister(&self, name: &str) -> bool {
        self.local.unregister(name)
    }
    fn registered(&self) -> Vec<String> {
        self.local.registered()
    }
    fn processor_info(&self, name: &str) -> Option<ProcessorInfo> {
        self.local.processor_info(name)
    }
    fn start(&self) -> impl Future<Output = Result<(), Error>> + Send {
        self.local.start()
    }
    fn stop(&self) -> impl Future<Output = Result<(), Error>> + Send {
        self.local.stop()
    }
    fn is_running(&self) -> bool {
        self.local.is_running()
    }
    fn stop_session(&self, session: &SessionId) -> impl Future<Output = Result<(), Error>> + Send {
        self.local.stop_session(session)
    }
    fn stop_all_sessions(&self) -> impl Future<Output = Result<(), Error>> + Send {
        self.local.stop_all_sessions()
    }
    fn active_sessions(&self) -> impl Future<Output = Result<Vec<SessionId>, Error>> + Send {
        self.local.active_sessions()
    }
    fn stats(&self) -> impl Future<Output = Result<RuntimeStats, Error>> + Send {
        self.local.stats()
    }
    fn session_stats(
        &self,
        session: &SessionId,
    ) -> impl Future<Output = Result<SessionStats, Error>> + Send {
        let mut processors = BTreeMap::new();
        processors.insert(
            "charge".to_owned(),
            QueueStats {
                completed: 3,
                failed: 1,
                ..QueueStats::default()
            },
        );
        let stats = SessionStats {
            session: session.clone(),
            running_runs: 0,
            processors,
        };
        async move { Ok(stats) }
    }
    fn queue_stats(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, QueueStats>, Error>> + Send {
        self.local.queue_stats()
    }
    fn subscribe(&self) -> EventStream {
        self.local.subscribe()
    }
    fn subscribe_session(&self, session: &SessionId) -> EventStream {
        self.local.subscribe_session(session)
    }
    fn execute_named<I, O>(
        &self,
        session: &SessionId,
        name: &str,
        input: I,
    ) -> impl Future<Output = RunOutcome<O>> + Send
    where
        I: Serialize + Send + 'static,
        O: DeserializeOwned + Send + 'static,
    {
        self.local.execute_named(session, name, input)
    }
}

fn cursor_index(page: &PageRequest) -> Result<usize, Error> {
    page.after
        .as_ref()
        .map(|c| c.as_str().strip_prefix("at-").and_then(|n| n.parse().ok()))
        .map_or(Ok(0), |n| {
            n.ok_or_else(|| Error::validation("cursor", "not mine"))
        })
}

fn paged<T: Clone>(items: &[T], page: &PageRequest) -> Result<Page<T>, Error> {
    let from = cursor_index(page)?;
    let to = (from + page.clamped_limit()).min(items.len());
    Ok(Page {
        items: items.get(from..to).unwrap_or_default().to_vec(),
        next: (to < items.len()).then(|| Cursor::new(format!("at-{to}"))),
    })
}

impl Inspect for Fake {
    fn sessions(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<SessionSummary>, Error>> + Send {
        let answer = paged(&self.data.lock().unwrap().sessions, &page);
        async move { answer }
    }

    fn runs(
        &self,
        session: &SessionId,
        filter: &RunFilter,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<RunSummary>, Error>> + Send {
        let matching: Vec<RunSummary> = self
            .data
            .lock()
            .unwrap()
            .runs
            .iter()
            .map(|run| run.summary.clone())
            .filter(|run| run.session == *session)
            .filter(|run| filter.state.is_none_or(|state| run.state == state))
            .filter(|run| {
                filter
                    .processor
                    .as_ref()
                    .is_none_or(|p| run.processor == *p)
            })
            .collect();
        let answer = paged(&matching, &page);
        async move { answer }
    }

    fn run(
        &self,
        session: &SessionId,
        run: RunId,
    ) -> impl Future<Output = Result<Option<RunDetail>, Error>> + Send {
        let found = self
            .data
            .lock()
            .unwrap()
            .runs
            .iter()
            .find(|detail| detail.summary.session == *session && detail.summary.run == run)
            .cloned();
        async move { Ok(found) }
    }

    fn workers(&self) -> impl Future<Output = Result<Vec<WorkerInfo>, Error>> + Send {
        let worker = WorkerInfo {
            id: "worker-1".to_owned(),
            host: Some("box-a".to_owned()),
            pid: Some(4242),
            processors: vec!["charge".to_owned(), "ship".to_owned()],
            last_seen: SystemTime::now(),
            this_process: true,
        };
        async move { Ok(vec![worker]) }
    }

    fn retry_run(
        &self,
        session: &SessionId,
        run: RunId,
    ) -> impl Future<Output = Result<RetryOutcome, Error>> + Send {
        let mut data = self.data.lock().unwrap();
        let known = data
            .runs
            .iter()
            .any(|d| d.summary.session == *session && d.summary.run == run);
        data.retried.push(run);
        let answer = if known {
            Ok(RetryOutcome::Retried {
                run: RunId::from_u128(7),
            })
        } else {
            Err(Error::not_found(
                "run",
                run.to_string(),
                Vec::<String>::new(),
            ))
        };
        async move { answer }
    }

    async fn cancel_run(&self, _: &SessionId, _: RunId) -> Result<CancelOutcome, Error> {
        Ok(CancelOutcome::AlreadyEnded {
            state: RunState::Failed,
        })
    }
}

async fn charge(cents: u64) -> Result<u64, Error> {
    Ok(cents)
}
async fn ship(cents: u64) -> Result<u64, Error> {
    Ok(cents)
}
async fn email(cents: u64) -> Result<u64, Error> {
    Ok(cents)
}

fn session(name: &str) -> SessionId {
    SessionId::new(name).unwrap()
}

fn summary(session_name: &str, n: u128, processor: &str, state: RunState) -> RunSummary {
    RunSummary {
        session: session(session_name),
        run: RunId::from_u128(0xabc0_0000 + n),
        processor: processor.to_owned(),
        state,
        created_at: SystemTime::now() - Duration::from_secs(30),
        ended_at: state.is_terminal().then(SystemTime::now),
        attempts: 2,
        error: (state == RunState::Failed).then(|| "step `ship` failed: <boom>".to_owned()),
    }
}

/// A failed run of a chain `charge → (ship ‖ email)` whose `ship` failed, with redacted input.
fn failed_run() -> RunDetail {
    let flow = Chain::new(
        processor_fn(charge),
        Parallel::new((processor_fn(ship), processor_fn(email))).named("fan_out"),
    )
    .named("checkout");
    let plan = flow.plan();
    let step = |node, processor: &str, state| StepDetail {
        node,
        processor: processor.to_owned(),
        state,
        attempts: 1,
        started_at: Some(SystemTime::now()),
        finished_at: Some(SystemTime::now()),
        duration: Some(Duration::from_millis(12)),
        error: (state == StepState::Failed).then(|| "carrier down".to_owned()),
    };
    let steps: Vec<StepDetail> = plan
        .nodes
        .iter()
        .filter_map(|node| match &node.kind {
            crate::plan::NodeKind::Step { processor, .. } => Some(step(
                node.id,
                processor,
                if processor == "ship" {
                    StepState::Failed
                } else {
                    StepState::Completed
                },
            )),
            _ => None,
        })
        .collect();
    let error = Error::StepFailed {
        step: "ship".to_owned(),
        position: 1,
        source: Box::new(Error::unavailable("carrier", "carrier down")),
        state_before: None,
    };
    RunDetail {
        summary: summary("shop", 1, "checkout", RunState::Failed),
        plan: Some(plan),
        steps,
        input: Shown::Redacted,
        output: Shown::Unavailable,
        state: Shown::Value(serde_json::json!({"cents": 500, "note": "<b>bold</b>"})),
        error: Some(ErrorDetail {
            chain: vec![
                error.to_string(),
                "`carrier` is unavailable: carrier down".to_owned(),
            ],
            error,
        }),
        events: vec![Event {
            session: session("shop"),
            run_id: Some(RunId::from_u128(0xabc0_0001)),
            processor: Some("ship".into()),
            at: SystemTime::now(),
            kind: EventKind::StepFailed {
                attempt: 1,
                error: Error::unavailable("carrier", "carrier down"),
            },
        }],
        retry_of: None,
        retried_as: None,
    }
}

fn fake() -> Fake {
    let mut data = Data::default();
    for i in 0..120 {
        data.sessions.push(SessionSummary {
            session: session(&format!("tenant-{i:03}")),
            live_runs: i,
            completed: 10 * i,
            failed: u64::from(i % 7 == 0),
            dead_lettered: 0,
        });
    }
    data.runs.push(failed_run());
    for n in 2..=60 {
        let state = if n % 3 == 0 {
            RunState::Completed
        } else {
            RunState::Queued
        };
        let processor = if n % 2 == 0 {
            "charge"
        } else {
            "<script>x</script>"
        };
        let mut detail = failed_run();
        detail.summary = summary("shop", n, processor, state);
        data.runs.push(detail);
    }
    Fake {
        local: LocalRuntime::new(),
        data: Arc::new(Mutex::new(data)),
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn call(app: &axum::Router, method: Method, uri: &str, token: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 24).await.unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(app: &axum::Router, uri: &str) -> Answer {
    call(app, Method::GET, uri, None).await
}

const RUN_1: &str = "000000000000000000000000abc00001";

#[tokio::test]
async fn the_overview_shows_sessions_workers_and_pages_on() {
    let app = router(fake(), &DashboardConfig::new());
    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("href=\"/sessions/tenant-000\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("tenant-049"));
    assert!(!page.body.contains("tenant-050"), "50 sessions per page");
    assert!(page.body.contains("worker-1") && page.body.contains("box-a"));
    assert!(page.body.contains("<span class=\"chip\">ship</span>"));
    assert!(
        page.body.contains("href=\"/?after=at-50\""),
        "a next-page link carries the cursor"
    );

    let next = get(&app, "/?after=at-50").await;
    assert!(next.body.contains("tenant-050") && !next.body.contains("tenant-049\""));
    let bad = get(&app, "/?after=nonsense").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_session_page_filters_and_pages_runs() {
    let app = router(fake(), &DashboardConfig::new());
    let page = get(&app, "/sessions/shop").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(&format!("href=\"/sessions/shop/runs/{RUN_1}\""))
    );
    assert!(
        page.body.contains("&lt;script&gt;x&lt;/script&gt;"),
        "names are escaped"
    );
    assert!(!page.body.contains("<script>x"), "nothing unescaped");
    assert!(page.body.contains("href=\"/sessions/shop?after=at-50\""));

    let failed = get(&app, "/sessions/shop?state=failed").await;
    assert_eq!(failed.body.matches("<tr data-run=").count(), 1);
    assert!(failed.body.contains("data-state=\"failed\""));

    let charge = get(&app, "/sessions/shop?processor=charge&state=queued").await;
    let rows = charge.body.matches("<tr data-run=").count();
    assert!(
        rows > 0 && !charge.body.contains("data-state=\"completed\""),
        "{rows}"
    );

    let bad = get(&app, "/sessions/shop?state=finished").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("finished"));
    assert_eq!(
        get(&app, "/sessions/a:b").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_run_page_draws_the_plan_values_error_and_events() {
    let app = router(fake(), &DashboardConfig::new());
    let page = get(&app, &format!("/sessions/shop/runs/{RUN_1}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains("class=\"group parallel\""),
        "the parallel is a group"
    );
    assert!(body.contains("parallel fan_out"));
    assert!(
        body.contains("<span class=\"arrow\""),
        "the chain has arrows"
    );
    assert!(body.contains("node step step-failed") && body.contains("node step step-completed"));
    assert!(
        body.contains("<span class=\"badge redacted\">redacted</span>"),
        "the input is redacted"
    );
    assert!(
        body.contains("&lt;b&gt;bold&lt;/b&gt;"),
        "values are escaped"
    );
    assert!(body.contains("carrier down"));
    assert!(body.contains("failed for good on attempt 1"));

    let missing = get(&app, "/sessions/shop/runs/000000000000000000000000000000ff").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/sessions/shop/runs/xyz").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_json_api_answers_the_inspect_types() {
    let app = router(fake(), &DashboardConfig::new());
    let sessions: Page<SessionSummary> =
        serde_json::from_str(&get(&app, "/api/sessions?limit=7").await.body).unwrap();
    assert_eq!(sessions.items.len(), 7);
    assert_eq!(sessions.next, Some(Cursor::new("at-7")));

    let runs = get(&app, "/api/sessions/shop/runs?state=failed").await;
    let runs: Page<RunSummary> = serde_json::from_str(&runs.body).unwrap();
    assert_eq!(runs.items.len(), 1);

    let run = get(&app, &format!("/api/sessions/shop/runs/{RUN_1}")).await;
    let detail: RunDetail = serde_json::from_str(&run.body).unwrap();
    assert_eq!(detail.input, Shown::Redacted);

    let missing = get(
        &app,
        "/api/sessions/shop/runs/000000000000000000000000000000ff",
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("\"kind\":\"not_found\""),
        "{}",
        missing.body
    );
    assert_eq!(get(&app, "/api/workers").await.status, StatusCode::OK);
    let stats = get(&app, "/api/stats").await;
    assert!(
        stats.body.contains("\"actions_enabled\":false"),
        "{}",
        stats.body
    );
}

#[tokio::test]
async fn actions_need_post_and_the_token() {
    let runtime = fake();
    let data = Arc::clone(&runtime.data);
    let app = router(runtime, &DashboardConfig::new().actions_token("t0ken"));
    let retry = format!("/api/sessions/shop/runs/{RUN_1}/retry");

    assert_eq!(
        call(&app, Method::GET, &retry, Some("t0ken")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call(&app, Method::POST, &retry, None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, Method::POST, &retry, Some("t0ke")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, Method::POST, &retry, Some("t0kenn"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert!(
        data.lock().unwrap().retried.is_empty(),
        "no refused request reached the runtime"
    );

    let done = call(&app, Method::POST, &retry, Some("t0ken")).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let outcome: RetryOutcome = serde_json::from_str(&done.body).unwrap();
    assert_eq!(
        outcome,
        RetryOutcome::Retried {
            run: RunId::from_u128(7)
        }
    );
    assert_eq!(data.lock().unwrap().retried.len(), 1);

    let unknown = "/api/sessions/shop/runs/000000000000000000000000000000ff/retry";
    assert_eq!(
        call(&app, Method::POST, unknown, Some("t0ken"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let cancel = format!("/api/sessions/shop/runs/{RUN_1}/cancel");
    let cancelled = call(&app, Method::POST, &cancel, Some("t0ken")).await;
    assert!(
        cancelled.body.contains("already_ended"),
        "{}",
        cancelled.body
    );
    assert_eq!(
        call(&app, Method::GET, "/api/sessions/shop/stop", None)
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let stopped = call(&app, Method::POST, "/api/sessions/shop/stop", Some("t0ken")).await;
    assert_eq!(stopped.status, StatusCode::OK);

    let page = get(&app, &format!("/sessions/shop/runs/{RUN_1}")).await;
    assert!(
        page.body.contains("data-action=\"retry\""),
        "the page offers the action"
    );
    assert!(
        !page.body.contains("t0ken"),
        "the token never reaches a page"
    );
}

#[tokio::test]
async fn without_a_token_actions_are_off() {
    let runtime = fake();
    let data = Arc::clone(&runtime.data);
    let app = router(runtime, &DashboardConfig::new());
    let retry = format!("/api/sessions/shop/runs/{RUN_1}/retry");
    let refused = call(&app, Method::POST, &retry, Some("")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("disabled"), "{}", refused.body);
    assert!(data.lock().unwrap().retried.is_empty());
    let page = get(&app, &format!("/sessions/shop/runs/{RUN_1}")).await;
    assert!(
        !page.body.contains("data-action="),
        "no buttons without actions"
    );

    let blank = router(fake(), &DashboardConfig::new().actions_token("  "));
    assert_eq!(
        call(&blank, Method::POST, &retry, Some("")).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = router(fake(), &DashboardConfig::new());
    for uri in ["/", "/api/sessions", "/assets/app.js", "/nowhere"] {
        let answer = get(&app, uri).await;
        let csp = answer
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{uri}"
        );
        assert_eq!(
            answer.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff"
        );
    }
    assert_eq!(get(&app, "/nowhere").await.status, StatusCode::NOT_FOUND);
    let js = get(&app, "/assets/app.js").await;
    assert!(
        js.headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.body.contains("EventSource"));
    assert_eq!(
        get(&app, "/assets/secret").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn links_carry_the_base_path() {
    let config = DashboardConfig::new().base_path("/ops");
    let app = axum::Router::new().nest("/ops", router(fake(), &config));
    let page = get(&app, "/ops").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("href=\"/ops/sessions/tenant-000\""));
    assert!(page.body.contains("src=\"/ops/assets/app.js\""));
    assert!(page.body.contains("data-events=\"/ops/api/events\""));
    let session = get(&app, "/ops/sessions/shop").await;
    assert!(
        session
            .body
            .contains(&format!("href=\"/ops/sessions/shop/runs/{RUN_1}\""))
    );
}

#[tokio::test]
async fn metrics_are_served_only_when_configured() {
    let app = router(fake(), &DashboardConfig::new());
    assert_eq!(get(&app, "/metrics").await.status, StatusCode::NOT_FOUND);

    let config = DashboardConfig::new().metrics(|| async { Ok("am2z_up 1\n".to_owned()) }.boxed());
    let app = router(fake(), &config);
    let metrics = get(&app, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(metrics.body, "am2z_up 1\n");
    assert_eq!(
        metrics.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );

    let failing = DashboardConfig::new()
        .metrics(|| async { Err(Error::unavailable("redis", "down")) }.boxed());
    let app = router(fake(), &failing);
    assert_eq!(
        get(&app, "/metrics").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn the_event_stream_sends_the_runtime_events() {
    let runtime = fake();
    runtime.start().await.unwrap();
    runtime.register(processor_fn(charge));
    let app = router(runtime.clone(), &DashboardConfig::new());
    let response = app
        .oneshot(
            Request::get("/api/events?session=shop")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    let hello = futures::StreamExt::next(&mut body).await.unwrap().unwrap();
    seen.push_str(&String::from_utf8_lossy(&hello));
    assert!(seen.contains("event: hello"), "{seen}");

    // Subscribed (the hello came after subscribing): a run in another session is not sent, one
    // in this session is.
    let _: u64 = runtime
        .execute_named(&session("other"), "charge", 1u64)
        .await
        .unwrap()
        .output;
    let _: u64 = runtime
        .execute_named(&session("shop"), "charge", 5u64)
        .await
        .unwrap()
        .output;
    while !seen.contains("run_completed") {
        let chunk = futures::StreamExt::next(&mut body).await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"session\":\"shop\""), "{seen}");
    assert!(!seen.contains("\"session\":\"other\""), "{seen}");
}

#[tokio::test]
async fn runs_are_counted_from_events() {
    let runtime = fake();
    runtime.start().await.unwrap();
    runtime.register(processor_fn(charge));
    let app = router(runtime.clone(), &DashboardConfig::new());
    for cents in 0..3u64 {
        let _: u64 = runtime
            .execute_named(&session("shop"), "charge", cents)
            .await
            .unwrap()
            .output;
    }
    // The counters read events on a task of their own: poll until it caught up.
    let mut stats = String::new();
    for _ in 0..1000 {
        stats = get(&app, "/api/stats").await.body;
        let value: serde_json::Value = serde_json::from_str(&stats).unwrap();
        let minutes = value["activity"]["minutes"].as_array().unwrap();
        let completed: u64 = minutes
            .iter()
            .map(|m| m["completed"].as_u64().unwrap())
            .sum();
        if completed == 3 {
            return;
        }
        assert!(completed < 3, "{stats}");
        tokio::task::yield_now().await;
    }
    panic!("the counters never saw the 3 runs: {stats}");
}
