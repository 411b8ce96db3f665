//! The Redis key layout as tests see it (`docs/architecture.md`, "Keys"), for the tests that
//! look inside a session or simulate a fault by writing to Redis directly: a worker that
//! leased a job and died, a corrupt body. The runtime itself never goes through here.

use std::io::Write;
use std::process::{Command, Stdio};

/// One session's keys on the server at `url` (host and port), under `prefix`.
pub struct Layout {
    url: String,
    prefix: String,
    session: String,
}

/// A job's header (`jobs` hash): the record scripts read and rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The contract fingerprint of the job's processor.
    pub fingerprint: String,
    /// Its processor's priority.
    pub priority: i64,
    /// The fencing token of its latest lease.
    pub token: u64,
    /// How many times it was leased.
    pub deliveries: u32,
    /// When its run was submitted (ms since the epoch).
    pub created_ms: u64,
    /// When it was queued.
    pub queued_ms: u64,
    /// The attempt its step resumes at after a wait (0: fresh).
    pub attempt: u32,
    /// Attempts it made before it waited.
    pub attempts: u32,
    /// Its run's completed steps when it was created.
    pub version: u64,
    /// Its run's attempts when it was created.
    pub run_attempts: u32,
    /// `Q` (queued or delayed), `L` (leased) or `C` (leased, waiting on a `ctx.call`).
    pub state: String,
    /// Its processor's name.
    pub name: String,
}

impl Header {
    fn parse(raw: &str) -> Option<Header> {
        let mut parts = raw.splitn(12, '|');
        let mut next = || parts.next();
        let state = next()?.to_owned();
        let token = next()?.parse().ok()?;
        let deliveries = next()?.parse().ok()?;
        Some(Header {
            state,
            token,
            deliveries,
            fingerprint: next()?.to_owned(),
            priority: next()?.parse().ok()?,
            created_ms: next()?.parse().ok()?,
            queued_ms: next()?.parse().ok()?,
            attempt: next()?.parse().ok()?,
            attempts: next()?.parse().ok()?,
            version: next()?.parse().ok()?,
            run_attempts: next()?.parse().ok()?,
            name: next()?.to_owned(),
        })
    }

    fn write(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.state,
            self.token,
            self.deliveries,
            self.fingerprint,
            self.priority,
            self.created_ms,
            self.queued_ms,
            self.attempt,
            self.attempts,
            self.version,
            self.run_attempts,
            self.name
        )
    }
}

impl Layout {
    /// The keys of `session` under `prefix` on the server at `url`.
    pub fn new(url: &str, prefix: &str, session: &str) -> Self {
        Layout {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            session: session.to_owned(),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The session's key `part` (`meta`, `jobs`, `bodies`, `queue`, `delayed`, `leases`,
    /// `calls`, `runs`, `results`, `completed`, `failed`, `dead`, `events`, `stats`, or
    /// `run:<run>`).
    pub fn key(&self, part: &str) -> String {
        format!("{}:{{{}}}:{part}", self.prefix, self.session)
    }

    /// A global key of the prefix (`{:registry}:sched`, `{:leasing}`, ...).
    pub fn global(&self, part: &str) -> String {
        format!("{}:{part}", self.prefix)
    }

    /// `redis-cli` against the server.
    pub fn cli(&self, args: &[&str]) -> String {
        crate::fault::server::redis_cli(&self.url, args)
    }

    /// The header of `job`, if it exists.
    pub fn header(&self, job: &str) -> Option<Header> {
        Header::parse(&self.cli(&["HGET", &self.key("jobs"), job]))
    }

    /// Overwrites the header of `job`.
    pub fn set_header(&self, job: &str, header: &Header) {
        self.cli(&["HSET", &self.key("jobs"), job, &header.write()]);
    }

    /// How many jobs are leased: `leases` also holds, while the session is live, a member
    /// scored +inf that is not a lease (it keeps the set a skip list).
    pub fn leased(&self) -> u64 {
        let leased = self.cli(&["ZCOUNT", &self.key("leases"), "-inf", "(+inf"]);
        leased.parse().unwrap_or(0)
    }

    /// Where `job` stands: `queued`, `leased`, `calling`, `delayed`, or `gone`.
    pub fn state(&self, job: &str) -> &'static str {
        for (set, state) in [
            ("queue", "queued"),
            ("leases", "leased"),
            ("calls", "calling"),
            ("delayed", "delayed"),
        ] {
            if !self.cli(&["ZSCORE", &self.key(set), job]).is_empty() {
                return state;
            }
        }
        "gone"
    }

    /// As if a worker had claimed queued `job` (its `deliveries`-th delivery, with `token`)
    /// and died: its lease is long expired.
    pub fn expire_lease(&self, job: &str, deliveries: u32, token: u64) {
        let mut header = self.header(job).expect("the job exists");
        header.deliveries = deliveries;
        header.token = token;
        header.state = "L".to_owned();
        self.set_header(job, &header);
        self.cli(&["ZREM", &self.key("queue"), job]);
        self.cli(&["ZADD", &self.key("leases"), "1", job]);
    }

    /// The metadata line of `job`'s body (JSON: its position, its calling run), if any.
    pub fn body_meta(&self, job: &str) -> Option<serde_json::Value> {
        let body = self.cli(&["HGET", &self.key("bodies"), job]);
        let line = body.lines().next()?;
        serde_json::from_str(line).ok()
    }

    /// Replaces `job`'s input with `bytes` (any bytes), keeping its metadata.
    pub fn set_input(&self, job: &str, bytes: &[u8]) {
        let body = self.cli(&["HGET", &self.key("bodies"), job]);
        let meta = body.lines().next().unwrap_or("{}").to_owned();
        let mut raw = meta.into_bytes();
        raw.push(b'\n');
        raw.extend_from_slice(bytes);
        self.set_body(job, &raw);
    }

    /// Replaces `job`'s whole body with `bytes`.
    pub fn set_body(&self, job: &str, bytes: &[u8]) {
        let address = self.url.trim_start_matches("redis://");
        let address = address.rsplit('@').next().unwrap_or(address);
        let address = address.split('/').next().unwrap_or(address);
        let (host, port) = address.split_once(':').unwrap_or((address, "6379"));
        let mut child = Command::new("redis-cli")
            .args(["-h", host, "-p", port])
            .args(["-x", "HSET", &self.key("bodies"), job])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("written");
        let output = child.wait_with_output().expect("redis-cli ends");
        assert!(output.status.success(), "redis-cli HSET failed");
    }

    /// Deletes `job`'s body.
    pub fn delete_body(&self, job: &str) {
        self.cli(&["HDEL", &self.key("bodies"), job]);
    }

    /// The ids of the session's jobs (queued, leased, waiting), sorted.
    pub fn jobs(&self) -> Vec<String> {
        let mut jobs: Vec<String> = self
            .cli(&["HKEYS", &self.key("jobs")])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        jobs.sort();
        jobs
    }

    /// The session's dead-lettered runs, oldest first.
    pub fn dead(&self) -> Vec<String> {
        self.cli(&["ZRANGE", &self.key("dead"), "0", "-1"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}
