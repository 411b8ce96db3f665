//! [`Map`]: one step over a list of inputs, with bounded concurrency and per-item results.

use futures::StreamExt;

use crate::plan::{NodeId, NodeKind, PlanBuilder};
use crate::portable::{PortableGraph, PortableId};
use crate::{Accepts, Returns};
use crate::{Ctx, Error, Processor, ProcessorConfig, Registration};

/// Runs `step` on every item of a `Vec`, at most `concurrency` at a time, and returns one
/// `Result` per item in input order: a failing item does not fail the others.
///
/// Each item is a step of the run (its own attempts, retries and events).
///
/// ```
/// # async fn demo() -> Result<(), am2z::Error> {
/// use am2z::{processor_fn, Error, Executes, LocalRuntime, Map, Runtime};
///
/// async fn invert(x: f64) -> Result<f64, Error> {
///     if x == 0.0 { Err(Error::validation("x", "is zero")) } else { Ok(1.0 / x) }
/// }
///
/// let runtime = LocalRuntime::new();
/// runtime.start().await?;
/// let batch = Map::new(processor_fn(invert)).concurrency(2);
/// let results = runtime.execute(&batch, vec![2.0, 0.0, 4.0]).await?.output;
/// assert_eq!(results[0], Ok(0.5));
/// assert!(results[1].is_err());
/// assert_eq!(results[2], Ok(0.25));
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Map<P> {
    step: P,
    concurrency: usize,
    name: &'static str,
}

/// Items in flight at once unless set otherwise.
const DEFAULT_MAP_CONCURRENCY: usize = 16;

impl<P: Processor> Map<P> {
    /// `step` over each item, 16 at a time.
    pub fn new(step: P) -> Self {
        Map {
            step,
            concurrency: DEFAULT_MAP_CONCURRENCY,
            name: "map",
        }
    }

    /// At most `limit` items in flight (0 is treated as 1).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit.max(1);
        self
    }

    /// Names the map (for errors, stats and the plan).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

impl<P: Processor> Processor for Map<P> {
    type Input = Vec<P::Input>;
    type Output = Vec<Result<P::Output, Error>>;

    fn name(&self) -> &'static str {
        self.name
    }

    fn config(&self) -> &ProcessorConfig {
        static COMPOSITION: ProcessorConfig = ProcessorConfig::new();
        &COMPOSITION
    }

    async fn process(&self, items: Vec<P::Input>, ctx: &Ctx) -> Result<Self::Output, Error> {
        let results = futures::stream::iter(items)
            .map(|item| async move { ctx.run(&self.step, item).await.map_err(|f| f.error) })
            .buffered(self.concurrency)
            .collect()
            .await;
        Ok(results)
    }

    fn is_step(&self) -> bool {
        false
    }

    fn describe(&self, plan: &mut PlanBuilder) -> NodeId {
        let node = plan.node(NodeKind::Map {
            name: self.name.to_owned(),
            concurrency: self.concurrency,
        });
        let step = self.step.describe(plan);
        plan.edge(node, step, "item");
        node
    }

    fn visit(&self, visitor: &mut dyn FnMut(Registration)) {
        self.step.visit(visitor);
    }

    fn compile(&self, graph: &mut PortableGraph) -> Option<PortableId> {
        let item = self.step.compile(graph)?;
        Some(graph.map(item, self.concurrency))
    }
}

impl<P: Processor> Accepts<Vec<P::Input>> for Map<P> {
    fn accept(input: Vec<P::Input>) -> Vec<P::Input> {
        input
    }
}

impl<P: Processor> Returns<Vec<Result<P::Output, Error>>> for Map<P> {
    fn output(output: Vec<Result<P::Output, Error>>) -> Vec<Result<P::Output, Error>> {
        output
    }
}
