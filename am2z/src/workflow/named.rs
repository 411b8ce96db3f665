//! [`Workflow`]: a named composition with a total timeout.

use std::time::Duration;

use crate::plan::{NodeId, NodeKind, PlanBuilder};
use crate::portable::{PortableGraph, PortableId};
use crate::{Accepts, Returns};
use crate::{Ctx, Error, Processor, ProcessorConfig, Registration};

/// Gives a composition a name and workflow-wide options (a total timeout that cancels every
/// step still running when it expires).
///
/// `workflow!` generates a type that behaves exactly like this wrapper.
///
/// ```
/// use std::time::Duration;
/// use am2z::{processor_fn, Chain, Error, Processor, Workflow};
///
/// async fn parse(s: String) -> Result<i64, Error> {
///     s.trim().parse().map_err(|_| Error::validation("input", "not a number"))
/// }
/// async fn square(x: i64) -> Result<i64, Error> { Ok(x * x) }
///
/// let flow = Workflow::new("parse_and_square", Chain::new(processor_fn(parse), processor_fn(square)))
///     .timeout(Duration::from_secs(5));
/// assert_eq!(flow.name(), "parse_and_square");
/// assert_eq!(flow.plan().step_names(), ["parse", "square"]);
/// ```
#[derive(Debug, Clone)]
pub struct Workflow<P> {
    name: &'static str,
    body: P,
    config: ProcessorConfig,
}

impl<P: Processor> Workflow<P> {
    /// The workflow `name` running `body`.
    pub fn new(name: &'static str, body: P) -> Self {
        Workflow {
            name,
            body,
            config: ProcessorConfig::new(),
        }
    }

    /// A limit on the whole run of the workflow.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.config = self.config.timeout(limit);
        self
    }

    /// Describes the workflow.
    pub fn description(mut self, description: &'static str) -> Self {
        self.config = self.config.description(description);
        self
    }

    /// Replaces the workflow's configuration (only `timeout`, `description` and `version` apply).
    pub fn with_config(mut self, config: ProcessorConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers the processors of the body (not the workflow itself).
    #[doc(hidden)]
    pub fn visit_body(&self, visitor: &mut dyn FnMut(Registration)) {
        self.body.visit(visitor);
    }
}

impl<P: Processor> Processor for Workflow<P> {
    type Input = P::Input;
    type Output = P::Output;

    fn name(&self) -> &'static str {
        self.name
    }

    fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    async fn process(&self, input: P::Input, ctx: &Ctx) -> Result<P::Output, Error> {
        ctx.run(&self.body, input).await.map_err(|f| f.error)
    }

    fn is_step(&self) -> bool {
        false
    }

    fn describe(&self, plan: &mut PlanBuilder) -> NodeId {
        let timeout_ms = self
            .config
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let node = plan.node(NodeKind::Workflow {
            name: self.name.to_owned(),
            timeout_ms,
        });
        let body = self.body.describe(plan);
        plan.edge(node, body, "body");
        node
    }

    fn visit(&self, visitor: &mut dyn FnMut(Registration)) {
        visitor(Registration::of(self.clone()));
        self.body.visit(visitor);
    }

    fn compile(&self, graph: &mut PortableGraph) -> Option<PortableId> {
        let body = self.body.compile(graph)?;
        Some(graph.named(body, self.name, self.config.timeout))
    }
}

impl<P: Processor> Accepts<P::Input> for Workflow<P> {
    fn accept(input: P::Input) -> P::Input {
        input
    }
}

impl<P: Processor> Returns<P::Output> for Workflow<P> {
    fn output(output: P::Output) -> P::Output {
        output
    }
}
