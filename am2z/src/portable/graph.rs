//! The portable graph: a workflow's steps and compositions with every value as JSON.

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Json;
use super::codec::{Codec, Codecs, decode, encode};
use crate::{Contract, Ctx, Error, Processor};

/// A node of a [`PortableGraph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortableId(pub(crate) u32);

impl PortableId {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for PortableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

type BoxedFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// Runs one typed step on a JSON input: decode, the step executor, encode.
trait StepRunner: Send + Sync {
    fn run<'c>(&'c self, input: Json, ctx: &'c Ctx) -> BoxedFuture<'c, Result<Json, Error>>;
}

struct Typed<P>(P);

impl<P> StepRunner for Typed<P>
where
    P: Processor,
    P::Input: DeserializeOwned,
    P::Output: Serialize,
{
    fn run<'c>(&'c self, input: Json, ctx: &'c Ctx) -> BoxedFuture<'c, Result<Json, Error>> {
        Box::pin(async move {
            let input: P::Input = decode(input)?;
            // Through the step executor, as in a typed run: attempts, retries, timeout, events.
            match ctx.run(&self.0, input).await {
                Ok(output) => encode(&output),
                Err(failure) => Err(failure.error),
            }
        })
    }
}

/// A leaf of the graph: one typed processor behind a JSON face.
#[derive(Clone)]
pub struct StepNode {
    name: &'static str,
    input_type: &'static str,
    contract: Contract,
    runner: Arc<dyn StepRunner>,
}

impl StepNode {
    /// The processor's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The contract a worker checks before running this step.
    pub fn contract(&self) -> &Contract {
        &self.contract
    }

    /// The Rust type name of the step's input (for the failure's `state_before`).
    pub fn input_type(&self) -> &'static str {
        self.input_type
    }

    /// Runs the step on `input` under `ctx`, through the step executor (attempts, retries,
    /// timeout, panics, events), as a typed run does.
    ///
    /// # Errors
    /// The step's own error after its last attempt, or [`Error::Serialization`] when `input`
    /// is not the step's input type.
    pub async fn run(&self, input: Json, ctx: &Ctx) -> Result<Json, Error> {
        self.runner.run(input, ctx).await
    }
}

/// A step node is a processor from JSON to JSON: executed on a runtime (as one run), it runs
/// its typed processor through that runtime's step executor. This is how a worker runs one job.
impl Processor for StepNode {
    type Input = Json;
    type Output = Json;

    fn name(&self) -> &'static str {
        self.name
    }

    fn config(&self) -> &crate::ProcessorConfig {
        // The typed processor inside has the step's own configuration.
        static PASS_THROUGH: crate::ProcessorConfig = crate::ProcessorConfig::new();
        &PASS_THROUGH
    }

    async fn process(&self, input: Json, ctx: &Ctx) -> Result<Json, Error> {
        self.runner.run(input, ctx).await
    }

    fn is_step(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for StepNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepNode")
            .field("name", &self.name)
            .field("contract", &self.contract)
            .finish_non_exhaustive()
    }
}

/// The arm index for a route's JSON input, or the route's no-match error.
pub(crate) type Select = dyn Fn(&Json, &Codecs) -> Result<usize, Error> + Send + Sync;
/// A merge fn over the branch outputs' JSON.
pub(crate) type MergeJson = dyn Fn(Vec<Json>, &Codecs) -> Result<Json, Error> + Send + Sync;

/// How a parallel joins its branches.
#[derive(Clone)]
pub(crate) enum Join {
    /// All-or-nothing, the outputs as a tuple (a JSON array).
    Tuple,
    /// All-or-nothing, the outputs through a merge fn.
    Merge(Arc<MergeJson>),
    /// Every branch to its end, the outputs as a tuple of `Result`s.
    Collect,
}

#[derive(Clone)]
pub(crate) enum PortableNode {
    Step(StepNode),
    Chain {
        first: PortableId,
        second: PortableId,
        first_name: &'static str,
        second_name: &'static str,
        /// How many chain positions `first` spans: a first part longer than 1 is a chain that
        /// already named its failing step.
        first_len: usize,
    },
    Parallel {
        /// Each branch, and its processor's name (for the failure of an all-or-nothing join).
        branches: Vec<(PortableId, &'static str)>,
        join: Join,
    },
    Route {
        arms: Vec<PortableId>,
        select: Arc<Select>,
    },
    Map {
        item: PortableId,
        concurrency: usize,
    },
    Named {
        body: PortableId,
        name: &'static str,
        timeout: Option<Duration>,
    },
}

/// The serde-erased step graph of a workflow: what a runtime needs to run it one step (one job)
/// at a time, with values crossing between steps as JSON.
///
/// Built by [`Processor::compile`] (each combinator adds its node after its children) and
/// finished by [`compile`](super::compile), which registers the root's codecs and checks that
/// every codec a node asked for is present.
#[derive(Clone, Default)]
pub struct PortableGraph {
    pub(crate) nodes: Vec<PortableNode>,
    pub(crate) codecs: Codecs,
    needs: Vec<(TypeId, &'static str)>,
    pub(crate) root: Option<PortableId>,
}

impl std::fmt::Debug for PortableGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortableGraph")
            .field("nodes", &self.nodes.len())
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl PortableGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The root node, once finished.
    pub fn root(&self) -> Option<PortableId> {
        self.root
    }

    /// How many nodes the graph has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The step at `id`, if `id` is a step.
    pub fn step_node(&self, id: PortableId) -> Option<&StepNode> {
        match self.nodes.get(id.index()) {
            Some(PortableNode::Step(step)) => Some(step),
            _ => None,
        }
    }

    /// How many items of the map `node` may be in flight at once (what the typed map's
    /// `concurrency` bounds), if `node` is a map.
    pub fn map_concurrency(&self, node: PortableId) -> Option<usize> {
        match self.nodes.get(node.index()) {
            Some(PortableNode::Map { concurrency, .. }) => Some(*concurrency),
            _ => None,
        }
    }

    /// The name and total timeout of the named workflow `node`, if it has a timeout: a runtime
    /// running its body step by step enforces it as a deadline on every job inside (see
    /// `Frame::Named` and [`expire`](PortableGraph::expire)).
    pub fn workflow_timeout(&self, node: PortableId) -> Option<(&'static str, Duration)> {
        match self.nodes.get(node.index()) {
            Some(PortableNode::Named {
                name,
                timeout: Some(timeout),
                ..
            }) => Some((name, *timeout)),
            _ => None,
        }
    }

    /// Whether the graph composes steps (a chain, parallel, route or map): a graph of one step,
    /// named or not, gains nothing from running step by step.
    pub fn is_composite(&self) -> bool {
        self.nodes.iter().any(|node| {
            matches!(
                node,
                PortableNode::Chain { .. }
                    | PortableNode::Parallel { .. }
                    | PortableNode::Route { .. }
                    | PortableNode::Map { .. }
            )
        })
    }

    /// The codecs the graph's nodes use.
    pub fn codecs(&self) -> &Codecs {
        &self.codecs
    }

    pub(crate) fn node(&self, id: PortableId) -> Result<&PortableNode, Error> {
        self.nodes
            .get(id.index())
            .ok_or_else(|| Error::configuration(format!("portable graph has no node {id}")))
    }

    fn push(&mut self, node: PortableNode) -> PortableId {
        let id = PortableId(u32::try_from(self.nodes.len()).unwrap_or(u32::MAX));
        self.nodes.push(node);
        id
    }

    /// Registers `T`'s serde codec, for the nodes that encode or decode a `T`.
    pub(crate) fn codec<T: Serialize + DeserializeOwned + Send + 'static>(&mut self) {
        self.codecs.register::<T>(Codec::serde::<T>);
    }

    /// Registers a composite codec for `T` (see [`Codec::tuple`]).
    pub(crate) fn composite_codec<T: 'static>(&mut self, codec: impl FnOnce() -> Codec) {
        self.codecs.register::<T>(codec);
    }

    /// Makes the all-or-nothing parallel `node` join through `merge`.
    pub(crate) fn set_merge(&mut self, node: PortableId, merge: Arc<MergeJson>) {
        if let Some(PortableNode::Parallel { join, .. }) = self.nodes.get_mut(node.index()) {
            *join = Join::Merge(merge);
        }
    }

    /// Records that a node decodes or encodes a `T` through the codec table; [`finish`]
    /// refuses a graph where no one registered it.
    ///
    /// [`finish`]: PortableGraph::finish
    pub(crate) fn need<T: 'static>(&mut self) {
        self.needs
            .push((TypeId::of::<T>(), std::any::type_name::<T>()));
    }

    /// A leaf running `processor`, whose data is serde.
    pub(crate) fn step<P>(&mut self, processor: P) -> PortableId
    where
        P: Processor,
        P::Input: Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned,
    {
        self.codec::<P::Input>();
        self.codec::<P::Output>();
        let node = StepNode {
            name: processor.name(),
            input_type: std::any::type_name::<P::Input>(),
            contract: processor.contract(),
            runner: Arc::new(Typed(processor)),
        };
        self.push(PortableNode::Step(node))
    }

    pub(crate) fn chain(
        &mut self,
        (first, first_name): (PortableId, &'static str),
        (second, second_name): (PortableId, &'static str),
        first_len: usize,
    ) -> PortableId {
        self.push(PortableNode::Chain {
            first,
            second,
            first_name,
            second_name,
            first_len,
        })
    }

    pub(crate) fn parallel(
        &mut self,
        branches: Vec<(PortableId, &'static str)>,
        join: Join,
    ) -> PortableId {
        self.push(PortableNode::Parallel { branches, join })
    }

    pub(crate) fn route(&mut self, arms: Vec<PortableId>, select: Arc<Select>) -> PortableId {
        self.push(PortableNode::Route { arms, select })
    }

    pub(crate) fn map(&mut self, item: PortableId, concurrency: usize) -> PortableId {
        self.push(PortableNode::Map { item, concurrency })
    }

    pub(crate) fn named(
        &mut self,
        body: PortableId,
        name: &'static str,
        timeout: Option<Duration>,
    ) -> PortableId {
        self.push(PortableNode::Named {
            body,
            name,
            timeout,
        })
    }

    /// Sets the root, and checks every needed codec was registered.
    pub(crate) fn finish(mut self, root: PortableId) -> Option<Self> {
        if let Some(missing) = self.codecs.missing(&self.needs) {
            tracing::debug!(
                missing,
                "not portable: no JSON codec for a type a node needs"
            );
            return None;
        }
        self.root = Some(root);
        Some(self)
    }
}
