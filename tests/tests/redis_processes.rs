//! The Redis runtime across real processes: workers are this test binary re-executed in
//! worker mode (`worker_process` below), so `kill -9` and `kill -STOP` hit real OS processes
//! while the code under test is always the current build. Each test uses its own key prefix
//! and deletes its keys; every worker process it starts is killed when the test ends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use am2z::{Error, RedisConfig, RedisRuntime, RunHandle, RunId, Runtime, SessionId, processor};
use serde::{Deserialize, Serialize};

const ROLE: &str = "AM2Z_TEST_ROLE";
const LEDGER: &str = "AM2Z_TEST_LEDGER";
const LEASE_MS: &str = "AM2Z_TEST_LEASE_MS";
const HANDLES: &str = "AM2Z_TEST_HANDLES";

fn redis_url() -> String {
    std::env::var("AM2Z_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// One unit of work: sleep `ms`, then say who did it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Work {
    id: u64,
    ms: u64,
}

/// Who did a unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    id: u64,
    pid: u32,
}

/// Appends `<id> <pid> <unix nanos>` to the ledger file (one per process), then works.
#[processor(timeout = "60s")]
pub async fn ledgered(work: Work) -> Result<Done, Error> {
    if let Ok(path) = std::env::var(LEDGER) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::execution("ledgered", e.to_string()))?;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // One write per line: concurrent runs in this process append to the same file.
        let line = format!("{} {} {at}\n", work.id, std::process::id());
        file.write_all(line.as_bytes())
            .map_err(|e| Error::execution("ledgered", e.to_string()))?;
    }
    tokio::time::sleep(Duration::from_millis(work.ms)).await;
    Ok(Done {
        id: work.id,
        pid: std::process::id(),
    })
}

fn settings(url: &str, prefix: &str, lease: Duration) -> RedisConfig {
    RedisConfig::new(url)
        .prefix(prefix)
        .lease(lease)
        .sweep_every(Duration::from_millis(200))
        .idle_poll(Duration::from_millis(50))
        .session_ttl(Duration::from_secs(300))
        .result_ttl(Duration::from_secs(300))
}

/// Not a test: the entry point of the worker and awaiter processes the tests below start.
/// Without `AM2Z_TEST_ROLE` it returns at once.
#[test]
#[allow(clippy::print_stdout)] // the parent reads this process's stdout
fn worker_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let lease = std::env::var(LEASE_MS)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::from_secs(2), Duration::from_millis);
        let config = settings(&redis_url(), "unset", lease)
            .with_env()
            .expect("settings");
        match role.as_str() {
            "worker" => {
                let runtime = RedisRuntime::new(config);
                runtime.serve(Ledgered);
                runtime.start().await.expect("the worker starts");
                println!("ready {}", std::process::id());
                // Serve until the parent closes stdin, then drain.
                tokio::task::spawn_blocking(|| {
                    let mut line = String::new();
                    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
                        line.clear();
                    }
                })
                .await
                .expect("stdin watcher");
                runtime
                    .drain(Duration::from_millis(500))
                    .await
                    .expect("drains");
                println!("drained");
            }
            "awaiter" => {
                let runtime = RedisRuntime::new(config.worker(false));
                runtime.start().await.expect("the awaiter starts");
                let handles: Vec<RunHandle> =
                    serde_json::from_str(&std::env::var(HANDLES).expect("handles"))
                        .expect("handles decode");
                println!("ready {}", std::process::id());
                for handle in handles {
                    match runtime
                        .wait::<Done>(&handle, Some(Duration::from_secs(30)))
                        .await
                    {
                        Ok(result) => println!("done {} {}", result.output.id, result.output.pid),
                        Err(failure) => println!("failed {}", failure.error),
                    }
                }
                runtime.stop().await.expect("stops");
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// A child process of this test binary, killed when dropped.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    pid: u32,
}

impl Process {
    fn spawn(role: &str, env: &[(&str, String)]) -> Process {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command
            .args([
                "worker_process",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ROLE, role)
            .env("AM2Z_REDIS_URL", redis_url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the child starts");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut process = Process {
            pid: child.id(),
            child,
            stdin,
            lines,
        };
        process.expect_line(&["ready "], Duration::from_secs(30));
        process
    }

    /// The next line containing one of `markers`, from that marker on (libtest may print
    /// `test worker_process ... ` before it on the same line).
    fn expect_line(&mut self, markers: &[&str], within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = markers.iter().filter_map(|m| line.find(m)).min() {
                        return line[at..].to_owned();
                    }
                }
                Err(_) => panic!("no {markers:?} line from process {}", self.pid),
            }
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin: the worker drains and exits.
    fn close(&mut self) {
        self.stdin.take();
    }

    fn wait_exit(&mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's prefix, ledger directory, and cleanup.
struct Scene {
    url: String,
    prefix: String,
    ledgers: PathBuf,
}

impl Scene {
    fn new(name: &str) -> Scene {
        let id = RunId::generate();
        let ledgers = std::env::temp_dir().join(format!("am2z-{name}-{id}"));
        std::fs::create_dir_all(&ledgers).expect("a ledger directory");
        Scene {
            url: redis_url(),
            prefix: format!("am2z-proc-{id}"),
            ledgers,
        }
    }

    fn worker(&self, concurrency: usize, lease_ms: u64) -> Process {
        let index = std::fs::read_dir(&self.ledgers).map_or(0, |d| d.count());
        let ledger = self.ledgers.join(format!("worker-{index}.log"));
        std::fs::write(&ledger, "").expect("a ledger file");
        Process::spawn(
            "worker",
            &[
                ("AM2Z_QUEUE_PREFIX", self.prefix.clone()),
                ("AM2Z_WORKER_CONCURRENCY", concurrency.to_string()),
                (LEASE_MS, lease_ms.to_string()),
                (LEDGER, ledger.display().to_string()),
            ],
        )
    }

    async fn client(&self) -> RedisRuntime {
        let runtime = RedisRuntime::new(
            settings(&self.url, &self.prefix, Duration::from_secs(2)).worker(false),
        );
        runtime.start().await.expect("the client starts");
        runtime
    }

    /// Every execution recorded by every worker: run id → pids, in the order they started.
    fn ledger(&self) -> BTreeMap<u64, Vec<u32>> {
        let mut executions: BTreeMap<u64, Vec<(u128, u32)>> = BTreeMap::new();
        for entry in std::fs::read_dir(&self.ledgers).expect("ledgers").flatten() {
            for line in read(&entry.path()).lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                if let [id, pid, at] = fields[..] {
                    executions
                        .entry(id.parse().expect("an id"))
                        .or_default()
                        .push((at.parse().expect("a time"), pid.parse().expect("a pid")));
                }
            }
        }
        executions
            .into_iter()
            .map(|(id, mut runs)| {
                runs.sort_unstable();
                (id, runs.into_iter().map(|(_, pid)| pid).collect())
            })
            .collect()
    }

    fn keys(&self) -> Vec<String> {
        let port = self.url.rsplit(':').next().unwrap_or("6379").to_owned();
        let output = Command::new("redis-cli")
            .args([
                "-p",
                &port,
                "--scan",
                "--pattern",
                &format!("{}:*", self.prefix),
            ])
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Scene {
    fn drop(&mut self) {
        let port = self.url.rsplit(':').next().unwrap_or("6379").to_owned();
        for key in self.keys() {
            let _ = Command::new("redis-cli")
                .args(["-p", &port, "DEL", &key])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.ledgers);
    }
}

fn sessions(n: usize, tag: &str) -> Vec<SessionId> {
    (0..n)
        .map(|i| SessionId::new(format!("{tag}-{i}-{}", RunId::generate())).expect("valid"))
        .collect()
}

/// `kill -9` of one of two workers with 200 runs in flight: every run completes on the other,
/// each exactly once in Redis; only runs the killed worker held ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_loses_nothing() {
    let scene = Scene::new("kill9");
    let mut doomed = scene.worker(16, 1_500);
    let survivor = scene.worker(16, 1_500);
    let client = scene.client().await;
    let sessions = sessions(10, "kill9");
    let mut handles = Vec::new();
    for id in 0..200u64 {
        let session = &sessions[id as usize % sessions.len()];
        let work = Work { id, ms: 150 };
        handles.push(
            client
                .submit(session, &Ledgered, work)
                .await
                .expect("submitted"),
        );
    }
    // Kill one worker while it holds leases.
    let begin = Instant::now();
    while scene
        .ledger()
        .values()
        .flatten()
        .filter(|p| **p == doomed.pid)
        .count()
        < 20
    {
        assert!(
            begin.elapsed() < Duration::from_secs(20),
            "the doomed worker worked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let doomed_pid = doomed.pid;
    doomed.kill_9();

    for handle in &handles {
        let result = client
            .wait::<Done>(handle, Some(Duration::from_secs(30)))
            .await
            .expect("every run completes");
        assert_eq!(
            result.output.id,
            handles.iter().position(|h| h == handle).unwrap() as u64
        );
    }
    let ledger = scene.ledger();
    assert_eq!(ledger.len(), 200, "every run executed");
    let repeated: Vec<_> = ledger.iter().filter(|(_, pids)| pids.len() > 1).collect();
    assert!(!repeated.is_empty(), "the kill hit runs in flight");
    assert!(
        repeated.len() <= 16,
        "only the killed worker's leases ran again: {repeated:?}"
    );
    for (_, pids) in &repeated {
        assert_eq!(pids[0], doomed_pid, "{pids:?}");
        assert!(pids[1..].iter().all(|p| *p == survivor.pid), "{pids:?}");
    }
    // One committed outcome per run, nothing left queued or leased.
    let keys = scene.keys();
    assert_eq!(keys.iter().filter(|k| k.contains(":result:")).count(), 200);
    assert!(!keys.iter().any(|k| k.contains(":job:")), "{keys:?}");
    for session in &sessions {
        client.stop_session(session).await.expect("stops");
    }
    client.stop().await.expect("stops");
}

/// A worker frozen past its lease (`kill -STOP`) loses the run to another worker; when it
/// thaws, its late result is refused, and the committed outcome stays the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_cannot_overwrite_a_newer_attempt() {
    let scene = Scene::new("frozen");
    let frozen = scene.worker(1, 600);
    let client = scene.client().await;
    let session = &sessions(1, "frozen")[0];
    let handle = client
        .submit(session, &Ledgered, Work { id: 7, ms: 1_500 })
        .await
        .expect("submitted");
    let begin = Instant::now();
    while scene.ledger().is_empty() {
        assert!(begin.elapsed() < Duration::from_secs(20), "the run started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    frozen.signal("-STOP");
    let thawed = scene.worker(1, 600);
    let result = client
        .wait::<Done>(&handle, Some(Duration::from_secs(20)))
        .await
        .expect("another worker completes it");
    assert_eq!(
        result.output,
        Done {
            id: 7,
            pid: thawed.pid
        }
    );
    frozen.signal("-CONT");
    // Give the thawed worker time to finish its stale attempt and try to commit.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let again = client
        .wait::<Done>(&handle, Some(Duration::from_secs(5)))
        .await
        .expect("the outcome is still there");
    assert_eq!(
        again.output.pid, thawed.pid,
        "the frozen worker's commit was refused"
    );
    assert_eq!(scene.ledger()[&7], vec![frozen.pid, thawed.pid]);
    client.stop_session(session).await.expect("stops");
    client.stop().await.expect("stops");
}

/// A run submitted by this process is executed by two worker processes and awaited by a
/// fourth process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_here_executed_by_two_workers_awaited_by_another_process() {
    let scene = Scene::new("relay");
    let (b, c) = (scene.worker(4, 2_000), scene.worker(4, 2_000));
    let client = scene.client().await;
    let session = &sessions(1, "relay")[0];
    let mut handles = Vec::new();
    for id in 0..24 {
        handles.push(
            client
                .submit(session, &Ledgered, Work { id, ms: 40 })
                .await
                .expect("submitted"),
        );
    }
    let mut awaiter = Process::spawn(
        "awaiter",
        &[
            ("AM2Z_QUEUE_PREFIX", scene.prefix.clone()),
            (
                HANDLES,
                serde_json::to_string(&handles).expect("handles encode"),
            ),
        ],
    );
    let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for id in 0..24 {
        let line = awaiter.expect_line(&["done ", "failed "], Duration::from_secs(30));
        let mut parts = line.split(' ');
        assert_eq!(parts.next(), Some("done"), "{line}");
        assert_eq!(parts.next(), Some(id.to_string().as_str()), "{line}");
        let pid: u32 = parts.next().expect("a pid").parse().expect("a pid");
        *by_pid.entry(pid).or_default() += 1;
    }
    assert!(awaiter.wait_exit(Duration::from_secs(10)));
    assert_eq!(by_pid.keys().copied().collect::<Vec<_>>(), {
        let mut pids = vec![b.pid, c.pid];
        pids.sort_unstable();
        pids
    });
    client.stop_session(session).await.expect("stops");
    client.stop().await.expect("stops");
}

/// A draining worker takes nothing new, commits what finishes within its drain time, and
/// releases the rest at once (not after a lease expiry) to another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_commits_finished_runs_and_releases_the_rest() {
    let scene = Scene::new("drain");
    // A long lease: a run that moves on before it expires was released, not swept.
    let mut draining = scene.worker(4, 60_000);
    let client = scene.client().await;
    let session = &sessions(1, "drain")[0];
    let mut handles = Vec::new();
    for (id, ms) in [(0, 200), (1, 200), (2, 20_000), (3, 20_000)] {
        handles.push(
            client
                .submit(session, &Ledgered, Work { id, ms })
                .await
                .expect("submitted"),
        );
    }
    let begin = Instant::now();
    while scene.ledger().len() < 4 {
        assert!(
            begin.elapsed() < Duration::from_secs(20),
            "all four started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    draining.close();
    draining.expect_line(&["drained"], Duration::from_secs(5));
    assert!(
        draining.wait_exit(Duration::from_secs(5)),
        "the worker exited"
    );
    assert!(
        begin.elapsed() < Duration::from_secs(5),
        "it did not wait for the long runs"
    );
    for handle in &handles[..2] {
        let done = client
            .wait::<Done>(handle, Some(Duration::from_secs(5)))
            .await
            .expect("finished runs were committed");
        assert_eq!(done.output.pid, draining.pid);
    }
    // The long runs were released: a new worker takes them at once.
    let taker = scene.worker(4, 60_000);
    let taken = Instant::now();
    while scene
        .ledger()
        .values()
        .flatten()
        .filter(|p| **p == taker.pid)
        .count()
        < 2
    {
        assert!(
            taken.elapsed() < Duration::from_secs(5),
            "released runs were taken at once"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for session in [session] {
        client.stop_session(session).await.expect("stops");
    }
    client.stop().await.expect("stops");
}
