//! [`RedisRuntime`]: runs workflows across processes and machines on Redis.
//!
//! Every value is both a client (submit runs, await any run's outcome from any process,
//! subscribe to events) and, unless configured otherwise, a worker that claims jobs and
//! executes them. The key layout, the key lifecycle, the job lifecycle and the scripts are
//! described in `docs/architecture.md`; one private module (`keys.rs`) builds every key, and
//! one (`protocol/`) owns every exchange with Redis.
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
mod client;
mod config;
mod connection;
mod feed;
mod forwarder;
mod hooks;
mod inspect;
mod job;
mod keys;
mod leases;
mod limits;
mod listener;
mod outgoing;
mod promoter;
mod protocol;
mod renewer;
mod served;
mod slots;
mod steps;
mod stops;
mod subscriptions;
mod sweeper;
mod trace;
mod waiters;
mod watches;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use self::claimer::Wakeups;
pub use self::client::RunHandle;
use self::client::{Client, Submission, not_started};
pub use self::config::{DEFAULT_QUEUE_PREFIX, DEFAULT_REDIS_URL, RedisConfig};
use self::connection::Target;
use self::forwarder::Forwarding;
use self::job::ClaimedJob;
use self::keys::Keys;
use self::leases::LeaseTable;
use self::limits::Limits;
use self::listener::Listener;
use self::protocol::messages::{self, Control};
use self::protocol::{Redis, reads, schedule};
use self::served::{ServedProcessor, ServedTable, failure, job_fingerprint};
use self::slots::{JobSlot, Slots};
use self::stops::Stops;
use self::worker::{Contention, Counts, Worker};
use super::{Executes, ProcessorInfo, QueueStats, Runtime, RuntimeStats, SessionStats};
use crate::event::{EventBus, EventKind};
use crate::{
    Error, Event, EventStream, LocalRuntime, Processor, Registration, RunId, RunOutcome, SessionId,
};

/// How long `stop` waits for in-flight runs to release their leases.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The oldest Redis whose commands the scripts use (`ZMSCORE`, `ZADD LT`, `GETDEL`, ...).
const MIN_REDIS: (u32, u32) = (7, 0);

/// The Redis runtime. Cloning is cheap and every clone is the same runtime.
///
/// Dropping the last clone without [`stop`](Runtime::stop) stops its background loops (runs
/// already executing finish and commit); `stop` is still the orderly way out.
#[derive(Clone)]
pub struct RedisRuntime {
    inner: Arc<Inner>,
    /// Held only by the user's clones (the runtime's own tasks do not hold it): its drop ends
    /// the loops.
    _handle: Arc<LastHandle>,
}

struct LastHandle(Arc<Inner>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.stop_token().cancel();
    }
}

/// The runtime's parts; the loops and workers get the ones they use.
struct Inner {
    config: Arc<RedisConfig>,
    keys: Keys,
    redis: Arc<Redis>,
    client: Arc<Client>,
    /// Executes claimed runs with the shared step executor.
    engine: LocalRuntime,
    /// What this process's subscribers see (fed from Redis).
    events: EventBus,
    served: Arc<ServedTable>,
    leases: Arc<LeaseTable>,
    stops: Arc<Stops>,
    limits: Arc<Limits>,
    wakeups: Arc<Wakeups>,
    contention: Arc<Contention>,
    watches: Arc<watches::Watches>,
    claiming: Arc<AtomicBool>,
    counts: Arc<Counts>,
    /// This worker's lease and execution slots (`slots.rs`).
    slots: Arc<Slots>,
    lifecycle: tokio::sync::Mutex<Lifecycle>,
    /// The worker, while it claims: a run it can start at once is leased to it by its submit.
    executor: std::sync::RwLock<Option<Arc<Worker>>>,
    /// This runtime's id in the worker registry.
    worker_id: String,
    /// The processors this runtime submitted or executed, as inspection shows their runs.
    known: inspect::Known,
}

#[derive(Default)]
struct Lifecycle {
    claimer: Option<CancellationToken>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Fired by `stop` (replaced by `start`): every loop watches it.
    stop: CancellationToken,
    worker: Option<Arc<Worker>>,
}

impl Inner {
    fn stop_token(&self) -> CancellationToken {
        // `try_lock`: the drop of the last handle must not wait; a lifecycle change under way
        // fires or replaces the token itself.
        self.lifecycle
            .try_lock()
            .map(|l| l.stop.clone())
            .unwrap_or_default()
    }
}

impl RedisRuntime {
    /// A runtime with `config` (not yet started; nothing connects until [`start`](Runtime::start)).
    pub fn new(config: RedisConfig) -> Self {
        let engine = LocalRuntime::builder()
            .max_call_depth(config.max_call_depth)
            .cancel_grace(config.cancel_grace)
            // The forwarder drains this ring as fast as Redis takes the events.
            .event_capacity(1 << 14)
            .build();
        let config = Arc::new(config);
        let keys = Keys::new(&config.prefix, config.is_cluster());
        let durable =
            (config.durable_writes > 0).then_some((config.durable_writes, config.response_timeout));
        let redis = Arc::new(Redis::new(connection::ErrorMap::new(&config), durable));
        let events = EventBus::new(4096);
        let client = Arc::new(Client::new(
            Arc::clone(&redis),
            keys.clone(),
            Arc::clone(&config),
            events.clone(),
        ));
        let stopped = CancellationToken::new();
        stopped.cancel();
        let inner = Arc::new(Inner {
            slots: Slots::new(config.worker_concurrency, config.leased_ahead()),
            limits: Arc::new(Limits::new(Arc::clone(&redis), keys.clone(), config.lease)),
            keys,
            redis,
            client,
            engine,
            events,
            served: Arc::default(),
            leases: Arc::default(),
            stops: Arc::default(),
            wakeups: Arc::default(),
            contention: Arc::default(),
            watches: Arc::default(),
            claiming: Arc::default(),
            counts: Arc::default(),
            lifecycle: tokio::sync::Mutex::new(Lifecycle {
                stop: stopped,
                ..Lifecycle::default()
            }),
            executor: std::sync::RwLock::default(),
            worker_id: format!("{}-{}", std::process::id(), RunId::generate()),
            known: inspect::Known::default(),
            config,
        });
        RedisRuntime {
            _handle: Arc::new(LastHandle(Arc::clone(&inner))),
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
    /// with another contract or shape) are left for workers that do, without consuming a
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
        let name = processor.name();
        let served = ServedProcessor::new(processor);
        self.inner.served.insert(name, Arc::new(served));
        self.inner.wakeups.wake(None);
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
        let known = self.inner.served.get(processor.name()).is_some_and(|s| {
            s.input_type() == std::any::type_name::<P::Input>()
                && s.output_type() == std::any::type_name::<P::Output>()
        });
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
    /// [`Error::SessionStopped`] while the session is being stopped; [`Error::Unavailable`]
    /// when Redis cannot be reached.
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
        self.inner.known.note(processor);
        let fingerprint = job_fingerprint(
            processor.contract().fingerprint,
            processor.plan().fingerprint,
        );
        let run = RunId::generate();
        let submission = Submission {
            name: processor.name(),
            fingerprint: &fingerprint,
            priority: processor.config().priority,
            input: serde_json::to_string(&input)?,
            call: None,
            lease: false,
            redact: inspect::redacts(processor),
        };
        let epoch = self.submit_here(session, run, submission).await?;
        Ok(RunHandle {
            session: session.clone(),
            run_id: run,
            processor: processor.name().to_owned(),
            epoch: Some(epoch),
        })
    }

    /// Submits a run, leased to this process's worker when it can start it at once (it
    /// claims, serves the run's contract, has a free slot, and saw no other session waiting):
    /// the run then starts as soon as Redis holds it, with no wake and no claim. Returns the
    /// session's epoch.
    async fn submit_here(
        &self,
        session: &SessionId,
        run: RunId,
        mut submission: Submission<'_>,
    ) -> Result<u64, Error> {
        let inner = &self.inner;
        // A subscriber that came just before sees this run's events: its channel first.
        inner.client.subscriptions.events_ready().await;
        let asked = Instant::now();
        let slot = self.free_slot(submission.name, submission.fingerprint);
        submission.lease = slot.is_some();
        let accepted = inner.client.submit(session, run, submission).await?;
        if let (Some(leased), Some((worker, permit))) = (accepted.leased, slot) {
            let slot = Arc::new(JobSlot::new(Arc::clone(&inner.slots), permit));
            let deadline = leased.deadline_ms;
            let job = ClaimedJob {
                session: session.clone(),
                leased,
                asked,
            };
            tokio::spawn(worker::execute(Arc::clone(&worker), job, slot));
            let session = session.clone();
            tokio::spawn(async move { worker.watch_leases(&session, deadline).await });
        }
        Ok(accepted.epoch)
    }

    /// This process's worker and a free slot of it, for a run of `name` with contract
    /// `fingerprint` that it could start now; `None` when it does not claim (a client, or
    /// draining), does not serve the contract, is busy, or other sessions wait for a claim
    /// (their turn comes first).
    fn free_slot(
        &self,
        name: &str,
        fingerprint: &str,
    ) -> Option<(Arc<Worker>, tokio::sync::OwnedSemaphorePermit)> {
        let inner = &self.inner;
        let worker = inner
            .executor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        if !inner.claiming.load(Ordering::Acquire) || inner.contention.others_waiting() {
            return None;
        }
        inner.served.for_job(name, fingerprint)?;
        let permit = inner.slots.lease_to_run_now()?;
        Some((worker, permit))
    }

    /// Submits a run and waits for its outcome. The waiter is registered before the run
    /// exists, so it cannot miss the outcome and needs no first read.
    async fn submit_and_wait<O>(
        &self,
        session: &SessionId,
        submission: Result<Submission<'_>, Error>,
        started: Instant,
    ) -> RunOutcome<O>
    where
        O: DeserializeOwned + Send + 'static,
    {
        let client = &self.inner.client;
        let run = RunId::generate();
        let waiter = client.waiters.register(session, run);
        let submission = match submission {
            Ok(submission) => submission,
            Err(error) => return Err(failure(session, run, SystemTime::now(), started, error)),
        };
        let processor = submission.name.to_owned();
        // On a cluster, the session's `done` is listened to before the run exists.
        if let Err(error) = client.subscriptions.follow(session, false).await {
            return Err(failure(session, run, SystemTime::now(), started, error));
        }
        match self.submit_here(session, run, submission).await {
            Ok(epoch) => {
                let handle = RunHandle {
                    session: session.clone(),
                    run_id: run,
                    processor,
                    epoch: Some(epoch),
                };
                let deadline = self.inner.config.default_timeout;
                client
                    .wait(&handle, &waiter, deadline, started, false)
                    .await
            }
            Err(error) => Err(failure(session, run, SystemTime::now(), started, error)),
        }
    }

    /// Waits for the outcome of a run submitted by any process, for at most `deadline`
    /// (`None`: no limit).
    ///
    /// Ends with [`Error::Timeout`] when the deadline passes first (the run goes on),
    /// [`Error::SessionStopped`] when its session is stopped, [`Error::Cancelled`] when this
    /// runtime is stopped, [`Error::NotFound`] when the session has no such run (never
    /// submitted, or its outcome was trimmed after `result_ttl`), and
    /// [`Error::Serialization`] when the outcome is not an `O`. Dropping the future (a
    /// timeout of the caller's own) leaves nothing behind.
    pub async fn wait<O>(&self, handle: &RunHandle, deadline: Option<Duration>) -> RunOutcome<O>
    where
        O: DeserializeOwned + Send + 'static,
    {
        let started = Instant::now();
        let client = &self.inner.client;
        let waiter = client.waiters.register(&handle.session, handle.run_id);
        client.wait(handle, &waiter, deadline, started, true).await
    }

    /// Stops claiming, lets in-flight runs finish and commit for up to `timeout`, then
    /// stops the runtime (runs still in flight are released for other workers at once).
    ///
    /// # Errors
    /// As [`stop`](Runtime::stop).
    pub async fn drain(&self, timeout: Duration) -> Result<(), Error> {
        if let Some(claimer) = self.inner.lifecycle.lock().await.claimer.take() {
            self.inner.claiming.store(false, Ordering::Release);
            self.inner
                .executor
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            claimer.cancel();
        }
        let until = tokio::time::Instant::now() + timeout;
        self.inner.leases.all_returned(until).await;
        self.stop().await
    }

    /// The events kept in `session`'s stream, oldest first: at most `limit`, after the
    /// cursor `after` when given. Each comes with its cursor (an opaque string: the stream
    /// entry id, with the event's place when the entry holds a batch), so an observer that
    /// joins late (or reconnects) pages through what it missed, then follows
    /// [`subscribe_session`](Runtime::subscribe_session). Streams are capped at
    /// `events_max_len` entries (each one event or one worker's batch) and go with their
    /// session.
    ///
    /// # Errors
    /// [`Error::Validation`] when `after` is not a cursor this returned;
    /// [`Error::Unavailable`] when Redis cannot be reached; [`Error::Configuration`] before
    /// `start`.
    pub async fn replay(
        &self,
        session: &SessionId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Event)>, Error> {
        let inner = &self.inner;
        let after = match after {
            None => None,
            Some(text) => Some(reads::Cursor::parse(text).ok_or_else(|| {
                Error::validation(
                    "after",
                    format!("`{text}` is not a cursor returned by `replay`"),
                )
            })?),
        };
        let events = reads::events(
            &inner.redis,
            &inner.keys.session(session),
            after.as_ref(),
            limit.max(1),
        )
        .await
        .map_err(|e| e.into_error(&inner.redis.errors))?;
        Ok(events
            .into_iter()
            .filter_map(|(cursor, json)| Some((cursor, serde_json::from_value(json).ok()?)))
            .collect())
    }

    /// How many jobs this process holds a lease on right now.
    pub fn runs_in_flight(&self) -> usize {
        self.inner.leases.len()
    }

    /// How many runs this process executed and committed since it was made.
    pub fn committed_runs(&self) -> u64 {
        self.inner.counts.commits.load(Ordering::Relaxed)
    }

    /// How many commits this process made that Redis refused because the lease had moved on
    /// (the run was retried elsewhere, or its session stopped), counting attempts abandoned
    /// because their lease was lost before they could try to commit.
    pub fn refused_commits(&self) -> u64 {
        self.inner.counts.refused.load(Ordering::Relaxed)
    }

    /// How many runs callers in this process are awaiting (a wait dropped by its caller's own
    /// timeout leaves none behind).
    #[doc(hidden)]
    pub fn awaited_runs(&self) -> usize {
        self.inner.client.waiters.awaited()
    }

    /// How many of this worker's execution slots are free (a step that gave its slot back for
    /// a `ctx.call` and was dropped leaves none extra behind).
    #[doc(hidden)]
    pub fn free_slots(&self) -> usize {
        self.inner.slots.free()
    }

    async fn start_inner(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let mut lifecycle = inner.lifecycle.lock().await;
        if inner.client.is_running() {
            return Ok(());
        }
        inner.config.validate()?;
        let errors = &inner.redis.errors;
        let target = connection::target(&inner.config, errors)?;
        let conn = connection::connect(&target, errors, &inner.config, MIN_REDIS).await?;
        inner.redis.set(Some(conn));
        inner
            .redis
            .load(&protocol::all_scripts())
            .await
            .map_err(|e| e.into_error(errors))?;

        let stop = CancellationToken::new();
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let channels = inner.keys.standing_channels();
        let listener = Arc::new(Listener {
            redis: Arc::clone(&inner.redis),
            keys: inner.keys.clone(),
            events: inner.events.clone(),
            client: Arc::clone(&inner.client),
            leases: Arc::clone(&inner.leases),
            stops: Arc::clone(&inner.stops),
            wakeups: Arc::clone(&inner.wakeups),
            contention: Arc::clone(&inner.contention),
            watches: Arc::clone(&inner.watches),
            engine: inner.engine.clone(),
        });
        let reconnected = Arc::clone(&listener);
        let on_message = move |m: connection::Message| listener.on_message(&m.channel, &m.payload);
        let commands = Arc::clone(&inner.redis);
        let role = connection::Role::commands(&inner.config);
        let on_reconnect = move || {
            reconnected.on_reconnect();
            // Whatever dropped the subscriber likely dropped the command connection too, and
            // its manager reconnects unnamed.
            if let Ok(conn) = commands.conn() {
                connection::name_again(conn, role, commands.errors.clone());
            }
        };
        let subscriber = match &target {
            Target::Node(client) => tokio::spawn(connection::subscribe(
                (**client).clone(),
                errors.clone(),
                connection::Channels {
                    standing: channels,
                    on_demand: inner.client.subscriptions.on_demand(),
                },
                ready,
                stop.clone(),
                on_message,
                on_reconnect,
            )),
            Target::Cluster { .. } => tokio::spawn(subscriptions::run_cluster(
                subscriptions::Subscriber {
                    target: target.clone(),
                    config: Arc::clone(&inner.config),
                    errors: errors.clone(),
                    subscriptions: Arc::clone(&inner.client.subscriptions),
                    waiters: Arc::clone(&inner.client.waiters),
                },
                ready,
                stop.clone(),
                subscriptions::Handlers {
                    on_message,
                    on_reconnect,
                },
            )),
        };
        let mut tasks = vec![subscriber];
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
        let forwarding = Arc::new(Forwarding {
            redis: Arc::clone(&inner.redis),
            keys: inner.keys.clone(),
            config: Arc::clone(&inner.config),
            served: Arc::clone(&inner.served),
        });
        let (outbox, forwarder) =
            forwarder::start(forwarding, inner.engine.subscribe(), stop.clone());
        tasks.push(tokio::spawn(forwarder));
        inner.engine.start().await?;
        // Cancelled when this process stops taking jobs (`drain`, `stop`): the claimer ends,
        // and jobs leased ahead that wait for an execution slot are released.
        let claiming = stop.child_token();
        let worker = Arc::new(Worker {
            redis: Arc::clone(&inner.redis),
            keys: inner.keys.clone(),
            config: Arc::clone(&inner.config),
            engine: inner.engine.clone(),
            client: Arc::clone(&inner.client),
            leases: Arc::clone(&inner.leases),
            served: Arc::clone(&inner.served),
            limits: Arc::clone(&inner.limits),
            stops: Arc::clone(&inner.stops),
            outbox,
            claiming: Arc::clone(&inner.claiming),
            not_claiming: claiming.clone(),
            contention: Arc::clone(&inner.contention),
            watches: Arc::clone(&inner.watches),
            counts: Arc::clone(&inner.counts),
        });
        let mut claimer = None;
        if inner.config.worker {
            tasks.push(tokio::spawn(claimer::run(
                Arc::clone(&worker),
                Arc::clone(&inner.slots),
                Arc::clone(&inner.wakeups),
                claiming.clone(),
            )));
            tasks.push(tokio::spawn(renewer::run(
                Arc::clone(&worker),
                inner.worker_id.clone(),
                stop.clone(),
            )));
            tasks.push(tokio::spawn(sweeper::run(
                Arc::clone(&worker),
                stop.clone(),
            )));
            tasks.push(tokio::spawn(promoter::run(
                Arc::clone(&worker),
                stop.clone(),
            )));
            claimer = Some(claiming);
        }
        lifecycle.claimer = claimer;
        lifecycle.tasks = tasks;
        lifecycle.stop = stop.clone();
        if inner.config.worker {
            *inner.executor.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&worker));
        }
        lifecycle.worker = Some(worker);
        inner.claiming.store(inner.config.worker, Ordering::Release);
        inner.client.set_running(Some(stop));
        tracing::info!(redis = %inner.config, worker = inner.config.worker, "redis runtime started");
        Ok(())
    }

    async fn stop_inner(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let mut lifecycle = inner.lifecycle.lock().await;
        if !inner.client.is_running() {
            return Ok(());
        }
        inner.client.set_running(None);
        inner.claiming.store(false, Ordering::Release);
        inner
            .executor
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(claimer) = lifecycle.claimer.take() {
            claimer.cancel();
        }
        // Runs in flight end with `Cancelled` (after the cancel grace); their workers release
        // the leases at once.
        inner.engine.stop().await?;
        inner
            .leases
            .all_returned(tokio::time::Instant::now() + STOP_GRACE)
            .await;
        lifecycle.stop.cancel();
        for task in lifecycle.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(worker) = lifecycle.worker.take()
            && inner.config.worker
        {
            renewer::farewell(&worker, &inner.worker_id).await;
        }
        tracing::info!("redis runtime stopped");
        Ok(())
    }

    async fn stop_session_inner(&self, session: &SessionId) -> Result<(), Error> {
        let inner = &self.inner;
        if !inner.client.is_running() {
            return Err(not_started());
        }
        let (redis, keys) = (&inner.redis, &inner.keys);
        let unavailable = |e: protocol::WireError| e.into_error(&redis.errors);
        // The registration as it was before the stop: a registration made after (a new
        // session under the same id) is not forgotten below.
        let registered = reads::registration(redis, keys, session.as_str())
            .await
            .map_err(unavailable)?;
        protocol::stop::stop_session(redis, &keys.session(session))
            .await
            .map_err(unavailable)?;
        if let Some(score) = registered {
            schedule::forget(redis, keys, session.as_str(), score, Duration::ZERO)
                .await
                .map_err(unavailable)?;
        }
        // Two slots on a cluster: two commands, in flight together.
        let (mut first, mut second) = (
            redis.conn().map_err(unavailable)?,
            redis.conn().map_err(unavailable)?,
        );
        let (mut untime, mut unwatch) = (redis::cmd("ZREM"), redis::cmd("ZREM"));
        untime.arg(keys.timers()).arg(session.as_str());
        unwatch.arg(keys.leasing()).arg(session.as_str());
        let (timers, leasing) = tokio::join!(
            untime.query_async::<i64>(&mut first),
            unwatch.query_async::<i64>(&mut second),
        );
        timers
            .and(leasing)
            .map_err(|e| redis.errors.unavailable(&e))?;
        let nonce = RunId::generate().to_string();
        let answers = inner.stops.expect(&nonce);
        let announce = Control::Stop {
            session: session.clone(),
            nonce: Some(nonce.clone()),
        };
        let heard = messages::publish(redis, &keys.control_channel(), &announce)
            .await
            .map_err(unavailable)?;
        if registered.is_some() {
            let stopped = Event {
                session: session.clone(),
                run_id: None,
                processor: None,
                at: SystemTime::now(),
                kind: EventKind::SessionStopped,
            };
            let stopped = serde_json::to_string(&stopped)?;
            messages::publish(redis, &keys.events_channel(session), &stopped)
                .await
                .map_err(unavailable)?;
        }
        inner.client.waiters.session_stopped(session);
        inner.client.forget_registration(session);
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
        self.inner.served.remove(name);
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
        self.inner.client.is_running()
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
        reads::sessions(&inner.redis, &inner.keys)
            .await
            .map_err(|e| e.into_error(&inner.redis.errors))
    }

    async fn stats(&self) -> Result<RuntimeStats, Error> {
        let inner = &self.inner;
        let mut stats = inner.engine.stats().await?;
        let (sessions, totals) = reads::totals(&inner.redis, &inner.keys)
            .await
            .map_err(|e| e.into_error(&inner.redis.errors))?;
        let merged = merge_totals(BTreeMap::new(), totals);
        stats.active_sessions = sessions;
        stats.completed = merged.values().map(|q| q.completed).sum();
        stats.failed = merged.values().map(|q| q.failed).sum();
        Ok(stats)
    }

    async fn session_stats(&self, session: &SessionId) -> Result<SessionStats, Error> {
        let inner = &self.inner;
        let local = inner.engine.session_stats(session).await?;
        let (leased, totals) = reads::session_stats(&inner.redis, &inner.keys.session(session))
            .await
            .map_err(|e| e.into_error(&inner.redis.errors))?;
        Ok(SessionStats {
            session: session.clone(),
            running_runs: leased,
            processors: merge_totals(local.processors, totals),
        })
    }

    async fn queue_stats(&self) -> Result<BTreeMap<String, QueueStats>, Error> {
        let inner = &self.inner;
        let local = inner.engine.queue_stats().await?;
        let totals = reads::stats(&inner.redis, &inner.keys)
            .await
            .map_err(|e| e.into_error(&inner.redis.errors))?;
        Ok(merge_totals(local, totals))
    }

    fn subscribe(&self) -> EventStream {
        self.inner.events.subscribe(None)
    }

    fn subscribe_session(&self, session: &SessionId) -> EventStream {
        let stream = self.inner.events.subscribe(Some(session.clone()));
        // On a cluster, the session's events channel is listened to from now on (until the
        // session stops); on one node every session's already is.
        if self.inner.config.is_cluster()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let subscriptions = Arc::clone(&self.inner.client.subscriptions);
            let session = session.clone();
            runtime.spawn(async move {
                if let Err(error) = subscriptions.follow(&session, true).await {
                    tracing::warn!(%session, %error, "following the session's events failed");
                }
            });
        }
        stream
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
        let Some(info) = self.inner.engine.processor_info(name) else {
            return detached(Error::not_found("processor", name, self.registered()));
        };
        let (input_type, output_type) = (&info.contract.input, &info.contract.output);
        if input_type != std::any::type_name::<I>() || output_type != std::any::type_name::<O>() {
            return detached(Error::configuration(format!(
                "processor `{name}` maps `{input_type}` to `{output_type}`, but was called with `{}` to `{}`",
                std::any::type_name::<I>(),
                std::any::type_name::<O>(),
            )));
        }
        let fingerprint = job_fingerprint(info.contract.fingerprint, info.plan.fingerprint);
        let submission = serde_json::to_string(&input)
            .map_err(Error::from)
            .map(|input| Submission {
                name,
                fingerprint: &fingerprint,
                priority: info.config.priority,
                input,
                call: None,
                lease: false,
                redact: self.known(name).is_some_and(|(_, redacted)| redacted),
            });
        self.submit_and_wait(session, submission, started).await
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
        self.inner.known.note(processor);
        let fingerprint = job_fingerprint(
            processor.contract().fingerprint,
            processor.plan().fingerprint,
        );
        let submission = serde_json::to_string(&input)
            .map_err(Error::from)
            .map(|input| Submission {
                name: processor.name(),
                fingerprint: &fingerprint,
                priority: processor.config().priority,
                input,
                call: None,
                lease: false,
                redact: inspect::redacts(processor),
            });
        self.submit_and_wait(session, submission, started).await
    }
}
