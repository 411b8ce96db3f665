//! Portable step graphs: a workflow whose data is serde, erased into steps and compositions
//! that exchange JSON, and the pure transitions that run it one step (one job) at a time.
//!
//! [`Processor::compile`] builds the graph; it answers `None` (the workflow keeps running as
//! one piece) as soon as one leaf's data is not serde, which `#[processor]` decides at compile
//! time with the [`WireProbe`]. See `docs/architecture.md`, "Granularity: what a job is".

mod codec;
mod graph;
mod interpreter;
mod probe;
mod transition;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use codec::Codecs;
pub use graph::{PortableGraph, PortableId, StepNode};
pub use interpreter::{JoinTable, StepByStep};
pub use probe::{OpaqueLeaf, SerdeLeaf, WireProbe};
pub use transition::{Arrival, Frame, InstanceId, Job, Transition};

pub(crate) use codec::Codec;
pub(crate) use graph::Join;

use crate::Processor;

/// A value as it crosses between steps.
pub type Json = serde_json::Value;

/// The portable graph of `processor`, or `None` when some part of it is not portable (a leaf
/// whose data is not serde, a hand-written processor, a value no codec can encode).
pub fn compile<P>(processor: &P) -> Option<PortableGraph>
where
    P: Processor,
    P::Input: Serialize + DeserializeOwned,
    P::Output: Serialize + DeserializeOwned,
{
    let mut graph = PortableGraph::new();
    // The caller's bound gives the workflow's own input and output their codecs (a merge's
    // result that ends the workflow is encoded with the output's).
    graph.codec::<P::Input>();
    graph.codec::<P::Output>();
    let root = processor.compile(&mut graph)?;
    graph.finish(root)
}

/// Whether `A` and `B` are one type: an edge whose conversion is the identity, so the same JSON
/// is both sides' value.
pub(crate) fn same_type<A: 'static, B: 'static>() -> bool {
    std::any::TypeId::of::<A>() == std::any::TypeId::of::<B>()
}
