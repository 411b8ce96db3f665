//! [`Route`]: a selector picks one arm by key; all arms share input and output.

use std::fmt::Display;
use std::marker::PhantomData;

use crate::plan::{NodeId, NodeKind, PlanBuilder};
use crate::portable::{Codecs, Json, PortableGraph, PortableId, same_type};
use crate::{Accepts, Ctx, Error, Processor, ProcessorConfig, Registration, Returns};

/// Runs the arm whose key the selector returns; an unknown key goes to the fallback, or fails
/// with [`Error::NotFound`] naming the key and the known ones.
///
/// `route!` builds the exhaustive form: a `match` over an enum whose arms map each variant to
/// a key, so adding a variant breaks the build until it is routed.
///
/// ```
/// # async fn demo() -> Result<(), am2z::Error> {
/// use am2z::{processor_fn, Error, Executes, LocalRuntime, Route, Runtime};
///
/// async fn pdf(doc: String) -> Result<String, Error> { Ok(format!("pdf:{doc}")) }
/// async fn image(doc: String) -> Result<String, Error> { Ok(format!("img:{doc}")) }
/// async fn other(doc: String) -> Result<String, Error> { Ok(format!("raw:{doc}")) }
///
/// let route = Route::new(|doc: &String| doc.rsplit('.').next().unwrap_or("").to_owned())
///     .arm("pdf".to_owned(), processor_fn(pdf))
///     .arm("png".to_owned(), processor_fn(image))
///     .fallback(processor_fn(other));
/// let runtime = LocalRuntime::new();
/// runtime.start().await?;
/// assert_eq!(runtime.execute(&route, "a.pdf".into()).await?.output, "pdf:a.pdf");
/// assert_eq!(runtime.execute(&route, "a.txt".into()).await?.output, "raw:a.txt");
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
pub struct Route<I, O, K, S, Arms> {
    selector: S,
    arms: Arms,
    name: &'static str,
    exhaustive: bool,
    marker: PhantomData<fn(I) -> (O, K)>,
}

/// The end of a route's arm list, with no fallback.
#[derive(Debug, Clone, Copy)]
pub struct NoArms;

/// One keyed arm, before the `Rest` of the list.
#[derive(Debug, Clone)]
pub struct Arm<K, P, Rest> {
    key: K,
    step: P,
    rest: Rest,
}

/// A fallback taking every key the arms in `Rest` do not.
#[derive(Debug, Clone)]
pub struct Fallback<P, Rest> {
    step: P,
    rest: Rest,
}

/// What a route dispatch found: the arm's result, or the input back when no arm matched.
pub enum Dispatch<O, I> {
    /// An arm ran.
    Ran(Result<O, Error>),
    /// No arm has the key.
    Unmatched(I),
}

/// A list of route arms over input `I`, output `O` and key `K`.
pub trait RouteArms<I, O, K>: Clone + Send + Sync + 'static {
    /// Runs the arm for `key`, if any.
    fn dispatch(
        &self,
        key: &K,
        input: I,
        ctx: &Ctx,
    ) -> impl std::future::Future<Output = Dispatch<O, I>> + Send;
    /// The arms' keys (outermost last) and whether a fallback exists.
    fn keys(&self, keys: &mut Vec<String>) -> bool;
    /// Adds the arms' nodes to the plan, in key order.
    fn describe_arms(&self, plan: &mut PlanBuilder, route: NodeId);
    /// Registers the arms' processors.
    fn visit_arms(&self, visitor: &mut dyn FnMut(Registration));
    /// Adds the arms' portable nodes to `graph`, in key order (the index [`index_of`] gives),
    /// or `None` when one is not portable.
    ///
    /// [`index_of`]: RouteArms::index_of
    #[doc(hidden)]
    fn compile_arms(&self, _graph: &mut PortableGraph, _arms: &mut Vec<PortableId>) -> Option<()> {
        None
    }
    /// The index of the arm `dispatch` would run for `key`, if any.
    #[doc(hidden)]
    fn index_of(&self, _key: &K) -> Option<usize> {
        None
    }
    /// How many arms (the fallback included).
    #[doc(hidden)]
    fn arm_count(&self) -> usize {
        0
    }
}

impl<I: Send + 'static, O, K: Sync> RouteArms<I, O, K> for NoArms {
    async fn dispatch(&self, _key: &K, input: I, _ctx: &Ctx) -> Dispatch<O, I> {
        Dispatch::Unmatched(input)
    }
    fn keys(&self, _keys: &mut Vec<String>) -> bool {
        false
    }
    fn describe_arms(&self, _plan: &mut PlanBuilder, _route: NodeId) {}
    fn visit_arms(&self, _visitor: &mut dyn FnMut(Registration)) {}
    fn compile_arms(&self, _graph: &mut PortableGraph, _arms: &mut Vec<PortableId>) -> Option<()> {
        Some(())
    }
}

impl<I, O, K, P, Rest> RouteArms<I, O, K> for Arm<K, P, Rest>
where
    I: Send + 'static,
    O: Send + 'static,
    K: PartialEq + Display + Clone + Send + Sync + 'static,
    P: Accepts<I> + Returns<O>,
    Rest: RouteArms<I, O, K>,
{
    async fn dispatch(&self, key: &K, input: I, ctx: &Ctx) -> Dispatch<O, I> {
        if *key == self.key {
            let result = ctx.run(&self.step, P::accept(input)).await;
            return Dispatch::Ran(result.map(P::output).map_err(|f| f.error));
        }
        self.rest.dispatch(key, input, ctx).await
    }
    fn keys(&self, keys: &mut Vec<String>) -> bool {
        let fallback = self.rest.keys(keys);
        keys.push(self.key.to_string());
        fallback
    }
    fn describe_arms(&self, plan: &mut PlanBuilder, route: NodeId) {
        self.rest.describe_arms(plan, route);
        let arm = self.step.describe(plan);
        plan.edge(route, arm, self.key.to_string());
    }
    fn visit_arms(&self, visitor: &mut dyn FnMut(Registration)) {
        self.rest.visit_arms(visitor);
        self.step.visit(visitor);
    }
    fn compile_arms(&self, graph: &mut PortableGraph, arms: &mut Vec<PortableId>) -> Option<()> {
        self.rest.compile_arms(graph, arms)?;
        compile_arm::<I, O, P>(&self.step, graph, arms)
    }
    fn index_of(&self, key: &K) -> Option<usize> {
        // The order `dispatch` checks: this arm, then the rest.
        if *key == self.key {
            Some(self.rest.arm_count())
        } else {
            self.rest.index_of(key)
        }
    }
    fn arm_count(&self) -> usize {
        self.rest.arm_count() + 1
    }
}

/// An arm's portable node, when its edges are identities (so the route's input JSON is the
/// arm's, and the arm's output JSON the route's).
fn compile_arm<I: 'static, O: 'static, P: Processor>(
    step: &P,
    graph: &mut PortableGraph,
    arms: &mut Vec<PortableId>,
) -> Option<()> {
    if !same_type::<I, P::Input>() || !same_type::<O, P::Output>() {
        return None;
    }
    arms.push(step.compile(graph)?);
    Some(())
}

impl<I, O, K, P, Rest> RouteArms<I, O, K> for Fallback<P, Rest>
where
    I: Send + 'static,
    O: Send + 'static,
    K: Sync,
    P: Accepts<I> + Returns<O>,
    Rest: RouteArms<I, O, K>,
{
    async fn dispatch(&self, key: &K, input: I, ctx: &Ctx) -> Dispatch<O, I> {
        match self.rest.dispatch(key, input, ctx).await {
            Dispatch::Unmatched(input) => {
                let result = ctx.run(&self.step, P::accept(input)).await;
                Dispatch::Ran(result.map(P::output).map_err(|f| f.error))
            }
            ran => ran,
        }
    }
    fn keys(&self, keys: &mut Vec<String>) -> bool {
        self.rest.keys(keys);
        true
    }
    fn describe_arms(&self, plan: &mut PlanBuilder, route: NodeId) {
        self.rest.describe_arms(plan, route);
        let arm = self.step.describe(plan);
        plan.edge(route, arm, "*");
    }
    fn visit_arms(&self, visitor: &mut dyn FnMut(Registration)) {
        self.rest.visit_arms(visitor);
        self.step.visit(visitor);
    }
    fn compile_arms(&self, graph: &mut PortableGraph, arms: &mut Vec<PortableId>) -> Option<()> {
        self.rest.compile_arms(graph, arms)?;
        compile_arm::<I, O, P>(&self.step, graph, arms)
    }
    fn index_of(&self, key: &K) -> Option<usize> {
        // The order `dispatch` checks: the rest, then the fallback.
        self.rest
            .index_of(key)
            .or_else(|| Some(self.rest.arm_count()))
    }
    fn arm_count(&self) -> usize {
        self.rest.arm_count() + 1
    }
}

impl<I, O, K, S> Route<I, O, K, S, NoArms>
where
    S: Fn(&I) -> K,
{
    /// A route choosing its arm by `selector(&input)`.
    pub fn new(selector: S) -> Self {
        Route {
            selector,
            arms: NoArms,
            name: "route",
            exhaustive: false,
            marker: PhantomData,
        }
    }
}

impl<I, O, K, S, Arms> Route<I, O, K, S, Arms> {
    /// Adds the arm `step` for `key`.
    pub fn arm<P>(self, key: K, step: P) -> Route<I, O, K, S, Arm<K, P, Arms>>
    where
        P: Accepts<I> + Returns<O>,
    {
        Route {
            selector: self.selector,
            arms: Arm {
                key,
                step,
                rest: self.arms,
            },
            name: self.name,
            exhaustive: self.exhaustive,
            marker: PhantomData,
        }
    }

    /// Sends every key no arm has to `step`.
    pub fn fallback<P>(self, step: P) -> Route<I, O, K, S, Fallback<P, Arms>>
    where
        P: Accepts<I> + Returns<O>,
    {
        Route {
            selector: self.selector,
            arms: Fallback {
                step,
                rest: self.arms,
            },
            name: self.name,
            exhaustive: self.exhaustive,
            marker: PhantomData,
        }
    }

    /// Names the route (for errors, stats and the plan).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Records that the selector was checked to cover every variant at compile time (what
    /// `route!` does); shown in the plan.
    pub fn exhaustive(mut self) -> Self {
        self.exhaustive = true;
        self
    }
}

impl<I, O, K, S: Clone, Arms: Clone> Clone for Route<I, O, K, S, Arms> {
    fn clone(&self) -> Self {
        Route {
            selector: self.selector.clone(),
            arms: self.arms.clone(),
            name: self.name,
            exhaustive: self.exhaustive,
            marker: PhantomData,
        }
    }
}

impl<I, O, K, S, Arms: std::fmt::Debug> std::fmt::Debug for Route<I, O, K, S, Arms> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("arms", &self.arms)
            .finish()
    }
}

impl<I, O, K, S, Arms> Processor for Route<I, O, K, S, Arms>
where
    I: Clone + Send + 'static,
    O: Send + 'static,
    K: Display + Send + Sync + 'static,
    S: Fn(&I) -> K + Clone + Send + Sync + 'static,
    Arms: RouteArms<I, O, K>,
{
    type Input = I;
    type Output = O;

    fn name(&self) -> &'static str {
        self.name
    }

    fn config(&self) -> &ProcessorConfig {
        static COMPOSITION: ProcessorConfig = ProcessorConfig::new();
        &COMPOSITION
    }

    async fn process(&self, input: I, ctx: &Ctx) -> Result<O, Error> {
        let key = (self.selector)(&input);
        match self.arms.dispatch(&key, input, ctx).await {
            Dispatch::Ran(result) => result,
            Dispatch::Unmatched(_) => {
                let mut known = Vec::new();
                self.arms.keys(&mut known);
                Err(Error::not_found(
                    format!("arm of route `{}`", self.name),
                    key.to_string(),
                    known,
                ))
            }
        }
    }

    fn is_step(&self) -> bool {
        false
    }

    fn describe(&self, plan: &mut PlanBuilder) -> NodeId {
        let mut arms = Vec::new();
        let fallback = self.arms.keys(&mut arms);
        let node = plan.node(NodeKind::Route {
            name: self.name.to_owned(),
            arms,
            fallback,
            exhaustive: self.exhaustive,
        });
        self.arms.describe_arms(plan, node);
        node
    }

    fn visit(&self, visitor: &mut dyn FnMut(Registration)) {
        self.arms.visit_arms(visitor);
    }

    fn compile(&self, graph: &mut PortableGraph) -> Option<PortableId> {
        let mut arms = Vec::new();
        self.arms.compile_arms(graph, &mut arms)?;
        // The selector reads the typed input: decoded with the codec of the route's input
        // (registered by the arms' first steps, or the step before the route).
        graph.need::<I>();
        let selector = self.selector.clone();
        let table = self.arms.clone();
        let name = self.name;
        let select = move |input: &Json, codecs: &Codecs| -> Result<usize, Error> {
            let input: I = codecs.decode(input.clone())?;
            let key = selector(&input);
            table.index_of(&key).ok_or_else(|| {
                let mut known = Vec::new();
                table.keys(&mut known);
                Error::not_found(format!("arm of route `{name}`"), key.to_string(), known)
            })
        };
        Some(graph.route(arms, std::sync::Arc::new(select)))
    }
}

impl<I, O, K, S, Arms> Accepts<I> for Route<I, O, K, S, Arms>
where
    Self: Processor<Input = I>,
{
    fn accept(input: I) -> I {
        input
    }
}

impl<I, O, K, S, Arms> Returns<O> for Route<I, O, K, S, Arms>
where
    Self: Processor<Output = O>,
{
    fn output(output: O) -> O {
        output
    }
}
