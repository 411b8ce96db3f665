//! Runs executed one job per step (see `docs/architecture.md`, "Phase 2, built: step jobs in
//! Redis"): where a job stands in its run, running it, and what its commit (`advance.lua`)
//! carries — the successor jobs, the fan-in arrivals and, when the job ends the run, its
//! outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::config::RedisConfig;
use super::job::ClaimedJob;
use super::keys::{JobId, Keys};
use super::protocol::advance::{Arrival, HeldInstance, NewJob, RunEnd, StepCommit};
use super::protocol::body::Body;
use super::protocol::messages::Done;
use super::protocol::{Redis, millis, reads};
use super::served::Served;
use super::trace;
use crate::event::EventKind;
use crate::plan::Fnv;
use crate::portable::{Frame, InstanceId, Job, Json, PortableGraph, PortableId, Transition};
use crate::runtime::embed::{Embedding, Hooks, Wait, Waits};
use crate::{Error, Event, LocalRuntime, Metadata, RunFailure, RunId, RunOutcome, RunResult};

/// A deadline of a named workflow with a timeout that a job runs inside: the frame of its
/// stack, and when the workflow runs out of time (ms on Redis' clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Deadline {
    frame: usize,
    at_ms: u64,
}

/// Where a job of a run executed step by step stands (the job hash's `step` field; the
/// run's entry job has none).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Position {
    /// A step to run on the job's input.
    Step {
        node: PortableId,
        stack: Vec<Frame>,
        deadlines: Vec<Deadline>,
    },
    /// A fan-out instance to join: the input is the branches' results in order, or (with
    /// `failed_branch`) the error of the branch that failed a fail-fast parallel.
    Join {
        node: PortableId,
        instance: InstanceId,
        expected: usize,
        continuation: Vec<Frame>,
        deadlines: Vec<Deadline>,
        failed_branch: Option<usize>,
    },
}

/// What a step job's execution needs from the worker that runs it.
pub(crate) struct StepContext<'a> {
    pub(crate) engine: &'a LocalRuntime,
    pub(crate) redis: &'a Redis,
    pub(crate) keys: &'a Keys,
    pub(crate) config: &'a RedisConfig,
    /// The hooks its steps run with (limits across workers, `ctx.call` as child runs).
    pub(crate) hooks: Arc<dyn Hooks>,
    /// The fingerprint of the run's step jobs (its successors carry it).
    pub(crate) step_fp: &'a str,
    /// The trace context the job runs under (its successors carry it, with `otel`).
    pub(crate) trace: Option<&'a String>,
}

/// Values between steps larger than this are not passed to scripts whole: they are staged in
/// the run's hash in chunks of this size, a slice per call (invariant 9).
pub(crate) const CHUNK: usize = 256 * 1024;

/// A new map instance's items beyond its concurrency, to stage before the commit.
struct HeldItems {
    instance: InstanceId,
    /// The first held item (the map's concurrency).
    first: usize,
    /// Each held item and its jobs, packed as `advance.lua` unpacks them, by item (a map of
    /// 10 000 items holds 10 000 minus its concurrency: a lookup per job must not scan them).
    items: BTreeMap<usize, Vec<u8>>,
}

impl HeldItems {
    fn held(&self) -> HeldInstance {
        HeldInstance {
            instance: self.instance.as_str().to_owned(),
            first: self.first,
            last: self
                .items
                .last_key_value()
                .map_or(self.first, |(item, _)| *item),
        }
    }

    /// Adds `job` to held item `item`.
    fn hold(&mut self, item: usize, job: &NewJob) {
        job.pack_into(self.items.entry(item).or_default());
    }
}

/// What a job's commit carries: the commit, and the run-hash fields to stage before it (held
/// map items, chunks of big values).
pub(crate) struct Advance {
    pub(crate) commit: StepCommit,
    pub(crate) staged: Vec<(String, Vec<u8>)>,
}

/// Stages `bytes` in chunks under fields `<prefix>0`, `<prefix>1`, ...; returns how many.
fn stage_chunks(prefix: &str, bytes: &[u8], staged: &mut Vec<(String, Vec<u8>)>) -> u32 {
    let mut chunks = 0;
    for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
        staged.push((format!("{prefix}{n}"), chunk.to_vec()));
        chunks += 1;
    }
    chunks
}

/// A branch result staged in chunks, as its `s:` field says it (`{"Chunks": n}`).
#[derive(Serialize, Deserialize)]
enum StagedResult {
    Chunks(u32),
}

/// How a job under way ended on this worker.
pub(crate) enum Ran {
    /// It produced a transition: commit it.
    Advance(Box<Advance>),
    /// Its step waits before its next attempt (`attempts` made so far by this job): back to
    /// the due-time set until then.
    Park { wait: Wait, attempts: u32 },
    /// Give the lease back (this process is stopping, or lost the lease).
    Release,
}

/// The tokens a held lease answers to.
pub(crate) struct Signals<'a> {
    /// The lease was lost: abandon the job.
    pub(crate) lost: &'a CancellationToken,
    /// The run ended, or the fan-out the job is under closed: cancel the job (its step's
    /// token fires, with the cancel grace) and commit it as moot.
    pub(crate) moot: &'a CancellationToken,
}

/// Runs `job` (a job of a run executed step by step, or an entry job that starts one) and
/// says what to commit.
pub(crate) async fn run(
    ctx: &StepContext<'_>,
    job: &ClaimedJob,
    body: &Body,
    served: &dyn Served,
    graph: &PortableGraph,
    signals: Signals<'_>,
) -> Ran {
    let clock = RedisClock::of(ctx.config, job);
    let mut delta = (0, 0);
    let (parent, transition) = match &body.step {
        None => {
            let input = match served.portable_input(&body.input) {
                Ok(input) => input,
                Err(error) => return Ran::Advance(Box::new(ended(ctx, job, Err(error)))),
            };
            let mut start = graph.start(input);
            let single =
                start.jobs.len() == 1 && start.arrivals.is_empty() && start.output.is_none();
            let first = if single { start.jobs.pop() } else { None };
            match first {
                // One first step (a chain, a route): run it now, under this lease.
                Some(first) => {
                    let deadlines = deadlines(graph, &Parent::ROOT, &first.stack, clock.now_ms());
                    match step(ctx, job, graph, first, &deadlines, &clock, &signals).await {
                        Stepped::Ran(transition, version, attempts, stack) => {
                            delta = (version, attempts);
                            (Parent { stack, deadlines }, transition)
                        }
                        Stepped::Park(wait, attempts) => return Ran::Park { wait, attempts },
                        // Nothing can end a run that has not been committed yet.
                        Stepped::Release | Stepped::Moot => return Ran::Release,
                    }
                }
                // Several first steps (a fan-out at the root) or none (an empty map): the start
                // is committed as it is.
                None => (Parent::ROOT, start),
            }
        }
        Some(position) => {
            let position = match serde_json::from_str::<Position>(position.get()) {
                Ok(position) => position,
                Err(error) => {
                    let error = Error::Serialization {
                        message: format!("job `{}` has an unreadable position: {error}", job.id()),
                    };
                    return Ran::Advance(Box::new(ended(ctx, job, Err(error))));
                }
            };
            let input = match &position {
                // A complete join reads its branches' results from the run hash.
                Position::Join {
                    instance,
                    expected,
                    failed_branch: None,
                    ..
                } => match joined_results(ctx, job, instance, *expected).await {
                    Some(results) => results,
                    // Redis could not be read: the job is leased again later.
                    None => return Ran::Release,
                },
                _ => serde_json::from_slice::<Json>(&body.input).map_err(|error| {
                    Error::Serialization {
                        message: format!("job `{}` has an unreadable input: {error}", job.id()),
                    }
                }),
            };
            let input = match input {
                Ok(input) => input,
                Err(error) => return Ran::Advance(Box::new(ended(ctx, job, Err(error)))),
            };
            match position {
                Position::Step {
                    node,
                    stack,
                    deadlines,
                } => {
                    let step_job = Job { node, stack, input };
                    match step(ctx, job, graph, step_job, &deadlines, &clock, &signals).await {
                        Stepped::Ran(transition, version, attempts, stack) => {
                            delta = (version, attempts);
                            (Parent { stack, deadlines }, transition)
                        }
                        Stepped::Park(wait, attempts) => return Ran::Park { wait, attempts },
                        Stepped::Release => return Ran::Release,
                        Stepped::Moot => (Parent::ROOT, Transition::default()),
                    }
                }
                Position::Join {
                    node,
                    continuation,
                    deadlines,
                    failed_branch,
                    ..
                } => {
                    let transition = join(graph, node, continuation.clone(), failed_branch, input);
                    (
                        Parent {
                            stack: continuation,
                            deadlines,
                        },
                        transition,
                    )
                }
            }
        }
    };
    Ran::Advance(Box::new(advance(
        ctx, job, graph, &parent, transition, delta, &clock,
    )))
}

/// How many branch results a join reads per round trip.
const JOIN_READ: usize = 2_000;

/// The results of the `expected` branches of `instance`, in order, as a JSON array of
/// `{"Ok": value}` / `{"Err": error}`; `Err` when one is missing or unreadable, `None` when
/// Redis cannot be read.
async fn joined_results(
    ctx: &StepContext<'_>,
    job: &ClaimedJob,
    instance: &InstanceId,
    expected: usize,
) -> Option<Result<Json, Error>> {
    let session = ctx.keys.session(&job.session);
    let mut results = Vec::with_capacity(expected);
    for from in (0..expected).step_by(JOIN_READ) {
        let fields: Vec<String> = (from..expected.min(from + JOIN_READ))
            .map(|branch| format!("s:{instance}:{branch}"))
            .collect();
        let read = match reads::run_fields(ctx.redis, &session, job.run(), &fields).await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(job = %job.id(), error = %error.into_error(&ctx.redis.errors), "reading a join's results failed; it will be retried");
                return None;
            }
        };
        for (branch, (field, result)) in (from..).zip(fields.iter().zip(read)) {
            let result = match result {
                // A big result was staged in chunks; its field only counts them.
                Some(text) => match serde_json::from_slice::<StagedResult>(&text) {
                    Ok(StagedResult::Chunks(n)) => {
                        let prefix = format!("r:{instance}:{branch}:");
                        match unstage(ctx.redis, ctx.keys, job, &prefix, n).await? {
                            Ok(bytes) => Some(bytes),
                            Err(error) => return Some(Err(error)),
                        }
                    }
                    Err(_) => Some(text),
                },
                None => None,
            };
            let parsed = result
                .ok_or_else(|| format!("no result `{field}`"))
                .and_then(|text| serde_json::from_slice::<Json>(&text).map_err(|e| e.to_string()));
            match parsed {
                Ok(result) => results.push(result),
                Err(message) => {
                    return Some(Err(Error::Serialization {
                        message: format!(
                            "the join of `{instance}` in job `{}`: {message}",
                            job.id()
                        ),
                    }));
                }
            }
        }
    }
    Some(Ok(Json::Array(results)))
}

/// How many staged chunks one read takes (2 MiB).
const CHUNKS_PER_READ: u32 = 8;

/// A value staged in `n` chunks of `job`'s run hash under `<prefix>0`, `<prefix>1`, ...;
/// `Err` when one is missing, `None` when Redis cannot be read (the job is leased again).
pub(crate) async fn unstage(
    redis: &Redis,
    keys: &Keys,
    job: &ClaimedJob,
    prefix: &str,
    n: u32,
) -> Option<Result<Vec<u8>, Error>> {
    let session = keys.session(&job.session);
    let mut value = Vec::new();
    for from in (0..n).step_by(CHUNKS_PER_READ as usize) {
        let fields: Vec<String> = (from..n.min(from + CHUNKS_PER_READ))
            .map(|i| format!("{prefix}{i}"))
            .collect();
        let read = match reads::run_fields(redis, &session, job.run(), &fields).await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(job = %job.id(), error = %error.into_error(&redis.errors), "reading a staged value failed; it will be retried");
                return None;
            }
        };
        for (field, chunk) in fields.iter().zip(read) {
            match chunk {
                Some(chunk) => value.extend_from_slice(&chunk),
                None => {
                    return Some(Err(Error::Serialization {
                        message: format!(
                            "job `{}`: the staged chunk `{field}` is missing",
                            job.id()
                        ),
                    }));
                }
            }
        }
    }
    Some(Ok(value))
}

/// What a join job continues with.
fn join(
    graph: &PortableGraph,
    node: PortableId,
    continuation: Vec<Frame>,
    failed_branch: Option<usize>,
    input: Json,
) -> Transition {
    let unreadable = |error: serde_json::Error| Transition {
        output: Some(Err(Error::Serialization {
            message: format!("a join of fan-out {node} has unreadable results: {error}"),
        })),
        ..Transition::default()
    };
    match failed_branch {
        Some(branch) => match serde_json::from_value::<Result<Json, Error>>(input) {
            Ok(Err(error)) => graph.join_failed(node, continuation, branch, error),
            Ok(Ok(_)) => unreadable(serde::de::Error::custom("a failed branch without an error")),
            Err(error) => unreadable(error),
        },
        None => match serde_json::from_value::<Vec<Result<Json, Error>>>(input) {
            Ok(results) => graph.join(node, continuation, results),
            Err(error) => unreadable(error),
        },
    }
}

/// The job a transition came from: successors inherit the deadlines of the frames they share
/// with it.
struct Parent {
    stack: Vec<Frame>,
    deadlines: Vec<Deadline>,
}

impl Parent {
    /// Outside every composition: what a run's start descends from.
    const ROOT: Parent = Parent {
        stack: Vec::new(),
        deadlines: Vec::new(),
    };
}

/// Redis' clock as this worker estimates it: the claim's lease deadline less the lease is when
/// the claim ran; this process's monotonic clock measures the time since (skew-free).
struct RedisClock {
    at_claim_ms: u64,
    claimed: Instant,
}

impl RedisClock {
    fn of(config: &RedisConfig, job: &ClaimedJob) -> Self {
        RedisClock {
            at_claim_ms: job.leased.deadline_ms.saturating_sub(millis(config.lease)),
            claimed: job.asked,
        }
    }

    fn now_ms(&self) -> u64 {
        self.at_claim_ms + millis(self.claimed.elapsed())
    }
}

/// The deadlines of a job with `stack`, derived from `parent`: a named workflow with a timeout
/// that the job enters (rather than shares with its parent) starts its clock now.
fn deadlines(
    graph: &PortableGraph,
    parent: &Parent,
    stack: &[Frame],
    now_ms: u64,
) -> Vec<Deadline> {
    let shared = shared_frames(&parent.stack, stack);
    let mut deadlines: Vec<Deadline> = parent
        .deadlines
        .iter()
        .filter(|d| d.frame < shared)
        .copied()
        .collect();
    for (frame, entered) in stack.iter().enumerate().skip(shared) {
        if let Frame::Named(node) = entered
            && let Some((_, timeout)) = graph.workflow_timeout(*node)
        {
            deadlines.push(Deadline {
                frame,
                at_ms: now_ms.saturating_add(millis(timeout)),
            });
        }
    }
    deadlines
}

/// How many outer frames two stacks share.
fn shared_frames(a: &[Frame], b: &[Frame]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// How running one step ended.
enum Stepped {
    /// With a transition, the steps completed and attempts made, and the step's stack.
    Ran(Transition, u64, u32, Vec<Frame>),
    /// The step waits (its `delay`, or a retry's backoff) in Redis, not in this slot.
    Park(Wait, u32),
    Release,
    Moot,
}

/// Runs the step `job` through the embedded step executor, as one step of the claimed job's
/// run, bounded by the earliest of its workflows' deadlines.
async fn step(
    ctx: &StepContext<'_>,
    claimed: &ClaimedJob,
    graph: &PortableGraph,
    job: Job,
    deadlines: &[Deadline],
    clock: &RedisClock,
    signals: &Signals<'_>,
) -> Stepped {
    let earliest = deadlines.iter().min_by_key(|d| d.at_ms).copied();
    let expire = |deadline: Deadline| {
        let error = match job.stack.get(deadline.frame) {
            Some(Frame::Named(node)) => {
                graph
                    .workflow_timeout(*node)
                    .map(|(name, limit)| Error::Timeout {
                        processor: name.to_owned(),
                        limit,
                    })
            }
            _ => None,
        }
        .unwrap_or_else(|| Error::configuration("a deadline outside any named workflow"));
        graph.expire(&job.stack, deadline.frame, error)
    };
    if let Some(deadline) = earliest.filter(|d| d.at_ms <= clock.now_ms()) {
        return Stepped::Ran(expire(deadline), 0, 0, job.stack.clone());
    }
    let Some(node) = graph.step_node(job.node) else {
        let error = Error::configuration(format!("portable node {} is not a step", job.node));
        return Stepped::Ran(graph.transition(&job, Err(error)), 0, 0, job.stack.clone());
    };
    let cancel = CancellationToken::new();
    let embedding = Arc::new(Embedding {
        run_id: claimed.run(),
        created_at: UNIX_EPOCH + Duration::from_millis(claimed.leased.created_ms),
        depth: 0,
        part_of_run: true,
        cancel: cancel.clone(),
        hooks: Arc::clone(&ctx.hooks),
        waits: Some(Waits::resuming_at(claimed.leased.attempt)),
    });
    let running = ctx.engine.execute_embedded(
        &claimed.session,
        node,
        job.input.clone(),
        Arc::clone(&embedding),
    );
    tokio::pin!(running);
    let out_of_time = async {
        match earliest {
            Some(deadline) => {
                let left = deadline.at_ms.saturating_sub(clock.now_ms());
                tokio::time::sleep(Duration::from_millis(left)).await;
                deadline
            }
            None => std::future::pending().await,
        }
    };
    // A lost lease or a moot job cancels the step: its token fires and it gets the cancel
    // grace to return (the executor bounds it). A workflow's deadline is exact: the token
    // fires and the step is dropped at once.
    let outcome: RunOutcome<Json> = tokio::select! {
        biased;
        outcome = &mut running => outcome,
        deadline = out_of_time => {
            cancel.cancel();
            return Stepped::Ran(expire(deadline), 0, 0, job.stack.clone());
        }
        () = signals.lost.cancelled() => {
            cancel.cancel();
            let _ = running.await;
            return Stepped::Release;
        }
        () = signals.moot.cancelled() => {
            cancel.cancel();
            let _ = running.await;
            return Stepped::Moot;
        }
    };
    let waited = embedding.waits.as_ref().and_then(|w| w.handed_back());
    let (result, version, attempts) = match outcome {
        Ok(result) => (Ok(result.output), result.meta.version, result.attempts),
        Err(failure) if waited.is_some() => {
            let wait = waited.unwrap_or(Wait {
                attempt: 1,
                delay: Duration::ZERO,
            });
            return Stepped::Park(wait, failure.attempts);
        }
        Err(failure) => {
            let stopping = matches!(failure.error, Error::Cancelled { .. })
                && !crate::Runtime::is_running(ctx.engine);
            if stopping {
                return Stepped::Release;
            }
            (Err(failure.error), failure.meta.version, failure.attempts)
        }
    };
    let stack = job.stack.clone();
    Stepped::Ran(graph.transition(&job, result), version, attempts, stack)
}

/// The commit of a job that fails its run with `error` (its body or position does not read).
pub(crate) fn fail_run(ctx: &StepContext<'_>, job: &ClaimedJob, error: Error) -> Advance {
    ended(ctx, job, Err(error))
}

/// The commit of a job that ends its run with `outcome` and nothing else.
fn ended(ctx: &StepContext<'_>, job: &ClaimedJob, outcome: Result<Json, Error>) -> Advance {
    let transition = Transition {
        output: Some(outcome),
        ..Transition::default()
    };
    let clock = RedisClock::of(ctx.config, job);
    let graph = PortableGraph::new();
    advance(ctx, job, &graph, &Parent::ROOT, transition, (0, 0), &clock)
}

/// Shapes `transition` into the commit that carries it.
fn advance(
    ctx: &StepContext<'_>,
    job: &ClaimedJob,
    graph: &PortableGraph,
    parent: &Parent,
    transition: Transition,
    (version, attempts): (u64, u32),
    clock: &RedisClock,
) -> Advance {
    let run = job.run();
    let now = clock.now_ms();
    let transition = bounded(ctx.config, job, transition);
    let mut staged = Vec::new();
    let mut successors = Vec::new();
    let mut held: Vec<HeldItems> = Vec::new();
    for next in transition.jobs {
        let deadlines = deadlines(graph, parent, &next.stack, now);
        let new = successor(run, &next, &deadlines, &mut staged, ctx.trace);
        match held_item(graph, &parent.stack, &next.stack) {
            Some((instance, item, first)) => {
                let at = match held.iter().position(|h| h.instance == instance) {
                    Some(at) => at,
                    None => {
                        held.push(HeldItems {
                            instance,
                            first,
                            items: BTreeMap::new(),
                        });
                        held.len() - 1
                    }
                };
                held[at].hold(item, &new);
            }
            None => successors.push(new),
        }
    }
    let arrivals: Vec<Arrival> = transition
        .arrivals
        .into_iter()
        .map(|arrival| {
            let closes = arrival.value.is_err() && graph.fails_fast(arrival.node);
            let guards = instances(&arrival.continuation);
            let shared = arrival.continuation.len();
            let position = Position::Join {
                node: arrival.node,
                instance: arrival.instance.clone(),
                expected: arrival.expected,
                continuation: arrival.continuation,
                deadlines: parent
                    .deadlines
                    .iter()
                    .filter(|d| d.frame < shared)
                    .copied()
                    .collect(),
                failed_branch: closes.then_some(arrival.branch),
            };
            let mut result = wire_result(&arrival.value);
            if result.len() > CHUNK && !closes {
                let prefix = format!("r:{}:{}:", arrival.instance, arrival.branch);
                let chunks = stage_chunks(&prefix, result.as_bytes(), &mut staged);
                result = serde_json::to_string(&StagedResult::Chunks(chunks)).unwrap_or_default();
            }
            Arrival {
                instance: arrival.instance.as_str().to_owned(),
                branch: arrival.branch,
                expected: arrival.expected,
                // A failed branch's join takes the error as its input.
                join: NewJob {
                    id: JobId {
                        run,
                        position: Some(join_hash(&arrival.instance)),
                    },
                    body: Body {
                        step: serde_json::value::to_raw_value(&position).ok(),
                        trace: trace::carry(ctx.trace),
                        input: if closes {
                            result.clone().into_bytes()
                        } else {
                            Vec::new()
                        },
                        ..Body::default()
                    }
                    .encode(),
                    guards: Vec::new(),
                },
                result,
                guards,
                closes,
            }
        })
        .collect();
    let end = transition
        .output
        .map(|output| run_end(ctx.config, job, output, version, attempts));
    Advance {
        commit: StepCommit {
            job: job.id(),
            token: job.token(),
            step_fp: ctx.step_fp.to_owned(),
            version_delta: version,
            attempts_delta: attempts,
            entry: job.is_entry(),
            // Decided by the worker when it sends the commit (invariant 5).
            hand_off: None,
            end,
            successors,
            arrivals,
            held: held.iter().map(HeldItems::held).collect(),
            consumed: 0,
            // The worker adds the steps the job finished (its hooks counted them).
            finished: Vec::new(),
        },
        staged: held
            .into_iter()
            .flat_map(|h| {
                let instance = h.instance;
                h.items
                    .into_iter()
                    .map(move |(item, packed)| (format!("i:{instance}:{item}"), packed))
            })
            .chain(staged)
            .collect(),
    }
}

/// `transition`, unless a value it would store (a successor's input, a branch's result) is
/// larger than `max_payload_bytes`: then the run fails with [`Error::Resource`] instead, before
/// anything is written.
fn bounded(config: &RedisConfig, job: &ClaimedJob, transition: Transition) -> Transition {
    let limit = config.max_payload_bytes;
    let size = |value: &Json| serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    let largest = transition
        .jobs
        .iter()
        .map(|next| size(&next.input))
        .chain(
            transition
                .arrivals
                .iter()
                .map(|arrival| match &arrival.value {
                    Ok(value) => size(value),
                    Err(_) => 0,
                }),
        )
        .max()
        .unwrap_or(0);
    if largest <= limit {
        return transition;
    }
    let error = Error::resource(
        "payload",
        format!(
            "a value between the steps of `{}` is {largest} bytes; the limit is {limit}",
            job.leased.name
        ),
    );
    Transition {
        output: Some(Err(error)),
        ..Transition::default()
    }
}

/// A successor job: its id (named by its position), body, and the fan-out instances above it.
/// A big input is staged in chunks (into `staged`), its body only counts them; `trace` is
/// the trace context it carries on.
fn successor(
    run: RunId,
    job: &Job,
    deadlines: &[Deadline],
    staged: &mut Vec<(String, Vec<u8>)>,
    trace: Option<&String>,
) -> NewJob {
    let position = Position::Step {
        node: job.node,
        stack: job.stack.clone(),
        deadlines: deadlines.to_vec(),
    };
    let id = JobId {
        run,
        position: Some(step_hash(job.node, &job.stack)),
    };
    let mut input = serde_json::to_vec(&job.input).unwrap_or_default();
    let mut chunks = None;
    if input.len() > CHUNK {
        chunks = Some(stage_chunks(&format!("v:{id}:"), &input, staged));
        input = Vec::new();
    }
    NewJob {
        id,
        body: Body {
            step: serde_json::value::to_raw_value(&position).ok(),
            call: None,
            chunks,
            trace: trace::carry(trace),
            redact: false,
            input,
        }
        .encode(),
        guards: instances(&job.stack),
    }
}

/// The map item a successor belongs to, when that item is beyond the map's concurrency and
/// the map's instance is new (entered by this transition): `(instance, item, concurrency)`.
fn held_item(
    graph: &PortableGraph,
    parent: &[Frame],
    stack: &[Frame],
) -> Option<(InstanceId, usize, usize)> {
    let shared = shared_frames(parent, stack);
    stack[shared..].iter().find_map(|frame| match frame {
        Frame::Branch {
            node,
            instance,
            branch,
            ..
        } => {
            let concurrency = graph.map_concurrency(*node)?;
            (*branch >= concurrency).then(|| (instance.clone(), *branch, concurrency))
        }
        _ => None,
    })
}

/// The fan-out instances a claimed job runs under, from its position (none for an entry job).
pub(crate) fn instances_of(position: &RawValue) -> Vec<String> {
    match serde_json::from_str::<Position>(position.get()) {
        Ok(Position::Step { stack, .. }) => instances(&stack),
        Ok(Position::Join { continuation, .. }) => instances(&continuation),
        Err(_) => Vec::new(),
    }
}

/// The fan-out instances a stack runs inside, outermost first.
fn instances(stack: &[Frame]) -> Vec<String> {
    stack
        .iter()
        .filter_map(|frame| frame.instance().map(|i| i.as_str().to_owned()))
        .collect()
}

/// A branch's result as the join reads it (`{"Ok": value}` or `{"Err": error}`).
fn wire_result(value: &Result<Json, Error>) -> String {
    serde_json::to_string(value).unwrap_or_else(|error| {
        json!({ "Err": Error::Serialization { message: error.to_string() } }).to_string()
    })
}

fn step_hash(node: PortableId, stack: &[Frame]) -> u64 {
    let mut hash = Fnv::new();
    hash.write(b"step");
    hash.write(&serde_json::to_vec(&(node, stack)).unwrap_or_default());
    hash.finish()
}

fn join_hash(instance: &InstanceId) -> u64 {
    let mut hash = Fnv::new();
    hash.write(b"join");
    hash.write(instance.as_str().as_bytes());
    hash.finish()
}

/// The run's end, for a job that ends the run with `output`: its stored outcome (its steps so
/// far, from the claim, plus this job's), its `done` message and its run event.
fn run_end(
    config: &RedisConfig,
    job: &ClaimedJob,
    output: Result<Json, Error>,
    version: u64,
    attempts: u32,
) -> RunEnd {
    let created_at = UNIX_EPOCH + Duration::from_millis(job.leased.created_ms);
    let now = SystemTime::now().max(created_at);
    let execution_time = now.duration_since(created_at).unwrap_or_default();
    let meta = Metadata {
        session_id: job.session.clone(),
        run_id: job.run(),
        version: job.leased.version + version,
        created_at,
        updated_at: now,
    };
    let attempts = job.leased.run_attempts + job.leased.attempts + attempts;
    let stored = |output: Result<Json, Error>| -> Result<String, Error> {
        let outcome: RunOutcome<Json> = match output {
            Ok(output) => Ok(RunResult {
                output,
                meta: meta.clone(),
                attempts,
                execution_time,
            }),
            Err(error) => Err(RunFailure {
                error,
                meta: meta.clone(),
                attempts,
                execution_time,
            }),
        };
        let wire = serde_json::to_string(&outcome)?;
        match wire.len() > config.max_payload_bytes {
            false => Ok(wire),
            true => Err(Error::resource(
                "payload",
                format!(
                    "the outcome of `{}` is {} bytes; the limit is {}",
                    job.leased.name,
                    wire.len(),
                    config.max_payload_bytes
                ),
            )),
        }
    };
    let kind = |result: &Result<Json, Error>| match result {
        Ok(_) => EventKind::RunCompleted { execution_time },
        Err(error) => EventKind::RunFailed {
            error: error.clone(),
        },
    };
    let (outcome, ok, kind) = match stored(output.clone()) {
        Ok(wire) => (wire, output.is_ok(), kind(&output)),
        Err(error) => {
            let failed = Err(error);
            let wire = stored(failed.clone()).unwrap_or_default();
            (wire, false, kind(&failed))
        }
    };
    let done = Done::new(&job.session, job.run(), &outcome).to_string();
    RunEnd {
        event: run_event(job, kind),
        outcome,
        ok,
        done,
    }
}

/// A run's end event, named by the run's processor (observers count runs by processor).
fn run_event(job: &ClaimedJob, kind: EventKind) -> String {
    serde_json::to_string(&Event {
        session: job.session.clone(),
        run_id: Some(job.run()),
        processor: Some(job.leased.name.clone().into()),
        at: SystemTime::now(),
        kind,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_hash_apart_and_job_ids_round_trip() {
        let run = RunId::from_u128(0xabc);
        let a = step_hash(PortableId(1), &[]);
        let b = step_hash(PortableId(2), &[]);
        assert_ne!(a, b);
        assert_eq!(a, step_hash(PortableId(1), &[]), "recomputed, the same id");
        let id = JobId {
            run,
            position: Some(a),
        };
        assert_eq!(JobId::parse(&id.to_string()), Some(id));
        assert_eq!(
            JobId::parse(&JobId::entry(run).to_string()),
            Some(JobId::entry(run))
        );
        assert_eq!(JobId::parse("nope"), None);
        assert_eq!(JobId::parse(&format!("{run}.12")), None);
    }

    #[test]
    fn deadlines_start_when_a_workflow_is_entered_and_are_inherited() {
        let graph = PortableGraph::new();
        let parent = Parent {
            stack: vec![Frame::ChainFirst(PortableId(3))],
            deadlines: vec![Deadline {
                frame: 0,
                at_ms: 10,
            }],
        };
        // A stack that leaves the chain's first part keeps none of its deadlines.
        let next = [Frame::ChainSecond(PortableId(3))];
        assert!(deadlines(&graph, &parent, &next, 5).is_empty());
        // One that stays inside keeps them.
        let inside = [
            Frame::ChainFirst(PortableId(3)),
            Frame::Route(PortableId(4)),
        ];
        assert_eq!(deadlines(&graph, &parent, &inside, 5), parent.deadlines);
    }
}
