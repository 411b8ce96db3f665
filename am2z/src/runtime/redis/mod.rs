//! [`RedisRuntime`]: runs workflows across processes and machines on Redis.
//!
//! Every value is both a client (submit runs, await any run's outcome from any process,
//! subscribe to events) and, unless configured otherwise, a worker that claims jobs and
//! executes them. The key layout, job lifecycle and scripts are described in
//! `docs/architecture.md`; one private module (`keys.rs`) builds every key.
//!
//! ```no_run
//! # async fn demo() -> Result<(), am2z::Error> {
//! use am2z::runtime::redis::{RedisConfig, RedisRuntime};
//! use am2z::{processor_fn, Error, Executes, Runtime, SessionId};
//!
//! async fn shout(s: String) -> Result<String, Error> { Ok(s.to_uppercase()) }
//!
//! let runtime = RedisRuntime::new(RedisConfig::from_env()?);
//! let shout = processor_fn(shout).named("shout");
//! runtime.serve(shout.clone()); // this process can execute it
//! runtime.start().await?;
//! let tenant = SessionId::new("tenant-1")?;
//! let result = runtime.execute_in_session(&tenant, &shout, "hi".to_owned()).await?;
//! assert_eq!(result.output, "HI");
//! runtime.stop_session(&tenant).await?; // deletes every key of the session
//! # Ok(()) }
//! ```

mod calls;
mod claimer;
mod config;
mod connection;
mod forwarder;
mod keys;
mod limits;
mod promoter;
mod renewer;
mod scripts;
mod served;
mod steps;
mod stops;
mod sweeper;
mod waiters;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use self::config::{DEFAULT_QUEUE_PREFIX, DEFAULT_REDIS_URL, RedisConfig};
use self::connection::ErrorMap;
use self::forwarder::Commit;
use self::keys::{JobId, Keys};
use self::scripts::{InvokeReloading, Scripts};
use self::served::{Served, ServedProcessor, failure};
use self::waiters::{WaitSlot, Waiters};
use self::worker::{HeldLease, millis};
use super::{Executes, ProcessorInfo, QueueStats, Runtime, RuntimeStats, SessionStats};
use crate::event::{EventBus, EventKind};
use crate::plan::Fingerprint;
use crate::portable::Json;
use crate::runtime::host::ChildCall;
use crate::{
    Error, Event, EventStream, LocalRuntime, Processor, Registration, RunFailure, RunId,
    RunOutcome, RunResult, SessionId,
};

/// How often a waiter re-checks the result key even without a `done` message.
const RECHECK: Duration = Duration::from_secs(1);
/// How many keys `stop_session` deletes per script call.
const STOP_BATCH: u32 = 500;
/// How long `stop` waits for in-flight runs to release their leases.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A submitted run: enough to await its outcome from any process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The session the run belongs to.
    pub session: SessionId,
    /// The run's id (also `meta.run_id` of its outcome).
    pub run_id: RunId,
    /// The processor it runs.
    pub processor: String,
}

/// The Redis runtime. Cloning is cheap and every clone is the same runtime.
///
/// Dropping the last clone without [`stop`](Runtime::stop) stops its background loops (runs
/// already executing finish and commit); `stop` is still the orderly way out.
#[derive(Clone)]
pub struct RedisRuntime {
    inner: Arc<Inner>,
    /// Held only by the user's clones (the runtime's own tasks hold `inner`): its drop ends
    /// the loops, which would otherwise keep `inner` alive forever.
    _handle: Arc<LastHandle>,
}

struct LastHandle(Arc<Inner>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.stop_token().cancel();
    }
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    pub(crate) errors: ErrorMap,
    /// Executes claimed runs with the shared step executor.
    pub(crate) engine: LocalRuntime,
    /// What this process's subscribers see (fed from Redis).
    events: EventBus,
    served: RwLock<HashMap<&'static str, Arc<dyn Served>>>,
    conn: Mutex<Option<ConnectionManager>>,
    lifecycle: tokio::sync::Mutex<Lifecycle>,
    running: AtomicBool,
    /// Whether this process takes new jobs: false while it drains or stops, so a commit no
    /// longer hands it a successor (a long chain would otherwise never let it drain).
    pub(crate) claiming: AtomicBool,
    /// Fired by `stop` (and replaced by `start`): every loop and waiter watches it.
    stop_token: Mutex<CancellationToken>,
    pub(crate) waiters: Waiters,
    /// Stops this process announced (awaiting every process's answer) and heard.
    pub(crate) stops: stops::Stops,
    pub(crate) wake: Notify,
    /// The session named by the latest `wake` message: an idle claimer claims from it
    /// directly (see `claimer.rs`).
    pub(crate) woken: Mutex<Option<SessionId>>,
    pub(crate) leases: Mutex<HashMap<JobId, HeldLease>>,
    /// Cluster-wide concurrency permits held by steps running here: id → key.
    pub(crate) permits: Mutex<HashMap<String, String>>,
    pub(crate) lease_returned: Notify,
    /// This worker's execution slots (`worker_concurrency`): the claimer takes one per job; a
    /// step waiting on a child job gives its own back meanwhile.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// The user's handles (not kept alive by this): a child call needs the runtime's API.
    handle: Mutex<std::sync::Weak<LastHandle>>,
    /// Commits for the forwarder to send behind their runs' events (set by `start`).
    outbox: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Commit>>>,
    pub(crate) fenced_commits: AtomicU64,
    pub(crate) commits: AtomicU64,
    /// This runtime's id in the worker registry.
    pub(crate) worker_id: String,
}

struct Lifecycle {
    claimer: Option<CancellationToken>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Inner {
    /// The command connection (cheap clone of the multiplexed manager).
    pub(crate) fn conn(&self) -> Result<ConnectionManager, Error> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(not_started)
    }

    pub(crate) fn served_for(&self, name: &str, fingerprint: &str) -> Option<Arc<dyn Served>> {
        let served = self.served.read().unwrap_or_else(|p| p.into_inner());
        served
            .get(name)
            .filter(|s| s.fingerprint().to_string() == fingerprint)
            .cloned()
    }

    pub(crate) fn served_fingerprints(&self) -> Vec<String> {
        let served = self.served.read().unwrap_or_else(|p| p.into_inner());
        served
            .values()
            .map(|s| s.fingerprint().to_string())
            .collect()
    }

    /// Where commits go (none before `start`).
    pub(crate) fn outbox(&self) -> Option<tokio::sync::mpsc::UnboundedSender<Commit>> {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers `session` and marks it as having work, then wakes idle workers.
    pub(crate) async fn enlist(&self, conn: &mut ConnectionManager, session: &SessionId) {
        let enlisted: redis::RedisResult<i64> =
            self.enlist_call(session).invoke_reloading(conn).await;
        if let Err(error) = enlisted {
            tracing::warn!(%session, error = %self.errors.scrub(&error.to_string()), "scheduling a session failed; the sweeper's full pass will");
        }
    }

    /// `enlist.lua` for `session`.
    fn enlist_call(&self, session: &SessionId) -> redis::ScriptInvocation<'_> {
        let mut call = self.scripts.enlist.prepare_invoke();
        call.key(self.keys.sched())
            .key(self.keys.sessions())
            .arg(session.as_str())
            .arg(self.keys.wake_channel())
            .arg(self.registry_ttl_ms());
        call
    }

    /// How long the session registry outlives its last submission: long enough for the
    /// sweeper's full pass (every tenth sweep) to see an idle session expire and announce it.
    pub(crate) fn registry_ttl_ms(&self) -> u64 {
        millis(self.config.session_ttl * 2 + self.config.sweep_every * 20)
    }

    fn stop_token(&self) -> CancellationToken {
        self.stop_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Handles a message from one of the runtime's channels.
    fn on_message(self: &Arc<Self>, channel: &str, payload: String) {
        if channel == self.keys.events_channel() {
            // A worker's batch (a JSON array), or one event published by the runtime itself.
            if payload.starts_with('[') {
                match serde_json::from_str::<Vec<Event>>(&payload) {
                    Ok(events) => events.into_iter().for_each(|e| self.events.publish(e)),
                    Err(error) => tracing::debug!(%error, "undecodable events ignored"),
                }
            } else {
                match serde_json::from_str::<Event>(&payload) {
                    Ok(event) => self.events.publish(event),
                    Err(error) => tracing::debug!(%error, "undecodable event ignored"),
                }
            }
        } else if channel == self.keys.wake_channel() {
            *self.woken.lock().unwrap_or_else(|p| p.into_inner()) = SessionId::new(&payload).ok();
            self.wake.notify_one();
        } else if channel == self.keys.done_channel() {
            // `<session> <run>`, then the stored outcome when it is small.
            let mut parts = payload.splitn(3, ' ');
            let (_, run, wire) = (parts.next(), parts.next(), parts.next());
            let Some(run) = run.and_then(|run| u128::from_str_radix(run, 16).ok()) else {
                return;
            };
            let run = RunId::from_u128(run);
            if self
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&JobId::entry(run))
            {
                // Executed here: its worker hands the typed outcome over itself.
                return;
            }
            if let Some(wire) = wire {
                self.waiters.deliver(run, wire.to_owned());
            }
            self.waiters.done(run);
        } else if channel == self.keys.control_channel() {
            if let Some(nonce) = payload.strip_prefix("stopped ") {
                self.stops.answered(nonce);
                return;
            }
            if let Some(cancel) = payload.strip_prefix("cancel ") {
                self.cancel_jobs(cancel);
                return;
            }
            // `stop <session>`, with a nonce to answer when `stop_session` sent it.
            let Some(stop) = payload.strip_prefix("stop ") else {
                return;
            };
            let (session, nonce) = match stop.split_once(' ') {
                Some((session, nonce)) => (session, Some(nonce.to_owned())),
                None => (stop, None),
            };
            let Ok(session) = SessionId::new(session) else {
                return;
            };
            self.stops.heard(&session);
            self.waiters.session_stopped(&session);
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                let _ = inner.engine.stop_session(&session).await;
                if let (Some(nonce), Ok(mut conn)) = (nonce, inner.conn()) {
                    let answered: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(inner.keys.control_channel())
                        .arg(format!("stopped {nonce}"))
                        .query_async(&mut conn)
                        .await;
                    if let Err(error) = answered {
                        tracing::debug!(error = %inner.errors.scrub(&error.to_string()), "answering a stop failed");
                    }
                }
            });
        }
    }
}

impl Inner {
    /// `cancel <session> <run> [<instance>]`: a run executed step by step ended, or one of its
    /// fail-fast fan-outs failed; the jobs of it running here (under that fan-out) are dropped.
    fn cancel_jobs(&self, cancel: &str) {
        let mut parts = cancel.split(' ');
        let (Some(session), Some(run)) = (parts.next(), parts.next()) else {
            return;
        };
        let Some(run) = JobId::parse(run).map(|id| id.run) else {
            return;
        };
        let instance = parts.next();
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for (id, lease) in leases.iter() {
            if id.run != run || id.position.is_none() || lease.session.as_str() != session {
                continue;
            }
            let under = instance.is_none_or(|i| {
                steps::instances_of(&lease.position)
                    .iter()
                    .any(|held| held == i)
            });
            if under {
                lease.moot.cancel();
            }
        }
    }
}

/// A run to queue: its processor (name and contract fingerprint), input (JSON) and priority.
struct NewRun<'a> {
    name: &'a str,
    fingerprint: Fingerprint,
    input: String,
    priority: i32,
}

/// The run a child run (a `ctx.call` executed as a job) belongs to, and the call depth it
/// runs at.
pub(crate) struct ChildOf {
    pub(crate) run: RunId,
    pub(crate) depth: u32,
}

impl Inner {
    /// The runtime's API, while a user's handle lives.
    pub(crate) fn runtime(self: &Arc<Self>) -> Option<RedisRuntime> {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()?;
        Some(RedisRuntime {
            inner: Arc::clone(self),
            _handle: handle,
        })
    }
}

fn not_started() -> Error {
    Error::configuration("the Redis runtime is not started: call `start().await` before executing")
}

impl RedisRuntime {
    /// A runtime with `config` (not yet started; nothing connects until [`start`](Runtime::start)).
    pub fn new(config: RedisConfig) -> Self {
        let engine = LocalRuntime::builder()
            .max_call_depth(config.max_call_depth)
            // The forwarder drains this ring as fast as Redis takes the events.
            .event_capacity(1 << 14)
            .build();
        let stopped = CancellationToken::new();
        stopped.cancel();
        let slots = Arc::new(tokio::sync::Semaphore::new(config.worker_concurrency));
        let inner = Arc::new(Inner {
            slots,
            keys: Keys::new(&config.prefix),
            scripts: Scripts::new(),
            errors: ErrorMap::new(&config),
            config,
            engine,
            events: EventBus::new(4096),
            served: RwLock::new(HashMap::new()),
            conn: Mutex::new(None),
            lifecycle: tokio::sync::Mutex::new(Lifecycle {
                claimer: None,
                tasks: Vec::new(),
            }),
            running: AtomicBool::new(false),
            claiming: AtomicBool::new(false),
            stop_token: Mutex::new(stopped),
            waiters: Waiters::default(),
            stops: stops::Stops::default(),
            wake: Notify::new(),
            woken: Mutex::new(None),
            leases: Mutex::new(HashMap::new()),
            permits: Mutex::new(HashMap::new()),
            lease_returned: Notify::new(),
            handle: Mutex::new(std::sync::Weak::new()),
            outbox: Mutex::new(None),
            fenced_commits: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            worker_id: format!("{}-{}", std::process::id(), RunId::generate()),
        });
        let handle = Arc::new(LastHandle(Arc::clone(&inner)));
        *inner.handle.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(&handle);
        RedisRuntime {
            _handle: handle,
            inner,
        }
    }

    /// A runtime configured from the environment (see [`RedisConfig::from_env`]).
    ///
    /// # Errors
    /// [`Error::Configuration`] when an environment variable cannot be parsed.
    pub fn from_env() -> Result<Self, Error> {
        Ok(RedisRuntime::new(RedisConfig::from_env()?))
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Lets this process execute `processor` (registering it too): a worker serves the
    /// workflows it was built with. Jobs of processors a worker does not serve (or serves
    /// with another contract fingerprint) are left for workers that do, without consuming a
    /// delivery.
    pub fn serve<P>(&self, processor: P)
    where
        P: Processor,
        P::Input: Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned,
    {
        self.register(processor.clone());
        self.insert_served(processor);
    }

    fn insert_served<P>(&self, processor: P)
    where
        P: Processor,
        P::Input: Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned,
    {
        let served = ServedProcessor::new(processor.clone());
        let mut table = self.inner.served.write().unwrap_or_else(|p| p.into_inner());
        table.insert(processor.name(), Arc::new(served));
        drop(table);
        self.inner.wake.notify_one();
    }

    /// Serves `processor` unless this process already serves that exact contract.
    fn ensure_served<P>(&self, processor: &P)
    where
        P: Processor,
        P::Input: Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned,
    {
        if !self.inner.config.worker {
            return;
        }
        let known = {
            let table = self.inner.served.read().unwrap_or_else(|p| p.into_inner());
            table.get(processor.name()).is_some_and(|s| {
                s.input_type() == std::any::type_name::<P::Input>()
                    && s.output_type() == std::any::type_name::<P::Output>()
            })
        };
        if !known {
            self.insert_served(processor.clone());
        }
    }

    /// Queues a run of `processor` on `input` in `session`, returning at once with a handle
    /// any process can [`wait`](Self::wait) on.
    ///
    /// # Errors
    /// [`Error::Configuration`] before `start`; [`Error::Serialization`] when `input` cannot
    /// be encoded; [`Error::Resource`] when the session's queue is at its quota;
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn submit<P>(
        &self,
        session: &SessionId,
        processor: &P,
        input: P::Input,
    ) -> Result<RunHandle, Error>
    where
        P: Processor,
        P::Input: Serialize,
    {
        let input = serde_json::to_string(&input)?;
        let run = NewRun {
            name: processor.name(),
            fingerprint: processor.contract().fingerprint,
            input,
            priority: processor.config().priority,
        };
        self.submit_raw(session, RunId::generate(), run, None).await
    }

    /// Runs `call` (a `ctx.call` of a step executing here) as the child run `child`: queued
    /// in the caller's session for any worker, awaited with this worker's slot given back.
    async fn call_child(&self, call: ChildCall<'_>, child: RunId) -> Result<Json, Error> {
        let inner = &self.inner;
        let started = Instant::now();
        let slot = inner.waiters.register(child, call.session);
        let of = ChildOf {
            run: call.run_id,
            depth: call.depth,
        };
        let submitted = self
            .submit_raw(
                call.session,
                child,
                NewRun {
                    name: &call.contract.name,
                    fingerprint: call.contract.fingerprint,
                    input: call.input.to_string(),
                    priority: call.priority,
                },
                Some(&of),
            )
            .await;
        let outcome = match submitted {
            Ok(handle) => {
                // The slot this step holds runs other jobs (the child, say) while it waits.
                inner.slots.add_permits(1);
                let outcome = self
                    .wait_slot::<Json>(&handle, &slot, None, started, true)
                    .await;
                if let Ok(permit) = inner.slots.acquire().await {
                    permit.forget();
                }
                outcome
                    .map(|result| result.output)
                    .map_err(|failure| failure.error)
            }
            Err(error) => Err(error),
        };
        inner.waiters.unregister(child, &slot);
        outcome
    }

    /// Submits a run and waits for its outcome. The waiter is registered before the run
    /// exists, so it cannot miss the outcome and needs no first read of the result key.
    async fn submit_and_wait<O>(
        &self,
        session: &SessionId,
        name: &str,
        fingerprint: Fingerprint,
        input: Result<String, Error>,
        priority: i32,
        started: Instant,
    ) -> RunOutcome<O>
    where
        O: DeserializeOwned + Send + 'static,
    {
        let run_id = RunId::generate();
        let slot = self.inner.waiters.register(run_id, session);
        let submitted = match input {
            Ok(input) => {
                let run = NewRun {
                    name,
                    fingerprint,
                    input,
                    priority,
                };
                self.submit_raw(session, run_id, run, None).await
            }
            Err(error) => Err(error),
        };
        let outcome = match submitted {
            Ok(handle) => {
                let deadline = self.inner.config.default_timeout;
                self.wait_slot(&handle, &slot, deadline, started, false)
                    .await
            }
            Err(error) => Err(failure(session, run_id, SystemTime::now(), started, error)),
        };
        self.inner.waiters.unregister(run_id, &slot);
        outcome
    }

    async fn submit_raw(
        &self,
        session: &SessionId,
        run_id: RunId,
        run: NewRun<'_>,
        child: Option<&ChildOf>,
    ) -> Result<RunHandle, Error> {
        let NewRun {
            name,
            fingerprint,
            input,
            priority,
        } = run;
        let inner = &self.inner;
        if !inner.running.load(Ordering::Acquire) {
            return Err(not_started());
        }
        if input.len() > inner.config.max_payload_bytes {
            return Err(Error::resource(
                "payload",
                format!(
                    "the input of `{name}` is {} bytes; the limit is {}",
                    input.len(),
                    inner.config.max_payload_bytes
                ),
            ));
        }
        let mut conn = inner.conn()?;
        let keys = inner.keys.session(session);
        let created = serde_json::to_string(&Event {
            session: session.clone(),
            run_id: None,
            processor: None,
            at: SystemTime::now(),
            kind: EventKind::SessionCreated,
        })?;
        let mut submit = inner.scripts.submit.prepare_invoke();
        submit
            .key(keys.meta())
            .key(keys.index())
            .key(keys.queue())
            .key(keys.job(&JobId::entry(run_id)))
            .key(keys.leases())
            .key(keys.events())
            .key(keys.dead())
            .key(keys.stats())
            .key(keys.delayed())
            .arg(run_id.to_string())
            .arg(name)
            .arg(fingerprint.to_string())
            .arg(input)
            .arg(priority)
            .arg(millis(inner.config.session_ttl))
            .arg(inner.config.max_queued)
            .arg(inner.keys.events_channel())
            .arg(created)
            .arg(inner.config.events_max_len);
        if let Some(child) = child {
            submit
                .arg(child.run.to_string())
                .arg(child.depth)
                .arg(keys.result(run_id));
        }
        // Queued and scheduled in one round trip: `enlist` runs after `submit` (one
        // connection, in order), as the claimer's retire step needs. Enlisting after a refused
        // submission is harmless: the session then has queued work anyway.
        let replies: Vec<redis::Value> = redis::pipe()
            .ignore_errors()
            .invoke_script(&submit)
            .invoke_script(&inner.enlist_call(session))
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        let mut replies = replies.into_iter();
        let queued: i64 = match replies.next() {
            Some(redis::Value::ServerError(error)) if error.code() == "NOSCRIPT" => {
                // After a `SCRIPT FLUSH`: load the script and run it (again, if another
                // flush lands between the two).
                let queued = submit
                    .invoke_reloading(&mut conn)
                    .await
                    .map_err(|e| inner.errors.unavailable(&e))?;
                inner.enlist(&mut conn, session).await;
                queued
            }
            reply => {
                let queued = match reply {
                    Some(redis::Value::ServerError(error)) => Err(error.into()),
                    Some(reply) => redis::from_redis_value(reply).map_err(Into::into),
                    None => Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "no reply to submit",
                    ))),
                };
                let queued = queued.map_err(|e| inner.errors.unavailable(&e))?;
                match replies.next() {
                    Some(redis::Value::ServerError(error)) if error.code() == "NOSCRIPT" => {
                        inner.enlist(&mut conn, session).await;
                    }
                    Some(redis::Value::ServerError(error)) => {
                        tracing::warn!(%session, error = %inner.errors.scrub(&error.to_string()), "scheduling a session failed; the sweeper's full pass will");
                    }
                    _ => {}
                }
                queued
            }
        };
        match queued {
            -1 => {
                return Err(Error::resource(
                    format!("session `{session}` queue"),
                    format!(
                        "{} jobs are already queued (the session's quota)",
                        inner.config.max_queued
                    ),
                ));
            }
            // A child call whose caller runs again (a retry, a redelivery) finds its child.
            -2 if child.is_some() => {}
            -2 => return Err(Error::configuration("duplicate run id")),
            _ => {}
        }
        Ok(RunHandle {
            session: session.clone(),
            run_id,
            processor: name.to_owned(),
        })
    }

    /// Waits for the outcome of a run submitted by any process, for at most `deadline`
    /// (`None`: no limit).
    ///
    /// Ends with [`Error::Timeout`] when the deadline passes first (the run goes on),
    /// [`Error::SessionStopped`] when its session is stopped, [`Error::Cancelled`] when this
    /// runtime is stopped, and [`Error::Serialization`] when the outcome is not an `O`.
    pub async fn wait<O>(&self, handle: &RunHandle, deadline: Option<Duration>) -> RunOutcome<O>
    where
        O: DeserializeOwned + Send + 'static,
    {
        let started = Instant::now();
        let slot = self.inner.waiters.register(handle.run_id, &handle.session);
        let outcome = self.wait_slot(handle, &slot, deadline, started, true).await;
        self.inner.waiters.unregister(handle.run_id, &slot);
        outcome
    }

    /// Waits on `slot`; `read_first`: read the result key before the first notification
    /// (unless the slot was registered before the run was submitted).
    async fn wait_slot<O>(
        &self,
        handle: &RunHandle,
        slot: &WaitSlot,
        deadline: Option<Duration>,
        started: Instant,
        read_first: bool,
    ) -> RunOutcome<O>
    where
        O: DeserializeOwned + Send + 'static,
    {
        let inner = &self.inner;
        // `RunOutcome` is the contract's type; its failure is large by design.
        #[allow(clippy::result_large_err)]
        let fail = |error| {
            Err(failure(
                &handle.session,
                handle.run_id,
                SystemTime::now(),
                started,
                error,
            ))
        };
        let stop = inner.stop_token();
        if stop.is_cancelled() {
            return fail(not_started());
        }
        let until = deadline.map(|d| tokio::time::Instant::now() + d);
        let keys = inner.keys.session(&handle.session);
        let mut read = read_first;
        loop {
            if slot.stopped.load(Ordering::SeqCst) {
                return fail(Error::SessionStopped {
                    session: handle.session.to_string(),
                });
            }
            if let Some(typed) = inner.waiters.take_handoff(handle.run_id)
                && let Ok(outcome) = typed.downcast::<RunOutcome<O>>()
            {
                return *outcome;
            }
            if let Some(wire) = inner.waiters.take_delivered(handle.run_id) {
                return decode(&wire, handle, started);
            }
            if read {
                let mut conn = match inner.conn() {
                    Ok(conn) => conn,
                    Err(error) => return fail(error),
                };
                // A run is in flight while its entry job or (step by step) its run hash exists.
                let read: redis::RedisResult<(Option<String>, bool, bool, bool)> = redis::pipe()
                    .atomic()
                    .get(keys.result(handle.run_id))
                    .exists(keys.job(&JobId::entry(handle.run_id)))
                    .exists(keys.meta())
                    .exists(keys.run(handle.run_id))
                    .query_async(&mut conn)
                    .await;
                let read = read.map(|(wire, job, meta, run)| (wire, job || run, meta));
                match read {
                    Ok((Some(wire), _, _)) => return decode(&wire, handle, started),
                    Ok((None, false, false)) => {
                        return fail(Error::SessionStopped {
                            session: handle.session.to_string(),
                        });
                    }
                    Ok((None, false, true)) => {
                        return fail(Error::not_found(
                            "run",
                            handle.run_id.to_string(),
                            std::iter::empty::<String>(),
                        ));
                    }
                    Ok((None, true, _)) => {}
                    Err(error) => {
                        tracing::debug!(error = %inner.errors.scrub(&error.to_string()), "reading an outcome failed; retrying");
                    }
                }
            }
            read = true;
            let expired = async {
                match until {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = slot.notify.notified() => {}
                () = tokio::time::sleep(RECHECK) => {}
                () = expired => {
                    return fail(Error::Timeout {
                        processor: handle.processor.clone(),
                        limit: deadline.unwrap_or_default(),
                    });
                }
                () = stop.cancelled() => {
                    return fail(Error::Cancelled { reason: "the runtime was stopped".to_owned() });
                }
            }
        }
    }

    /// Stops claiming, lets in-flight runs finish and commit for up to `timeout`, then
    /// stops the runtime (runs still in flight are released for other workers at once).
    ///
    /// # Errors
    /// As [`stop`](Runtime::stop).
    pub async fn drain(&self, timeout: Duration) -> Result<(), Error> {
        if let Some(claimer) = self.inner.lifecycle.lock().await.claimer.take() {
            self.inner.claiming.store(false, Ordering::Release);
            claimer.cancel();
        }
        let until = tokio::time::Instant::now() + timeout;
        self.wait_for_leases(until).await;
        self.stop().await
    }

    async fn wait_for_leases(&self, until: tokio::time::Instant) {
        loop {
            let returned = self.inner.lease_returned.notified();
            if self
                .inner
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                return;
            }
            tokio::select! {
                () = returned => {}
                () = tokio::time::sleep_until(until) => return,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// The events kept in `session`'s stream, oldest first: at most `limit`, after the
    /// stream entry id `after` when given. Each comes with its entry id, so an observer that
    /// joins late (or reconnects) pages through what it missed, then follows
    /// [`subscribe_session`](Runtime::subscribe_session). Streams are capped at
    /// `events_max_len` entries and go with their session.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached; [`Error::Configuration`] before
    /// `start`.
    pub async fn replay(
        &self,
        session: &SessionId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Event)>, Error> {
        let inner = &self.inner;
        let mut conn = inner.conn()?;
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(inner.keys.session(session).events())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let (_, json) = fields.into_iter().find(|(field, _)| field == "event")?;
                let event = serde_json::from_str::<Event>(&json).ok()?;
                Some((id, event))
            })
            .collect())
    }

    /// How many runs this process holds a lease on right now.
    pub fn runs_in_flight(&self) -> usize {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// How many runs this process executed and committed since it was made.
    pub fn committed_runs(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// How many commits this process made that Redis refused because the lease had moved on
    /// (the run was retried elsewhere, or its session stopped), counting attempts abandoned
    /// because their lease was lost before they could try to commit.
    pub fn refused_commits(&self) -> u64 {
        self.inner.fenced_commits.load(Ordering::Relaxed)
    }

    async fn start_inner(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let mut lifecycle = inner.lifecycle.lock().await;
        if inner.running.load(Ordering::Acquire) {
            return Ok(());
        }
        inner.config.validate()?;
        let client = connection::client(&inner.config, &inner.errors)?;
        let mut conn = connection::connect(&client, &inner.errors, &inner.config).await?;
        for script in inner.scripts.all() {
            script
                .load_async(&mut conn)
                .await
                .map_err(|e| inner.errors.unavailable(&e))?;
        }
        *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);

        let stop = CancellationToken::new();
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let channels = vec![
            inner.keys.wake_channel(),
            inner.keys.done_channel(),
            inner.keys.control_channel(),
            inner.keys.events_channel(),
        ];
        let (on_message, on_reconnect) = (Arc::clone(inner), Arc::clone(inner));
        let mut tasks = vec![tokio::spawn(connection::subscribe(
            client,
            inner.errors.clone(),
            channels,
            ready,
            stop.clone(),
            move |m| on_message.on_message(&m.channel, m.payload),
            move || {
                on_reconnect.waiters.wake_all();
                on_reconnect.wake.notify_one();
            },
        ))];
        match subscribed.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                stop.cancel();
                return Err(error);
            }
            Err(_) => {
                stop.cancel();
                return Err(Error::unavailable("redis", "the subscriber ended"));
            }
        }
        let (outbox, commits) = tokio::sync::mpsc::unbounded_channel();
        *inner.outbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(outbox);
        tasks.push(tokio::spawn(forwarder::run(
            Arc::clone(inner),
            inner.engine.subscribe(),
            commits,
            stop.clone(),
        )));
        inner.engine.start().await?;
        let mut claimer = None;
        if inner.config.worker {
            let claiming = stop.child_token();
            tasks.push(tokio::spawn(claimer::run(
                Arc::clone(inner),
                claiming.clone(),
            )));
            tasks.push(tokio::spawn(renewer::run(Arc::clone(inner), stop.clone())));
            tasks.push(tokio::spawn(sweeper::run(Arc::clone(inner), stop.clone())));
            tasks.push(tokio::spawn(promoter::run(Arc::clone(inner), stop.clone())));
            claimer = Some(claiming);
        }
        lifecycle.claimer = claimer;
        lifecycle.tasks = tasks;
        *inner.stop_token.lock().unwrap_or_else(|p| p.into_inner()) = stop;
        inner.claiming.store(inner.config.worker, Ordering::Release);
        inner.running.store(true, Ordering::Release);
        tracing::info!(redis = %inner.config, worker = inner.config.worker, "redis runtime started");
        Ok(())
    }

    async fn stop_inner(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let mut lifecycle = inner.lifecycle.lock().await;
        if !inner.running.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        inner.claiming.store(false, Ordering::Release);
        if let Some(claimer) = lifecycle.claimer.take() {
            claimer.cancel();
        }
        // Runs in flight end with `Cancelled`; their workers release the leases at once.
        inner.engine.stop().await?;
        self.wait_for_leases(tokio::time::Instant::now() + STOP_GRACE)
            .await;
        inner.stop_token().cancel();
        for task in lifecycle.tasks.drain(..) {
            let _ = task.await;
        }
        if inner.config.worker {
            renewer::farewell(inner).await;
        }
        tracing::info!("redis runtime stopped");
        Ok(())
    }

    async fn stop_session_inner(&self, session: &SessionId) -> Result<(), Error> {
        let inner = &self.inner;
        let mut conn = inner.conn()?;
        let keys = inner.keys.session(session);
        loop {
            let remaining: i64 = inner
                .scripts
                .stop
                .key(keys.index())
                .key(keys.meta())
                .key(keys.results())
                .arg(STOP_BATCH)
                .invoke_reloading(&mut conn)
                .await
                .map_err(|e| inner.errors.unavailable(&e))?;
            if remaining == 0 {
                break;
            }
        }
        let stopped = serde_json::to_string(&Event {
            session: session.clone(),
            run_id: None,
            processor: None,
            at: SystemTime::now(),
            kind: EventKind::SessionStopped,
        })?;
        let nonce = RunId::generate().to_string();
        let answers = inner.stops.expect(&nonce);
        let (removed, heard): (i64, usize) = redis::pipe()
            .srem(inner.keys.sessions(), session.as_str())
            .zrem(inner.keys.sched(), session.as_str())
            .ignore()
            .zrem(inner.keys.timers(), session.as_str())
            .ignore()
            .zrem(inner.keys.leasing(), session.as_str())
            .ignore()
            .publish(
                inner.keys.control_channel(),
                format!("stop {} {nonce}", session.as_str()),
            )
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        if removed > 0 {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(inner.keys.events_channel())
                .arg(stopped)
                .query_async(&mut conn)
                .await
                .map_err(|e| inner.errors.unavailable(&e))?;
        }
        inner.waiters.session_stopped(session);
        inner.engine.stop_session(session).await?;
        // Every process that heard the stop (this one included) has fired its runs of the
        // session once it answers: no step of them starts after we return.
        let limit = stops::ACK_WAIT.min(inner.config.response_timeout);
        let answered = answers.answered_by(heard, limit).await;
        if answered < heard {
            tracing::warn!(%session, heard, answered, "not every process answered the stop in time");
        }
        Ok(())
    }
}

/// This process's gauges (waiting, active, delayed) with the cluster-wide totals (completed,
/// failed) counted in Redis as `<processor>:completed` / `<processor>:failed`.
fn merge_totals(
    local: BTreeMap<String, QueueStats>,
    totals: HashMap<String, u64>,
) -> BTreeMap<String, QueueStats> {
    let mut merged: BTreeMap<String, QueueStats> = local
        .into_iter()
        .map(|(name, gauges)| {
            let gauges = QueueStats {
                completed: 0,
                failed: 0,
                ..gauges
            };
            (name, gauges)
        })
        .collect();
    for (field, count) in totals {
        let Some((name, total)) = field.rsplit_once(':') else {
            continue;
        };
        let entry = merged.entry(name.to_owned()).or_default();
        match total {
            "completed" => entry.completed = count,
            "failed" => entry.failed = count,
            _ => {}
        }
    }
    merged
}

/// The stored outcome, as written by `commit.lua` (`Ok`/`Err`) or `sweep.lua` (`Dead`).
#[derive(Deserialize)]
enum WireOutcome<T> {
    Ok(RunResult<T>),
    Err(RunFailure),
    Dead { deliveries: u32, created_ms: u64 },
    Unserved { name: String, fingerprint: String },
}

#[allow(clippy::result_large_err)] // `RunOutcome` is the contract's type.
fn decode<O: DeserializeOwned>(wire: &str, handle: &RunHandle, started: Instant) -> RunOutcome<O> {
    match serde_json::from_str::<WireOutcome<O>>(wire) {
        Ok(WireOutcome::Ok(result)) => Ok(result),
        Ok(WireOutcome::Err(failure)) => Err(failure),
        Ok(WireOutcome::Dead {
            deliveries,
            created_ms,
        }) => Err(failure(
            &handle.session,
            handle.run_id,
            UNIX_EPOCH + Duration::from_millis(created_ms),
            started,
            Error::unavailable(
                "am2z worker",
                format!(
                    "run `{}` of `{}` was leased {deliveries} times and its worker died or froze each time; it was dead-lettered",
                    handle.run_id, handle.processor
                ),
            ),
        )),
        Ok(WireOutcome::Unserved { name, fingerprint }) => Err(failure(
            &handle.session,
            handle.run_id,
            SystemTime::now(),
            started,
            Error::not_found(
                format!("live worker serving contract {fingerprint} of processor"),
                name,
                std::iter::empty::<String>(),
            ),
        )),
        Err(error) => Err(failure(
            &handle.session,
            handle.run_id,
            SystemTime::now(),
            started,
            Error::Serialization {
                message: format!(
                    "the outcome of `{}` is not a `{}`: {error}",
                    handle.processor,
                    std::any::type_name::<O>()
                ),
            },
        )),
    }
}

impl std::fmt::Debug for RedisRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRuntime")
            .field("config", &self.inner.config)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl Runtime for RedisRuntime {
    fn register_many(&self, registrations: impl IntoIterator<Item = Registration>) {
        self.inner.engine.register_many(registrations);
    }

    fn unregister(&self, name: &str) -> bool {
        self.inner
            .served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.inner.engine.unregister(name)
    }

    fn registered(&self) -> Vec<String> {
        self.inner.engine.registered()
    }

    fn processor_info(&self, name: &str) -> Option<ProcessorInfo> {
        self.inner.engine.processor_info(name)
    }

    async fn start(&self) -> Result<(), Error> {
        self.start_inner().await
    }

    async fn stop(&self) -> Result<(), Error> {
        self.stop_inner().await
    }

    fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    async fn stop_session(&self, session: &SessionId) -> Result<(), Error> {
        self.stop_session_inner(session).await
    }

    async fn stop_all_sessions(&self) -> Result<(), Error> {
        for session in self.active_sessions().await? {
            self.stop_session_inner(&session).await?;
        }
        Ok(())
    }

    async fn active_sessions(&self) -> Result<Vec<SessionId>, Error> {
        let inner = &self.inner;
        let mut conn = inner.conn()?;
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(inner.keys.sessions())
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        let mut sessions: Vec<SessionId> = members
            .iter()
            .filter_map(|s| SessionId::new(s).ok())
            .collect();
        sessions.sort();
        Ok(sessions)
    }

    async fn stats(&self) -> Result<RuntimeStats, Error> {
        let inner = &self.inner;
        let mut stats = inner.engine.stats().await?;
        let mut conn = inner.conn()?;
        let (sessions, totals): (usize, HashMap<String, u64>) = redis::pipe()
            .scard(inner.keys.sessions())
            .hgetall(inner.keys.stats())
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        let merged = merge_totals(BTreeMap::new(), totals);
        stats.active_sessions = sessions;
        stats.completed = merged.values().map(|q| q.completed).sum();
        stats.failed = merged.values().map(|q| q.failed).sum();
        Ok(stats)
    }

    async fn session_stats(&self, session: &SessionId) -> Result<SessionStats, Error> {
        let inner = &self.inner;
        let local = inner.engine.session_stats(session).await?;
        let mut conn = inner.conn()?;
        let keys = inner.keys.session(session);
        let (leased, totals): (u64, HashMap<String, u64>) = redis::pipe()
            .zcard(keys.leases())
            .hgetall(keys.stats())
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        Ok(SessionStats {
            session: session.clone(),
            running_runs: leased,
            processors: merge_totals(local.processors, totals),
        })
    }

    async fn queue_stats(&self) -> Result<BTreeMap<String, QueueStats>, Error> {
        let inner = &self.inner;
        let local = inner.engine.queue_stats().await?;
        let mut conn = inner.conn()?;
        let totals: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(inner.keys.stats())
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.errors.unavailable(&e))?;
        Ok(merge_totals(local, totals))
    }

    fn subscribe(&self) -> EventStream {
        self.inner.events.subscribe(None)
    }

    fn subscribe_session(&self, session: &SessionId) -> EventStream {
        self.inner.events.subscribe(Some(session.clone()))
    }

    async fn execute_named<I, O>(&self, session: &SessionId, name: &str, input: I) -> RunOutcome<O>
    where
        I: Serialize + Send + 'static,
        O: DeserializeOwned + Send + 'static,
    {
        let started = Instant::now();
        #[allow(clippy::result_large_err)] // `RunOutcome` is the contract's type.
        let detached = |error| {
            Err(failure(
                session,
                RunId::generate(),
                SystemTime::now(),
                started,
                error,
            ))
        };
        if !self.is_running() {
            return detached(not_started());
        }
        let found = {
            let served = self.inner.served.read().unwrap_or_else(|p| p.into_inner());
            served.get(name).map(|s| {
                (
                    s.fingerprint(),
                    s.input_type().to_owned(),
                    s.output_type().to_owned(),
                )
            })
        }
        .or_else(|| {
            self.inner.engine.processor_info(name).map(|info| {
                (
                    info.contract.fingerprint,
                    info.contract.input,
                    info.contract.output,
                )
            })
        });
        let Some((fingerprint, input_type, output_type)) = found else {
            return detached(Error::not_found("processor", name, self.registered()));
        };
        if input_type != std::any::type_name::<I>() || output_type != std::any::type_name::<O>() {
            return detached(Error::configuration(format!(
                "processor `{name}` maps `{input_type}` to `{output_type}`, but was called with `{}` to `{}`",
                std::any::type_name::<I>(),
                std::any::type_name::<O>(),
            )));
        }
        let priority = self
            .inner
            .engine
            .processor_info(name)
            .map_or(0, |info| info.config.priority);
        let input = serde_json::to_string(&input).map_err(Error::from);
        self.submit_and_wait(session, name, fingerprint, input, priority, started)
            .await
    }
}

impl<P> Executes<P> for RedisRuntime
where
    P: Processor,
    P::Input: Serialize + DeserializeOwned,
    P::Output: Serialize + DeserializeOwned,
{
    async fn execute_in_session(
        &self,
        session: &SessionId,
        processor: &P,
        input: P::Input,
    ) -> RunOutcome<P::Output> {
        let started = Instant::now();
        self.ensure_served(processor);
        let encoded = serde_json::to_string(&input).map_err(Error::from);
        self.submit_and_wait(
            session,
            processor.name(),
            processor.contract().fingerprint,
            encoded,
            processor.config().priority,
            started,
        )
        .await
    }
}
