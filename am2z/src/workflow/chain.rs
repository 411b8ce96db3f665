//! [`Chain`]: steps in sequence, each on the previous one's output.

use crate::plan::{NodeId, NodeKind, PlanBuilder};
use crate::portable::{PortableGraph, PortableId, same_type};
use crate::{Accepts, Returns};
use crate::{Ctx, Error, Processor, ProcessorConfig, Registration, StateSnapshot};

/// Runs `first`, then `second` on its output. Longer chains nest with [`then`](Chain::then).
///
/// A failing step stops the chain with [`Error::StepFailed`] naming the step and its position,
/// and carrying the state the step received.
///
/// ```
/// # async fn demo() -> Result<(), am2z::Error> {
/// use am2z::{processor_fn, Chain, Error, Executes, LocalRuntime, Runtime};
///
/// async fn add_one(x: i64) -> Result<i64, Error> { Ok(x + 1) }
/// async fn double(x: i64) -> Result<i64, Error> { Ok(x * 2) }
/// async fn add_ten(x: i64) -> Result<i64, Error> { Ok(x + 10) }
///
/// let flow = Chain::new(processor_fn(add_one), processor_fn(double)).then(processor_fn(add_ten));
/// let runtime = LocalRuntime::new();
/// runtime.start().await?;
/// assert_eq!(runtime.execute(&flow, 5).await?.output, 22);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Chain<A, B> {
    first: A,
    second: B,
    name: &'static str,
    /// How many chain positions `first` spans (it may itself be a chain built by `then`).
    first_len: usize,
}

impl<A: Processor, B: Accepts<A::Output>> Chain<A, B> {
    /// `first`, then `second`.
    pub fn new(first: A, second: B) -> Self {
        Chain {
            first_len: first.chain_len(),
            first,
            second,
            name: "chain",
        }
    }

    /// This chain, then `next`.
    pub fn then<C: Accepts<B::Output>>(self, next: C) -> Chain<Self, C> {
        Chain::new(self, next)
    }

    /// Names the chain (for errors, stats and the plan).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

fn failed<I: Clone + Send + 'static>(
    step: &str,
    position: usize,
    error: Error,
    input: Option<I>,
) -> Error {
    error.in_step(step, position, input.map(StateSnapshot::local))
}

impl<A: Processor, B: Accepts<A::Output>> Processor for Chain<A, B> {
    type Input = A::Input;
    type Output = B::Output;

    fn name(&self) -> &'static str {
        self.name
    }

    fn config(&self) -> &ProcessorConfig {
        static COMPOSITION: ProcessorConfig = ProcessorConfig::new();
        &COMPOSITION
    }

    async fn process(&self, input: A::Input, ctx: &Ctx) -> Result<B::Output, Error> {
        // Boxing the first part keeps the future's layout flat: `then` nests chains to the left,
        // and without the box a chain of ~10 steps overflows rustc's layout query depth.
        let middle = match Box::pin(ctx.run(&self.first, input)).await {
            Ok(middle) => middle,
            // A nested chain already named the failing step and its position.
            Err(f) if self.first_len > 1 => return Err(f.error),
            Err(f) => return Err(failed(self.first.name(), 0, f.error, f.input)),
        };
        match ctx.run(&self.second, B::accept(middle)).await {
            Ok(output) => Ok(output),
            Err(f) => Err(failed(self.second.name(), self.first_len, f.error, f.input)),
        }
    }

    fn is_step(&self) -> bool {
        false
    }

    fn chain_len(&self) -> usize {
        self.first_len + 1
    }

    fn describe(&self, plan: &mut PlanBuilder) -> NodeId {
        let node = plan.node(NodeKind::Chain {
            name: self.name.to_owned(),
        });
        let first = self.first.describe(plan);
        plan.edge(node, first, "0");
        let second = self.second.describe(plan);
        plan.edge(node, second, self.first_len.to_string());
        node
    }

    fn visit(&self, visitor: &mut dyn FnMut(Registration)) {
        self.first.visit(visitor);
        self.second.visit(visitor);
    }

    fn compile(&self, graph: &mut PortableGraph) -> Option<PortableId> {
        // The first part's output JSON is the second's input only through an identity edge.
        if !same_type::<A::Output, B::Input>() {
            return None;
        }
        let first = self.first.compile(graph)?;
        let second = self.second.compile(graph)?;
        Some(graph.chain(
            (first, self.first.name()),
            (second, self.second.name()),
            self.first_len,
        ))
    }
}

impl<A: Processor, B: Accepts<A::Output>> Accepts<A::Input> for Chain<A, B> {
    fn accept(input: A::Input) -> A::Input {
        input
    }
}

impl<A: Processor, B: Accepts<A::Output>> Returns<B::Output> for Chain<A, B> {
    fn output(output: B::Output) -> B::Output {
        output
    }
}
