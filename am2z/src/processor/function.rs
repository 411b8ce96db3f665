//! Plain async fns as processors, without macros.
//!
//! The marker type parameter (the approach of bevy's function systems) lets one blanket impl
//! cover `async fn(In) -> Result<Out, E>` and another `async fn(In, &Ctx) -> Result<Out, E>`
//! without overlapping.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use super::{Accepts, Processor, ProcessorConfig, Returns};
use crate::{Ctx, Error};

/// An async fn (or closure) wrapped as a [`Processor`]. Build one with [`processor_fn`].
pub struct FnProcessor<F, M> {
    f: F,
    name: &'static str,
    config: ProcessorConfig,
    marker: PhantomData<fn() -> M>,
}

/// Marker for `async fn(In) -> Result<Out, E>`.
pub struct WithoutCtx<In, Fut>(PhantomData<fn(In) -> Fut>);

/// Marker for `async fn(In, &Ctx) -> Result<Out, E>`.
pub struct WithCtx<In, Out, E>(PhantomData<fn(In) -> Result<Out, E>>);

/// Wraps a plain async fn as a processor named after the fn.
///
/// ```
/// use am2z::{processor_fn, Ctx, Error, Processor};
/// use std::time::Duration;
///
/// async fn add_one(x: u64) -> Result<u64, Error> { Ok(x + 1) }
/// async fn greet(name: String, ctx: &Ctx) -> Result<String, Error> {
///     Ok(format!("hello {name} from {}", ctx.meta().session_id))
/// }
///
/// let add = processor_fn(add_one).timeout(Duration::from_secs(1));
/// assert_eq!(add.name(), "add_one");
/// let greet = processor_fn(greet).named("greeter").retries(3);
/// assert_eq!(greet.config().retry.max_attempts, 3);
/// ```
///
/// The name is the fn's own (its last path segment); closures should be given one with
/// [`named`](FnProcessor::named).
pub fn processor_fn<F, M>(f: F) -> FnProcessor<F, M>
where
    FnProcessor<F, M>: Processor,
{
    let full = std::any::type_name::<F>();
    let name = full.rsplit("::").next().unwrap_or(full);
    FnProcessor {
        f,
        name,
        config: ProcessorConfig::new(),
        marker: PhantomData,
    }
}

impl<F, M> FnProcessor<F, M> {
    /// Renames the processor.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Replaces the whole configuration.
    pub fn with_config(mut self, config: ProcessorConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: &'static str) -> Self {
        self.config = self.config.description(description);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config = self.config.timeout(timeout);
        self
    }

    /// Sets the number of attempts.
    pub fn retries(mut self, max_attempts: u32) -> Self {
        self.config = self.config.retries(max_attempts);
        self
    }

    /// Sets the backoff between attempts.
    pub fn backoff(mut self, backoff: super::Backoff) -> Self {
        self.config = self.config.backoff(backoff);
        self
    }
}

impl<F: Clone, M> Clone for FnProcessor<F, M> {
    fn clone(&self) -> Self {
        FnProcessor {
            f: self.f.clone(),
            name: self.name,
            config: self.config,
            marker: PhantomData,
        }
    }
}

impl<F, M> fmt::Debug for FnProcessor<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnProcessor")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A `Result`, seen through its parts (lets one impl name the `Ok` and `Err` of a future's output).
pub trait IsResult {
    /// The success type.
    type Ok;
    /// The error type.
    type Err;
    /// The value itself.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> IsResult for Result<T, E> {
    type Ok = T;
    type Err = E;
    fn into_result(self) -> Self {
        self
    }
}

impl<F, In, Fut> Processor for FnProcessor<F, WithoutCtx<In, Fut>>
where
    F: Fn(In) -> Fut + Clone + Send + Sync + 'static,
    In: Clone + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IsResult,
    <Fut::Output as IsResult>::Ok: Send + 'static,
    <Fut::Output as IsResult>::Err: Into<Error>,
{
    type Input = In;
    type Output = <Fut::Output as IsResult>::Ok;

    fn name(&self) -> &'static str {
        self.name
    }

    fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    async fn process(&self, input: In, _ctx: &Ctx) -> Result<Self::Output, Error> {
        (self.f)(input).await.into_result().map_err(Into::into)
    }
}

/// An async fn taking `(In, &Ctx)`, with the future allowed to borrow the context.
pub trait AsyncCtxFn<'a, In>: Send + Sync {
    /// The future the fn returns.
    type Future: Future<Output = Self::Result> + Send + 'a;
    /// What the future resolves to.
    type Result;
    /// Calls the fn.
    fn call(&self, input: In, ctx: &'a Ctx) -> Self::Future;
}

impl<'a, In, F, Fut> AsyncCtxFn<'a, In> for F
where
    F: Fn(In, &'a Ctx) -> Fut + Send + Sync,
    Fut: Future + Send + 'a,
{
    type Future = Fut;
    type Result = Fut::Output;
    fn call(&self, input: In, ctx: &'a Ctx) -> Fut {
        self(input, ctx)
    }
}

impl<F, In, Out, E> Processor for FnProcessor<F, WithCtx<In, Out, E>>
where
    F: for<'a> AsyncCtxFn<'a, In, Result = Result<Out, E>> + Clone + 'static,
    In: Clone + Send + 'static,
    Out: Send + 'static,
    E: Into<Error> + 'static,
{
    type Input = In;
    type Output = Out;

    fn name(&self) -> &'static str {
        self.name
    }

    fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    async fn process(&self, input: In, ctx: &Ctx) -> Result<Out, Error> {
        self.f.call(input, ctx).await.map_err(Into::into)
    }
}

impl<F, M> Accepts<<FnProcessor<F, M> as Processor>::Input> for FnProcessor<F, M>
where
    FnProcessor<F, M>: Processor,
{
    fn accept(input: <Self as Processor>::Input) -> <Self as Processor>::Input {
        input
    }
}

impl<F, M> Returns<<FnProcessor<F, M> as Processor>::Output> for FnProcessor<F, M>
where
    FnProcessor<F, M>: Processor,
{
    fn output(output: <Self as Processor>::Output) -> <Self as Processor>::Output {
        output
    }
}
