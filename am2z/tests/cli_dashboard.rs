//! `am2z dashboard`: the real binary serves the dashboard and `/metrics` of the deployment on
//! the Redis at 127.0.0.1:6379 (or `AM2Z_TEST_REDIS_URL`), read-only without a token, and
//! refuses a non-loopback address unless told.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use am2z::{Error, Executes, RedisConfig, RedisRuntime, Runtime, SessionId, processor};

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// x + 1.
#[processor]
async fn increment(x: i64) -> Result<i64, Error> {
    Ok(x + 1)
}

fn dashboard(prefix: &str, args: &[&str], token: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_am2z"));
    command
        .arg("dashboard")
        .args(args)
        .env("AM2Z_REDIS_URL", redis_url())
        .env("AM2Z_QUEUE_PREFIX", prefix)
        .env_remove("AM2Z_DASHBOARD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("AM2Z_DASHBOARD_TOKEN", token);
    }
    command.spawn().expect("the am2z binary starts")
}

/// The address from the line the dashboard prints once it listens.
fn listening_on(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the dashboard prints where it listens");
    let start = line.find("http://").expect("the line names a URL") + "http://".len();
    let end = line[start..].find('/').expect("the URL ends with /") + start;
    line[start..end].to_owned()
}

/// One HTTP/1.1 request; the status code and the body.
fn request(addr: &str, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects to the dashboard");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("sends");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("reads the answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Stops the dashboard as a person would (ctrl-c) and checks it exits cleanly.
fn interrupt(mut child: Child) {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "SIGINT sent to {pid}");
    let status = child.wait().expect("the dashboard exits");
    assert!(
        status.success(),
        "ctrl-c ends the dashboard cleanly: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_command_serves_pages_and_metrics_of_the_deployment() {
    let prefix = format!("am2z-cli-dash-{}", std::process::id());
    let worker = RedisRuntime::new(RedisConfig::new(redis_url()).prefix(&prefix));
    worker.serve(Increment);
    worker.start().await.expect("the worker starts");
    let session = SessionId::new("dash-tenant").expect("a valid id");
    for x in 0..3 {
        let done = worker.execute_in_session(&session, &Increment, x).await;
        assert_eq!(done.expect("the run completes").output, x + 1);
    }

    let mut child = dashboard(&prefix, &["--listen", "127.0.0.1:0"], None);
    let addr = listening_on(&mut child);

    let (status, overview) = request(&addr, "GET", "/", &[]);
    assert_eq!(status, 200, "the overview answers");
    assert!(
        overview.contains("dash-tenant"),
        "the overview lists the session"
    );
    let (status, page) = request(&addr, "GET", "/sessions/dash-tenant", &[]);
    assert_eq!(status, 200, "the session page answers");
    assert!(
        page.contains("increment"),
        "the session page lists its runs' processor"
    );

    let (status, metrics) = request(&addr, "GET", "/metrics", &[]);
    assert_eq!(status, 200, "/metrics answers");
    assert!(
        metrics.lines().any(|l| l.starts_with("am2z_sessions ")),
        "the metrics carry the sessions gauge:\n{metrics}"
    );

    // Read-only without AM2Z_DASHBOARD_TOKEN: an action is refused, whatever the token.
    let path = "/api/sessions/dash-tenant/stop";
    let (status, _) = request(&addr, "POST", path, &["Authorization: Bearer guess"]);
    assert_eq!(status, 403, "actions are off without a configured token");
    let (status, _) = request(&addr, "GET", "/api/sessions", &[]);
    assert_eq!(
        status, 200,
        "the session still answers after a refused action"
    );

    interrupt(child);
    worker.stop_session(&session).await.expect("stops");
    worker.stop().await.expect("stops");
}

#[test]
fn the_dashboard_command_refuses_a_non_loopback_address_unless_told() {
    let prefix = format!("am2z-cli-dash-open-{}", std::process::id());
    let child = dashboard(&prefix, &["--listen", "0.0.0.0:0"], None);
    let output = child.wait_with_output().expect("the binary exits");
    assert!(
        !output.status.success(),
        "a non-loopback address is refused"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address"),
        "the error says why: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_in_the_environment_the_dashboards_actions_work() {
    let prefix = format!("am2z-cli-dash-act-{}", std::process::id());
    let worker = RedisRuntime::new(RedisConfig::new(redis_url()).prefix(&prefix));
    worker.serve(Increment);
    worker.start().await.expect("the worker starts");
    let session = SessionId::new("dash-acted").expect("a valid id");
    let done = worker.execute_in_session(&session, &Increment, 41).await;
    assert_eq!(done.expect("the run completes").output, 42);
    assert!(
        worker
            .active_sessions()
            .await
            .expect("lists")
            .contains(&session)
    );

    let mut child = dashboard(&prefix, &["--listen", "127.0.0.1:0"], Some("s3cret-token"));
    let addr = listening_on(&mut child);
    let path = "/api/sessions/dash-acted/stop";
    let (status, _) = request(&addr, "POST", path, &["Authorization: Bearer wrong"]);
    assert_eq!(status, 403, "a wrong token is refused");
    assert!(
        worker
            .active_sessions()
            .await
            .expect("lists")
            .contains(&session),
        "a refused action changed nothing"
    );
    let (status, body) = request(&addr, "POST", path, &["Authorization: Bearer s3cret-token"]);
    assert!(
        (200..300).contains(&status),
        "the stop is done: {status} {body}"
    );
    assert!(
        !worker
            .active_sessions()
            .await
            .expect("lists")
            .contains(&session),
        "the session is gone"
    );

    interrupt(child);
    worker.stop().await.expect("stops");
}
