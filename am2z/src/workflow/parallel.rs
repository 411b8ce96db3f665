//! [`Parallel`]: the same input to every branch, outputs joined into a tuple or merged.

use std::marker::PhantomData;

use crate::plan::{NodeId, NodeKind, ParallelPolicy, PlanBuilder};
use crate::portable::{Codec, Codecs, Join, Json, PortableGraph, PortableId, same_type};
use crate::runtime::step::until_cancelled;
use crate::{Accepts, Ctx, Error, Processor, ProcessorConfig, Registration, Returns};

/// Runs every branch on a copy of the same input, concurrently.
///
/// With [`Parallel::new`] (all-or-nothing) the output is the tuple of the branch outputs and
/// the first failing branch fails the parallel and cancels the others; [`merge`](Parallel::merge)
/// turns the tuple into one value with a fn you write. With [`Parallel::collect`] every branch
/// runs to its end and the output is the tuple of their `Result`s.
///
/// ```
/// # async fn demo() -> Result<(), am2z::Error> {
/// use am2z::{processor_fn, Error, Executes, LocalRuntime, Parallel, Runtime};
///
/// async fn len(s: String) -> Result<usize, Error> { Ok(s.len()) }
/// async fn upper(s: String) -> Result<String, Error> { Ok(s.to_uppercase()) }
/// fn report(len: usize, upper: String) -> String { format!("{upper} ({len})") }
///
/// let runtime = LocalRuntime::new();
/// runtime.start().await?;
/// let both = Parallel::new((processor_fn(len), processor_fn(upper)));
/// assert_eq!(runtime.execute(&both, "am2z".into()).await?.output, (4, "AM2Z".to_owned()));
/// let merged = Parallel::new((processor_fn(len), processor_fn(upper))).merge(report);
/// assert_eq!(runtime.execute(&merged, "am2z".into()).await?.output, "AM2Z (4)");
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
pub struct Parallel<I, Branches, Policy = AllOrNothing> {
    branches: Branches,
    name: &'static str,
    marker: PhantomData<fn(I) -> Policy>,
}

/// Policy: the first failure fails the parallel and cancels the other branches.
#[derive(Debug, Clone, Copy)]
pub struct AllOrNothing;

/// Policy: every branch runs to its end; the output holds each branch's `Result`.
#[derive(Debug, Clone, Copy)]
pub struct CollectResults;

/// A parallel whose tuple of outputs goes through a merge fn.
pub struct Merge<Par, F> {
    parallel: Par,
    merge: F,
    merge_name: &'static str,
}

/// A fn that merges the outputs of parallel branches, taken as separate arguments.
#[diagnostic::on_unimplemented(
    message = "merge fn `{Self}` cannot take the branch outputs `{Args}`",
    label = "its parameters must be the branch outputs, in branch order: `{Args}`",
    note = "a merge fn takes one parameter per branch, each of that branch's output type, and returns the merged value"
)]
pub trait MergeFn<Args>: Clone + Send + Sync + 'static {
    /// The merged value.
    type Output: Send + 'static;
    /// Merges.
    fn merge(&self, args: Args) -> Self::Output;
}

impl<I, B: Clone, P> Clone for Parallel<I, B, P> {
    fn clone(&self) -> Self {
        Parallel {
            branches: self.branches.clone(),
            name: self.name,
            marker: PhantomData,
        }
    }
}

impl<Par: Clone, F: Clone> Clone for Merge<Par, F> {
    fn clone(&self) -> Self {
        Merge {
            parallel: self.parallel.clone(),
            merge: self.merge.clone(),
            merge_name: self.merge_name,
        }
    }
}

impl<I, B: std::fmt::Debug, P> std::fmt::Debug for Parallel<I, B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallel")
            .field("name", &self.name)
            .field("branches", &self.branches)
            .finish()
    }
}

impl<Par: std::fmt::Debug, F> std::fmt::Debug for Merge<Par, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merge")
            .field("parallel", &self.parallel)
            .field("merge", &self.merge_name)
            .finish()
    }
}

impl<I, B> Parallel<I, B, AllOrNothing> {
    /// All-or-nothing over `branches` (a tuple of 2 to 8 processors taking the same input).
    pub fn new(branches: B) -> Self
    where
        Self: Processor,
    {
        Parallel {
            branches,
            name: "parallel",
            marker: PhantomData,
        }
    }

    /// Merges the branch outputs with `merge`, which takes them as separate arguments.
    pub fn merge<F>(self, merge: F) -> Merge<Self, F>
    where
        Self: Processor,
        F: MergeFn<<Self as Processor>::Output>,
    {
        let full = std::any::type_name::<F>();
        let merge_name = full.rsplit("::").next().unwrap_or(full);
        Merge {
            parallel: self,
            merge,
            merge_name,
        }
    }
}

impl<I, B> Parallel<I, B, CollectResults> {
    /// Every branch runs to its end; the output is the tuple of their `Result`s.
    pub fn collect(branches: B) -> Self
    where
        Self: Processor,
    {
        Parallel {
            branches,
            name: "parallel",
            marker: PhantomData,
        }
    }
}

impl<I, B, P> Parallel<I, B, P> {
    /// Names the parallel (for errors, stats and the plan).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

static COMPOSITION: ProcessorConfig = ProcessorConfig::new();

/// The error of a fail-fast parallel's first failing branch (later failures, often caused by
/// the cancellation, are not the parallel's error).
#[derive(Default)]
struct FirstFailure(std::sync::Mutex<Option<Error>>);

impl FirstFailure {
    fn record(&self, error: Error) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
    }

    /// The first failure; `Cancelled` when the branches were cancelled from outside.
    fn take(&self) -> Error {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| Error::Cancelled {
                reason: "the parallel was cancelled".to_owned(),
            })
    }
}

fn describe_parallel(
    plan: &mut PlanBuilder,
    name: &str,
    policy: ParallelPolicy,
    merge: Option<&str>,
    branches: &[&dyn Fn(&mut PlanBuilder) -> NodeId],
) -> NodeId {
    let node = plan.node(NodeKind::Parallel {
        name: name.to_owned(),
        policy,
        merge: merge.map(str::to_owned),
    });
    for (position, branch) in branches.iter().enumerate() {
        let child = branch(plan);
        plan.edge(node, child, position.to_string());
    }
    node
}

macro_rules! parallel_arity {
    ($($B:ident $arg:ident $idx:tt),+) => {
        impl<I, $($B),+> Processor for Parallel<I, ($($B,)+), AllOrNothing>
        where
            I: Clone + Send + 'static,
            $($B: Accepts<I>,)+
        {
            type Input = I;
            type Output = ($($B::Output,)+);

            fn name(&self) -> &'static str {
                self.name
            }

            fn config(&self) -> &ProcessorConfig {
                &COMPOSITION
            }

            async fn process(&self, input: I, ctx: &Ctx) -> Result<Self::Output, Error> {
                let group = ctx.with_token(ctx.cancellation_token().child_token());
                let group = &group;
                let failure = FirstFailure::default();
                let failure = &failure;
                let grace = ctx.cancel_grace();
                $(let $arg = $B::accept(input.clone());)+
                drop(input);
                // The first failure cancels the other branches; they see their tokens fire
                // and get the cancel grace to return before they are dropped.
                let joined = tokio::join!($(
                    async move {
                        let branch = &self.branches.$idx;
                        let token = group.cancellation_token();
                        match until_cancelled(token, grace, group.run(branch, $arg)).await {
                            Some(Ok(output)) => Some(output),
                            Some(Err(failed)) => {
                                failure.record(failed.error.in_step(branch.name(), $idx, None));
                                token.cancel();
                                None
                            }
                            None => None,
                        }
                    }
                ),+);
                match joined {
                    ($(Some($arg),)+) => Ok(($($arg,)+)),
                    _ => Err(failure.take()),
                }
            }

            fn is_step(&self) -> bool {
                false
            }

            fn describe(&self, plan: &mut PlanBuilder) -> NodeId {
                describe_parallel(plan, self.name, ParallelPolicy::AllOrNothing, None, &[
                    $(&|plan: &mut PlanBuilder| self.branches.$idx.describe(plan)),+
                ])
            }

            fn visit(&self, visitor: &mut dyn FnMut(Registration)) {
                $(self.branches.$idx.visit(visitor);)+
            }

            fn compile(&self, graph: &mut PortableGraph) -> Option<PortableId> {
                let branches = self.compile_branches(graph)?;
                // The tuple's JSON form is the array of the branches' outputs, for a merge or
                // a later route that decodes it.
                graph.composite_codec::<Self::Output>(|| Codec::tuple::<Self::Output>(
                    vec![$((
                        std::any::TypeId::of::<$B::Output>(),
                        std::any::type_name::<$B::Output>(),
                    )),+],
                    |tuple: &Self::Output, codecs: &Codecs| Ok(vec![$(codecs.encode(&tuple.$idx)?),+]),
                    |items: Vec<Json>, codecs: &Codecs| {
                        let mut items = items.into_iter();
                        Ok(($(codecs.decode::<$B::Output>(items.next().unwrap_or_default())?,)+))
                    },
                ));
                Some(graph.parallel(branches, Join::Tuple))
            }
        }

        impl<I, $($B),+> Processor for Parallel<I, ($($B,)+), CollectResults>
        where
            I: Clone + Send + 'static,
            $($B: Accepts<I>,)+
        {
            type Input = I;
            type Output = ($(Result<$B::Output, Error>,)+);

            fn name(&self) -> &'static str {
                self.name
            }

            fn config(&self) -> &ProcessorConfig {
                &COMPOSITION
            }

            async fn process(&self, input: I, ctx: &Ctx) -> Result<Self::Output, Error> {
                $(let $arg = $B::accept(input.clone());)+
                drop(input);
                Ok(tokio::join!($(
                    async move {
                        let branch = &self.branches.$idx;
                        ctx.run(branch, $arg).await.map_err(|f| f.error)
                    }
                ),+))
            }

            fn is_step(&self) -> bool {
                false
            }

            fn describe(&self, plan: &mut PlanBuilder) -> NodeId {
                describe_parallel(plan, self.name, ParallelPolicy::CollectResults, None, &[
                    $(&|plan: &mut PlanBuilder| self.branches.$idx.describe(plan)),+
                ])
            }

            fn visit(&self, visitor: &mut dyn FnMut(Registration)) {
                $(self.branches.$idx.visit(visitor);)+
            }

            fn compile(&self, graph: &mut PortableGraph) -> Option<PortableId> {
                let branches = self.compile_branches(graph)?;
                Some(graph.parallel(branches, Join::Collect))
            }
        }

        impl<I: 'static, $($B: Processor),+, P> Parallel<I, ($($B,)+), P> {
            /// The branches' portable nodes and names; `None` if one is not portable or takes
            /// its input through a conversion (the same JSON must be every branch's input).
            fn compile_branches(
                &self,
                graph: &mut PortableGraph,
            ) -> Option<Vec<(PortableId, &'static str)>> {
                Some(vec![$({
                    if !same_type::<I, $B::Input>() {
                        return None;
                    }
                    (self.branches.$idx.compile(graph)?, self.branches.$idx.name())
                }),+])
            }
        }

        impl<I, $($B),+, P> Accepts<I> for Parallel<I, ($($B,)+), P>
        where
            Self: Processor<Input = I>,
        {
            fn accept(input: I) -> I {
                input
            }
        }

        impl<I, $($B),+, P> Returns<<Parallel<I, ($($B,)+), P> as Processor>::Output> for Parallel<I, ($($B,)+), P>
        where
            Self: Processor,
        {
            fn output(output: <Self as Processor>::Output) -> <Self as Processor>::Output {
                output
            }
        }

        impl<Func, Out, $($B),+> MergeFn<($($B,)+)> for Func
        where
            Func: Fn($($B),+) -> Out + Clone + Send + Sync + 'static,
            Out: Send + 'static,
        {
            type Output = Out;
            fn merge(&self, ($($arg,)+): ($($B,)+)) -> Out {
                self($($arg),+)
            }
        }
    };
}

parallel_arity!(A a 0, B b 1);
parallel_arity!(A a 0, B b 1, C c 2);
parallel_arity!(A a 0, B b 1, C c 2, D d 3);
parallel_arity!(A a 0, B b 1, C c 2, D d 3, E e 4);
parallel_arity!(A a 0, B b 1, C c 2, D d 3, E e 4, G g 5);
parallel_arity!(A a 0, B b 1, C c 2, D d 3, E e 4, G g 5, H h 6);
parallel_arity!(A a 0, B b 1, C c 2, D d 3, E e 4, G g 5, H h 6, J j 7);

impl<I, B, F> Merge<Parallel<I, B, AllOrNothing>, F> {
    /// Names the parallel (for errors, stats and the plan).
    pub fn named(mut self, name: &'static str) -> Self {
        self.parallel.name = name;
        self
    }
}

impl<I, B, F> Processor for Merge<Parallel<I, B, AllOrNothing>, F>
where
    Parallel<I, B, AllOrNothing>: Processor<Input = I>,
    B: Clone + Send + Sync + 'static,
    I: Clone + Send + 'static,
    F: MergeFn<<Parallel<I, B, AllOrNothing> as Processor>::Output>,
{
    type Input = I;
    type Output = F::Output;

    fn name(&self) -> &'static str {
        self.parallel.name()
    }

    fn config(&self) -> &ProcessorConfig {
        &COMPOSITION
    }

    async fn process(&self, input: I, ctx: &Ctx) -> Result<F::Output, Error> {
        let outputs = self.parallel.process(input, ctx).await?;
        Ok(self.merge.merge(outputs))
    }

    fn is_step(&self) -> bool {
        false
    }

    fn describe(&self, plan: &mut PlanBuilder) -> NodeId {
        let node = self.parallel.describe(plan);
        if let Some(crate::plan::Node {
            kind: NodeKind::Parallel { merge, .. },
            ..
        }) = plan.node_mut(node)
        {
            *merge = Some(self.merge_name.to_owned());
        }
        node
    }

    fn visit(&self, visitor: &mut dyn FnMut(Registration)) {
        self.parallel.visit(visitor);
    }

    fn compile(&self, graph: &mut PortableGraph) -> Option<PortableId> {
        type Outputs<I, B> = <Parallel<I, B, AllOrNothing> as Processor>::Output;
        let node = self.parallel.compile(graph)?;
        graph.need::<Outputs<I, B>>();
        graph.need::<F::Output>();
        let merge = self.merge.clone();
        graph.set_merge(
            node,
            std::sync::Arc::new(move |outputs: Vec<Json>, codecs: &Codecs| {
                let outputs = codecs.decode::<Outputs<I, B>>(Json::Array(outputs))?;
                codecs.encode(&merge.merge(outputs))
            }),
        );
        Some(node)
    }
}

impl<I, B, F> Accepts<I> for Merge<Parallel<I, B, AllOrNothing>, F>
where
    Self: Processor<Input = I>,
{
    fn accept(input: I) -> I {
        input
    }
}

impl<I, B, F> Returns<<Merge<Parallel<I, B, AllOrNothing>, F> as Processor>::Output>
    for Merge<Parallel<I, B, AllOrNothing>, F>
where
    Self: Processor,
{
    fn output(output: <Self as Processor>::Output) -> <Self as Processor>::Output {
        output
    }
}
