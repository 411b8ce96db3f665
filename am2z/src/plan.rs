//! The plan: a static, serialisable description of what a workflow executes.
//!
//! Both runtimes run the same plan; the Redis runtime also uses it to decide what follows a
//! step, and tools draw it. The [`Fingerprint`] changes whenever the graph, a step's types or a
//! step's contract version changes, and never otherwise (it is FNV-1a over a canonical
//! encoding, stable across processes, compilers and platforms).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProcessorConfig;

/// A node's index in [`Plan::nodes`].
pub type NodeId = u32;

/// The graph a processor executes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The name of the root processor or workflow.
    pub name: String,
    /// The root node.
    pub root: NodeId,
    /// Every node, indexed by [`NodeId`].
    pub nodes: Vec<Node>,
    /// Data edges between nodes, in execution order.
    pub edges: Vec<Edge>,
    /// A stable hash of everything above.
    pub fingerprint: Fingerprint,
}

impl Plan {
    /// The names of the processors the plan runs as steps, each once, in first-seen order.
    pub fn step_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for node in &self.nodes {
            if let NodeKind::Step { processor, .. } = &node.kind
                && !names.contains(&processor.as_str())
            {
                names.push(processor);
            }
        }
        names
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    /// The edges leaving `id`.
    pub fn edges_from(&self, id: NodeId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |edge| edge.from == id)
    }
}

/// One node of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Its index.
    pub id: NodeId,
    /// What it does.
    pub kind: NodeKind,
}

/// What a node does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeKind {
    /// Runs one processor (with its retries, timeout and limits).
    Step {
        /// The processor's name.
        processor: String,
        /// Its input type.
        input: String,
        /// Its output type.
        output: String,
        /// Its contract version.
        version: u32,
        /// Its per-attempt timeout in milliseconds, if any.
        timeout_ms: Option<u64>,
        /// Its attempts in all.
        max_attempts: u32,
    },
    /// Runs its children in edge order, each on the previous one's output.
    Chain {
        /// The chain's name.
        name: String,
    },
    /// Runs its children on the same input, then joins their outputs.
    Parallel {
        /// The parallel's name.
        name: String,
        /// How a failing branch is treated.
        policy: ParallelPolicy,
        /// The merge fn, when the outputs are merged rather than tupled.
        merge: Option<String>,
    },
    /// Picks one child by key.
    Route {
        /// The route's name.
        name: String,
        /// The arm keys, in edge order.
        arms: Vec<String>,
        /// Whether unknown keys go to a fallback arm (the last edge).
        fallback: bool,
        /// Whether the arms were checked to cover an enum at compile time.
        exhaustive: bool,
    },
    /// Runs its child on each item of a list.
    Map {
        /// The map's name.
        name: String,
        /// The most items in flight at once.
        concurrency: usize,
    },
    /// A named workflow wrapping its body.
    Workflow {
        /// The workflow's name.
        name: String,
        /// Its total timeout in milliseconds, if any.
        timeout_ms: Option<u64>,
    },
}

/// What a parallel does when a branch fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParallelPolicy {
    /// The first failure fails the parallel and cancels the other branches.
    AllOrNothing,
    /// Every branch runs to its end; each result is kept.
    CollectResults,
}

/// A data edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// The parent node.
    pub from: NodeId,
    /// The child node.
    pub to: NodeId,
    /// The child's position or arm key.
    pub label: String,
}

/// A stable 64-bit hash, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl From<Fingerprint> for String {
    fn from(fingerprint: Fingerprint) -> String {
        fingerprint.to_string()
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = std::num::ParseIntError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        u64::from_str_radix(&raw, 16).map(Fingerprint)
    }
}

/// FNV-1a, 64 bit: tiny, dependency-free and stable everywhere.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) const fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// The hash so far.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn finish(self) -> u64 {
        self.0
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// What a worker checks before running a processor's job: same name, same types, same version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// The processor's name.
    pub name: String,
    /// Its input type.
    pub input: String,
    /// Its output type.
    pub output: String,
    /// Its contract version.
    pub version: u32,
    /// A hash of the four fields above.
    pub fingerprint: Fingerprint,
}

impl Contract {
    /// The contract of a processor with these parts.
    pub fn new(name: &str, input: &str, output: &str, version: u32) -> Self {
        let mut hash = Fnv::new();
        for part in [
            name.as_bytes(),
            input.as_bytes(),
            output.as_bytes(),
            &version.to_le_bytes(),
        ] {
            hash.write(part);
        }
        Contract {
            name: name.to_owned(),
            input: input.to_owned(),
            output: output.to_owned(),
            version,
            fingerprint: Fingerprint(hash.0),
        }
    }
}

/// Builds a [`Plan`]; used by each processor's `describe`.
#[derive(Debug)]
pub struct PlanBuilder {
    name: String,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

impl PlanBuilder {
    /// A builder for the plan of `name`.
    pub fn new(name: &str) -> Self {
        PlanBuilder {
            name: name.to_owned(),
            nodes: Vec::new(),
            edges: Vec::new(),
        }
    }

    /// Adds a node and returns its id.
    pub fn node(&mut self, kind: NodeKind) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).unwrap_or(NodeId::MAX);
        self.nodes.push(Node { id, kind });
        id
    }

    /// The node with id `id`, to amend it.
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize)
    }

    /// Adds a step node for a processor.
    pub fn step(
        &mut self,
        processor: &str,
        input: &str,
        output: &str,
        config: &ProcessorConfig,
    ) -> NodeId {
        self.node(NodeKind::Step {
            processor: processor.to_owned(),
            input: input.to_owned(),
            output: output.to_owned(),
            version: config.version,
            timeout_ms: config
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            max_attempts: config.retry.max_attempts,
        })
    }

    /// Adds an edge.
    pub fn edge(&mut self, from: NodeId, to: NodeId, label: impl Into<String>) {
        self.edges.push(Edge {
            from,
            to,
            label: label.into(),
        });
    }

    /// Seals the plan and computes its fingerprint.
    pub fn finish(self, root: NodeId) -> Plan {
        let mut hash = Fnv::new();
        // serde_json of plain data is deterministic (struct fields in declaration order).
        for node in &self.nodes {
            hash.write(
                serde_json::to_string(&node.kind)
                    .unwrap_or_default()
                    .as_bytes(),
            );
        }
        for edge in &self.edges {
            hash.write(&edge.from.to_le_bytes());
            hash.write(&edge.to.to_le_bytes());
            hash.write(edge.label.as_bytes());
        }
        hash.write(&root.to_le_bytes());
        Plan {
            name: self.name,
            root,
            nodes: self.nodes,
            edges: self.edges,
            fingerprint: Fingerprint(hash.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_fingerprint_depends_on_every_part() {
        let base = Contract::new("charge", "Payment", "Receipt", 1).fingerprint;
        assert_eq!(
            base,
            Contract::new("charge", "Payment", "Receipt", 1).fingerprint
        );
        assert_ne!(
            base,
            Contract::new("charge", "Payment", "Receipt", 2).fingerprint
        );
        assert_ne!(
            base,
            Contract::new("charge", "Payment", "Refund", 1).fingerprint
        );
        assert_ne!(
            base,
            Contract::new("charg", "ePayment", "Receipt", 1).fingerprint
        );
    }

    #[test]
    fn fingerprint_round_trips_as_hex() {
        let f = Fingerprint(0xdead_beef);
        let wire = serde_json::to_string(&f).unwrap();
        assert_eq!(wire, "\"00000000deadbeef\"");
        assert_eq!(serde_json::from_str::<Fingerprint>(&wire).unwrap(), f);
    }
}
