//! Submitting runs and awaiting their outcomes, from any process. A session is registered
//! before this process first submits to it (so the sweeper can find it whatever happens to
//! its scheduling); a run is queued by `submit.lua` and, when its session had no ready job,
//! the session is enlisted in the fair schedule.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::config::RedisConfig;
use super::keys::{JobId, Keys};
use super::outgoing;
use super::protocol::body::Body;
use super::protocol::claim::LeasedJob;
use super::protocol::reads;
use super::protocol::schedule::{self, Generation};
use super::protocol::submit::{NewRun, RunQueued, Submit, Submitted};
use super::protocol::{Redis, Token};
use super::served::failure;
use super::subscriptions::Subscriptions;
use super::waiters::{Waiter, Waiters};
use crate::event::{EventBus, EventKind};
use crate::{Error, Event, RunFailure, RunId, RunOutcome, RunResult, SessionId};

/// How often a waiter re-checks the outcome even without a `done` message.
const RECHECK: Duration = Duration::from_secs(1);

/// A submitted run: enough to await its outcome from any process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The session the run belongs to.
    pub session: SessionId,
    /// The run's id (also `meta.run_id` of its outcome).
    pub run_id: RunId,
    /// The processor it runs.
    pub processor: String,
    /// Which incarnation of the session id the run was queued in (a stopped session's id
    /// can be used again): a run whose session was stopped meanwhile ends with
    /// [`Error::SessionStopped`], not [`Error::NotFound`]. `None` for a handle made by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// A run to submit.
pub(crate) struct Submission<'a> {
    pub(crate) name: &'a str,
    /// Its jobs' fingerprint (`served::job_fingerprint`).
    pub(crate) fingerprint: &'a str,
    pub(crate) priority: i32,
    /// The input, encoded as JSON.
    pub(crate) input: String,
    /// For a `ctx.call` run as a child run: the calling job and its lease token, the calling
    /// run and the depth the child runs at.
    pub(crate) call: Option<ChildOf>,
    /// Lease the run to this process when it can start at once (this process serves it and
    /// holds a free slot for it).
    pub(crate) lease: bool,
    /// Its processor, or one it contains, is configured with `redact`: the body says so, for
    /// inspection in processes that do not know the processor.
    pub(crate) redact: bool,
}

/// A run on its way to `submit.lua` (owned: it may wait for the next call of its session).
pub(crate) struct Outgoing {
    pub(crate) run: RunId,
    pub(crate) name: String,
    pub(crate) fingerprint: String,
    pub(crate) priority: i32,
    pub(crate) lease: bool,
    /// The encoded body (`protocol::body`).
    pub(crate) body: Vec<u8>,
}

/// A run Redis accepted.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// `false`: it existed already (a child call whose caller runs again).
    pub(crate) fresh: bool,
    /// The session's epoch (which incarnation of its id the run was queued in).
    pub(crate) epoch: u64,
    /// Leased to this process: start it now.
    pub(crate) leased: Option<LeasedJob>,
}

/// What one `submit.lua` call did with its runs.
pub(crate) struct Written {
    session: SessionId,
    epoch: u64,
    runs: Vec<RunQueued>,
    /// The records of the runs leased to this process, in order.
    leased: Vec<LeasedJob>,
}

impl Written {
    /// What became of each of `runs` (the runs of the call, in order): accepted, or refused
    /// at the session's queue quota.
    pub(crate) fn accepted(
        self,
        runs: &[Outgoing],
        config: &RedisConfig,
    ) -> Vec<Result<Accepted, Error>> {
        let mut leased = self.leased.into_iter();
        runs.iter()
            .enumerate()
            .map(|(at, run)| {
                let status = self.runs.get(at).copied().unwrap_or(RunQueued::Quota);
                match status {
                    RunQueued::Quota => Err(Error::resource(
                        format!("session `{}` queue", self.session),
                        format!(
                            "{} jobs are already queued (the session's quota)",
                            config.max_queued
                        ),
                    )),
                    status => Ok(Accepted {
                        fresh: status != RunQueued::Duplicate,
                        epoch: self.epoch,
                        leased: (status == RunQueued::Leased)
                            .then(|| leased.next())
                            .flatten()
                            .map(|mut job| {
                                job.body.clone_from(&run.body);
                                job
                            }),
                    }),
                }
            })
            .collect()
    }
}

/// The caller of a child run.
pub(crate) struct ChildOf {
    pub(crate) job: JobId,
    pub(crate) token: Token,
    pub(crate) run: RunId,
    pub(crate) depth: u32,
}

/// Submits runs and awaits outcomes.
pub(crate) struct Client {
    pub(crate) redis: Arc<Redis>,
    pub(crate) keys: Keys,
    pub(crate) config: Arc<RedisConfig>,
    pub(crate) waiters: Arc<Waiters>,
    /// The sessions whose channels this process listens on (on a cluster).
    pub(crate) subscriptions: Arc<Subscriptions>,
    /// Sessions this process registered (dropped when it hears they stopped, and all of them
    /// when its subscription reconnects: it may have missed a stop).
    registered: Mutex<HashSet<SessionId>>,
    /// Runs waiting for their session's next `submit.lua` call.
    pub(crate) gathering: outgoing::Gathering,
    running: AtomicBool,
    /// Fired by the runtime's `stop`: every wait ends.
    stopped: Mutex<CancellationToken>,
}

impl Client {
    /// `events`: the process' event bus, which says when the `events` channel is needed.
    pub(crate) fn new(
        redis: Arc<Redis>,
        keys: Keys,
        config: Arc<RedisConfig>,
        events: EventBus,
    ) -> Self {
        let stopped = CancellationToken::new();
        stopped.cancel();
        let waiters = Arc::new(Waiters::default());
        Client {
            subscriptions: Arc::new(Subscriptions::new(
                keys.clone(),
                Arc::clone(&waiters),
                events,
            )),
            redis,
            keys,
            config,
            waiters,
            registered: Mutex::default(),
            gathering: outgoing::Gathering::default(),
            running: AtomicBool::new(false),
            stopped: Mutex::new(stopped),
        }
    }

    /// Started (with the token `stop` fires) or stopped.
    pub(crate) fn set_running(&self, stop: Option<CancellationToken>) {
        match stop {
            Some(token) => {
                *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = token;
                self.running.store(true, Ordering::Release);
            }
            None => self.running.store(false, Ordering::Release),
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    fn stop_token(&self) -> CancellationToken {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn unavailable(&self, error: super::protocol::WireError) -> Error {
        error.into_error(&self.redis.errors)
    }

    /// This process no longer counts `session` as registered (it heard it stopped).
    pub(crate) fn forget_registration(&self, session: &SessionId) {
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }

    /// After a reconnect: stops may have gone unheard, so every session is registered again
    /// before its next submission.
    pub(crate) fn forget_registrations(&self) {
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    async fn register(&self, session: &SessionId) -> Result<(), Error> {
        schedule::register(&self.redis, &self.keys, session)
            .await
            .map_err(|e| self.unavailable(e))?;
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.clone());
        Ok(())
    }

    /// Schedules `session`, whose ready jobs have generation `generation`. A failure is logged, not
    /// returned: the run is queued, and the sweeper's full pass schedules the session.
    pub(crate) async fn enlist(&self, session: &SessionId, generation: Generation) {
        if let Err(error) = schedule::enlist(&self.redis, &self.keys, session, generation).await {
            tracing::warn!(%session, error = %self.unavailable(error), "scheduling a session failed; the sweeper's full pass will");
        }
    }

    /// Queues run `run` in `session` (or leases it to this process, when `submission.lease`
    /// asks and it can start at once). A run of a `ctx.call` goes at once; other runs
    /// submitted to one session while one of its submissions is in flight gather and go
    /// together, as the next `submit.lua` call (`outgoing.rs`).
    ///
    /// # Errors
    /// [`Error::Configuration`] before `start`; [`Error::Resource`] for an input over the
    /// payload limit or a session at its queue quota; [`Error::SessionStopped`] when the
    /// session is being stopped (or a child's caller lost its lease); [`Error::Unavailable`]
    /// when Redis cannot be reached. Nothing is written in any of these cases.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        session: &SessionId,
        run: RunId,
        submission: Submission<'_>,
    ) -> Result<Accepted, Error> {
        if !self.is_running() {
            return Err(not_started());
        }
        let Submission {
            name,
            fingerprint,
            priority,
            input,
            call,
            lease,
            redact,
        } = submission;
        if input.len() > self.config.max_payload_bytes {
            return Err(Error::resource(
                "payload",
                format!(
                    "the input of `{name}` is {} bytes; the limit is {}",
                    input.len(),
                    self.config.max_payload_bytes
                ),
            ));
        }
        let body = Body {
            step: None,
            call: call.as_ref().map(|c| (c.run, c.depth)),
            chunks: None,
            // The submitter's span (a `ctx.call`'s: the calling step's), with `otel`.
            trace: super::trace::current(),
            redact,
            input: input.into_bytes(),
        }
        .encode();
        let run = Outgoing {
            run,
            name: name.to_owned(),
            fingerprint: fingerprint.to_owned(),
            priority,
            lease,
            body,
        };
        match call {
            Some(caller) => {
                let runs = std::slice::from_ref(&run);
                let written = self
                    .write(session, Some((caller.job, caller.token)), runs)
                    .await?;
                let accepted = written.accepted(runs, &self.config).into_iter().next();
                accepted.unwrap_or_else(|| Err(Error::resource("submit", "no answer for the run")))
            }
            None => outgoing::send(self, session, run).await,
        }
    }

    /// One `submit.lua` call for `runs` of `session`: the session is registered first when
    /// this process has not registered it (again when the call created it), and enlisted
    /// when it got ready jobs.
    pub(crate) async fn write(
        &self,
        session: &SessionId,
        caller: Option<(JobId, Token)>,
        runs: &[Outgoing],
    ) -> Result<Written, Error> {
        self.write_retry(session, caller, None, runs)
            .await?
            .map_err(|run| {
                Error::configuration(format!(
                    "a submission without a retry was answered as the retry `{run}`"
                ))
            })
    }

    /// [`write`](Self::write), as the retry of `retry_of` when given (`runs` then holds the
    /// one new run): `Err(run)` when `run` retried it already and nothing was written.
    pub(crate) async fn write_retry(
        &self,
        session: &SessionId,
        caller: Option<(JobId, Token)>,
        retry_of: Option<RunId>,
        runs: &[Outgoing],
    ) -> Result<Result<Written, RunId>, Error> {
        let known = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(session);
        if !known {
            self.register(session).await?;
        }
        let created = serde_json::to_string(&Event {
            session: session.clone(),
            run_id: None,
            processor: None,
            at: SystemTime::now(),
            kind: EventKind::SessionCreated,
        })?;
        let keys = self.keys.session(session);
        let new_runs: Vec<NewRun<'_>> = runs
            .iter()
            .map(|run| NewRun {
                run: run.run,
                fingerprint: &run.fingerprint,
                priority: run.priority,
                name: &run.name,
                lease: run.lease,
                body: &run.body,
            })
            .collect();
        let submitted = Submit {
            session: &keys,
            max_queued: self.config.max_queued,
            created_event: &created,
            events_channel: &self.keys.events_channel(session),
            events_max_len: self.config.events_max_len,
            caller,
            lease: self.config.lease,
            quota: self.config.session_concurrency,
            retry_of,
            runs: &new_runs,
        }
        .call(&self.redis)
        .await
        .map_err(|e| self.unavailable(e))?;
        match submitted {
            Submitted::Queued {
                created,
                epoch,
                enlist,
                runs,
                leased,
            } => {
                if created {
                    // A stop that raced our registration may have taken it away: the
                    // session now exists, so it is registered again.
                    if let Err(error) = self.register(session).await {
                        tracing::warn!(%session, %error, "registering a new session failed; it is registered at its next submission");
                    }
                }
                if let Some(generation) = enlist {
                    self.enlist(session, generation).await;
                }
                Ok(Ok(Written {
                    session: session.clone(),
                    epoch,
                    runs,
                    leased,
                }))
            }
            Submitted::Retried(run) => Ok(Err(run)),
            Submitted::NotRetryable => Err(Error::validation(
                "run",
                format!(
                    "run `{}` of session `{session}` is neither failed nor dead-lettered: only those can be retried",
                    retry_of.map(|r| r.to_string()).unwrap_or_default()
                ),
            )),
            Submitted::Stopping | Submitted::CallerGone => Err(Error::SessionStopped {
                session: session.to_string(),
            }),
        }
    }

    /// Waits on `waiter` for the outcome of `handle`'s run, for at most `deadline`;
    /// `read_first`: read the stored outcome before the first notification (unless the waiter
    /// was registered before the run was submitted).
    pub(crate) async fn wait<O>(
        &self,
        handle: &RunHandle,
        waiter: &Waiter,
        deadline: Option<Duration>,
        started: Instant,
        read_first: bool,
    ) -> RunOutcome<O>
    where
        O: DeserializeOwned + Send + 'static,
    {
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
        let stop = self.stop_token();
        if stop.is_cancelled() {
            return fail(not_started());
        }
        // On a cluster, the session's `done` is listened to before the outcome is read.
        if let Err(error) = self.subscriptions.follow(&handle.session, false).await {
            return fail(error);
        }
        let until = deadline.map(|d| tokio::time::Instant::now() + d);
        let keys = self.keys.session(&handle.session);
        let mut read = read_first;
        loop {
            if waiter.slot.stopped.load(Ordering::SeqCst) {
                return fail(Error::SessionStopped {
                    session: handle.session.to_string(),
                });
            }
            if let Some(typed) = waiter.take_handoff()
                && let Ok(outcome) = typed.downcast::<RunOutcome<O>>()
            {
                return *outcome;
            }
            if let Some(wire) = waiter.take_delivered() {
                return decode(&wire, handle, started);
            }
            if read {
                match reads::run_status(&self.redis, &keys, handle.run_id).await {
                    Ok(status) => match (status.outcome, status.live, status.epoch) {
                        (Some(wire), _, _) => return decode(&wire, handle, started),
                        (None, true, _) => {}
                        // No session, or another incarnation of its id: the run's session
                        // was stopped (or expired) since.
                        (None, false, epoch)
                            if epoch.is_none()
                                || (handle.epoch.is_some() && epoch != handle.epoch) =>
                        {
                            return fail(Error::SessionStopped {
                                session: handle.session.to_string(),
                            });
                        }
                        (None, false, _) => {
                            return fail(Error::not_found(
                                "run",
                                handle.run_id.to_string(),
                                std::iter::empty::<String>(),
                            ));
                        }
                    },
                    Err(error) => {
                        tracing::debug!(error = %self.unavailable(error), "reading an outcome failed; retrying");
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
                () = waiter.slot.notify.notified() => {}
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
}

pub(crate) fn not_started() -> Error {
    Error::configuration("the Redis runtime is not started: call `start().await` before executing")
}

/// A stored outcome: written by a worker's commit (`Ok`/`Err`), or by `bury.lua` (`Dead`,
/// `Unserved`).
#[derive(Deserialize)]
enum WireOutcome<T> {
    Ok(RunResult<T>),
    Err(RunFailure),
    Dead { deliveries: u32, created_ms: u64 },
    Unserved { name: String, fingerprint: String },
}

#[allow(clippy::result_large_err)] // `RunOutcome` is the contract's type.
pub(crate) fn decode<O: DeserializeOwned>(
    wire: &str,
    handle: &RunHandle,
    started: Instant,
) -> RunOutcome<O> {
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
