//! The step-by-step semantics of a [`PortableGraph`], as pure functions: where a run starts,
//! what follows a finished step, and what a completed fan-out continues with.
//!
//! A job is a step node, its JSON input, and its *continuation*: the stack of compositions
//! it runs inside, innermost last. A finished step's output unwinds that stack: a chain's first
//! part continues with its second, a route arm or a named workflow passes through, and a fan-out
//! branch (of a parallel or a map) becomes an [`Arrival`] at its instance's join. Nothing here
//! runs a step or stores anything: a runtime persists the transitions (in memory, or in Redis
//! with its join counters) and runs the jobs.

use serde::{Deserialize, Serialize};

use super::Json;
use super::codec::encode;
use super::graph::{Join, PortableGraph, PortableId, PortableNode};
use crate::{Error, StateSnapshot};

/// One activation of a fan-out (a parallel or a map) in a run.
///
/// Derived from the path of fan-out branches above it, so it is unique in a run and the same
/// every time the same transition is computed again (a re-delivered job yields the same ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId(String);

impl InstanceId {
    /// The id as text (`"<node>.<branch>/…/<node>"`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One composition a job runs inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// In the first part of a chain: its second part follows.
    ChainFirst(PortableId),
    /// In the second part of a chain.
    ChainSecond(PortableId),
    /// In the chosen arm of a route.
    Route(PortableId),
    /// In the body of a named workflow.
    Named(PortableId),
    /// In one branch (a parallel's branch, or a map's item) of a fan-out instance.
    Branch {
        /// The parallel or map.
        node: PortableId,
        /// Its activation.
        instance: InstanceId,
        /// The branch or item index.
        branch: usize,
        /// How many branches or items the instance has.
        expected: usize,
    },
}

impl Frame {
    /// The fan-out instance this frame is a branch of, if it is one.
    pub fn instance(&self) -> Option<&InstanceId> {
        match self {
            Frame::Branch { instance, .. } => Some(instance),
            _ => None,
        }
    }
}

/// A step to run: the step node, its input, and what it runs inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The step node.
    pub node: PortableId,
    /// The compositions it runs inside, outermost first.
    pub stack: Vec<Frame>,
    /// The step's input.
    pub input: Json,
}

/// A fan-out branch that finished: one slot of its instance's join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arrival {
    /// The fan-out's activation.
    pub instance: InstanceId,
    /// The parallel or map node.
    pub node: PortableId,
    /// Which branch or item.
    pub branch: usize,
    /// How many branches or items the instance waits for.
    pub expected: usize,
    /// The branch's output, or its error (as the typed combinator sees it).
    pub value: Result<Json, Error>,
    /// What the fan-out runs inside (the same for every branch of an instance).
    pub continuation: Vec<Frame>,
}

/// What follows one step (or a run's start, or a join).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Transition {
    /// Steps to run next.
    pub jobs: Vec<Job>,
    /// Branches that reached their fan-out's join.
    pub arrivals: Vec<Arrival>,
    /// The run's outcome, when this transition ends it.
    pub output: Option<Result<Json, Error>>,
}

/// An error on its way up the continuation, with the failing step's input while only its
/// direct parent has seen it (a chain keeps it as the error's `state_before`).
struct Failure {
    error: Error,
    state_before: Option<StateSnapshot>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            state_before: None,
        }
    }
}

impl PortableGraph {
    /// The jobs that start a run on `input`.
    pub fn start(&self, input: Json) -> Transition {
        let mut next = Transition::default();
        match self.root {
            Some(root) => self.descend(root, input, Vec::new(), &mut next),
            None => {
                next.output = Some(Err(Error::configuration("portable graph has no root")));
            }
        }
        next
    }

    /// What follows `job` once its step returned `outcome` (its output, or its error after its
    /// last attempt).
    pub fn transition(&self, job: &Job, outcome: Result<Json, Error>) -> Transition {
        let mut next = Transition::default();
        let value = outcome.map_err(|error| {
            let state_before = self
                .step_node(job.node)
                .map(|step| StateSnapshot::json(step.input_type(), job.input.clone()));
            Failure {
                error,
                state_before,
            }
        });
        self.unwind(job.stack.clone(), value, &mut next);
        next
    }

    /// What follows a job whose enclosing named workflow at `stack[frame]` ran out of time:
    /// the workflow fails with `error` (its `Timeout`), seen by what the workflow runs inside.
    pub fn expire(&self, stack: &[Frame], frame: usize, error: Error) -> Transition {
        let mut next = Transition::default();
        let outer = stack.get(..frame).unwrap_or(stack).to_vec();
        self.unwind(outer, Err(error.into()), &mut next);
        next
    }

    /// Whether the fan-out `node` ends at its first failed branch (an all-or-nothing parallel),
    /// rather than when every branch arrived.
    pub fn fails_fast(&self, node: PortableId) -> bool {
        matches!(
            self.node(node),
            Ok(PortableNode::Parallel {
                join: Join::Tuple | Join::Merge(_),
                ..
            })
        )
    }

    /// What follows fan-out `node` once every branch arrived: `results` by branch index, and
    /// the instance's `continuation`.
    pub fn join(
        &self,
        node: PortableId,
        continuation: Vec<Frame>,
        results: Vec<Result<Json, Error>>,
    ) -> Transition {
        let mut next = Transition::default();
        let value = self.joined(node, results).map_err(Failure::from);
        self.unwind(continuation, value, &mut next);
        next
    }

    /// What follows an all-or-nothing parallel `node` whose `branch` failed with `error` first:
    /// the parallel fails, naming the branch, and the other branches' arrivals are moot.
    pub fn join_failed(
        &self,
        node: PortableId,
        continuation: Vec<Frame>,
        branch: usize,
        error: Error,
    ) -> Transition {
        let mut next = Transition::default();
        let failure = self.branch_failure(node, branch, error);
        self.unwind(continuation, Err(failure.into()), &mut next);
        next
    }

    fn branch_failure(&self, node: PortableId, branch: usize, error: Error) -> Error {
        let name = match self.node(node) {
            Ok(PortableNode::Parallel { branches, .. }) => branches.get(branch).map(|b| b.1),
            _ => None,
        };
        error.in_step(name.unwrap_or("branch"), branch, None)
    }

    fn joined(&self, node: PortableId, results: Vec<Result<Json, Error>>) -> Result<Json, Error> {
        let as_results = |results: Vec<Result<Json, Error>>| -> Result<Json, Error> {
            let mut items = Vec::with_capacity(results.len());
            for result in results {
                // The JSON form of `Result<T, Error>`, as serde writes it.
                items.push(match result {
                    Ok(value) => serde_json::json!({ "Ok": value }),
                    Err(error) => serde_json::json!({ "Err": encode(&error)? }),
                });
            }
            Ok(Json::Array(items))
        };
        match self.node(node)? {
            PortableNode::Map { .. }
            | PortableNode::Parallel {
                join: Join::Collect,
                ..
            } => as_results(results),
            PortableNode::Parallel { join, .. } => {
                let mut values = Vec::with_capacity(results.len());
                for (branch, result) in results.into_iter().enumerate() {
                    match result {
                        Ok(value) => values.push(value),
                        Err(error) => return Err(self.branch_failure(node, branch, error)),
                    }
                }
                match join {
                    Join::Merge(merge) => merge(values, &self.codecs),
                    _ => Ok(Json::Array(values)),
                }
            }
            _ => Err(Error::configuration(format!(
                "portable node {node} is not a fan-out"
            ))),
        }
    }

    /// Enters `node` with `input` inside `stack`: the jobs of its first steps (or, when it ends
    /// at once, its unwinding).
    fn descend(&self, node: PortableId, input: Json, mut stack: Vec<Frame>, next: &mut Transition) {
        let entered = match self.node(node) {
            Ok(entered) => entered,
            Err(error) => return self.unwind(stack, Err(error.into()), next),
        };
        match entered {
            PortableNode::Step(_) => next.jobs.push(Job { node, stack, input }),
            PortableNode::Chain { first, .. } => {
                stack.push(Frame::ChainFirst(node));
                self.descend(*first, input, stack, next);
            }
            PortableNode::Named { body, .. } => {
                stack.push(Frame::Named(node));
                self.descend(*body, input, stack, next);
            }
            PortableNode::Route { arms, select } => {
                let arm = select(&input, &self.codecs).and_then(|index| {
                    arms.get(index).copied().ok_or_else(|| {
                        Error::configuration(format!("route {node} has no arm {index}"))
                    })
                });
                match arm {
                    Ok(arm) => {
                        stack.push(Frame::Route(node));
                        self.descend(arm, input, stack, next);
                    }
                    // The route's own error: its parent sees no step input.
                    Err(error) => self.unwind(stack, Err(error.into()), next),
                }
            }
            PortableNode::Parallel { branches, .. } => {
                let instance = instance_id(&stack, node);
                for (branch, (child, _)) in branches.iter().enumerate() {
                    let mut inner = stack.clone();
                    inner.push(Frame::Branch {
                        node,
                        instance: instance.clone(),
                        branch,
                        expected: branches.len(),
                    });
                    self.descend(*child, input.clone(), inner, next);
                }
            }
            PortableNode::Map { item, .. } => {
                let items = match input {
                    Json::Array(items) => items,
                    other => {
                        let error = Error::Serialization {
                            message: format!("map {node} expects a JSON array, got {other}"),
                        };
                        return self.unwind(stack, Err(error.into()), next);
                    }
                };
                if items.is_empty() {
                    return self.unwind(stack, Ok(Json::Array(Vec::new())), next);
                }
                let instance = instance_id(&stack, node);
                let expected = items.len();
                for (branch, value) in items.into_iter().enumerate() {
                    let mut inner = stack.clone();
                    inner.push(Frame::Branch {
                        node,
                        instance: instance.clone(),
                        branch,
                        expected,
                    });
                    self.descend(*item, value, inner, next);
                }
            }
        }
    }

    /// Carries `value` up `stack` until a composition continues (a chain's second part), a
    /// branch reaches its join, or the run ends.
    fn unwind(
        &self,
        mut stack: Vec<Frame>,
        mut value: Result<Json, Failure>,
        next: &mut Transition,
    ) {
        while let Some(frame) = stack.pop() {
            value = match (frame, value) {
                (Frame::ChainFirst(node), Ok(middle)) => match self.chain_parts(node) {
                    Ok(chain) => {
                        stack.push(Frame::ChainSecond(node));
                        return self.descend(chain.second, middle, stack, next);
                    }
                    Err(error) => Err(error.into()),
                },
                (Frame::ChainFirst(node), Err(failure)) => match self.chain_parts(node) {
                    // A nested chain already named the failing step and its position.
                    Ok(chain) if chain.first_len > 1 => Err(failure.error.into()),
                    Ok(chain) => {
                        let error =
                            failure
                                .error
                                .in_step(chain.first_name, 0, failure.state_before);
                        Err(error.into())
                    }
                    Err(error) => Err(error.into()),
                },
                (Frame::ChainSecond(node), Err(failure)) => match self.chain_parts(node) {
                    Ok(chain) => {
                        let error = failure.error.in_step(
                            chain.second_name,
                            chain.first_len,
                            failure.state_before,
                        );
                        Err(error.into())
                    }
                    Err(error) => Err(error.into()),
                },
                (
                    Frame::Branch {
                        node,
                        instance,
                        branch,
                        expected,
                    },
                    value,
                ) => {
                    next.arrivals.push(Arrival {
                        instance,
                        node,
                        branch,
                        expected,
                        value: value.map_err(|failure| failure.error),
                        continuation: stack,
                    });
                    return;
                }
                // A route arm, a named workflow, a chain's second part that succeeded: the
                // value passes through, and a step input seen below is no longer the direct
                // child's.
                (_, Ok(value)) => Ok(value),
                (_, Err(failure)) => Err(failure.error.into()),
            };
        }
        next.output = Some(value.map_err(|failure| failure.error));
    }

    fn chain_parts(&self, node: PortableId) -> Result<ChainParts, Error> {
        match self.node(node)? {
            PortableNode::Chain {
                second,
                first_name,
                second_name,
                first_len,
                ..
            } => Ok(ChainParts {
                second: *second,
                first_name,
                second_name,
                first_len: *first_len,
            }),
            _ => Err(Error::configuration(format!(
                "portable node {node} is not a chain"
            ))),
        }
    }
}

struct ChainParts {
    second: PortableId,
    first_name: &'static str,
    second_name: &'static str,
    first_len: usize,
}

/// The id of `node`'s activation inside `stack`: the fan-out branches above it, then the node.
fn instance_id(stack: &[Frame], node: PortableId) -> InstanceId {
    let mut id = String::new();
    for frame in stack {
        if let Frame::Branch { node, branch, .. } = frame {
            id.push_str(&format!("{node}.{branch}/"));
        }
    }
    id.push_str(&node.to_string());
    InstanceId(id)
}
