//! [`RedisConfig`]: settings of a [`RedisRuntime`](super::RedisRuntime), from code with
//! environment overrides. The Redis password never appears in `Debug`, `Display` or errors.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::keys::validate_prefix;
use crate::Error;
use crate::runtime::DEFAULT_MAX_CALL_DEPTH;

/// The default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The default queue prefix.
pub const DEFAULT_QUEUE_PREFIX: &str = "am2z";

/// Settings of a [`RedisRuntime`](super::RedisRuntime).
///
/// ```
/// use std::time::Duration;
/// use am2z::runtime::redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://:hunter2@127.0.0.1:6379")
///     .prefix("billing")
///     .worker_concurrency(32)
///     .lease(Duration::from_secs(10));
/// assert!(!format!("{config:?}").contains("hunter2"));
/// assert!(!config.to_string().contains("hunter2"));
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    /// A cluster's seed nodes (`None`: one node, at `url`).
    pub(crate) cluster: Option<Vec<String>>,
    pub(crate) durable_writes: u32,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) prefix: String,
    pub(crate) worker: bool,
    pub(crate) worker_concurrency: usize,
    /// Jobs leased beyond `worker_concurrency` (`None`: as many again).
    pub(crate) lease_ahead: Option<usize>,
    pub(crate) step_jobs: bool,
    pub(crate) max_call_depth: u32,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) lease: Duration,
    pub(crate) sweep_every: Duration,
    pub(crate) idle_poll: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) result_ttl: Duration,
    pub(crate) session_ttl: Duration,
    pub(crate) max_queued: u64,
    pub(crate) session_concurrency: u64,
    pub(crate) events_max_len: u64,
    pub(crate) max_payload_bytes: usize,
    pub(crate) redelivery_backoff: Duration,
    pub(crate) redelivery_backoff_max: Duration,
    pub(crate) unserved_grace: Option<Duration>,
    pub(crate) response_timeout: Duration,
    pub(crate) start_timeout: Duration,
    pub(crate) cancel_grace: Duration,
    pub(crate) dead_letters_max_len: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig::new(DEFAULT_REDIS_URL)
    }
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://[:password@]host:port[/db]`), with defaults
    /// for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            cluster: None,
            durable_writes: 0,
            tls_ca: None,
            prefix: DEFAULT_QUEUE_PREFIX.to_owned(),
            worker: true,
            worker_concurrency: 16,
            lease_ahead: None,
            step_jobs: true,
            max_call_depth: DEFAULT_MAX_CALL_DEPTH,
            default_timeout: None,
            lease: Duration::from_secs(30),
            sweep_every: Duration::from_secs(1),
            idle_poll: Duration::from_millis(250),
            max_deliveries: 5,
            result_ttl: Duration::from_secs(3600),
            session_ttl: Duration::from_secs(24 * 3600),
            max_queued: 0,
            session_concurrency: 0,
            events_max_len: 10_000,
            max_payload_bytes: 16 << 20,
            redelivery_backoff: Duration::from_millis(500),
            redelivery_backoff_max: Duration::from_secs(30),
            unserved_grace: Some(Duration::from_secs(300)),
            response_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(30),
            cancel_grace: crate::runtime::DEFAULT_CANCEL_GRACE,
            dead_letters_max_len: 10_000,
        }
    }

    /// Settings for the Redis Cluster whose seed nodes are `seeds` (`redis://[:password@]host:
    /// port` each; `rediss://` for TLS): the cluster's layout is learned from them, and
    /// followed through resharding and failover. Everything else is as for one node.
    ///
    /// ```
    /// use am2z::runtime::redis::RedisConfig;
    ///
    /// let config = RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
    /// assert!(config.is_cluster());
    /// ```
    pub fn cluster<I, S>(seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let seeds: Vec<String> = seeds.into_iter().map(Into::into).collect();
        let mut config = RedisConfig::new(seeds.first().cloned().unwrap_or_default());
        config.cluster = Some(seeds);
        config
    }

    /// Whether these settings name a Redis Cluster ([`cluster`](Self::cluster)).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Acknowledge a submission or a commit only once `replicas` replicas of its Redis
    /// hold it (`WAIT`, default 0: as soon as the master has it). With at least 1, a master
    /// that dies and is replaced by its replica (a failover) loses no acknowledged run;
    /// without, it may lose the last writes its replicas had not received. Each acknowledged
    /// write then waits a replication round trip (at most the
    /// [response timeout](Self::response_timeout), after which it fails with
    /// [`Error::Unavailable`]: the write may still be kept).
    pub fn durable_writes(mut self, replicas: u32) -> Self {
        self.durable_writes = replicas;
        self
    }

    /// The defaults, overridden by the environment: `AM2Z_REDIS_URL` (else `REDIS_URL`),
    /// `AM2Z_REDIS_CLUSTER` (a cluster's seed URLs, comma-separated: [`cluster`](Self::cluster)),
    /// `AM2Z_DURABLE_WRITES` (replicas: [`durable_writes`](Self::durable_writes)),
    /// `AM2Z_REDIS_TLS_CA` (a PEM file of the CA that signed the server's certificate),
    /// `AM2Z_QUEUE_PREFIX`, `AM2Z_DEFAULT_TIMEOUT` (`500ms`, `30s`, `5m`, or milliseconds),
    /// `AM2Z_MAX_CALL_DEPTH`, `AM2Z_WORKER_CONCURRENCY`, `AM2Z_LEASE_AHEAD`
    /// ([`lease_ahead`](Self::lease_ahead)), `AM2Z_REDIS_TIMEOUT` (the
    /// [response timeout](Self::response_timeout)), `AM2Z_START_TIMEOUT`, `AM2Z_STEP_JOBS`
    /// (`1`/`true` or `0`/`false`: [step jobs](Self::step_jobs)), `AM2Z_CANCEL_GRACE` (the
    /// [cancel grace](Self::cancel_grace)), `AM2Z_DEAD_LETTERS_MAX_LEN`.
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the variable whose value cannot be parsed.
    pub fn from_env() -> Result<Self, Error> {
        RedisConfig::default().with_env()
    }

    /// These settings, overridden by the environment (see [`from_env`](Self::from_env)).
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the variable whose value cannot be parsed.
    pub fn with_env(self) -> Result<Self, Error> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        if let Some(url) = var("AM2Z_REDIS_URL").or_else(|| var("REDIS_URL")) {
            self.url = url;
        }
        if let Some(raw) = var("AM2Z_REDIS_CLUSTER") {
            let seeds: Vec<String> = raw
                .split(',')
                .map(str::trim)
                .filter(|seed| !seed.is_empty())
                .map(str::to_owned)
                .collect();
            if seeds.is_empty() {
                return Err(Error::configuration(
                    "AM2Z_REDIS_CLUSTER is set but names no seed node (expected \
                     `redis://host:port,redis://host:port`)",
                ));
            }
            self.url.clone_from(&seeds[0]);
            self.cluster = Some(seeds);
        }
        if let Some(raw) = var("AM2Z_DURABLE_WRITES") {
            self.durable_writes = raw.trim().parse().map_err(|_| {
                Error::configuration(format!(
                    "AM2Z_DURABLE_WRITES=`{raw}` is not a number of replicas"
                ))
            })?;
        }
        if let Some(ca) = var("AM2Z_REDIS_TLS_CA") {
            self.tls_ca = Some(PathBuf::from(ca));
        }
        if let Some(prefix) = var("AM2Z_QUEUE_PREFIX") {
            self.prefix = prefix;
        }
        if let Some(raw) = var("AM2Z_DEFAULT_TIMEOUT") {
            self.default_timeout = Some(parse_duration(&raw).ok_or_else(|| {
                Error::configuration(format!(
                    "AM2Z_DEFAULT_TIMEOUT=`{raw}` is not a duration (e.g. `500ms`, `30s`, `5m`)"
                ))
            })?);
        }
        if let Some(raw) = var("AM2Z_REDIS_TIMEOUT") {
            self = self.response_timeout(duration_var("AM2Z_REDIS_TIMEOUT", &raw)?);
        }
        if let Some(raw) = var("AM2Z_START_TIMEOUT") {
            self.start_timeout = duration_var("AM2Z_START_TIMEOUT", &raw)?;
        }
        if let Some(raw) = var("AM2Z_CANCEL_GRACE") {
            self.cancel_grace = duration_var("AM2Z_CANCEL_GRACE", &raw)?;
        }
        if let Some(raw) = var("AM2Z_DEAD_LETTERS_MAX_LEN") {
            self.dead_letters_max_len = number_var("AM2Z_DEAD_LETTERS_MAX_LEN", &raw)?;
        }
        if let Some(raw) = var("AM2Z_MAX_CALL_DEPTH") {
            self.max_call_depth = number_var("AM2Z_MAX_CALL_DEPTH", &raw)?;
        }
        if let Some(raw) = var("AM2Z_STEP_JOBS") {
            self.step_jobs = match raw.trim() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return Err(Error::configuration(format!(
                        "AM2Z_STEP_JOBS=`{raw}` is not 1, 0, true or false"
                    )));
                }
            };
        }
        if let Some(raw) = var("AM2Z_WORKER_CONCURRENCY") {
            self.worker_concurrency = number_var::<usize>("AM2Z_WORKER_CONCURRENCY", &raw)?.max(1);
        }
        if let Some(raw) = var("AM2Z_LEASE_AHEAD") {
            self.lease_ahead = Some(number_var("AM2Z_LEASE_AHEAD", &raw)?);
        }
        Ok(self)
    }

    /// The Redis URL (one node: it leaves a cluster's settings).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self.cluster = None;
        self
    }

    /// Trusts only the CA certificates in the PEM file at `path` when connecting to a
    /// `rediss://` URL (default: the system's roots). Needs am2z's `tls` feature; the file is
    /// read at [`start`](crate::Runtime::start), and a server whose certificate that CA did not
    /// sign is refused with [`Error::Configuration`].
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// The prefix of every key and channel (default `am2z`): 1 to 64 letters, digits, `_`,
    /// `-` or `.`. Separate prefixes are separate deployments on one server.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether this process executes jobs (default `true`). A client-only process submits,
    /// awaits and subscribes, but never claims.
    pub fn worker(mut self, worker: bool) -> Self {
        self.worker = worker;
        self
    }

    /// Whether runs of compositions (chains, parallels, routes, maps) that this process
    /// starts go one job per step (default `true`): each step is leased, recovered and
    /// committed on its own, and a run's steps spread over every worker. With `false` a run
    /// is one job executed whole by one worker (fewer round trips for short steps; a crash
    /// re-runs the whole run). Step jobs another process started are executed step by step
    /// either way. Leaves, and workflows whose data is not serde, are always one job.
    pub fn step_jobs(mut self, step_jobs: bool) -> Self {
        self.step_jobs = step_jobs;
        self
    }

    /// How many runs this process executes at once (default 16).
    pub fn worker_concurrency(mut self, runs: usize) -> Self {
        self.worker_concurrency = runs.max(1);
        self
    }

    /// How many jobs this process may lease beyond those it runs (default: twice
    /// `worker_concurrency`, at least 16, and none when a
    /// [`session_concurrency`](Self::session_concurrency) quota is set; 0: none). A job leased
    /// ahead waits in this process for an execution slot, and takes the one a job gives up the
    /// moment its processor returns, while that job's commit is still on its way to Redis: a
    /// slot does not sit idle for a round trip between jobs, and the commits of jobs run one
    /// after the other go to Redis together. Never more than `worker_concurrency` processors
    /// run at once.
    ///
    /// Only short jobs are leased ahead, while they flow, and no more than ended within the
    /// last 10 ms: when the recent runs took 10 ms or more on average, or no execution slot
    /// was given back for 10 ms, a job is leased only for an execution slot free to run it;
    /// a job leased ahead that waits a second is given back for another worker. A job leased
    /// ahead holds a lease like any other (renewed, fenced, recovered if this process dies)
    /// and counts towards its session's concurrency quota; a draining worker releases it at
    /// once.
    ///
    /// The cost: a job leased ahead runs before a job of higher priority (or a started run's
    /// next step) queued after it was leased, so the queue's order holds across the jobs
    /// this process has not leased yet: a job of higher priority waits, in this process, for
    /// at most `lease_ahead` short jobs. Set 0 where that order must hold job for job.
    pub fn lease_ahead(mut self, jobs: usize) -> Self {
        self.lease_ahead = Some(jobs);
        self
    }

    /// The jobs this process may lease beyond those it runs.
    pub(crate) fn leased_ahead(&self) -> usize {
        match self.lease_ahead {
            Some(jobs) => jobs,
            // A session's quota counts leased jobs: leasing ahead would spend it on jobs that
            // wait here, while other workers could run them.
            None if self.session_concurrency > 0 => 0,
            None => self
                .worker_concurrency
                .saturating_mul(LEASE_AHEAD_PER_SLOT)
                .max(LEASE_AHEAD_AT_LEAST),
        }
    }

    /// The deepest `ctx.call` nesting allowed (default 10).
    pub fn max_call_depth(mut self, depth: u32) -> Self {
        self.max_call_depth = depth;
        self
    }

    /// How long `execute*` waits for an outcome before giving up with a typed timeout
    /// (default: no limit). [`RedisRuntime::wait`](super::RedisRuntime::wait) takes its own.
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// How long a claimed job is leased before another worker may take it over (default 30 s;
    /// renewed every third of it while the run is alive).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How often expired leases are swept (default 1 s).
    pub fn sweep_every(mut self, every: Duration) -> Self {
        self.sweep_every = every.max(Duration::from_millis(10));
        self
    }

    /// How often an idle worker looks for work without being woken (default 250 ms).
    pub fn idle_poll(mut self, every: Duration) -> Self {
        self.idle_poll = every.max(Duration::from_millis(5));
        self
    }

    /// How many times a job may be leased and lost (its worker died or froze) before it is
    /// dead-lettered (default 5).
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries.max(1);
        self
    }

    /// How long terminal outcomes are kept (default 1 h).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long an idle session's keys live (default 24 h; refreshed by every submission).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The most jobs a session may have queued (default: no limit): runs not started yet and
    /// the steps of its runs waiting for a worker, as a BullMQ queue counts a flow's children.
    /// A submission beyond it is refused with [`Error::Resource`] (a run's own fan-out is
    /// never cut short by it). Jobs a worker [leased ahead](Self::lease_ahead) are leased,
    /// not queued.
    pub fn max_queued_per_session(mut self, jobs: u64) -> Self {
        self.max_queued = jobs;
        self
    }

    /// The most jobs of one session executing at once across all workers (default: no limit):
    /// a run of a composition executes one step per job, so this bounds the session's steps in
    /// flight, its fan-outs' included (the tenant's share of the workers).
    pub fn session_concurrency(mut self, runs: u64) -> Self {
        self.session_concurrency = runs;
        self
    }

    /// The approximate length a session's event stream is capped at (default 10 000).
    pub fn events_max_len(mut self, len: u64) -> Self {
        self.events_max_len = len.max(1);
        self
    }

    /// The largest encoded input or outcome accepted (default 16 MiB): a bigger input is
    /// refused with [`Error::Resource`] before anything is written, and a bigger outcome
    /// fails its run with the same error.
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes.max(1);
        self
    }

    /// How long a job whose lease was lost waits before it is offered again, from its second
    /// loss on: `base × 2^(losses − 2)`, at most `max` (default 500 ms, 30 s). The first
    /// redelivery is immediate, so recovery from one dead worker is not slowed; a job that
    /// keeps killing its workers is offered ever more slowly until it is dead-lettered.
    pub fn redelivery_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.redelivery_backoff = base;
        self.redelivery_backoff_max = max.max(base);
        self
    }

    /// How long a queued job may wait while live workers exist but none serves its contract
    /// (its processor is unknown to them, or they run another version) before it fails with
    /// [`Error::NotFound`] (default 5 min; `None`: it waits for such a worker forever). With no
    /// live worker at all, jobs just wait.
    pub fn unserved_grace(mut self, grace: Option<Duration>) -> Self {
        self.unserved_grace = grace;
        self
    }

    /// How long one Redis round trip (or one connection attempt) may take before the call
    /// fails with [`Error::Unavailable`] (default 5 s): a frozen or overloaded server makes
    /// calls fail within this bound instead of hanging. [`wait`](super::RedisRuntime::wait)
    /// keeps re-checking until its own deadline.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long [`start`](crate::Runtime::start) keeps retrying while Redis refuses
    /// connections or is still loading its data (default 30 s), so a worker started before
    /// Redis begins serving when Redis comes up. Other failures (a bad password, TLS, an
    /// evicting server) are reported at once. `Duration::ZERO` tries once.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long a cancelled step gets to see its token fire and return before its future is
    /// dropped (default 1 s): when a fail-fast parallel's sibling failed, its run ended, its
    /// session was stopped, or its worker lost its lease or stops. Timeouts are exact and get
    /// no grace.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// How many dead-lettered runs a session keeps listed (default 10 000): the oldest leave
    /// the list when a newer one is added.
    pub fn dead_letters_max_len(mut self, len: u64) -> Self {
        self.dead_letters_max_len = len.max(1);
        self
    }

    /// The queue prefix.
    pub fn queue_prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        match &self.cluster {
            Some(seeds) => format!(
                "cluster {}",
                seeds
                    .iter()
                    .map(|s| redact(s))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => redact(&self.url),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if let Some(seeds) = &self.cluster
            && seeds.is_empty()
        {
            return Err(Error::configuration(
                "a Redis Cluster needs at least one seed node (`RedisConfig::cluster([...])`)",
            ));
        }
        validate_prefix(&self.prefix)
    }

    /// The renewal period: a third of the lease.
    pub(crate) fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// `url` with the password (and a lone user-info secret) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user_info = &rest[..at];
    let redacted = match user_info.find(':') {
        Some(colon) => format!("{}:***", &user_info[..colon]),
        None => "***".to_owned(),
    };
    format!("{}{redacted}{}", &url[..scheme_end], &rest[at..])
}

/// The duration in the environment variable `name`.
/// The fewest jobs a worker leases ahead by default, whatever its concurrency: a worker
/// that runs jobs one at a time needs more than one leased ahead to cover a round trip.
const LEASE_AHEAD_AT_LEAST: usize = 16;

/// Jobs leased ahead by default per execution slot. With short jobs a commit's answer takes
/// about as long as a job or two, and the more jobs one commit call carries the less Redis
/// spends per job: at concurrency 50, two per slot did 3.4× BullMQ's throughput at 0.32× its
/// Redis CPU per run, one per slot 2.65× at 0.36× (A/B rounds, `BENCHMARKS.md`). More would
/// keep more jobs out of priority order for little more.
const LEASE_AHEAD_PER_SLOT: usize = 2;

/// The number an environment variable holds, or an error naming it.
fn number_var<T: std::str::FromStr>(name: &str, raw: &str) -> Result<T, Error> {
    raw.trim()
        .parse()
        .map_err(|_| Error::configuration(format!("{name}=`{raw}` is not a number")))
}

fn duration_var(name: &str, raw: &str) -> Result<Duration, Error> {
    parse_duration(raw).ok_or_else(|| {
        Error::configuration(format!(
            "{name}=`{raw}` is not a duration (e.g. `500ms`, `30s`, `5m`)"
        ))
    })
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of milliseconds.
fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "ms"),
    };
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("durable_writes", &self.durable_writes)
            .field("tls_ca", &self.tls_ca)
            .field("prefix", &self.prefix)
            .field("worker", &self.worker)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("lease_ahead", &self.leased_ahead())
            .field("max_call_depth", &self.max_call_depth)
            .field("default_timeout", &self.default_timeout)
            .field("lease", &self.lease)
            .field("sweep_every", &self.sweep_every)
            .field("max_deliveries", &self.max_deliveries)
            .field("result_ttl", &self.result_ttl)
            .field("session_ttl", &self.session_ttl)
            .field("max_queued", &self.max_queued)
            .field("session_concurrency", &self.session_concurrency)
            .field("response_timeout", &self.response_timeout)
            .field("start_timeout", &self.start_timeout)
            .field("cancel_grace", &self.cancel_grace)
            .field("dead_letters_max_len", &self.dead_letters_max_len)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (prefix `{}`)", self.redacted_url(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact("rediss://user:s3cret@host:6380"),
            "rediss://user:***@host:6380"
        );
        assert_eq!(redact("redis://s3cret@host"), "redis://***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact("redis://u:p@ss@host"), "redis://u:***@host");
        let config = RedisConfig::new("redis://:s3cret@host:6379");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{config}").contains("s3cret"));
    }

    #[test]
    fn environment_overrides_code() {
        let vars = |name: &str| match name {
            "REDIS_URL" => Some("redis://fallback".to_owned()),
            "AM2Z_REDIS_TLS_CA" => Some("/etc/redis/ca.pem".to_owned()),
            "AM2Z_QUEUE_PREFIX" => Some("jobs".to_owned()),
            "AM2Z_DEFAULT_TIMEOUT" => Some("30s".to_owned()),
            "AM2Z_MAX_CALL_DEPTH" => Some("4".to_owned()),
            "AM2Z_WORKER_CONCURRENCY" => Some("3".to_owned()),
            "AM2Z_LEASE_AHEAD" => Some("0".to_owned()),
            "AM2Z_REDIS_TIMEOUT" => Some("750ms".to_owned()),
            "AM2Z_START_TIMEOUT" => Some("2m".to_owned()),
            _ => None,
        };
        let config = RedisConfig::new("redis://code").with_vars(vars).unwrap();
        assert_eq!(config.url, "redis://fallback");
        assert_eq!(config.tls_ca, Some(PathBuf::from("/etc/redis/ca.pem")));
        assert_eq!(config.prefix, "jobs");
        assert_eq!(config.default_timeout, Some(Duration::from_secs(30)));
        assert_eq!(config.max_call_depth, 4);
        assert_eq!(config.worker_concurrency, 3);
        assert_eq!(config.leased_ahead(), 0, "set to none");
        let code = RedisConfig::new("redis://code");
        assert_eq!(
            code.clone().worker_concurrency(40).leased_ahead(),
            80,
            "twice the concurrency by default"
        );
        assert_eq!(
            code.clone().worker_concurrency(1).leased_ahead(),
            16,
            "at least 16"
        );
        assert_eq!(
            code.clone().worker_concurrency(8).leased_ahead(),
            16,
            "twice the concurrency, which is 16"
        );
        assert_eq!(
            code.clone().session_concurrency(4).leased_ahead(),
            0,
            "none against a session quota"
        );
        assert_eq!(code.session_concurrency(4).lease_ahead(3).leased_ahead(), 3);
        assert_eq!(config.response_timeout, Duration::from_millis(750));
        assert_eq!(config.start_timeout, Duration::from_secs(120));
        let both = |name: &str| match name {
            "AM2Z_REDIS_URL" => Some("redis://first".to_owned()),
            "REDIS_URL" => Some("redis://second".to_owned()),
            _ => None,
        };
        assert_eq!(
            RedisConfig::default().with_vars(both).unwrap().url,
            "redis://first"
        );
        let bad = |name: &str| (name == "AM2Z_MAX_CALL_DEPTH").then(|| "ten".to_owned());
        let error = RedisConfig::default().with_vars(bad).unwrap_err();
        assert!(error.to_string().contains("AM2Z_MAX_CALL_DEPTH"), "{error}");
    }

    #[test]
    fn a_cluster_is_named_by_its_seeds_in_code_or_environment() {
        let config = RedisConfig::cluster(["redis://:pw@h1:7000", "redis://:pw@h2:7001"]);
        assert!(config.is_cluster());
        assert_eq!(config.url, "redis://:pw@h1:7000");
        let shown = config.to_string();
        assert!(
            shown.contains("h1:7000") && shown.contains("h2:7001"),
            "{shown}"
        );
        assert!(!shown.contains("pw@"), "{shown}");
        assert!(
            !RedisConfig::cluster(["redis://h:1"])
                .url("redis://one:1")
                .is_cluster()
        );
        let vars = |name: &str| match name {
            "AM2Z_REDIS_CLUSTER" => Some(" redis://a:1, redis://b:2 ,".to_owned()),
            "AM2Z_DURABLE_WRITES" => Some("1".to_owned()),
            _ => None,
        };
        let config = RedisConfig::default().with_vars(vars).unwrap();
        assert_eq!(
            config.cluster,
            Some(vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()])
        );
        assert_eq!(config.durable_writes, 1);
        for (name, value) in [
            ("AM2Z_REDIS_CLUSTER", " , "),
            ("AM2Z_DURABLE_WRITES", "all"),
        ] {
            let bad = |n: &str| (n == name).then(|| value.to_owned());
            let error = RedisConfig::default().with_vars(bad).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
        let empty = RedisConfig::cluster(Vec::<String>::new());
        assert!(matches!(empty.validate(), Err(Error::Configuration { .. })));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 fortnights"), None);
    }
}
