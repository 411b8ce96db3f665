//! Executing one claimed job: run it (a whole run, or one step of a run executed step by
//! step: `steps.rs`), then commit it (through the forwarder, behind its events), park it (its
//! step waits in Redis), or release it (this process stops before the job finished).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::calls::Caller;
use super::client::Client;
use super::config::RedisConfig;
use super::forwarder::{CommitBody, Outbox, Reply};
use super::hooks::{FinishedSteps, JobHooks};
use super::job::ClaimedJob;
use super::keys::Keys;
use super::leases::{Lease, LeaseTable};
use super::limits::Limits;
use super::protocol::advance::{Advanced, HandOff, Stage};
use super::protocol::body::Body;
use super::protocol::commit::Ending;
use super::protocol::messages::{self, Control, Done};
use super::protocol::release::Release;
use super::protocol::{Redis, WireError, timers};
use super::served::{Assignment, Executed, Served, ServedTable, failure};
use super::slots::{self, JobSlot};
use super::steps::{self, StepContext};
use super::stops::Stops;
use super::trace;
use super::watches::Watches;
use crate::runtime::embed::{Embedding, Wait, Waits};
use crate::{Error, LocalRuntime, RunOutcome, SessionId};

/// Whether this worker saw other sessions waiting for a claim (the schedule, as of its last
/// look, and every wake since): a commit hands successors to its own worker only when none
/// waits, so a run never keeps a slot from the fair order (invariant 5).
#[derive(Default)]
pub(crate) struct Contention {
    others: AtomicBool,
    /// Wakes heard so far: a look at the schedule sent before a wake does not undo it.
    wakes: AtomicU64,
}

impl Contention {
    /// A `wake` named a session that got ready jobs (or messages may have been missed).
    pub(crate) fn woken(&self) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.others.store(true, Ordering::SeqCst);
    }

    /// The wakes heard so far: taken before a look at the schedule, given to [`looked`].
    ///
    /// [`looked`]: Contention::looked
    pub(crate) fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::SeqCst)
    }

    /// A look at the schedule, sent when `wakes` wakes had been heard, saw others waiting or
    /// not; a wake heard since stands.
    pub(crate) fn looked(&self, others_waiting: bool, wakes: u64) {
        if others_waiting {
            self.others.store(true, Ordering::SeqCst);
            return;
        }
        self.others.store(false, Ordering::SeqCst);
        if self.wakes.load(Ordering::SeqCst) != wakes {
            self.others.store(true, Ordering::SeqCst);
        }
    }

    pub(crate) fn others_waiting(&self) -> bool {
        self.others.load(Ordering::SeqCst)
    }
}

/// What this worker counted.
#[derive(Default)]
pub(crate) struct Counts {
    /// Runs executed here whose outcome this process committed.
    pub(crate) commits: AtomicU64,
    /// Commits (and releases) refused because the lease had moved on.
    pub(crate) refused: AtomicU64,
}

/// What a worker needs to execute jobs: built by the runtime at start, shared by its tasks.
pub(crate) struct Worker {
    pub(crate) redis: Arc<Redis>,
    pub(crate) keys: Keys,
    pub(crate) config: Arc<RedisConfig>,
    pub(crate) engine: LocalRuntime,
    pub(crate) client: Arc<Client>,
    pub(crate) leases: Arc<LeaseTable>,
    pub(crate) served: Arc<ServedTable>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) stops: Arc<Stops>,
    pub(crate) outbox: Outbox,
    /// Whether this process takes new jobs: false while it drains or stops, so a commit no
    /// longer hands it a successor (a long chain would otherwise never let it drain).
    pub(crate) claiming: Arc<AtomicBool>,
    /// Fires when this process stops taking new jobs (drain or stop): a job leased ahead that
    /// still waits for an execution slot is released then, for another worker.
    pub(crate) not_claiming: CancellationToken,
    pub(crate) contention: Arc<Contention>,
    /// The lease deadlines this process asked the sweeper to watch.
    pub(crate) watches: Arc<Watches>,
    pub(crate) counts: Arc<Counts>,
}

impl Worker {
    /// Makes the sweeper look at `session` by its new leases' `deadline`, unless this process
    /// already did by an earlier deadline still ahead (`watches.rs`). If this process dies
    /// before, the sweeper's full pass finds the leases.
    pub(crate) async fn watch_leases(&self, session: &SessionId, deadline: u64) {
        let margin = self.config.lease / 3;
        if !self.watches.needs(session, deadline, margin) {
            return;
        }
        match timers::watch(&self.redis, &self.keys, session, deadline).await {
            Ok(()) => self.watches.record(session, deadline),
            Err(error) => {
                tracing::warn!(%session, error = %error.into_error(&self.redis.errors), "watching new leases failed; the sweeper's full pass finds them");
            }
        }
    }
}

/// Executes `job`, then every successor its commits hand to this worker, on `slot`. Boxed:
/// a commit that hands over several jobs spawns this for the others.
pub(crate) fn execute(
    worker: Arc<Worker>,
    job: ClaimedJob,
    slot: Arc<JobSlot>,
) -> BoxFuture<'static, ()> {
    async move {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            next = execute_one(&worker, job, &slot).await;
        }
    }
    .boxed()
}

async fn execute_one(
    worker: &Arc<Worker>,
    job: ClaimedJob,
    slot: &Arc<JobSlot>,
) -> Option<ClaimedJob> {
    let body = Body::decode(&job.leased.body);
    // The run's span in this process: its steps' spans are its children, and it is itself
    // the child of the trace context the job carries (with `otel`), so a run's jobs, on
    // whichever workers, are one trace. A child call runs under its caller's run id.
    let run = match &body {
        Ok(Body {
            call: Some((caller, _)),
            ..
        }) => *caller,
        _ => job.run(),
    };
    let span = tracing::info_span!(
        "am2z.run",
        session = %job.session,
        run = %run,
        processor = %job.leased.name,
        job = %job.id(),
        delivery = job.leased.deliveries,
    );
    if let Ok(body) = &body {
        trace::adopt(&span, body.trace.as_deref());
    }
    async move {
        let instances = match &body {
            Ok(Body {
                step: Some(position),
                ..
            }) => steps::instances_of(position),
            _ => Vec::new(),
        };
        let lease = worker
            .leases
            .hold(&job.session, job.id(), job.token(), instances);
        let served = worker
            .served
            .for_job(&job.leased.name, &job.leased.fingerprint);
        let Some(served) = served else {
            release(worker, &job).await;
            return None;
        };
        // A job leased ahead waits here for an execution slot; the usual job finds one free
        // and sets up none of the wait's futures and timer.
        if !slot.try_start() {
            tokio::select! {
                biased;
                () = slot.start() => {}
                // Its lease moved on, or its run ended elsewhere: nothing ran, nothing to commit.
                () = lease.lost.cancelled() => return None,
                () = lease.moot.cancelled() => return None,
                () = worker.not_claiming.cancelled() => {
                    release(worker, &job).await;
                    return None;
                }
                // The runs ahead of it turned long: another worker may run it now.
                () = tokio::time::sleep(slots::WAIT_AT_MOST) => {
                    release(worker, &job).await;
                    return None;
                }
            }
        }
        // A stop of the session heard since the claim was sent (or while the job waited): the
        // job may be the stopped session's (then the release is refused), or a new one's
        // (then it is claimed again).
        if worker.stops.heard_since(&job.session, job.asked) {
            release(worker, &job).await;
            return None;
        }
        let hooks = Arc::new(JobHooks::new(
            Arc::clone(&worker.limits),
            Caller::of(
                &job,
                Arc::clone(&worker.client),
                Arc::clone(&worker.served),
                Arc::clone(slot),
            ),
            worker.config.max_payload_bytes,
        ));
        let mut body = match body {
            Ok(body) => body,
            Err(error) => {
                return fail_unreadable(worker, &job, served.as_ref(), &hooks, error, slot).await;
            }
        };
        // A big input was staged in chunks of the run's hash: read it back, a slice at a time.
        if let Some(chunks) = body.chunks {
            let prefix = format!("v:{}:", job.id());
            match steps::unstage(&worker.redis, &worker.keys, &job, &prefix, chunks).await {
                Some(Ok(input)) => body.input = input,
                Some(Err(error)) => {
                    return fail_unreadable(worker, &job, served.as_ref(), &hooks, error, slot)
                        .await;
                }
                None => {
                    release(worker, &job).await;
                    return None;
                }
            }
        }
        if starts_run(&job, &body) {
            // On the executor's bus, ahead of the steps' events: it reaches the session's
            // stream with them, in the same commit batch.
            worker
                .engine
                .publish_run_started(&job.session, job.run(), &job.leased.name);
        }
        // A child call is one job, whatever its processor (it answers one `ctx.call`).
        let graph = served.graph().cloned();
        let step_by_step = body.step.is_some()
            || (worker.config.step_jobs && body.call.is_none() && graph.is_some());
        match graph {
            Some(graph) if step_by_step => {
                let ctx = step_context(
                    worker,
                    served.as_ref(),
                    Arc::clone(&hooks),
                    body.trace.as_ref(),
                );
                let signals = steps::Signals {
                    lost: &lease.lost,
                    moot: &lease.moot,
                };
                let ran = steps::run(&ctx, &job, &body, served.as_ref(), &graph, signals).await;
                slot.rest();
                match ran {
                    steps::Ran::Advance(mut advance) => {
                        advance.commit.consumed = body.chunks.unwrap_or(0);
                        advance.commit.finished = hooks.take_finished();
                        advance_run(worker, &job, *advance, slot).await
                    }
                    steps::Ran::Park { wait, attempts } => {
                        park(worker, &job, wait, attempts).await;
                        None
                    }
                    steps::Ran::Release => {
                        release(worker, &job).await;
                        None
                    }
                }
            }
            _ => whole_run(worker, &job, &body, served, hooks, &lease, slot).await,
        }
    }
    .instrument(span)
    .await
}

/// Whether executing `job` starts its run: the run's entry job at its first delivery, not
/// resumed after a wait. A redelivery (its worker died or lost the lease), a later step job
/// and a `ctx.call` run (part of its caller's run) do not.
fn starts_run(job: &ClaimedJob, body: &Body) -> bool {
    job.is_entry() && body.call.is_none() && job.leased.deliveries <= 1 && job.leased.attempt == 0
}

fn step_context<'a>(
    worker: &'a Worker,
    served: &'a dyn Served,
    hooks: Arc<JobHooks>,
    trace: Option<&'a String>,
) -> StepContext<'a> {
    StepContext {
        engine: &worker.engine,
        redis: &worker.redis,
        keys: &worker.keys,
        config: &worker.config,
        hooks,
        step_fp: served.step_fingerprint().unwrap_or_default(),
        trace,
    }
}

/// A job whose body does not read: its run fails at once with the reason, and is
/// dead-lettered.
async fn fail_unreadable(
    worker: &Arc<Worker>,
    job: &ClaimedJob,
    served: &dyn Served,
    hooks: &Arc<JobHooks>,
    error: Error,
    slot: &Arc<JobSlot>,
) -> Option<ClaimedJob> {
    // Nothing runs: the execution slot goes to the next job at once.
    slot.rest();
    // Named as an undecodable input is: which processor, which type, and why.
    let error = Error::Serialization {
        message: format!(
            "the input of `{}` is not a `{}`: {}",
            job.leased.name,
            served.input_type(),
            match error {
                Error::Serialization { message } => message,
                other => other.to_string(),
            }
        ),
    };
    if job.is_entry() {
        let failed: RunOutcome<crate::portable::Json> = Err(failure(
            &job.session,
            job.run(),
            UNIX_EPOCH + Duration::from_millis(job.leased.created_ms),
            job.asked,
            error,
        ));
        let wire = serde_json::to_string(&failed).unwrap_or_default();
        let failed = Box::new(failed);
        commit_end(worker, job, wire, false, true, failed, Vec::new()).await
    } else {
        let ctx = step_context(worker, served, Arc::clone(hooks), None);
        let advance = steps::fail_run(&ctx, job, error);
        advance_run(worker, job, advance, slot).await
    }
}

/// Executes a run as one job: the whole run in this process, then one commit; returns the
/// session's next job when the commit leased one for the slot it frees.
async fn whole_run(
    worker: &Arc<Worker>,
    job: &ClaimedJob,
    body: &Body,
    served: Arc<dyn Served>,
    hooks: Arc<JobHooks>,
    lease: &Lease,
    slot: &JobSlot,
) -> Option<ClaimedJob> {
    let cancel = CancellationToken::new();
    let (run_id, depth) = match body.call {
        // A child run runs under its caller's run id, one call level deeper.
        Some((caller, depth)) => (caller, depth),
        None => (job.run(), 0),
    };
    let embedding = Arc::new(Embedding {
        run_id,
        created_at: UNIX_EPOCH + Duration::from_millis(job.leased.created_ms),
        depth,
        part_of_run: body.call.is_some(),
        cancel: cancel.clone(),
        hooks: Arc::clone(&hooks) as _,
        // A single step's waits go to Redis' due-time set, as a step job's do.
        waits: served
            .is_step()
            .then(|| Waits::resuming_at(job.leased.attempt)),
    });
    let running = served.execute(Assignment {
        engine: &worker.engine,
        session: &job.session,
        input: &body.input,
        run_id: job.run(),
        embedding,
        attempts_before: job.leased.attempts,
        created_at: UNIX_EPOCH + Duration::from_millis(job.leased.created_ms),
        max_bytes: worker.config.max_payload_bytes,
    });
    tokio::pin!(running);
    let executed = tokio::select! {
        biased;
        executed = &mut running => executed,
        () = lease.lost.cancelled() => {
            // Abandoned: the step sees its token fire (and gets the cancel grace); its commit
            // would be refused.
            cancel.cancel();
            let _ = running.await;
            worker.counts.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        () = lease.moot.cancelled() => {
            // Its run ended elsewhere (`cancel_run`): the step sees its token fire; there is
            // nothing to commit (the run's end removed the job).
            cancel.cancel();
            let _ = running.await;
            return None;
        }
    };
    // The processor returned: its execution slot goes to the next job now, not after the
    // commit's round trip.
    slot.rest();
    match executed {
        Executed {
            waits: Some((wait, attempts)),
            ..
        } => {
            park(worker, job, wait, attempts).await;
            None
        }
        executed if executed.cancelled_here => {
            release(worker, job).await;
            None
        }
        executed => {
            commit_end(
                worker,
                job,
                executed.wire,
                executed.ok,
                executed.undecodable,
                executed.typed,
                hooks.take_finished(),
            )
            .await
        }
    }
}

fn refused(worker: &Worker, job: &ClaimedJob) {
    worker.counts.refused.fetch_add(1, Ordering::Relaxed);
    tracing::info!(session = %job.session, job = %job.id(), "commit refused: the lease was lost or the session stopped");
}

fn commit_failed(worker: &Worker, job: &ClaimedJob, error: WireError) {
    tracing::warn!(session = %job.session, job = %job.id(), error = %error.into_error(&worker.redis.errors), "commit failed; the lease will expire and the job be retried");
}

/// Whether a commit may hand this worker a next job for the slot it frees: only while it
/// takes new jobs (not draining) and no other session waits for a claim (the slot then goes
/// back to the fair order).
fn may_refill(worker: &Worker) -> bool {
    worker.claiming.load(Ordering::Acquire) && !worker.contention.others_waiting()
}

/// Commits the end of a run executed as one job; returns the session's next job when the
/// commit leased one for the slot it frees.
async fn commit_end(
    worker: &Worker,
    job: &ClaimedJob,
    wire: String,
    ok: bool,
    dead: bool,
    typed: Box<dyn std::any::Any + Send>,
    finished: FinishedSteps,
) -> Option<ClaimedJob> {
    let done = Done::new(&job.session, job.run(), &wire);
    let ending = Ending {
        job: job.id(),
        token: job.token(),
        outcome: wire,
        ok,
        dead,
        done: done.to_string(),
        name: job.leased.name.clone(),
        refill: may_refill(worker),
        finished,
    };
    let asked = Instant::now();
    match worker
        .outbox
        .send(&job.session, CommitBody::End(ending))
        .await
    {
        Some(Ok(Reply::Ended(true, next))) => {
            worker.counts.commits.fetch_add(1, Ordering::Relaxed);
            worker
                .client
                .waiters
                .hand_off(&job.session, job.run(), typed);
            worker.client.waiters.done(&job.session, job.run());
            let next = next?;
            worker.watch_leases(&job.session, next.deadline_ms).await;
            Some(ClaimedJob {
                session: job.session.clone(),
                leased: next,
                asked,
            })
        }
        Some(Ok(_)) => {
            refused(worker, job);
            None
        }
        Some(Err(error)) => {
            commit_failed(worker, job, error);
            None
        }
        None => {
            stopped_before_commit(job);
            None
        }
    }
}

fn stopped_before_commit(job: &ClaimedJob) {
    tracing::warn!(session = %job.session, job = %job.id(), "the runtime stopped before the commit; the lease will expire and the job be retried");
}

/// The most fields, and bytes, one `stage.lua` call stores: however wide a map or big a
/// value, no call does more than this.
const STAGE_FIELDS: usize = 2_000;
const STAGE_BYTES: usize = 1 << 20;

/// The staged fields in slices of at most [`STAGE_FIELDS`] fields and (but for one bigger
/// field) [`STAGE_BYTES`] bytes.
fn stage_slices(fields: &[(String, Vec<u8>)]) -> Vec<&[(String, Vec<u8>)]> {
    let mut slices = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (at, (field, value)) in fields.iter().enumerate() {
        let size = field.len() + value.len();
        if at > start && (at - start >= STAGE_FIELDS || bytes + size > STAGE_BYTES) {
            slices.push(&fields[start..at]);
            (start, bytes) = (at, 0);
        }
        bytes += size;
    }
    if start < fields.len() {
        slices.push(&fields[start..]);
    }
    slices
}

/// The most jobs one commit hands to its worker (a claim's batch).
const HAND_OFF_MOST: usize = 16;

/// Commits a job of a run executed step by step (staging its run-hash fields first: new map
/// instances' held items, chunks of big values). Of the jobs the commit hands to this worker,
/// the first is returned, to run next on `slot`; the others run each on a free slot of its
/// own, held before the commit was sent.
async fn advance_run(
    worker: &Arc<Worker>,
    job: &ClaimedJob,
    advance: steps::Advance,
    slot: &Arc<JobSlot>,
) -> Option<ClaimedJob> {
    let keys = worker.keys.session(&job.session);
    for fields in stage_slices(&advance.staged) {
        let staged = Stage {
            session: &keys,
            job: job.id(),
            token: job.token(),
            fields,
        }
        .call(&worker.redis)
        .await;
        match staged {
            Ok(true) => {}
            Ok(false) => {
                refused(worker, job);
                return None;
            }
            Err(error) => {
                commit_failed(worker, job, error);
                return None;
            }
        }
    }
    let mut commit = advance.commit;
    // Jobs are handed to this worker only while it takes new jobs (not draining) and no other
    // session waits for a claim: otherwise the slots go back to the fair order. The job's own
    // slot takes the first; free slots held now take the others (one per job the commit may
    // create, each released when its permit drops, used or not).
    let mut spare = Vec::new();
    if may_refill(worker) {
        let created = commit.successors.len() + commit.arrivals.len();
        spare = slot.spare(created.min(HAND_OFF_MOST).saturating_sub(1));
        commit.hand_off = Some(HandOff {
            lease: worker.config.lease,
            slots: 1 + spare.len(),
            quota: worker.config.session_concurrency,
        });
    }
    let end = commit.end.clone();
    let reply = worker
        .outbox
        .send(&job.session, CommitBody::Advance(Box::new(commit)))
        .await;
    let advanced = match reply {
        Some(Ok(Reply::Advanced(advanced))) => advanced,
        Some(Ok(_)) => {
            commit_failed(
                worker,
                job,
                WireError::reply("advance", "an answer of another kind"),
            );
            return None;
        }
        Some(Err(error)) => {
            commit_failed(worker, job, error);
            return None;
        }
        None => {
            stopped_before_commit(job);
            return None;
        }
    };
    match advanced {
        Advanced::Committed {
            ended,
            enlist,
            closed,
            cancel_run,
            handed,
        } => {
            let mut handed = handed.into_iter().map(|leased| ClaimedJob {
                session: job.session.clone(),
                leased,
                asked: Instant::now(),
            });
            let next = handed.next();
            for other in handed {
                match spare.pop() {
                    Some(permit) => {
                        let slot = Arc::new(slot.beside(permit));
                        tokio::spawn(execute(Arc::clone(worker), other, slot));
                    }
                    None => {
                        let error = WireError::reply("advance", "more jobs handed than slots");
                        commit_failed(worker, &other, error);
                        release(worker, &other).await;
                    }
                }
            }
            drop(spare);
            if ended {
                worker.counts.commits.fetch_add(1, Ordering::Relaxed);
                if let Some(end) = end {
                    worker
                        .client
                        .waiters
                        .deliver(&job.session, job.run(), end.outcome);
                }
                worker.client.waiters.done(&job.session, job.run());
            }
            if let Some(generation) = enlist {
                // Wakes the workers (this one too) for the jobs it did not keep.
                worker.client.enlist(&job.session, generation).await;
            }
            let cancels = closed
                .into_iter()
                .map(Some)
                .chain(cancel_run.then_some(None));
            for instance in cancels {
                let cancel = Control::Cancel {
                    session: job.session.clone(),
                    run: job.run(),
                    instance,
                };
                let channel = worker.keys.control_channel();
                if let Err(error) = messages::publish(&worker.redis, &channel, &cancel).await {
                    tracing::debug!(error = %error.into_error(&worker.redis.errors), "announcing a cancel failed; the cancelled jobs are dropped when they commit");
                }
            }
            next
        }
        Advanced::Refused => {
            refused(worker, job);
            None
        }
        Advanced::Moot => None,
        Advanced::Unstaged => {
            tracing::warn!(session = %job.session, job = %job.id(), "staged map items are missing; the lease will expire and the job be retried");
            None
        }
    }
}

/// Puts a job that waits before its step's next attempt into the session's due-time set, and
/// arms the session's timer for it.
async fn park(worker: &Worker, job: &ClaimedJob, wait: Wait, attempts: u32) {
    let body = CommitBody::Park {
        job: job.id(),
        token: job.token(),
        attempt: wait.attempt,
        wait: wait.delay,
        attempts,
    };
    let due = match worker.outbox.send(&job.session, body).await {
        Some(Ok(Reply::Parked(Some(due)))) => due,
        Some(Ok(_)) => return refused(worker, job),
        Some(Err(error)) => return commit_failed(worker, job, error),
        None => return stopped_before_commit(job),
    };
    if let Err(error) = timers::arm(&worker.redis, &worker.keys, &job.session, due).await {
        tracing::warn!(session = %job.session, job = %job.id(), error = %error.into_error(&worker.redis.errors), "arming the timer of a waiting step failed; the sweeper re-arms it");
    }
}

/// Gives the job's lease back at once, without consuming its delivery.
async fn release(worker: &Worker, job: &ClaimedJob) {
    let keys = worker.keys.session(&job.session);
    let released = Release {
        session: &keys,
        leases: &[(job.id(), job.token())],
    }
    .call(&worker.redis)
    .await;
    match released {
        Ok(released) if released.released > 0 => {
            tracing::debug!(session = %job.session, job = %job.id(), "lease released");
            if let Some(generation) = released.enlist {
                worker.client.enlist(&job.session, generation).await;
            }
        }
        // The lease moved on while this attempt ran (the renewer saw it and abandoned the
        // run): as fenced as a refused commit, and counted with them.
        Ok(_) => {
            worker.counts.refused.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            tracing::warn!(error = %error.into_error(&worker.redis.errors), "releasing a lease failed; it will expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_fields_go_in_bounded_slices_in_order() {
        let field = |n: usize, size: usize| (format!("f{n}"), vec![0_u8; size]);
        // Small fields: at most STAGE_FIELDS a slice.
        let many: Vec<_> = (0..STAGE_FIELDS * 2 + 1).map(|n| field(n, 1)).collect();
        let slices = stage_slices(&many);
        assert_eq!(
            slices.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [STAGE_FIELDS, STAGE_FIELDS, 1]
        );
        // Big fields: at most STAGE_BYTES a slice (a field bigger alone goes alone).
        let big: Vec<_> = (0..9).map(|n| field(n, STAGE_BYTES / 4)).collect();
        let slices = stage_slices(&big);
        assert!(
            slices
                .iter()
                .all(
                    |s| s.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>() <= STAGE_BYTES
                        || s.len() == 1
                )
        );
        let flat: Vec<&String> = slices
            .iter()
            .flat_map(|s| s.iter().map(|(f, _)| f))
            .collect();
        assert_eq!(
            flat,
            big.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            "in order, each once"
        );
        assert!(stage_slices(&[]).is_empty());
        let huge = [field(0, STAGE_BYTES * 2), field(1, 1)];
        assert_eq!(stage_slices(&huge).len(), 2);
    }
}
