//! The dashboard in a real browser: headless Chromium driven over WebDriver (`chromedriver`),
//! against the local runtime and the Redis runtime (127.0.0.1:6379 or `AM2Z_TEST_REDIS_URL`).
//!
//! The scenario: the overview lists the sessions, the session page shows a failed run, the run
//! page shows its graph and error; a wrong token is refused; with the right one, retry is
//! clicked and the new run is seen running, then completed, live (server-sent events), on the
//! same page without a reload.
//!
//! These tests fail (they do not skip) when `chromium` or `chromedriver` is missing: run
//! `./test.sh`, which installs them. With `AM2Z_UPDATE_SCREENSHOTS=1` the local run writes
//! `docs/screenshots/{overview,session,run,run-retried}.png`; otherwise nothing is written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use am2z::dashboard::{self, DashboardConfig, Running};
use am2z::runtime::inspect::{RunDetail, RunState};
use am2z::{Executes, Inspect, LocalRuntime, RedisConfig, RedisRuntime, RunId, Runtime, SessionId};
use am2z_tests::fault::{redis_cli, scan_keys};
use am2z_tests::http::get;
use am2z_tests::processors::AddOne;
use am2z_tests::shop::{Checkout, Order, heal, hold};
use am2z_tests::webdriver::{Browser, ChromeDriver};
use serde_json::json;

const TOKEN: &str = "browser-test-actions-token-5b1f";
const WIDTH: u32 = 1360;

/// Where screenshots go, when asked for.
fn screenshots() -> Option<PathBuf> {
    (std::env::var("AM2Z_UPDATE_SCREENSHOTS").as_deref() == Ok("1"))
        .then(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/screenshots")))
}

/// Takes a screenshot (always, so the capture is tested) and writes it when asked to.
async fn screenshot(browser: &Browser, name: &str, write: bool) {
    let png = browser.screenshot(WIDTH).await;
    assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "a PNG");
    if let Some(dir) = screenshots().filter(|_| write) {
        std::fs::create_dir_all(&dir).expect("docs/screenshots can be made");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot is written");
    }
}

/// What the scenario needs to find on the pages.
struct Shop {
    session: SessionId,
    failed: RunId,
    key: String,
}

/// Fills `runtime` with a few sessions of orders (some paid, one declined).
async fn orders<R: Executes<Checkout> + Executes<AddOne>>(runtime: &R, tag: &str) -> Shop {
    let eu = SessionId::new("shop-eu").expect("a valid id");
    let us = SessionId::new("shop-us").expect("a valid id");
    let billing = SessionId::new("billing").expect("a valid id");
    for (i, (session, country)) in [(&eu, "FR"), (&eu, "DE"), (&us, "US")]
        .into_iter()
        .cycle()
        .take(14)
        .enumerate()
    {
        let key = format!("{tag}-paid-{i}");
        heal(&key);
        runtime
            .execute_in_session(
                session,
                &Checkout,
                Order::new(&key, 1000 + 250 * i as u64, country),
            )
            .await
            .expect("a healed order is paid");
    }
    for x in 0..6 {
        runtime
            .execute_in_session(&billing, &AddOne, x)
            .await
            .expect("add_one runs");
    }
    let key = format!("{tag}-declined");
    let failure = runtime
        .execute_in_session(&eu, &Checkout, Order::new(&key, 4200, "FR"))
        .await
        .expect_err("a declined card fails the order");
    Shop {
        session: eu,
        failed: failure.meta.run_id,
        key,
    }
}

fn truthy(script: &str) -> String {
    format!("return !!({script});")
}

async fn retried_run_detail(addr: SocketAddr, shop: &Shop, run: &str) -> RunDetail {
    get(addr, &format!("/api/sessions/{}/runs/{run}", shop.session))
        .await
        .json()
}

/// The dashboard on a free loopback port, started before the runs so its overview counts them.
async fn dashboard_of<R: Inspect + Clone>(runtime: &R) -> Running {
    let config = DashboardConfig::new()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .actions_token(TOKEN);
    dashboard::bind(runtime.clone(), config)
        .await
        .expect("the dashboard binds a loopback port")
}

/// The scenario, on any runtime.
async fn retry_from_the_browser(running: Running, shop: Shop, write_screenshots: bool) {
    let addr = running.local_addr();
    let base = format!("http://{addr}");
    let driver = ChromeDriver::start().await;
    let browser = Browser::open(&driver, WIDTH, 900).await;
    let s = shop.session.as_str();

    // The overview lists the sessions and goes live.
    browser.goto(&format!("{base}/")).await;
    browser
        .wait_for(
            "the overview to list shop-eu",
            &truthy("document.querySelector('tr[data-session=\"shop-eu\"]')"),
        )
        .await;
    browser
        .wait_for(
            "the live stream",
            &truthy("document.getElementById('live').classList.contains('on')"),
        )
        .await;
    let workers = browser.text_of("ul.workers").await;
    assert!(
        workers.contains("Checkout"),
        "the worker serves the shop: {workers}"
    );
    screenshot(&browser, "overview", write_screenshots).await;

    // The session page shows the failed run.
    browser.click_on("tr[data-session=\"shop-eu\"] a").await;
    browser
        .wait_for(
            "the session page",
            &truthy(&format!("location.pathname === '/sessions/{s}'")),
        )
        .await;
    let row = format!("tr[data-run=\"{}\"][data-state=\"failed\"]", shop.failed);
    browser
        .wait_for(
            "the failed run's row",
            &truthy(&format!(
                "document.querySelector('{}')",
                row.replace('\'', "\\'")
            )),
        )
        .await;
    screenshot(&browser, "session", write_screenshots).await;

    // The run page shows the graph, the failed step and the error chain.
    browser.click_on(&format!("{row} a")).await;
    browser
        .wait_for(
            "the run page",
            &truthy(&format!(
                "location.pathname.endsWith('/runs/{}')",
                shop.failed
            )),
        )
        .await;
    let heading = browser.text_of(".heading h1").await;
    assert!(
        heading.contains("Checkout") && heading.contains("failed"),
        "{heading}"
    );
    let error = browser.text_of("#error").await;
    assert!(error.contains("declined by the gateway"), "{error}");
    assert!(browser.try_find(".graph .group.parallel").await.is_some());
    assert!(
        browser
            .try_find(".graph .node.step.step-failed")
            .await
            .is_some()
    );
    screenshot(&browser, "run", write_screenshots).await;

    // A wrong token is refused, and forgotten.
    browser
        .type_into(&browser.find("#token").await, "not-the-token")
        .await;
    browser.click_on("#unlock").await;
    browser.click_on("#retry").await;
    let flash = browser
        .wait_for(
            "the refusal",
            "const f = document.getElementById('flash'); return !f.hidden && f.textContent;",
        )
        .await;
    assert!(
        flash
            .as_str()
            .is_some_and(|text| text.contains("Refused (403)")),
        "{flash}"
    );
    browser
        .wait_for(
            "the unlock button again",
            &truthy("!document.getElementById('unlock').hidden"),
        )
        .await;

    // The right token, then retry: the new run shows running, then completed, on this page.
    browser
        .type_into(&browser.find("#token").await, TOKEN)
        .await;
    browser.click_on("#unlock").await;
    heal(&shop.key);
    let gate = hold(&shop.key);
    browser
        .execute("window.__am2zSamePage = 'yes'; return true;", json!([]))
        .await;
    browser.click_on("#retry").await;
    browser
        .wait_for(
            "the new run to show running",
            &truthy("document.querySelector('#retried-as .badge[data-state=\"active\"]')"),
        )
        .await;
    let new_run = browser
        .execute(
            "return document.getElementById('retried-as').dataset.run;",
            json!([]),
        )
        .await;
    let new_run = new_run.as_str().expect("the new run's id").to_owned();
    assert_eq!(
        retried_run_detail(addr, &shop, &new_run)
            .await
            .summary
            .state,
        RunState::Active
    );
    gate.open();
    browser
        .wait_for(
            "the new run to show completed",
            &truthy("document.querySelector('#retried-as .badge[data-state=\"completed\"]')"),
        )
        .await;
    let same = browser
        .execute("return window.__am2zSamePage;", json!([]))
        .await;
    assert_eq!(
        same,
        json!("yes"),
        "the page was updated in place, not reloaded"
    );
    let url = browser.execute("return location.href;", json!([])).await;
    assert!(
        !url.as_str().is_some_and(|url| url.contains(TOKEN)),
        "the token never goes into a URL"
    );
    assert!(
        browser.try_find("#retry").await.is_none(),
        "a retried run offers no second retry"
    );
    let done = retried_run_detail(addr, &shop, &new_run).await;
    assert_eq!(done.summary.state, RunState::Completed);
    assert_eq!(done.retry_of, Some(shop.failed));

    // The new run's page.
    browser.click_on("#retried-as a").await;
    browser
        .wait_for(
            "the new run's page",
            &truthy(&format!("location.pathname.endsWith('/runs/{new_run}')")),
        )
        .await;
    let output = browser.text_of("#value-output").await;
    assert!(output.contains("colissimo"), "{output}");
    screenshot(&browser, "run-retried", write_screenshots).await;

    browser.close().await;
    drop(driver);
    running.shutdown().await.expect("the dashboard shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_retried_from_the_browser_on_the_local_runtime() {
    let runtime = LocalRuntime::new();
    runtime.start().await.unwrap();
    runtime.register(Checkout);
    runtime.register(AddOne);
    let running = dashboard_of(&runtime).await;
    let shop = orders(&runtime, "browser-local").await;
    retry_from_the_browser(running, shop, true).await;
    runtime.stop().await.unwrap();
}

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_retried_from_the_browser_on_the_redis_runtime() {
    let prefix = format!("am2z-dash-browser-{}", RunId::generate());
    let config = RedisConfig::new(redis_url())
        .prefix(&prefix)
        .idle_poll(Duration::from_millis(50))
        .session_ttl(Duration::from_secs(300))
        .result_ttl(Duration::from_secs(300));
    let runtime = RedisRuntime::new(config);
    runtime.serve(Checkout);
    runtime.serve(AddOne);
    runtime.start().await.unwrap();
    let running = dashboard_of(&runtime).await;
    let shop = orders(&runtime, "browser-redis").await;
    let sessions = [
        shop.session.clone(),
        SessionId::new("shop-us").expect("a valid id"),
        SessionId::new("billing").expect("a valid id"),
    ];
    retry_from_the_browser(running, shop, false).await;
    for session in &sessions {
        runtime.stop_session(session).await.unwrap();
    }
    runtime.stop().await.unwrap();
    for key in scan_keys(&redis_url(), &format!("{prefix}:*")) {
        redis_cli(&redis_url(), &["DEL", &key]);
    }
}
