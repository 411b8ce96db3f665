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
        if let Err(error) = &value
            && graph.fails_fast(node)
        {
            self.open.remove(&instance);
            self.closed.insert(instance);
            return Some(graph.join_failed(node, continuation, branch, error.clone()));
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::portable::compile;
    use crate::{Map, Parallel};

    /// A serde leaf written by hand: `x × 2`.
    #[derive(Clone)]
    struct Double;

    impl Processor for Double {
        type Input = u64;
        type Output = u64;
        fn name(&self) -> &'static str {
            "double"
        }
        fn config(&self) -> &ProcessorConfig {
            static CONFIG: ProcessorConfig = ProcessorConfig::new();
            &CONFIG
        }
        async fn process(&self, x: u64, _ctx: &Ctx) -> Result<u64, Error> {
            Ok(x * 2)
        }
        fn compile(&self, graph: &mut PortableGraph) -> Option<PortableId> {
            Some(graph.step(self.clone()))
        }
    }

    impl crate::Accepts<u64> for Double {
        fn accept(input: u64) -> u64 {
            input
        }
    }

    fn value(job: &crate::portable::Job) -> u64 {
        job.input.as_u64().unwrap_or(u64::MAX)
    }

    #[test]
    fn a_ten_thousand_item_map_joins_exactly_once() {
        let graph = compile(&Map::new(Double).concurrency(64)).expect("portable");
        let start = graph.start(json!((0..10_000u64).collect::<Vec<_>>()));
        assert_eq!(start.jobs.len(), 10_000);
        assert!(start.output.is_none() && start.arrivals.is_empty());

        let mut joins = JoinTable::default();
        let mut completions = Vec::new();
        for job in &start.jobs {
            let next = graph.transition(job, Ok(json!(value(job) * 2)));
            assert!(next.jobs.is_empty() && next.output.is_none());
            for arrival in next.arrivals {
                assert_eq!(arrival.expected, 10_000);
                completions.extend(joins.arrive(&graph, arrival.clone()));
                // A re-delivered step arrives again: the join ignores it.
                assert!(joins.arrive(&graph, arrival).is_none());
            }
        }
        assert_eq!(completions.len(), 1, "one join for the instance");
        assert_eq!(joins.open(), 0);
        let output = completions.pop().and_then(|done| done.output);
        let output: Vec<Result<u64, Error>> =
            serde_json::from_value(output.expect("the map ends the run").expect("ok"))
                .expect("decodes");
        assert_eq!(output.len(), 10_000);
        assert!(output.iter().zip(0u64..).all(|(r, i)| *r == Ok(i * 2)));
    }

    #[test]
    fn the_same_transition_twice_gives_the_same_jobs_and_arrivals() {
        let graph = compile(&Map::new(Parallel::new((Double, Double)))).expect("portable");
        let start = graph.start(json!([1, 2]));
        let again = graph.start(json!([1, 2]));
        assert_eq!(
            start.jobs, again.jobs,
            "instance ids are derived, not drawn"
        );
        let job = &start.jobs[3];
        let first = graph.transition(job, Ok(json!(4)));
        let second = graph.transition(job, Ok(json!(4)));
        assert_eq!(first.arrivals, second.arrivals);
        assert_eq!(
            first.arrivals[0].instance.as_str(),
            "3.1/2",
            "map 3, item 1, parallel 2"
        );
    }

    #[test]
    fn an_all_or_nothing_parallel_fails_once_at_its_first_failed_branch() {
        let graph = compile(&Parallel::new((Double, Double, Double))).expect("portable");
        let start = graph.start(json!(1));
        let mut joins = JoinTable::default();
        let failed = graph.transition(&start.jobs[1], Err(Error::validation("x", "no")));
        let done = failed
            .arrivals
            .into_iter()
            .find_map(|arrival| joins.arrive(&graph, arrival))
            .expect("the first failure ends the instance");
        let Some(Err(Error::StepFailed { step, position, .. })) = done.output else {
            panic!("not a branch failure: {:?}", done.output);
        };
        assert_eq!((step.as_str(), position), ("double", 1));
        assert!(
            joins.is_moot(&start.jobs[2].stack),
            "its siblings need not run"
        );
        let late = graph.transition(&start.jobs[0], Ok(json!(2)));
        for arrival in late.arrivals {
            assert!(joins.arrive(&graph, arrival).is_none());
        }
    }
}
