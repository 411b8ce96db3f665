//! The autoref-specialisation probe `#[processor]` uses to make a leaf portable exactly when
//! its input and output are serde, without a bound that would not compile for other types.
//!
//! `(&&WireProbe::<In, Out>::new()).leaf(self, graph)` finds [`SerdeLeaf::leaf`] first (its
//! receiver `&&WireProbe` needs no auto-deref) when its bounds hold, and falls back to
//! [`OpaqueLeaf::leaf`] (one deref away) otherwise. Only where `In` and `Out` are concrete.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::graph::{PortableGraph, PortableId};
use crate::Processor;

/// Asks whether `I` and `O` are serde; see the module docs.
pub struct WireProbe<I, O>(PhantomData<fn() -> (I, O)>);

impl<I, O> WireProbe<I, O> {
    /// The probe.
    pub const fn new() -> Self {
        WireProbe(PhantomData)
    }
}

impl<I, O> Default for WireProbe<I, O> {
    fn default() -> Self {
        Self::new()
    }
}

/// The leaf of a processor whose data is serde: a step node.
pub trait SerdeLeaf<I, O> {
    /// Adds `processor` as a step.
    fn leaf<P>(&self, processor: &P, graph: &mut PortableGraph) -> Option<PortableId>
    where
        P: Processor<Input = I, Output = O>;
}

impl<I, O> SerdeLeaf<I, O> for &WireProbe<I, O>
where
    I: Serialize + DeserializeOwned,
    O: Serialize + DeserializeOwned,
{
    fn leaf<P>(&self, processor: &P, graph: &mut PortableGraph) -> Option<PortableId>
    where
        P: Processor<Input = I, Output = O>,
    {
        Some(graph.step(processor.clone()))
    }
}

/// The leaf of any other processor: not portable.
pub trait OpaqueLeaf<I, O> {
    /// `None`.
    fn leaf<P>(&self, _processor: &P, _graph: &mut PortableGraph) -> Option<PortableId>
    where
        P: Processor<Input = I, Output = O>,
    {
        None
    }
}

impl<I, O> OpaqueLeaf<I, O> for WireProbe<I, O> {}
