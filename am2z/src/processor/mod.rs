//! The [`Processor`] trait: one typed, named, configured async step.
//!
//! Write processors with `#[processor]` on an `async fn`, with [`processor_fn`] on a plain async
//! fn, or by implementing the trait. Composed workflows ([`Chain`](crate::Chain),
//! [`Parallel`](crate::Parallel), ...) are processors too, so everything nests and registers
//! the same way.

mod config;
mod function;
mod registration;

use std::future::Future;

pub use config::{Backoff, ProcessorConfig, RateLimit, RetryPolicy};
pub use function::{AsyncCtxFn, FnProcessor, IsResult, WithCtx, WithoutCtx, processor_fn};
pub use registration::Registration;

use crate::plan::{Contract, NodeId, Plan, PlanBuilder};
use crate::portable::{PortableGraph, PortableId};
use crate::{Ctx, Error};

/// A typed async step with a stable name and a configuration.
///
/// `Input` must be `Clone` because a retry runs the same input again and a parallel fan-out
/// gives each branch its own copy. Processors themselves are cheap values (usually unit
/// structs) that are cloned into registries.
///
/// ```
/// use am2z::{Ctx, Error, Processor, ProcessorConfig};
///
/// #[derive(Clone)]
/// struct Double;
///
/// impl Processor for Double {
///     type Input = u64;
///     type Output = u64;
///     fn name(&self) -> &'static str { "double" }
///     fn config(&self) -> &ProcessorConfig {
///         static CONFIG: ProcessorConfig = ProcessorConfig::new().retries(2);
///         &CONFIG
///     }
///     async fn process(&self, input: u64, _ctx: &Ctx) -> Result<u64, Error> {
///         Ok(input * 2)
///     }
/// }
/// ```
pub trait Processor: Clone + Send + Sync + 'static {
    /// What the processor takes.
    type Input: Clone + Send + 'static;
    /// What it returns on success.
    type Output: Send + 'static;

    /// The stable name: used in registries, stats, events, errors and the plan.
    fn name(&self) -> &'static str;

    /// The runtime configuration.
    fn config(&self) -> &ProcessorConfig;

    /// The body: one attempt on `input`.
    fn process(
        &self,
        input: Self::Input,
        ctx: &Ctx,
    ) -> impl Future<Output = Result<Self::Output, Error>> + Send;

    /// Adds this processor's node (and, for compositions, its children) to `plan`.
    #[doc(hidden)]
    fn describe(&self, plan: &mut PlanBuilder) -> NodeId {
        plan.step(
            self.name(),
            std::any::type_name::<Self::Input>(),
            std::any::type_name::<Self::Output>(),
            self.config(),
        )
    }

    /// Calls `visitor` with every processor this one contains, itself included.
    #[doc(hidden)]
    fn visit(&self, visitor: &mut dyn FnMut(Registration)) {
        visitor(Registration::of(self.clone()));
    }

    /// Whether the runtime treats this as a step (its own attempts, retries, stats and events)
    /// or as a composition that only routes data between its children.
    #[doc(hidden)]
    fn is_step(&self) -> bool {
        true
    }

    /// How many chain positions this processor spans (more than 1 only for chains).
    #[doc(hidden)]
    fn chain_len(&self) -> usize {
        1
    }

    /// Adds this processor's portable node (and its children's) to `graph`, or answers `None`
    /// when it cannot run step by step with JSON between steps: a leaf whose data is not serde,
    /// or any processor that does not say otherwise (`#[processor]` leaves, the combinators,
    /// `workflow!` and [`Workflow`](crate::Workflow) do).
    #[doc(hidden)]
    fn compile(&self, _graph: &mut PortableGraph) -> Option<PortableId> {
        None
    }

    /// The static, serialisable graph this processor executes.
    fn plan(&self) -> Plan {
        let mut builder = PlanBuilder::new(self.name());
        let root = self.describe(&mut builder);
        builder.finish(root)
    }

    /// The contract other processes check before running this processor's work.
    fn contract(&self) -> Contract {
        Contract::new(
            self.name(),
            std::any::type_name::<Self::Input>(),
            std::any::type_name::<Self::Output>(),
            self.config().version,
        )
    }
}

/// A step that can take a `T` as its input.
///
/// `#[processor]` implements it for the one concrete input type of each processor, so a
/// mismatched edge is a compile error that names the step and the type it was offered.
/// (`workflow!` checks its edges with messages of its own, which also name the step's input
/// type and where the offered value comes from; this message is for combinators built by hand.)
#[diagnostic::on_unimplemented(
    message = "step `{Self}` cannot take `{T}` as its input",
    label = "`{Self}` does not take `{T}`",
    note = "`{Self}` is given `{T}` here: change its input type, or put a step that turns `{T}` into its input before it"
)]
pub trait Accepts<T>: Processor {
    /// Hands `input` over as this step's input (the identity for the implemented type).
    fn accept(input: T) -> Self::Input;
}

/// A step whose output is a `T`.
#[diagnostic::on_unimplemented(
    message = "step `{Self}` does not return `{T}`",
    label = "`{Self}` does not return `{T}`",
    note = "every arm of a route returns the route's output type, here `{T}`"
)]
pub trait Returns<T>: Processor {
    /// Hands this step's output over as a `T` (the identity for the implemented type).
    fn output(output: Self::Output) -> T;
}
