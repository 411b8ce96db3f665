//! A `redis-server` of a test's own: a free loopback port, its own directory, the
//! configuration the scenario names, and fault injection (kill, restart on the same data,
//! freeze and thaw). It is stopped and its directory removed when dropped, whatever the test
//! did to it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The certificate files of a TLS-only server (`--port 0`, `--tls-port <port>`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA that signed `cert` (PEM); `redis-cli` checks the server against it.
    pub ca: PathBuf,
}

/// How to start a [`RedisServer`]. The defaults are docs/faults.md's: append-only file with
/// `appendfsync always`, `noeviction`, `DEBUG` allowed from loopback.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    args: Vec<String>,
    tls: Option<TlsFiles>,
    password: Option<String>,
}

impl Default for ServerSpec {
    fn default() -> Self {
        let args = [
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
            "--enable-debug-command",
            "local",
        ];
        ServerSpec {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            tls: None,
            password: None,
        }
    }
}

impl ServerSpec {
    /// One more `--name value` directive; a later directive overrides an earlier one.
    #[must_use]
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push(format!("--{name}"));
        self.args.push(value.to_owned());
        self
    }

    /// Serve TLS only, with these files.
    #[must_use]
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Require this password (`requirepass`).
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Starts the server on a free loopback port.
    pub fn start(self) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "am2z-redis-{port}-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the server");
        let mut server = RedisServer {
            spec: self,
            port,
            dir,
            child: None,
        };
        server.launch();
        server
    }
}

/// A running `redis-server` of this test's.
#[derive(Debug)]
pub struct RedisServer {
    spec: ServerSpec,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A server with the default [`ServerSpec`].
    pub fn start() -> RedisServer {
        ServerSpec::default().start()
    }

    /// The URL clients use (`rediss://` for a TLS server; no password in it).
    pub fn url(&self) -> String {
        let scheme = if self.spec.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (`None` while it is down).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's data directory (its append-only file lives here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs one command with `redis-cli` and returns its output, trimmed (empty if the server
    /// does not answer).
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.cli_command().args(args).output();
        output
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// Every key matching `pattern`, sorted (by `--scan`: this is test inspection, not
    /// runtime code).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let output = self
            .cli_command()
            .args(["--scan", "--pattern", pattern])
            .output()
            .expect("redis-cli runs");
        sorted_lines(&String::from_utf8_lossy(&output.stdout))
    }

    /// One field of `INFO` (e.g. `used_memory`), if the server answers.
    pub fn info(&self, field: &str) -> Option<String> {
        let prefix = format!("{field}:");
        self.cli(&["INFO"])
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_owned()))
    }

    /// `kill -9` of the server: no shutdown, no final fsync beyond what `appendfsync` did.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, directory and configuration (so it loads
    /// its append-only file), after [`kill_9`](Self::kill_9) or on its own.
    pub fn restart(&mut self) {
        self.kill_9();
        self.launch();
    }

    /// Freezes the server (`kill -STOP`): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (`kill -CONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {signal} {pid}");
        }
    }

    fn cli_command(&self) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.spec.tls {
            command.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        if let Some(password) = &self.spec.password {
            command.env("REDISCLI_AUTH", password);
        }
        command.stderr(Stdio::null());
        command
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.spec.args);
        match &self.spec.tls {
            Some(tls) => {
                command
                    .args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                command.args(["--port", &self.port.to_string()]);
            }
        }
        if let Some(password) = &self.spec.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let begin = Instant::now();
        while self.cli(&["PING"]) != "PONG" {
            assert!(
                begin.elapsed() < Duration::from_secs(20),
                "redis-server on port {} came up",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill_9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `redis-cli` against the server at `url` (host and port only), its output trimmed; panics
/// when the command fails (a test's own inspection of Redis).
pub fn redis_cli(url: &str, args: &[&str]) -> String {
    let address = url.trim_start_matches("redis://");
    let address = address.rsplit('@').next().unwrap_or(address);
    let address = address.split('/').next().unwrap_or(address);
    let (host, port) = address.split_once(':').unwrap_or((address, "6379"));
    let output = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(output.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Every key matching `pattern` on the server at `url`, sorted, by `--scan` (a test may scan;
/// the runtime never does).
pub fn scan_keys(url: &str, pattern: &str) -> Vec<String> {
    sorted_lines(&redis_cli(url, &["--scan", "--pattern", pattern]))
}

/// The non-empty lines of `output`, sorted (`redis-cli --scan` lists keys in no order).
fn sorted_lines(output: &str) -> Vec<String> {
    let mut lines: Vec<String> = output
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}
