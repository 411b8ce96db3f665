//! Processors this process can execute from Redis: the bridge between a job's JSON and the
//! typed processor, run by the embedded step executor.

use std::any::Any;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{Parked, Parking, RunSeed, with_run_seed};
use crate::plan::Fingerprint;
use crate::portable::{Json, PortableGraph};
use crate::runtime::host::StepGate;
use crate::{
    Error, Executes, LocalRuntime, Metadata, Processor, RunFailure, RunId, RunOutcome, SessionId,
};

/// What executing one job produced.
pub(crate) struct Executed {
    /// The outcome as stored in Redis (`{"Ok": RunResult}` or `{"Err": RunFailure}`).
    pub(crate) wire: String,
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
    pub(crate) parked: Option<(Parked, u32)>,
}

/// A processor whose data crosses Redis, erased.
pub(crate) trait Served: Send + Sync + 'static {
    fn fingerprint(&self) -> Fingerprint;
    fn input_type(&self) -> &'static str;
    fn output_type(&self) -> &'static str;
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
    /// The identity the submitter gave the run.
    pub(crate) run_id: RunId,
    /// For a child run: the calling run (whose id the child runs under, without run-level
    /// events) and the call depth it runs at.
    pub(crate) child_of: Option<(RunId, u32)>,
    /// The attempt a parked step resumes at (0: fresh), and the attempts it made before.
    pub(crate) resume: (u32, u32),
    pub(crate) created_at: SystemTime,
    /// The largest outcome that may be stored.
    pub(crate) max_bytes: usize,
    /// The cluster-wide limits its steps pass.
    pub(crate) gate: Arc<dyn StepGate>,
}

/// A served processor `P`.
pub(crate) struct ServedProcessor<P> {
    processor: P,
    fingerprint: Fingerprint,
    graph: Option<Arc<PortableGraph>>,
}

impl<P> ServedProcessor<P>
where
    P: Processor,
    P::Input: Serialize + DeserializeOwned,
    P::Output: Serialize + DeserializeOwned,
{
    pub(crate) fn new(processor: P) -> Self {
        let fingerprint = processor.contract().fingerprint;
        let graph = crate::portable::compile(&processor)
            .filter(PortableGraph::is_composite)
            .map(Arc::new);
        ServedProcessor {
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
    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn input_type(&self) -> &'static str {
        std::any::type_name::<P::Input>()
    }

    fn output_type(&self) -> &'static str {
        std::any::type_name::<P::Output>()
    }

    fn execute<'a>(&'a self, job: Assignment<'a>) -> BoxFuture<'a, Executed> {
        Box::pin(async move {
            let Assignment {
                engine,
                session,
                input,
                run_id,
                child_of,
                resume: (resume, attempts_before),
                created_at,
                max_bytes,
                gate,
            } = job;
            // A single step's waits go to Redis' due-time set, as a step job's do.
            let parking = self
                .processor
                .is_step()
                .then(|| Arc::new(Parking::new(resume)));
            let started = Instant::now();
            let decoded = serde_json::from_slice::<P::Input>(input);
            let undecodable = decoded.is_err();
            let outcome: RunOutcome<P::Output> = match decoded {
                Ok(input) => {
                    let seed = RunSeed {
                        run_id: child_of.map_or(run_id, |(caller, _)| caller),
                        created_at,
                        gate: Some(gate),
                        one_step: child_of.is_some(),
                        parking: parking.clone(),
                        depth: child_of.map_or(0, |(_, depth)| depth),
                    };
                    with_run_seed(
                        seed,
                        engine.execute_in_session(session, &self.processor, input),
                    )
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
            let parked = parking.as_ref().and_then(|p| p.parked());
            if let (Some(parked), Err(failure)) = (parked, &outcome) {
                return Executed {
                    wire: String::new(),
                    typed: Box::new(()),
                    cancelled_here: false,
                    undecodable: false,
                    parked: Some((parked, failure.attempts)),
                };
            }
            // Attempts made before the step parked count too.
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
                typed: Box::new(outcome),
                cancelled_here,
                undecodable,
                parked: None,
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
