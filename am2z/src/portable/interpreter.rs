//! An in-memory runtime for a [`PortableGraph`]: a queue of jobs and a join table, driving the
//! pure transitions one step at a time. It proves the graph against the typed executor, and is
//! the reference for a persistent runtime (which keeps the same two structures in Redis).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::Json;
use super::graph::{PortableGraph, PortableId};
use super::transition::{Arrival, Frame, InstanceId, Transition};
use crate::{Ctx, Error, Processor, ProcessorConfig};

/// The open fan-out instances of a run and the branches that arrived at each.
#[derive(Debug, Default)]
pub struct JoinTable {
    open: HashMap<InstanceId, Pending>,
    closed: HashSet<InstanceId>,
}

#[derive(Debug)]
struct Pending {
    node: PortableId,
    continuation: Vec<Frame>,
    results: Vec<Option<Result<Json, Error>>>,
    missing: usize,
}

impl JoinTable {
    /// Records `arrival`; returns the join's transition when it completes the instance (its
    /// last branch arrived, or the first failure of an all-or-nothing parallel). An arrival
    /// for a closed instance, or a second one for the same branch, is ignored.
    pub fn arrive(&mut self, graph: &PortableGraph, arrival: Arrival) -> Option<Transition> {
        let Arrival {
            instance,
            node,
            branch,
            expected,
            value,
            continuation,
        } = arrival;
        if self.closed.contains(&instance) {
            return None;
        }
        if let Err(error) = &value {
            if graph.fails_fast(node) {
                self.open.remove(&instance);
                self.closed.insert(instance);
                return Some(graph.join_failed(node, continuation, branch, error.clone()));
            }
        }
        let pending = self
            .open
            .entry(instance.clone())
            .or_insert_with(|| Pending {
                node,
                continuation,
                results: (0..expected).map(|_| None).collect(),
                missing: expected,
            });
        let slot = pending.results.get_mut(branch)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(value);
        pending.missing -= 1;
        if pending.missing > 0 {
            return None;
        }
        let done = self.open.remove(&instance)?;
        self.closed.insert(instance);
        let results = done.results.into_iter().flatten().collect();
        Some(graph.join(done.node, done.continuation, results))
    }

    /// Whether a job inside `stack` belongs to an instance that already ended (a sibling of a
    /// failed all-or-nothing branch), so it need not run.
    pub fn is_moot(&self, stack: &[Frame]) -> bool {
        stack.iter().any(|frame| match frame {
            Frame::Branch { instance, .. } => self.closed.contains(instance),
            _ => false,
        })
    }

    /// How many instances are still waiting for branches.
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

/// A compiled graph run step by step in memory, as a processor: register or execute it on a
/// `LocalRuntime` and each step runs through that runtime's step executor, one job at a time.
///
/// Takes and returns the workflow's input and output in their JSON form.
#[derive(Debug, Clone)]
pub struct StepByStep {
    graph: Arc<PortableGraph>,
}

impl StepByStep {
    /// Runs `graph`.
    pub fn new(graph: PortableGraph) -> Self {
        StepByStep {
            graph: Arc::new(graph),
        }
    }

    /// The graph it runs.
    pub fn graph(&self) -> &PortableGraph {
        &self.graph
    }

    async fn interpret(&self, input: Json, ctx: &Ctx) -> Result<Json, Error> {
        let graph = &*self.graph;
        let mut queue = VecDeque::new();
        let mut joins = JoinTable::default();
        let mut transitions = vec![graph.start(input)];
        loop {
            while let Some(transition) = transitions.pop() {
                if let Some(output) = transition.output {
                    return output;
                }
                queue.extend(transition.jobs);
                for arrival in transition.arrivals {
                    transitions.extend(joins.arrive(graph, arrival));
                }
            }
            let Some(job) = queue.pop_front() else {
                return Err(Error::configuration("portable run ended without an output"));
            };
            if joins.is_moot(&job.stack) {
                continue;
            }
            let Some(step) = graph.step_node(job.node) else {
                return Err(Error::configuration(format!(
                    "job at {} is not a step",
                    job.node
                )));
            };
            let outcome = step.run(job.input.clone(), ctx).await;
            transitions.push(graph.transition(&job, outcome));
        }
    }
}

impl Processor for StepByStep {
    type Input = Json;
    type Output = Json;

    fn name(&self) -> &'static str {
        "step_by_step"
    }

    fn config(&self) -> &ProcessorConfig {
        static COMPOSITION: ProcessorConfig = ProcessorConfig::new();
        &COMPOSITION
    }

    async fn process(&self, input: Json, ctx: &Ctx) -> Result<Json, Error> {
        self.interpret(input, ctx).await
    }

    fn is_step(&self) -> bool {
        false
    }
}
