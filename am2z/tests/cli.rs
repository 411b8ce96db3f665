//! The `am2z` binary against the Redis on 127.0.0.1:6379 (or `AM2Z_TEST_REDIS_URL`): a worker
//! in this test seeds a session under a prefix of its own (runs that complete, one that
//! fails, one that no worker serves, one that runs until cancelled); each test runs the real
//! binary and reads its tables, its JSON and its exit codes.

use std::collections::HashSet;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use am2z::{
    Ctx, Error, Executes, RedisConfig, RedisRuntime, RunHandle, RunId, Runtime, SessionId,
    processor,
};
use serde_json::Value;

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The sessions in which `flaky_service` fails (the outage a retry recovers from); each test
/// has its own session, so the tests running together do not see each other's outage.
static OUTAGE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn outage(session: &SessionId, on: bool) {
    let mut outage = OUTAGE.lock().unwrap_or_else(|p| p.into_inner());
    let sessions = outage.get_or_insert_with(HashSet::new);
    if on {
        sessions.insert(session.to_string());
    } else {
        sessions.remove(session.as_str());
    }
}

/// x × 2.
#[processor]
async fn double(x: i64) -> Result<i64, Error> {
    Ok(x * 2)
}

/// Fails during its session's outage, answers after it.
#[processor]
async fn flaky_service(x: i64, ctx: &Ctx) -> Result<i64, Error> {
    let down = OUTAGE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|sessions| sessions.contains(ctx.session_id().as_str()));
    if down {
        return Err(Error::validation("x", "the service is down"));
    }
    Ok(x + 1)
}

/// Runs until its token fires.
#[processor]
async fn forever(x: i64, ctx: &Ctx) -> Result<i64, Error> {
    ctx.cancelled().await;
    Ok(x)
}

/// Served by no worker: its runs fail once the unserved grace is over.
#[processor]
async fn nobody_serves(x: i64) -> Result<i64, Error> {
    Ok(x)
}

/// A worker and the session it seeded.
struct Seeded {
    worker: RedisRuntime,
    prefix: String,
    session: SessionId,
    completed: RunId,
    failed: RunId,
    unserved: RunId,
    live: RunId,
}

impl Seeded {
    async fn new(name: &str) -> Seeded {
        let prefix = format!("am2z-cli-test-{}", RunId::generate());
        let config = RedisConfig::new(redis_url())
            .prefix(prefix.clone())
            .idle_poll(Duration::from_millis(50))
            .unserved_grace(Some(Duration::from_millis(200)))
            .session_ttl(Duration::from_secs(300))
            .result_ttl(Duration::from_secs(300));
        let worker = RedisRuntime::new(config);
        worker.serve(Double);
        worker.serve(FlakyService);
        worker.serve(Forever);
        worker.start().await.expect("the worker starts");
        let session = SessionId::new(format!("cli-{name}")).expect("a valid id");

        let completed = worker
            .execute_in_session(&session, &Double, 21)
            .await
            .expect("double completes");
        assert_eq!(completed.output, 42);
        worker
            .execute_in_session(&session, &Double, 1)
            .await
            .expect("double completes");
        outage(&session, true);
        let failed = worker
            .execute_in_session(&session, &FlakyService, 1)
            .await
            .expect_err("fails during the outage");
        let unserved = worker
            .submit(&session, &NobodyServes, 7)
            .await
            .expect("submitted");
        let unserved_end = worker.wait::<i64>(&unserved, None).await;
        assert!(
            matches!(unserved_end, Err(ref failure) if matches!(failure.error, Error::NotFound { .. })),
            "a run nobody serves fails: {unserved_end:?}"
        );
        let live = worker
            .submit(&session, &Forever, 1)
            .await
            .expect("submitted");
        Seeded {
            worker,
            prefix,
            session,
            completed: completed.meta.run_id,
            failed: failed.meta.run_id,
            unserved: unserved.run_id,
            live: live.run_id,
        }
    }

    /// Runs the binary with this deployment's environment.
    fn am2z(&self, args: &[&str]) -> Output {
        am2z_with(&redis_url(), &self.prefix, args)
    }

    /// Runs the binary, expects success, and gives its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.am2z(args);
        assert!(
            output.status.success(),
            "am2z {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Runs the binary with `--json` and parses its output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }

    fn target(&self, run: RunId) -> String {
        format!("{}/{run}", self.session)
    }

    /// Stops the session (deleting its keys), the worker, and deletes the prefix's keys.
    async fn clean_up(self) {
        let _ = self.worker.stop_session(&self.session).await;
        self.worker.stop().await.expect("the worker stops");
        let client = redis::Client::open(redis_url()).expect("a Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis answers");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
    }
}

fn am2z_with(url: &str, prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_am2z"))
        .args(args)
        .env("AM2Z_REDIS_URL", url)
        .env("AM2Z_QUEUE_PREFIX", prefix)
        .env_remove("AM2Z_REDIS_CLUSTER")
        .output()
        .expect("the binary runs")
}

/// Polls `am2z --json run TARGET` until `done` holds of its detail.
fn poll_run(seeded: &Seeded, target: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let detail = seeded.json(&["run", target]);
        if done(&detail) {
            return detail;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("run {target} never reached the expected state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_print_tables_and_json() {
    let seeded = Seeded::new("reads").await;
    let session = seeded.session.as_str();

    // sessions
    let table = seeded.ok(&["sessions"]);
    let header = table.lines().next().expect("a header");
    assert!(
        header.starts_with("SESSION") && header.contains("COMPLETED"),
        "{table}"
    );
    let line = table
        .lines()
        .find(|l| l.starts_with(session))
        .unwrap_or_else(|| panic!("the session is listed: {table}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    // The unserved run is a failed one (the Redis runtime fails it: it is no dead letter).
    assert_eq!(
        cells,
        [session, "1", "2", "2", "0"],
        "live, completed, failed, dead"
    );
    let page = seeded.json(&["sessions"]);
    let listed = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["session"] == session)
        .expect("the session in JSON");
    assert_eq!(listed["completed"], 2);
    assert_eq!(listed["failed"], 2);
    assert_eq!(listed["dead_lettered"], 0);
    assert_eq!(listed["live_runs"], 1);

    // runs, every state, then filtered
    let table = seeded.ok(&["runs", session]);
    assert!(table.lines().next().expect("header").starts_with("RUN"));
    assert_eq!(
        table.lines().count(),
        1 + 5,
        "a header and five runs: {table}"
    );
    assert!(table.contains(&seeded.completed.to_string()));
    let failed = seeded.json(&["runs", session, "--state", "failed"]);
    let items = failed["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{failed}");
    let flaky = items
        .iter()
        .find(|r| r["run"] == seeded.failed.to_string())
        .expect("the failed run is listed");
    assert_eq!(flaky["processor"], "flaky_service");
    let unserved = items
        .iter()
        .find(|r| r["run"] == seeded.unserved.to_string())
        .expect("the unserved run is listed");
    assert_eq!(unserved["processor"], "nobody_serves");
    let doubles = seeded.json(&["runs", session, "--processor", "double"]);
    assert_eq!(doubles["items"].as_array().expect("items").len(), 2);
    // Pages: one run a page, the cursor leads to the next, and the table says how to get it.
    let page = ["runs", session, "--state", "completed", "--limit", "1"];
    let first = seeded.json(&page);
    let cursor = first["next"].as_str().expect("a next page").to_owned();
    let second = seeded.json(&[&page[..], &["--after", &cursor]].concat());
    let both = [&first["items"][0]["run"], &second["items"][0]["run"]];
    assert_ne!(both[0], both[1]);
    assert!(both.contains(&&Value::from(seeded.completed.to_string())));
    // Every state: the first page holds the live run, the next one goes on to ended runs.
    let first = seeded.json(&["runs", session, "--limit", "1"]);
    assert_eq!(first["items"][0]["run"], seeded.live.to_string());
    let cursor = first["next"].as_str().expect("a next page").to_owned();
    let second = seeded.json(&["runs", session, "--limit", "1", "--after", &cursor]);
    assert_ne!(second["items"][0]["state"], "active", "{second}");
    let table = seeded.ok(&page);
    let more = format!("more: am2z runs {session} --state completed --after ");
    assert!(table.contains(&more), "{table}");

    // run
    let target = seeded.target(seeded.failed);
    let text = seeded.ok(&["run", &target]);
    assert!(
        text.contains("flaky_service") && text.contains("failed"),
        "{text}"
    );
    assert!(
        text.contains("the service is down"),
        "the error is shown: {text}"
    );
    let detail = seeded.json(&["run", &target]);
    assert_eq!(detail["summary"]["state"], "failed");
    assert_eq!(detail["summary"]["processor"], "flaky_service");
    // The CLI registers no processor: no plan, but the run's data as its submitter said
    // (these processors are not configured with `redact`: the entry body carries no flag).
    assert!(detail["plan"].is_null());
    assert_eq!(
        detail["input"],
        serde_json::json!({"kind": "value", "value": 1})
    );
    let completed = seeded.json(&["run", &seeded.target(seeded.completed)]);
    assert_eq!(completed["summary"]["state"], "completed");
    assert_eq!(
        completed["input"],
        serde_json::json!({"kind": "value", "value": 21})
    );
    assert_eq!(
        completed["output"],
        serde_json::json!({"kind": "value", "value": 42})
    );
    let text = seeded.ok(&["run", &seeded.target(seeded.completed)]);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("a `{name}` line: {text}"))
    };
    assert_eq!(line("input"), ["input", "21"], "{text}");
    assert_eq!(line("output"), ["output", "42"], "{text}");

    // dead, for one session and for all: none here (a dead letter needs a worker that died
    // on its run `max_deliveries` times).
    assert_eq!(seeded.ok(&["dead", session]), "no dead letters\n");
    assert_eq!(seeded.json(&["dead"]), serde_json::json!([]));

    // workers: the seeding worker, not the CLI (it executes nothing)
    let workers = seeded.json(&["workers"]);
    let workers = workers.as_array().expect("an array");
    assert_eq!(workers.len(), 1, "{workers:?}");
    let processors = workers[0]["processors"].as_array().expect("processors");
    assert!(processors.iter().any(|p| p == "double"), "{processors:?}");
    let table = seeded.ok(&["workers"]);
    assert!(
        table.starts_with("WORKER") && table.contains("double"),
        "{table}"
    );

    seeded.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resubmits_a_failed_run_and_it_completes() {
    let seeded = Seeded::new("retry").await;
    outage(&seeded.session, false);
    let target = seeded.target(seeded.failed);
    let text = seeded.ok(&["retry", &target]);
    let new_run = text
        .trim()
        .rsplit('/')
        .next()
        .and_then(|id| id.parse::<RunId>().ok())
        .unwrap_or_else(|| panic!("the new run is printed: {text}"));
    let handle = RunHandle {
        session: seeded.session.clone(),
        run_id: new_run,
        processor: "flaky_service".to_owned(),
        epoch: None,
    };
    let retried = seeded
        .worker
        .wait::<i64>(&handle, None)
        .await
        .expect("the retry completes");
    assert_eq!(retried.output, 2);
    // Idempotent: a second retry names the same run.
    let again = seeded.json(&["retry", &target]);
    assert_eq!(again["outcome"], "already_retried");
    assert_eq!(again["run"], new_run.to_string());
    // A completed run is refused.
    let refused = seeded.am2z(&["retry", &seeded.target(seeded.completed)]);
    assert_eq!(refused.status.code(), Some(5));
    seeded.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_live_run_and_stop_session_ends_the_session() {
    let seeded = Seeded::new("cancel").await;
    let target = seeded.target(seeded.live);
    poll_run(&seeded, &target, |d| d["summary"]["state"] == "active");
    // A watcher follows the session until it is idle: the cancelled run was its last.
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_am2z"))
        .args(["watch", seeded.session.as_str(), "--until-idle"])
        .env("AM2Z_REDIS_URL", redis_url())
        .env("AM2Z_QUEUE_PREFIX", &seeded.prefix)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the watcher starts");
    // Its first line (the live run) is printed once it follows the session's events.
    let mut watched = std::io::BufReader::new(watcher.stdout.take().expect("its stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut watched, &mut first).expect("the first line");
    let short = &seeded.live.to_string()[..12];
    assert!(
        first.starts_with(short) && first.contains("active"),
        "{first}"
    );
    let text = seeded.ok(&["cancel", &target]);
    assert_eq!(text.trim(), format!("cancelled {target}"));
    let ended = poll_run(&seeded, &target, |d| d["summary"]["state"] == "failed");
    assert!(
        ended["summary"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cancelled")),
        "{ended}"
    );
    let again = seeded.json(&["cancel", &target]);
    assert_eq!(again["outcome"], "already_ended");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut watched, &mut rest).expect("the rest of its output");
    assert!(
        watcher
            .wait()
            .expect("the watcher ends by itself")
            .success()
    );
    let last = rest.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(short) && last.contains("forever") && last.contains("failed"),
        "the run's line ends failed: {rest}"
    );

    let text = seeded.ok(&["stop-session", seeded.session.as_str()]);
    assert_eq!(text.trim(), format!("stopped session {}", seeded.session));
    let sessions = seeded.json(&["sessions"]);
    assert!(
        !sessions["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|s| s["session"] == seeded.session.as_str()),
        "the stopped session is gone: {sessions}"
    );
    seeded.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_have_one_line_and_an_exit_code_per_kind() {
    let seeded = Seeded::new("codes").await;
    let one_line = |output: &Output| {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("am2z: "), "{stderr}");
        stderr
    };

    // A bad session id: refused before anything connects.
    let bad = seeded.am2z(&["runs", "bad:id"]);
    assert_eq!(bad.status.code(), Some(5));
    assert!(one_line(&bad).contains("session_id"));
    let bad_run = seeded.am2z(&["run", "no-slash-here"]);
    assert_eq!(bad_run.status.code(), Some(5));
    one_line(&bad_run);

    // An unknown run.
    let unknown = seeded.target(RunId::generate());
    let missing = seeded.am2z(&["run", &unknown]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(one_line(&missing).contains("not found"));
    let missing = seeded.am2z(&["cancel", &unknown]);
    assert_eq!(missing.status.code(), Some(3));

    // Usage: clap's own code.
    assert_eq!(seeded.am2z(&["frobnicate"]).status.code(), Some(2));

    // Redis unreachable: a loopback port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = closed.local_addr().expect("its address").port();
    drop(closed);
    let down = am2z_with(
        &format!("redis://127.0.0.1:{port}"),
        &seeded.prefix,
        &["sessions"],
    );
    assert_eq!(down.status.code(), Some(4));
    one_line(&down);

    seeded.clean_up().await;
}

#[test]
fn help_documents_the_exit_codes() {
    let output = Command::new(env!("CARGO_BIN_EXE_am2z"))
        .arg("--help")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for line in [
        "3  not found",
        "4  Redis unreachable",
        "5  refused",
        "AM2Z_REDIS_URL",
    ] {
        assert!(help.contains(line), "`{line}` in --help: {help}");
    }
}
