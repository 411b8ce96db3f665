//! Processors this process can execute from Redis: the bridge between a job's JSON and the
//! typed processor, run by the embedded step executor; and the table of them.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::plan::{Fingerprint, Fnv};
use crate::portable::{Json, PortableGraph};
use crate::runtime::embed::{Embedding, Wait};
use crate::{Error, LocalRuntime, Metadata, Processor, RunFailure, RunId, RunOutcome, SessionId};

/// The fingerprint a job of `contract`'s processor carries: its contract (name, types,
/// version) and its plan's shape, so that a worker whose workflow has another shape under the
/// same name and version never takes the job (invariant 4).
pub(crate) fn job_fingerprint(contract: Fingerprint, plan: Fingerprint) -> String {
    let mut hash = Fnv::new();
    hash.write(b"job");
    hash.write(&contract.0.to_le_bytes());
    hash.write(&plan.0.to_le_bytes());
    format!("{:016x}", hash.finish())
}

/// The fingerprint of the later jobs of a run executed step by step: only a worker that has
/// the workflow's step graph serves it.
pub(crate) fn step_fingerprint(job: &str) -> String {
    let mut hash = Fnv::new();
    hash.write(b"steps");
    hash.write(job.as_bytes());
    format!("{:016x}", hash.finish())
}

/// What executing one job produced.
pub(crate) struct Executed {
    /// The outcome as stored in Redis (`{"Ok": RunResult}` or `{"Err": RunFailure}`).
    pub(crate) wire: String,
    /// Whether the run succeeded.
    pub(crate) ok: bool,
    /// The same outcome, typed (`RunOutcome<P::Output>`), for a waiter in this process.
    pub(crate) typed: Box<dyn Any + Send>,
    /// Whether the run ended because this process's runtime was stopped (so the job should
    /// be released for another worker, not committed).
    pub(crate) cancelled_here: bool,
    /// Whether the job's input could not be decoded: it fails at once, without a retry, and
    /// is dead-lettered with the reason.
    pub(crate) undecodable: bool,
    /// The step waits (its `delay`, or a retry's backoff) in Redis' due-time set, having made
    /// this many attempts: the job is parked, not committed.
    pub(crate) waits: Option<(Wait, u32)>,
}

/// A processor whose data crosses Redis, erased.
pub(crate) trait Served: Send + Sync + 'static {
    /// The fingerprint of its runs' jobs ([`job_fingerprint`]).
    fn fingerprint(&self) -> &str;
    /// The fingerprint of its step jobs, when its runs go one job per step.
    fn step_fingerprint(&self) -> Option<&str>;
    fn input_type(&self) -> &'static str;
    fn output_type(&self) -> &'static str;
    /// Whether the processor is a step (user code) rather than a composition.
    fn is_step(&self) -> bool;
    /// Whether its runs' data is hidden from inspection (`redact`, on it or a processor it
    /// contains).
    fn redacts(&self) -> bool;
    /// Runs the job's input through the processor.
    fn execute<'a>(&'a self, job: Assignment<'a>) -> BoxFuture<'a, Executed>;
    /// The processor's portable graph, when it composes steps and its data is serde: its
    /// runs can then go one job per step.
    fn graph(&self) -> Option<&Arc<PortableGraph>>;
    /// A job's input as the graph's JSON, once it decoded as the processor's input type.
    fn portable_input(&self, input: &[u8]) -> Result<Json, Error>;
}

/// One job handed to a served processor.
pub(crate) struct Assignment<'a> {
    /// The executor that runs it.
    pub(crate) engine: &'a LocalRuntime,
    pub(crate) session: &'a SessionId,
    /// Its input, as JSON (bytes as found in Redis: not necessarily UTF-8).
    pub(crate) input: &'a [u8],
    /// The job's run (for a child run, its own id, under which its outcome is stored).
    pub(crate) run_id: RunId,
    /// How the embedded run differs from a local one (its identity, hooks, waits).
    pub(crate) embedding: Arc<Embedding>,
    /// The attempts the job made before it waited.
    pub(crate) attempts_before: u32,
    pub(crate) created_at: SystemTime,
    /// The largest outcome that may be stored.
    pub(crate) max_bytes: usize,
}

/// The processors this process serves, by name.
#[derive(Default)]
pub(crate) struct ServedTable {
    served: RwLock<HashMap<&'static str, Arc<dyn Served>>>,
}

impl ServedTable {
    pub(crate) fn insert(&self, name: &'static str, served: Arc<dyn Served>) {
        self.served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, served);
    }

    pub(crate) fn remove(&self, name: &str) {
        self.served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn Served>> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The served processor a job of `name` with `fingerprint` is for, if this process has
    /// that exact contract and plan.
    pub(crate) fn for_job(&self, name: &str, fingerprint: &str) -> Option<Arc<dyn Served>> {
        self.get(name)
            .filter(|s| s.fingerprint() == fingerprint || s.step_fingerprint() == Some(fingerprint))
    }

    /// The names of the processors this process serves, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let served = self.served.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = served.keys().map(|name| (*name).to_owned()).collect();
        names.sort();
        names
    }

    /// Every fingerprint whose jobs this process takes.
    pub(crate) fn fingerprints(&self) -> Vec<String> {
        let served = self.served.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<String> = served
            .values()
            .flat_map(|s| {
                std::iter::once(s.fingerprint().to_owned())
                    .chain(s.step_fingerprint().map(str::to_owned))
            })
            .collect();
        all.sort();
        all
    }
}

/// A served processor `P`.
pub(crate) struct ServedProcessor<P> {
    processor: P,
    fingerprint: String,
    step_fingerprint: Option<String>,
    graph: Option<Arc<PortableGraph>>,
    redacts: bool,
}

impl<P> ServedProcessor<P>
where
    P: Processor,
    P::Input: Serialize + DeserializeOwned,
    P::Output: Serialize + DeserializeOwned,
{
    pub(crate) fn new(processor: P) -> Self {
        let fingerprint = job_fingerprint(
            processor.contract().fingerprint,
            processor.plan().fingerprint,
        );
        let graph = crate::portable::compile(&processor)
            .filter(PortableGraph::is_composite)
            .map(Arc::new);
        ServedProcessor {
            step_fingerprint: graph.as_ref().map(|_| step_fingerprint(&fingerprint)),
            redacts: super::inspect::redacts(&processor),
            processor,
            fingerprint,
            graph,
        }
    }

    fn undecodable(&self, error: &serde_json::Error) -> Error {
        Error::Serialization {
            message: format!(
                "the input of `{}` is not a `{}`: {error}",
                self.processor.name(),
                std::any::type_name::<P::Input>()
            ),
        }
    }
}

impl<P> Served for ServedProcessor<P>
where
    P: Processor,
    P::Input: Serialize + DeserializeOwned,
    P::Output: Serialize + DeserializeOwned,
{
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn step_fingerprint(&self) -> Option<&str> {
        self.step_fingerprint.as_deref()
    }

    fn input_type(&self) -> &'static str {
        std::any::type_name::<P::Input>()
    }

    fn output_type(&self) -> &'static str {
        std::any::type_name::<P::Output>()
    }

    fn redacts(&self) -> bool {
        self.redacts
    }

    fn is_step(&self) -> bool {
        self.processor.is_step()
    }

    fn execute<'a>(&'a self, job: Assignment<'a>) -> BoxFuture<'a, Executed> {
        Box::pin(async move {
            let Assignment {
                engine,
                session,
                input,
                run_id,
                embedding,
                attempts_before,
                created_at,
                max_bytes,
            } = job;
            let started = Instant::now();
            let decoded = serde_json::from_slice::<P::Input>(input);
            let undecodable = decoded.is_err();
            let outcome: RunOutcome<P::Output> = match decoded {
                Ok(input) => {
                    engine
                        .execute_embedded(session, &self.processor, input, Arc::clone(&embedding))
                        .await
                }
                Err(error) => Err(failure(
                    session,
                    run_id,
                    created_at,
                    started,
                    self.undecodable(&error),
                )),
            };
            let waited = embedding.waits.as_ref().and_then(|w| w.handed_back());
            if let (Some(wait), Err(failure)) = (waited, &outcome) {
                return Executed {
                    wire: String::new(),
                    ok: false,
                    typed: Box::new(()),
                    cancelled_here: false,
                    undecodable: false,
                    waits: Some((wait, failure.attempts)),
                };
            }
            // Attempts made before the step waited count too.
            let mut outcome = outcome;
            match &mut outcome {
                Ok(result) => result.attempts += attempts_before,
                Err(failure) => failure.attempts += attempts_before,
            }
            let cancelled_here = matches!(
                &outcome,
                Err(RunFailure {
                    error: Error::Cancelled { .. },
                    ..
                })
            ) && !engine_running(engine);
            let encoded = serde_json::to_string(&outcome)
                .map_err(|error| Error::Serialization {
                    message: format!(
                        "the output of `{}` cannot be encoded: {error}",
                        self.processor.name()
                    ),
                })
                .and_then(|wire| match wire.len() > max_bytes {
                    false => Ok(wire),
                    true => Err(Error::resource(
                        "payload",
                        format!(
                            "the outcome of `{}` is {} bytes; the limit is {max_bytes}",
                            self.processor.name(),
                            wire.len()
                        ),
                    )),
                });
            let (wire, outcome) = match encoded {
                Ok(wire) => (wire, outcome),
                Err(error) => {
                    let failed: RunOutcome<P::Output> =
                        Err(failure(session, run_id, created_at, started, error));
                    let wire = serde_json::to_string(&failed).unwrap_or_else(|_| {
                        // Only reachable if an error's own details cannot be encoded.
                        r#"{"Err":{"error":{"kind":"serialization","message":"outcome cannot be encoded"},"meta":null}}"#.to_owned()
                    });
                    (wire, failed)
                }
            };
            Executed {
                wire,
                ok: outcome.is_ok(),
                typed: Box::new(outcome),
                cancelled_here,
                undecodable,
                waits: None,
            }
        })
    }

    fn graph(&self) -> Option<&Arc<PortableGraph>> {
        self.graph.as_ref()
    }

    fn portable_input(&self, input: &[u8]) -> Result<Json, Error> {
        serde_json::from_slice::<P::Input>(input).map_err(|e| self.undecodable(&e))?;
        serde_json::from_slice::<Json>(input).map_err(|e| self.undecodable(&e))
    }
}

fn engine_running(engine: &LocalRuntime) -> bool {
    crate::Runtime::is_running(engine)
}

/// A failure that happened around a run rather than inside it.
pub(crate) fn failure(
    session: &SessionId,
    run_id: RunId,
    created_at: SystemTime,
    started: Instant,
    error: Error,
) -> RunFailure {
    let now = SystemTime::now();
    RunFailure {
        error,
        meta: Metadata {
            session_id: session.clone(),
            run_id,
            version: 0,
            created_at,
            updated_at: now.max(created_at),
        },
        attempts: 0,
        execution_time: started.elapsed(),
    }
}
