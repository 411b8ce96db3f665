//! Runs executed one job per step (see `docs/architecture.md`, "Phase 2, built: step jobs in
//! Redis"): where a job stands in its run, running it, and what its commit (`advance.lua`)
//! carries — the successor jobs, the fan-in arrivals and, when the job ends the run, its
//! outcome.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::keys::JobId;
use super::limits::ClusterGate;
use super::served::Served;
use super::worker::{ClaimedJob, millis};
use crate::context::{Parked, Parking, RunSeed, with_run_seed};
use crate::event::EventKind;
use crate::plan::Fnv;
use crate::portable::{Frame, InstanceId, Job, Json, PortableGraph, PortableId, Transition};
use crate::{
    Error, Event, Executes, Metadata, RunFailure, RunId, RunOutcome, RunResult, SessionId,
};

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

/// What a job's commit carries, as `advance.lua` reads it.
pub(crate) struct Advance {
    /// The job is its run's entry job (its commit creates the run hash).
    pub(crate) entry: bool,
    /// Steps completed and attempts made by this job.
    pub(crate) version: u64,
    pub(crate) attempts: u32,
    pub(crate) successors: String,
    pub(crate) arrivals: String,
    /// New map instances' items beyond their map's concurrency: staged before the commit.
    pub(crate) held: Vec<HeldItems>,
    /// Per staged instance: its id, its first held item and its staging key (`advance.lua`'s
    /// trailing arguments, filled in by the worker once it staged them).
    pub(crate) staged: Vec<String>,
    /// The run's stored outcome and its run event, when this job ends the run.
    pub(crate) outcome: Option<(String, String)>,
    /// Whether a successor may be leased to this worker at once.
    pub(crate) hand_off: bool,
}

/// What the commit answered.
pub(crate) enum Committed {
    /// The token had moved on, or the job was gone.
    Refused,
    /// Staged map items were gone (expired): nothing was written.
    Unstaged,
    /// Committed; `ended` when it stored the run's outcome, `queued` jobs were queued, and
    /// maybe one was leased to this worker.
    Done {
        ended: bool,
        queued: usize,
        handed: Option<Handed>,
    },
}

/// A successor leased to the committing worker.
pub(crate) struct Handed {
    id: String,
    input: Vec<u8>,
    token: String,
    deadline: String,
    step: Vec<u8>,
    version: u64,
    attempts: u32,
}

impl Committed {
    /// Reads `advance.lua`'s reply.
    pub(crate) fn parse(reply: &[Vec<u8>]) -> Option<Committed> {
        let text = |i: usize| {
            reply
                .get(i)
                .map(|f| String::from_utf8_lossy(f).into_owned())
        };
        match text(0)?.as_str() {
            "0" => Some(Committed::Refused),
            "2" => Some(Committed::Unstaged),
            "1" => {
                let handed = (reply.len() >= 10).then(|| Handed {
                    id: text(3).unwrap_or_default(),
                    input: reply[4].clone(),
                    token: text(5).unwrap_or_default(),
                    deadline: text(6).unwrap_or_default(),
                    step: reply[7].clone(),
                    version: text(8).and_then(|v| v.parse().ok()).unwrap_or(0),
                    attempts: text(9).and_then(|v| v.parse().ok()).unwrap_or(0),
                });
                Some(Committed::Done {
                    ended: text(1)? == "1",
                    queued: text(2)?.parse().ok()?,
                    handed,
                })
            }
            _ => None,
        }
    }
}

impl Handed {
    /// The claimed job it is, after `job` (same session and run).
    pub(crate) fn into_job(self, job: &ClaimedJob) -> Option<ClaimedJob> {
        Some(ClaimedJob {
            id: JobId::parse(&self.id)?,
            session: job.session.clone(),
            name: job.name.clone(),
            fingerprint: job.fingerprint.clone(),
            input: self.input,
            token: self.token,
            created_ms: job.created_ms,
            deliveries: 1,
            lease_deadline: self.deadline,
            asked: Instant::now(),
            resume: 0,
            child_of: None,
            step: self.step,
            version: self.version,
            attempts: self.attempts,
        })
    }
}

/// How a job under way ended on this worker.
pub(crate) enum Ran {
    /// It produced a transition: commit it.
    Advance(Box<Advance>),
    /// Its step waits before its next attempt (`attempts` made so far by this job): back to
    /// the due-time set until then.
    Park { parked: Parked, attempts: u32 },
    /// Give the lease back (this process is stopping, or lost the lease).
    Release,
}

/// The tokens a held lease answers to.
pub(crate) struct Signals<'a> {
    /// The lease was lost: abandon the job.
    pub(crate) lost: &'a CancellationToken,
    /// The run ended, or the fan-out the job is under closed: drop the job (a moot commit).
    pub(crate) moot: &'a CancellationToken,
}

/// Runs `job` (a job of a run executed step by step, or an entry job that starts one) and
/// says what to commit.
pub(crate) async fn run(
    inner: &Arc<Inner>,
    job: &ClaimedJob,
    served: &dyn Served,
    graph: &PortableGraph,
    signals: Signals<'_>,
) -> Ran {
    let clock = RedisClock::of(inner, job);
    let mut delta = (0, 0);
    let (parent, transition) = if job.step.is_empty() {
        let input = match served.portable_input(&job.input) {
            Ok(input) => input,
            Err(error) => return Ran::Advance(Box::new(ended(inner, job, Err(error), true))),
        };
        let mut start = graph.start(input);
        let single = start.jobs.len() == 1 && start.arrivals.is_empty() && start.output.is_none();
        let first = if single { start.jobs.pop() } else { None };
        match first {
            // One first step (a chain, a route): run it now, under this lease.
            Some(first) => {
                let deadlines = deadlines(graph, &Parent::ROOT, &first.stack, clock.now_ms());
                match step(inner, job, graph, first, &deadlines, &clock, &signals).await {
                    Stepped::Ran(transition, version, attempts, stack) => {
                        delta = (version, attempts);
                        (Parent { stack, deadlines }, transition)
                    }
                    Stepped::Park(parked, attempts) => return Ran::Park { parked, attempts },
                    // Nothing can end a run that has not been committed yet.
                    Stepped::Release | Stepped::Moot => return Ran::Release,
                }
            }
            // Several first steps (a fan-out at the root) or none (an empty map): the start
            // is committed as it is.
            None => (Parent::ROOT, start),
        }
    } else {
        let position = match serde_json::from_slice::<Position>(&job.step) {
            Ok(position) => position,
            Err(error) => {
                let error = Error::Serialization {
                    message: format!("job `{}` has an unreadable position: {error}", job.id),
                };
                return Ran::Advance(Box::new(ended(inner, job, Err(error), false)));
            }
        };
        let input = match &position {
            // A complete join reads its branches' results from the run hash.
            Position::Join {
                instance,
                expected,
                failed_branch: None,
                ..
            } => match joined_results(inner, job, instance, *expected).await {
                Some(results) => results,
                // Redis could not be read: the job is leased again later.
                None => return Ran::Release,
            },
            _ => serde_json::from_slice::<Json>(&job.input).map_err(|error| Error::Serialization {
                message: format!("job `{}` has an unreadable input: {error}", job.id),
            }),
        };
        let input = match input {
            Ok(input) => input,
            Err(error) => return Ran::Advance(Box::new(ended(inner, job, Err(error), false))),
        };
        match position {
            Position::Step {
                node,
                stack,
                deadlines,
            } => {
                let step_job = Job { node, stack, input };
                match step(inner, job, graph, step_job, &deadlines, &clock, &signals).await {
                    Stepped::Ran(transition, version, attempts, stack) => {
                        delta = (version, attempts);
                        (Parent { stack, deadlines }, transition)
                    }
                    Stepped::Park(parked, attempts) => return Ran::Park { parked, attempts },
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
    };
    let entry = job.step.is_empty();
    Ran::Advance(Box::new(advance(
        inner, job, graph, &parent, transition, delta, &clock, entry,
    )))
}

/// How many branch results a join reads per round trip.
const JOIN_READ: usize = 2_000;

/// The results of the `expected` branches of `instance`, in order, as a JSON array of
/// `{"Ok": value}` / `{"Err": error}`; `Err` when one is missing or unreadable, `None` when
/// Redis cannot be read.
async fn joined_results(
    inner: &Inner,
    job: &ClaimedJob,
    instance: &InstanceId,
    expected: usize,
) -> Option<Result<Json, Error>> {
    let mut conn = inner.conn().ok()?;
    let run = inner.keys.session(&job.session).run(job.id.run);
    let mut results = Vec::with_capacity(expected);
    for from in (0..expected).step_by(JOIN_READ) {
        let fields: Vec<String> = (from..expected.min(from + JOIN_READ))
            .map(|branch| format!("s:{instance}:{branch}"))
            .collect();
        let read: redis::RedisResult<Vec<Option<String>>> = redis::cmd("HMGET")
            .arg(&run)
            .arg(&fields)
            .query_async(&mut conn)
            .await;
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(job = %job.id, error = %inner.errors.scrub(&error.to_string()), "reading a join's results failed; it will be retried");
                return None;
            }
        };
        for (field, result) in fields.iter().zip(read) {
            let parsed = result
                .ok_or_else(|| format!("no result `{field}`"))
                .and_then(|text| serde_json::from_str::<Json>(&text).map_err(|e| e.to_string()));
            match parsed {
                Ok(result) => results.push(result),
                Err(message) => {
                    return Some(Err(Error::Serialization {
                        message: format!("the join of `{instance}` in job `{}`: {message}", job.id),
                    }));
                }
            }
        }
    }
    Some(Ok(Json::Array(results)))
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
    fn of(inner: &Inner, job: &ClaimedJob) -> Self {
        let deadline: u64 = job.lease_deadline.parse().unwrap_or(0);
        RedisClock {
            at_claim_ms: deadline.saturating_sub(millis(inner.config.lease)),
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
    Park(Parked, u32),
    Release,
    Moot,
}

/// Runs the step `job` through the embedded step executor, as one step of the claimed job's
/// run, bounded by the earliest of its workflows' deadlines.
async fn step(
    inner: &Arc<Inner>,
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
    let parking = Arc::new(Parking::new(claimed.resume));
    let seed = RunSeed {
        run_id: claimed.id.run,
        created_at: UNIX_EPOCH + Duration::from_millis(claimed.created_ms),
        gate: Some(Arc::new(ClusterGate::new(Arc::clone(inner), claimed.id))),
        one_step: true,
        parking: Some(Arc::clone(&parking)),
        depth: 0,
    };
    let running = with_run_seed(
        seed,
        inner
            .engine
            .execute_in_session(&claimed.session, node, job.input.clone()),
    );
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
    let outcome: RunOutcome<Json> = tokio::select! {
        outcome = running => outcome,
        deadline = out_of_time => return Stepped::Ran(expire(deadline), 0, 0, job.stack.clone()),
        () = signals.lost.cancelled() => return Stepped::Release,
        () = signals.moot.cancelled() => return Stepped::Moot,
    };
    let (result, version, attempts) = match outcome {
        Ok(result) => (Ok(result.output), result.meta.version, result.attempts),
        Err(failure) if parking.parked().is_some() => {
            let parked = parking.parked().unwrap_or(Parked {
                attempt: 1,
                delay: Duration::ZERO,
            });
            return Stepped::Park(parked, failure.attempts);
        }
        Err(failure) => {
            let stopping = matches!(failure.error, Error::Cancelled { .. })
                && !crate::Runtime::is_running(&inner.engine);
            if stopping {
                return Stepped::Release;
            }
            (Err(failure.error), failure.meta.version, failure.attempts)
        }
    };
    let stack = job.stack.clone();
    Stepped::Ran(graph.transition(&job, result), version, attempts, stack)
}

/// The commit of a job that ends its run with `outcome` and nothing else.
fn ended(inner: &Inner, job: &ClaimedJob, outcome: Result<Json, Error>, entry: bool) -> Advance {
    let transition = Transition {
        output: Some(outcome),
        ..Transition::default()
    };
    let clock = RedisClock::of(inner, job);
    let graph = PortableGraph::new();
    advance(
        inner,
        job,
        &graph,
        &Parent::ROOT,
        transition,
        (0, 0),
        &clock,
        entry,
    )
}

/// Shapes `transition` into `advance.lua`'s arguments.
#[allow(clippy::too_many_arguments)] // one call site per way a job ends; all are needed
fn advance(
    inner: &Inner,
    job: &ClaimedJob,
    graph: &PortableGraph,
    parent: &Parent,
    transition: Transition,
    (version, attempts): (u64, u32),
    clock: &RedisClock,
    entry: bool,
) -> Advance {
    let run = job.id.run;
    let now = clock.now_ms();
    let transition = bounded(inner, job, transition);
    let mut successors = Vec::new();
    let mut held: Vec<HeldItems> = Vec::new();
    for next in transition.jobs {
        let deadlines = deadlines(graph, parent, &next.stack, now);
        let spec = successor(run, &next, &deadlines);
        match held_item(graph, &parent.stack, &next.stack) {
            Some((instance, item, first)) => {
                let at = match held.iter().position(|h| h.instance == instance) {
                    Some(at) => at,
                    None => {
                        held.push(HeldItems {
                            instance,
                            first,
                            items: Vec::new(),
                        });
                        held.len() - 1
                    }
                };
                let items = &mut held[at].items;
                match items.iter_mut().find(|(i, _)| *i == item) {
                    Some((_, jobs)) => jobs.push(spec),
                    None => items.push((item, vec![spec])),
                }
            }
            None => successors.push(spec),
        }
    }
    let arrivals: Vec<Json> = transition
        .arrivals
        .into_iter()
        .map(|arrival| {
            let closes = arrival.value.is_err() && graph.fails_fast(arrival.node);
            let mut guards = instances(&arrival.continuation);
            guards.push(arrival.instance.as_str().to_owned());
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
            let id = JobId {
                run,
                position: Some(join_hash(&arrival.instance)),
            };
            json!([
                arrival.instance.as_str(),
                arrival.branch,
                arrival.expected,
                wire_result(&arrival.value),
                guards,
                id.to_string(),
                serde_json::to_string(&position).unwrap_or_default(),
                closes,
            ])
        })
        .collect();
    let outcome = transition
        .output
        .map(|output| outcome(inner, job, output, version, attempts));
    Advance {
        entry,
        version,
        attempts,
        successors: Json::Array(successors).to_string(),
        held,
        staged: Vec::new(),
        arrivals: Json::Array(arrivals).to_string(),
        outcome,
        hand_off: inner.claiming.load(std::sync::atomic::Ordering::Acquire),
    }
}

/// The items of a new map instance beyond its concurrency: their jobs wait in the instance's
/// held hash until an arrival at the instance releases them, one item per arrival.
pub(crate) struct HeldItems {
    pub(crate) instance: InstanceId,
    /// The first held item (the map's concurrency).
    pub(crate) first: usize,
    /// Each held item and its jobs (successor entries).
    pub(crate) items: Vec<(usize, Vec<Json>)>,
}

impl HeldItems {
    /// The items as `stage.lua`'s arguments, in slices of at most `slice` items: item index,
    /// then its jobs (JSON).
    pub(crate) fn slices(&self, slice: usize) -> impl Iterator<Item = Vec<String>> + '_ {
        self.items.chunks(slice.max(1)).map(|items| {
            items
                .iter()
                .flat_map(|(item, jobs)| [item.to_string(), Json::Array(jobs.clone()).to_string()])
                .collect()
        })
    }
}

/// `transition`, unless a value it would store (a successor's input, a branch's result) is
/// larger than `max_payload_bytes`: then the run fails with [`Error::Resource`] instead, before
/// anything is written.
fn bounded(inner: &Inner, job: &ClaimedJob, transition: Transition) -> Transition {
    let limit = inner.config.max_payload_bytes;
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
            job.name
        ),
    );
    Transition {
        output: Some(Err(error)),
        ..Transition::default()
    }
}

/// A successor's entry in `advance.lua`'s list: id, input, position, the instances above it.
fn successor(run: RunId, job: &Job, deadlines: &[Deadline]) -> Json {
    let id = JobId {
        run,
        position: Some(step_hash(job.node, &job.stack)),
    };
    let position = Position::Step {
        node: job.node,
        stack: job.stack.clone(),
        deadlines: deadlines.to_vec(),
    };
    json!([
        id.to_string(),
        job.input.to_string(),
        serde_json::to_string(&position).unwrap_or_default(),
        instances(&job.stack),
    ])
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
pub(crate) fn instances_of(position: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<Position>(position) {
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

/// The run's stored outcome and its run event, for a job that ends the run with `output`
/// (its steps so far, from the claim, plus this job's).
fn outcome(
    inner: &Inner,
    job: &ClaimedJob,
    output: Result<Json, Error>,
    version: u64,
    attempts: u32,
) -> (String, String) {
    let created_at = UNIX_EPOCH + Duration::from_millis(job.created_ms);
    let now = SystemTime::now().max(created_at);
    let execution_time = now.duration_since(created_at).unwrap_or_default();
    let meta = Metadata {
        session_id: job.session.clone(),
        run_id: job.id.run,
        version: job.version + version,
        created_at,
        updated_at: now,
    };
    let attempts = job.attempts + attempts;
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
        match wire.len() > inner.config.max_payload_bytes {
            false => Ok(wire),
            true => Err(Error::resource(
                "payload",
                format!(
                    "the outcome of `{}` is {} bytes; the limit is {}",
                    job.name,
                    wire.len(),
                    inner.config.max_payload_bytes
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
    let (wire, kind) = match stored(output.clone()) {
        Ok(wire) => (wire, kind(&output)),
        Err(error) => {
            let failed = Err(error);
            let wire = stored(failed.clone()).unwrap_or_default();
            (wire, kind(&failed))
        }
    };
    let event = run_event(&job.session, job.id.run, kind);
    (wire, event)
}

fn run_event(session: &SessionId, run: RunId, kind: EventKind) -> String {
    serde_json::to_string(&Event {
        session: session.clone(),
        run_id: Some(run),
        processor: None,
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
