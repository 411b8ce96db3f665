//! # am2z: typed processor workflows, in-process or across machines
//!
//! Write plain `async fn`s, make them processors, compose them into workflows whose every
//! edge is checked by rustc, and run them on the local runtime (in-process tokio) or across
//! many processes on Redis, each run in an isolated session.
//!
//! ```
//! use am2z::{processor, workflow, Error, LocalRuntime, Runtime, SessionId};
//!
//! /// Adds one; retried up to 3 attempts, each limited to a second.
//! #[processor(timeout = "1s", retries = 3)]
//! async fn add_one(x: i64) -> Result<i64, Error> { Ok(x + 1) }
//!
//! #[processor]
//! async fn double(x: i64) -> Result<i64, Error> { Ok(x * 2) }
//!
//! workflow! {
//!     /// Every edge is checked by rustc: `double` must take what `add_one` returns.
//!     Arithmetic(i64) -> i64 {
//!         chain![add_one, double]
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Error> {
//! let runtime = LocalRuntime::new();
//! runtime.start().await?;
//!
//! let tenant = SessionId::new("tenant-7")?;
//! let result = Arithmetic::run_in_session(&runtime, &tenant, 20).await?;
//! assert_eq!(result.output, 42);
//! assert_eq!(result.meta.session_id, tenant);
//! assert_eq!(result.meta.version, 2); // one per step
//!
//! runtime.stop_session(&tenant).await?;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! The macros only build ordinary values: the same workflow without them is
//! `Chain::new(processor_fn(add_one).timeout(..).retries(3), processor_fn(double))`.
//!
//! The pieces, one module each:
//! - [`processor`] and [`workflow!`]: the macros (every key and form documented there).
//! - [`Processor`] and [`ProcessorConfig`]: a typed, named, configured async step;
//!   [`processor_fn`] turns a plain async fn into one.
//! - [`Ctx`]: what a step sees while it runs (metadata, cancellation, events, nested calls).
//! - [`Chain`], [`Parallel`], [`Route`], [`Map`], [`Workflow`]: typed composition.
//! - [`Runtime`] and [`Executes`]: the contract every runtime honours; [`LocalRuntime`]
//!   (in-process) and, with the `redis` feature (on by default), `RedisRuntime`.
//! - [`SessionId`], [`Event`], [`Error`], [`Plan`]: sessions, events, errors and plans.
//! - [`metrics`]: Prometheus metrics of a runtime.

mod context;
#[cfg(feature = "dashboard")]
pub mod dashboard;
mod error;
mod event;
pub mod metrics;
pub mod plan;
#[doc(hidden)]
pub mod portable;
mod processor;
pub mod runtime;
mod session;
mod state;
mod workflow;

pub use context::Ctx;
pub use error::{Category, Error, Result, Severity};
pub use event::{Event, EventKind, EventStream};
pub use plan::{Contract, Fingerprint, Plan};
pub use processor::{
    Accepts, AsyncCtxFn, Backoff, FnProcessor, IsResult, Processor, ProcessorConfig, RateLimit,
    Registration, RetryPolicy, Returns, WithCtx, WithoutCtx, processor_fn,
};
pub use runtime::{
    Executes, Inspect, LocalRuntime, LocalRuntimeBuilder, ProcessorInfo, QueueStats, Runtime,
    RuntimeStats, SessionStats,
};
#[cfg(feature = "redis")]
pub use runtime::{RedisConfig, RedisRuntime, RunHandle};
pub use session::{DEFAULT_SESSION, MAX_SESSION_ID_LEN, SessionId};
pub use state::{Metadata, RunFailure, RunId, RunOutcome, RunResult, StateSnapshot};
pub use workflow::{
    AllOrNothing, Arm, Chain, CollectResults, Dispatch, Fallback, Map, Merge, MergeFn, NoArms,
    Parallel, Route, RouteArms, Workflow,
};

// The macros are documented here rather than in `am2z-macros`: doctests on a re-export compile
// against `am2z`, so every example below is built and run by `cargo test --doc`.
/// Makes an `async fn` a processor: a named, configured, typed step that runs on any runtime,
/// registers, and composes into workflows.
///
/// ```
/// use am2z::{processor, Error, LocalRuntime, Runtime};
///
/// #[derive(Clone, Debug)]
/// pub struct Payment { pub cents: u64 }
/// #[derive(Debug, PartialEq)]
/// pub struct Receipt { pub cents: u64 }
///
/// /// Charges the customer's card.
/// #[processor(timeout = "30s", retries = 3, backoff = exponential(base = "100ms", multiplier = 2))]
/// pub async fn charge_card(payment: Payment) -> Result<Receipt, Error> {
///     Ok(Receipt { cents: payment.cents })
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// let runtime = LocalRuntime::new();
/// runtime.start().await?;
///
/// // The processor is the type `ChargeCard`; it runs on any runtime...
/// let outcome = ChargeCard::run(&runtime, Payment { cents: 500 }).await?;
/// assert_eq!(outcome.output, Receipt { cents: 500 });
/// // ...registers (for workers, stats and `processor_info`)...
/// runtime.register(ChargeCard);
/// assert_eq!(runtime.registered(), ["charge_card"]);
/// // ...and the fn is unchanged: call it and unit-test it directly.
/// assert_eq!(charge_card(Payment { cents: 7 }).await?, Receipt { cents: 7 });
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// # The fn
///
/// `async fn name(input: In) -> Result<Out, E>`, or `async fn name(input: In, ctx: &Ctx) ->
/// Result<Out, E>` to see the run's [`Ctx`] (attempt, cancellation, events, nested calls).
/// `In: Clone + Send + 'static` is taken by value, `Out: Send + 'static`, and `E` converts into
/// [`Error`] (so [`am2z::Result<Out>`](Result) works too). The fn cannot be generic, take
/// `self`, or be `const` or `unsafe`; its attributes, visibility, docs and body are kept as
/// written. A mistake in the attribute is reported on the key or value at fault, and the fn is
/// still emitted, so calls to it do not turn into more errors.
///
/// ```
/// use am2z::{processor, Ctx, Error, LocalRuntime};
///
/// #[derive(Debug)]
/// pub struct Declined;
///
/// impl From<Declined> for Error {
///     fn from(_: Declined) -> Error {
///         Error::validation("card", "declined")
///     }
/// }
///
/// /// With the context, and an error type of its own.
/// #[processor]
/// async fn authorize(cents: u64, ctx: &Ctx) -> Result<u64, Declined> {
///     let _attempt = ctx.attempt();
///     if cents > 10_000 { Err(Declined) } else { Ok(cents) }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # am2z::Runtime::start(&runtime).await?;
/// assert_eq!(Authorize::run(&runtime, 300).await?.output, 300);
/// assert!(Authorize::run(&runtime, 20_000).await.is_err());
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// # What it generates
///
/// **The naming rule:** the processor type is the fn's name in UpperCamelCase: split at `_`,
/// the first letter of each part uppercased and the rest kept (`charge_card` → `ChargeCard`,
/// `fetch_v2` → `FetchV2`). `workflow!` finds a step's type by the same rule.
///
/// The type is a unit struct with the fn's visibility and docs, deriving `Clone`, `Copy`,
/// `Debug` and `Default`, with an inherent `run(&runtime, input)` and
/// `run_in_session(&runtime, &session, input)` ([`Executes::execute`] and
/// [`Executes::execute_in_session`] on it), and implementing [`Processor`], and [`Accepts`] and
/// [`Returns`] for its one input and output type. Written by hand, `charge_card` above is:
///
/// ```
/// use std::time::Duration;
///
/// use am2z::{Accepts, Backoff, Ctx, Error, Processor, ProcessorConfig, Returns};
/// # #[derive(Clone, Debug)]
/// # pub struct Payment { pub cents: u64 }
/// # #[derive(Debug, PartialEq)]
/// # pub struct Receipt { pub cents: u64 }
/// # #[am2z::processor(timeout = "30s", retries = 3, backoff = exponential(base = "100ms", multiplier = 2))]
/// # pub async fn charge_card(payment: Payment) -> Result<Receipt, Error> {
/// #     Ok(Receipt { cents: payment.cents })
/// # }
///
/// #[derive(Clone, Copy, Debug, Default)]
/// pub struct ChargeCardByHand;
///
/// impl Processor for ChargeCardByHand {
///     type Input = Payment;
///     type Output = Receipt;
///
///     fn name(&self) -> &'static str {
///         "charge_card"
///     }
///
///     fn config(&self) -> &ProcessorConfig {
///         static CONFIG: ProcessorConfig = ProcessorConfig::new()
///             .timeout(Duration::from_secs(30))
///             .retries(3)
///             .backoff(Backoff::exponential(
///                 Duration::from_millis(100),
///                 2.0,
///                 Duration::from_secs(60),
///             ));
///         &CONFIG
///     }
///
///     async fn process(&self, input: Payment, _ctx: &Ctx) -> Result<Receipt, Error> {
///         charge_card(input).await.map_err(Into::into)
///     }
/// }
///
/// impl Accepts<Payment> for ChargeCardByHand {
///     fn accept(input: Payment) -> Payment {
///         input
///     }
/// }
///
/// impl Returns<Receipt> for ChargeCardByHand {
///     fn output(output: Receipt) -> Receipt {
///         output
///     }
/// }
///
/// assert_eq!(ChargeCard.name(), ChargeCardByHand.name());
/// assert_eq!(ChargeCard.config(), ChargeCardByHand.config());
/// ```
///
/// Because `Accepts` and `Returns` are implemented for exactly one type, a step wired to the
/// wrong type fails to compile, on the step: in a [`workflow!`] with "step `charge_card` takes
/// `Payment`, but the step before it, `validate_order`, returns `ValidOrder`", and in a
/// combinator built by hand with "step `ChargeCard` cannot take `ValidOrder` as its input".
///
/// # Keys
///
/// `#[processor(key = value, ...)]`; every key is optional and may appear once. Each value is
/// checked at compile time, with the error on the value; an unknown key lists the valid ones
/// and suggests the closest. Durations are a whole number and a unit, `ms`, `s`, `m`
/// (minutes) or `h`: `"1500ms"`, `"30s"`, `"2m"`, `"1h"`. Each example below is followed by the
/// same configuration written without the macro.
///
/// ### `name`
///
/// The processor's stable name, used by registries, stats, events, errors and plans; by
/// default the fn's name.
///
/// ```
/// # use am2z::{processor, Error, Processor};
/// #[processor(name = "payments.charge")]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// // Without the macro: `fn name(&self) -> &'static str { "payments.charge" }`.
/// assert_eq!(Charge.name(), "payments.charge");
/// ```
///
/// ### `description`
///
/// ```
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(description = "Charges the customer's card")]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// let without_macro = ProcessorConfig::new().description("Charges the customer's card");
/// assert_eq!(Charge.config(), &without_macro);
/// ```
///
/// ### `timeout`
///
/// The limit on each attempt; an attempt that runs longer fails with [`Error::Timeout`] and
/// its cancellation token fires.
///
/// ```
/// # use std::time::Duration;
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(timeout = "1500ms")]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// let without_macro = ProcessorConfig::new().timeout(Duration::from_millis(1500));
/// assert_eq!(Charge.config(), &without_macro);
/// ```
///
/// ### `retries`
///
/// Attempts in all, the first included: at least 1 (the default, no retry). Which failures
/// are retried is [`Error::is_retryable`]'s call, or `retry_if`'s.
///
/// ```
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(retries = 3)]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// let without_macro = ProcessorConfig::new().retries(3);
/// assert_eq!(Charge.config(), &without_macro);
/// ```
///
/// ### `backoff`
///
/// The wait after a failed attempt: `fixed("1s")`, or `exponential(base = .., multiplier =
/// .., max = ..)`, waiting `base × multiplier^(n−1)` after the n-th failure. `multiplier` is
/// at least 1 and may be fractional (`1.5`); `max` defaults to `"60s"` (or `base`, if that is
/// longer).
///
/// ```
/// # use std::time::Duration;
/// # use am2z::{processor, Backoff, Error, Processor, ProcessorConfig};
/// #[processor(retries = 5, backoff = exponential(base = "100ms", multiplier = 2, max = "10s"))]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// #[processor(retries = 5, backoff = fixed("1s"))]
/// async fn refund(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// let without_macro = ProcessorConfig::new().retries(5).backoff(Backoff::exponential(
///     Duration::from_millis(100),
///     2.0,
///     Duration::from_secs(10),
/// ));
/// assert_eq!(Charge.config(), &without_macro);
/// let without_macro = ProcessorConfig::new().retries(5).backoff(Backoff::fixed(Duration::from_secs(1)));
/// assert_eq!(Refund.config(), &without_macro);
/// ```
///
/// ### `retry_if`
///
/// A path to a `fn(&Error, u32) -> bool`, given the error and the number of the attempt about
/// to be made (2 for the first retry); it replaces [`Error::is_retryable`] as the rule.
///
/// ```
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// fn is_transient(error: &Error, attempt: u32) -> bool {
///     attempt <= 3 && error.is_retryable()
/// }
///
/// #[processor(retries = 3, retry_if = is_transient)]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// let without_macro = ProcessorConfig::new().retries(3).retry_if(is_transient);
/// assert_eq!(Charge.config(), &without_macro);
/// ```
///
/// ### `concurrency`
///
/// The most attempts of this processor running at once, per runtime (at least 1).
///
/// ```
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(concurrency = 5)]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// let without_macro = ProcessorConfig::new().concurrency(5);
/// assert_eq!(Charge.config(), &without_macro);
/// ```
///
/// ### `priority`
///
/// Higher runs first when attempts wait for a concurrency slot; may be negative.
///
/// ```
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(concurrency = 5, priority = -5)]
/// async fn reindex(batch: u64) -> Result<u64, Error> { Ok(batch) }
///
/// let without_macro = ProcessorConfig::new().concurrency(5).priority(-5);
/// assert_eq!(Reindex.config(), &without_macro);
/// ```
///
/// ### `rate`
///
/// At most `max` attempt starts per period: `"100/min"`, `"5/s"`, `"1000/hour"`, or a
/// duration as the period, `"10/30s"`. The periods are `s`/`sec`/`second`, `m`/`min`/`minute`
/// and `h`/`hour`.
///
/// ```
/// # use std::time::Duration;
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(rate = "100/min")]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// let without_macro = ProcessorConfig::new().rate_limit(100, Duration::from_secs(60));
/// assert_eq!(Charge.config(), &without_macro);
/// ```
///
/// ### `delay`
///
/// A wait before the first attempt.
///
/// ```
/// # use std::time::Duration;
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(delay = "2m")]
/// async fn remind(user: u64) -> Result<u64, Error> { Ok(user) }
///
/// let without_macro = ProcessorConfig::new().delay(Duration::from_secs(120));
/// assert_eq!(Remind.config(), &without_macro);
/// ```
///
/// ### `version`
///
/// The contract version (default 1): bump it when the input or output changes meaning, so
/// workers running older code refuse new work instead of misreading it.
///
/// ```
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(version = 2)]
/// async fn charge(cents: u64) -> Result<u64, Error> { Ok(cents) }
///
/// let without_macro = ProcessorConfig::new().version(2);
/// assert_eq!(Charge.config(), &without_macro);
/// assert_eq!(Charge.contract().version, 2);
/// ```
///
/// ### `redact`
///
/// Hides the processor's data from inspection (default: shown): the [`Inspect`] detail of a
/// run of it, or of a workflow with it as a step, shows its input, output and state as
/// [`Shown::Redacted`](runtime::inspect::Shown::Redacted), and its custom events' payloads
/// redacted. For processors that handle secrets or personal data; the run executes as usual.
/// `redact` alone means `redact = true`.
///
/// ```
/// # use am2z::{processor, Error, Processor, ProcessorConfig};
/// #[processor(redact)]
/// async fn store_card(number: String) -> Result<u64, Error> { Ok(number.len() as u64) }
///
/// let without_macro = ProcessorConfig::new().redact(true);
/// assert_eq!(StoreCard.config(), &without_macro);
/// ```
///
/// ### `crate`
///
/// The path generated code reaches am2z through. Without it, the macros read the name from
/// the crate's `Cargo.toml`: `::am2z`, or `::payments_rt` for a renamed dependency
/// (`payments_rt = { package = "am2z", .. }`, also through `workspace = true`), so a renamed
/// dependency needs no key. Write it when am2z is reached some other way, for example through
/// a crate that re-exports it. Generated code names nothing else from am2z.
///
/// ```
/// use am2z as payments_rt; // stands in for the renamed dependency
/// # use am2z::Processor;
///
/// #[payments_rt::processor(crate = payments_rt)]
/// async fn charge(cents: u64) -> Result<u64, payments_rt::Error> { Ok(cents) }
///
/// assert_eq!(Charge.name(), "charge");
/// ```
pub use am2z_macros::processor;

/// Declares named, typed workflows. Each is a type that is itself a processor: it runs on any
/// runtime, registers (with every processor inside it), and nests in other workflows.
///
/// ```
/// use am2z::{processor, workflow, Error, LocalRuntime, Runtime};
///
/// #[derive(Clone, Debug)]
/// pub struct Order { pub cents: u64, pub country: String }
/// #[derive(Clone, Debug)]
/// pub struct Checked { pub order: Order, pub in_stock: bool, pub risk: u32 }
/// #[derive(Clone, Debug, PartialEq)]
/// pub struct Receipt(pub String);
///
/// #[processor] async fn validate_order(o: Order) -> Result<Order, Error> { Ok(o) }
/// #[processor] async fn check_stock(o: Order) -> Result<(Order, bool), Error> { Ok((o, true)) }
/// #[processor] async fn score_fraud(o: Order) -> Result<u32, Error> { Ok(o.cents as u32 / 100) }
/// fn merge_checks((order, in_stock): (Order, bool), risk: u32) -> Checked {
///     Checked { order, in_stock, risk }
/// }
/// #[processor] async fn domestic(c: Checked) -> Result<Receipt, Error> {
///     Ok(Receipt(format!("domestic {}", c.order.cents)))
/// }
/// #[processor] async fn international(c: Checked) -> Result<Receipt, Error> {
///     Ok(Receipt(format!("international {}", c.order.cents)))
/// }
///
/// workflow! {
///     /// Takes an order to a receipt (doc comments and attributes carry over to the type).
///     pub Checkout(Order) -> Receipt {
///         timeout = "5m";                                // options first, each ending in `;`
///         chain![
///             validate_order,                            // a step: a processor fn's name
///             parallel![check_stock, score_fraud] => merge_checks,
///             route!(|c: &Checked| c.order.country.clone(), {
///                 "FR" => domestic,
///                 _ => international,                    // the fallback, last
///             }),
///         ]
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// let runtime = LocalRuntime::new();
/// runtime.start().await?;
/// let order = Order { cents: 1250, country: "FR".into() };
/// let outcome = Checkout::run(&runtime, order).await?;
/// assert_eq!(outcome.output, Receipt("domestic 1250".into()));
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// Every edge of the graph is checked by rustc, and a mismatch is reported on your step with
/// both types named (see [Type errors](#type-errors)).
///
/// # Syntax
///
/// ```text
/// workflow! {
///     #[attributes] vis Name(Input) -> Output {
///         option = value;          // zero or more workflow options
///         node                     // the body: one node
///     }
///     ...                          // more workflows in the same invocation
/// }
/// ```
///
/// A *node* is a step, `chain![..]`, `parallel![..]`, `route!(..)` or `map![..]`; nodes nest
/// to any depth. The sections below show each node with the same composition written without
/// the macro, out of the combinators it builds ([`Chain`], [`Parallel`], [`Route`], [`Map`],
/// [`Workflow`]).
///
/// ## Steps
///
/// A step is a path. Its last segment is mapped to a type by `#[processor]`'s naming rule
/// (`charge_card` → `ChargeCard`, `payments::charge_card` → `payments::ChargeCard`); a name
/// that is already UpperCamelCase, such as another workflow or a processor type written by
/// hand, is used as it is. A step's input must be what flows into it.
///
/// ## `chain![a, b, c]`
///
/// Each node takes the previous one's output.
///
/// ```
/// # use am2z::{processor, workflow, Chain, Error, Executes, LocalRuntime, Runtime};
/// #[processor] async fn add_one(x: i64) -> Result<i64, Error> { Ok(x + 1) }
/// #[processor] async fn double(x: i64) -> Result<i64, Error> { Ok(x * 2) }
/// #[processor] async fn add_ten(x: i64) -> Result<i64, Error> { Ok(x + 10) }
///
/// workflow! {
///     pub Arith(i64) -> i64 {
///         chain![add_one, double, add_ten]
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # runtime.start().await?;
/// let without_macro = Chain::new(AddOne, Double).then(AddTen);
/// assert_eq!(Arith::run(&runtime, 5).await?.output, 22);
/// assert_eq!(runtime.execute(&without_macro, 5).await?.output, 22);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// ## `parallel![a, b]`
///
/// The same input to every branch (2 to 8 of them; nest a `parallel!` for more), run
/// concurrently. By default it is all-or-nothing: the output is the tuple of the branch
/// outputs, and the first failing branch fails the parallel and cancels the others.
///
/// ```
/// # use am2z::{processor, workflow, Error, Executes, LocalRuntime, Parallel, Runtime};
/// #[processor] async fn text_len(s: String) -> Result<usize, Error> { Ok(s.len()) }
/// #[processor] async fn shout(s: String) -> Result<String, Error> { Ok(s.to_uppercase()) }
///
/// workflow! {
///     pub TextFan(String) -> (usize, String) {
///         parallel![text_len, shout]
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # runtime.start().await?;
/// let without_macro = Parallel::new((TextLen, Shout));
/// assert_eq!(TextFan::run(&runtime, "am2z".into()).await?.output, (4, "AM2Z".to_owned()));
/// assert_eq!(runtime.execute(&without_macro, "am2z".into()).await?.output, (4, "AM2Z".to_owned()));
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// ### `parallel![a, b] => merge`
///
/// The branch outputs go through a merge fn taking one parameter per branch, in branch order,
/// instead of into a tuple. The merge fn is a fn's path or a closure that captures nothing
/// (it is also read as a fn pointer, to check its parameters).
///
/// ```
/// # use am2z::{processor, workflow, Error, Executes, LocalRuntime, Parallel, Runtime};
/// # #[processor] async fn text_len(s: String) -> Result<usize, Error> { Ok(s.len()) }
/// # #[processor] async fn shout(s: String) -> Result<String, Error> { Ok(s.to_uppercase()) }
/// fn describe_text(len: usize, shout: String) -> String {
///     format!("{shout}:{len}")
/// }
///
/// workflow! {
///     pub TextMerged(String) -> String {
///         parallel![text_len, shout] => describe_text
///     }
///
///     pub TextMergedByClosure(String) -> usize {
///         parallel![text_len, shout] => |len: usize, shout: String| len + shout.len()
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # runtime.start().await?;
/// let without_macro = Parallel::new((TextLen, Shout)).merge(describe_text);
/// assert_eq!(TextMerged::run(&runtime, "am2z".into()).await?.output, "AM2Z:4");
/// assert_eq!(runtime.execute(&without_macro, "am2z".into()).await?.output, "AM2Z:4");
/// assert_eq!(TextMergedByClosure::run(&runtime, "am2z".into()).await?.output, 8);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// ### `parallel![a, b, policy = collect]`
///
/// Every branch runs to its end, even when another fails, and the output is the tuple of
/// their `Result<_, Error>`s: the parallel itself does not fail. `policy = all_or_nothing` is
/// the default, spelled out. A collecting parallel has no merge fn: take its tuple in the
/// next step.
///
/// ```
/// # use am2z::{processor, workflow, Error, Executes, LocalRuntime, Parallel, Runtime};
/// #[processor] async fn halve(x: u32) -> Result<u32, Error> {
///     if x % 2 == 0 { Ok(x / 2) } else { Err(Error::validation("x", "odd")) }
/// }
/// #[processor] async fn describe(x: u32) -> Result<String, Error> { Ok(format!("#{x}")) }
///
/// workflow! {
///     pub Both(u32) -> (Result<u32, Error>, Result<String, Error>) {
///         parallel![halve, describe, policy = collect]
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # runtime.start().await?;
/// let without_macro = Parallel::collect((Halve, Describe));
/// let (halved, described) = Both::run(&runtime, 3).await?.output;
/// assert!(halved.is_err());
/// assert_eq!(described?, "#3");
/// let (halved, described) = runtime.execute(&without_macro, 3).await?.output;
/// assert!(halved.is_err() && described.is_ok());
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// ## `route!(selector, { key => node, .., _ => node })`
///
/// `selector(&input)` picks the arm whose key equals what it returns (keys convert into the
/// selector's return type with `Into`, so `"web"` works for a `String`). `_ =>` is the
/// optional fallback and comes last; without one, an unknown key fails the run with
/// [`Error::NotFound`] naming the key. Every arm takes the route's input and returns the same
/// type. The selector's parameter type may be left out: it is the route's input.
///
/// ```
/// # use am2z::{processor, workflow, Error, Executes, LocalRuntime, Route, Runtime};
/// #[processor] async fn web_fee(cents: i64) -> Result<i64, Error> { Ok(cents + 1) }
/// #[processor] async fn shop_fee(cents: i64) -> Result<i64, Error> { Ok(cents + 5) }
/// #[processor] async fn standard_price(cents: i64) -> Result<i64, Error> { Ok(cents) }
///
/// workflow! {
///     pub ChannelRoute(i64) -> i64 {
///         route!(|cents| if *cents > 100 { "web".to_owned() } else { "other".to_owned() }, {
///             "web" => web_fee,
///             "shop" => shop_fee,
///             _ => standard_price,
///         })
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # runtime.start().await?;
/// let without_macro =
///     Route::new(|cents: &i64| if *cents > 100 { "web".to_owned() } else { "other".to_owned() })
///         .arm("web".into(), WebFee)
///         .arm("shop".into(), ShopFee)
///         .fallback(StandardPrice);
/// assert_eq!(ChannelRoute::run(&runtime, 200).await?.output, 201);
/// assert_eq!(ChannelRoute::run(&runtime, 50).await?.output, 50);
/// assert_eq!(runtime.execute(&without_macro, 200).await?.output, 201);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// ## `route!(match |x| scrutinee { Pattern => node, .. })`
///
/// The exhaustive form: the arms are the arms of a `match` generated on your scrutinee, so a
/// variant left out is rustc's "non-exhaustive patterns" error on your `match`, and adding a
/// variant to the enum breaks the build until it is routed. Patterns may have `if` guards. The
/// plan names each arm by its pattern.
///
/// ```
/// # use am2z::{processor, workflow, Error, Executes, LocalRuntime, Route, Runtime};
/// #[derive(Clone, Debug)]
/// pub enum Tier { Gold, Standard }
/// #[derive(Clone, Debug)]
/// pub struct Order { pub tier: Tier, pub cents: i64 }
///
/// #[processor] async fn gold_discount(o: Order) -> Result<i64, Error> { Ok(o.cents - 10) }
/// #[processor] async fn standard_price(o: Order) -> Result<i64, Error> { Ok(o.cents) }
///
/// workflow! {
///     pub TierRoute(Order) -> i64 {
///         route!(match |order: &Order| order.tier {
///             Tier::Gold => gold_discount,
///             Tier::Standard => standard_price,
///         })
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # runtime.start().await?;
/// let without_macro = Route::new(|order: &Order| match order.tier {
///     Tier::Gold => "Tier::Gold",
///     Tier::Standard => "Tier::Standard",
/// })
/// .arm("Tier::Gold", GoldDiscount)
/// .arm("Tier::Standard", StandardPrice)
/// .exhaustive();
/// let gold = Order { tier: Tier::Gold, cents: 100 };
/// assert_eq!(TierRoute::run(&runtime, gold.clone()).await?.output, 90);
/// assert_eq!(runtime.execute(&without_macro, gold).await?.output, 90);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// ## `map![node, concurrency = 8]`
///
/// The node over every item of a `Vec`, at most `concurrency` items at once (default 16); the
/// output is one `Result<_, Error>` per item, in input order, and one failing item does not
/// fail the others.
///
/// ```
/// # use am2z::{processor, workflow, Error, Executes, LocalRuntime, Map, Runtime};
/// #[processor] async fn invert(x: i64) -> Result<i64, Error> {
///     if x == 0 { Err(Error::validation("x", "zero")) } else { Ok(-x) }
/// }
///
/// workflow! {
///     pub Inverts(Vec<i64>) -> Vec<Result<i64, Error>> {
///         map![invert, concurrency = 2]
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # runtime.start().await?;
/// let without_macro = Map::new(Invert).concurrency(2);
/// let inverted = Inverts::run(&runtime, vec![1, 0, 3]).await?.output;
/// assert_eq!(inverted[0].as_ref().ok(), Some(&-1));
/// assert!(inverted[1].is_err());
/// assert_eq!(runtime.execute(&without_macro, vec![4]).await?.output[0].as_ref().ok(), Some(&-4));
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// ## Nesting
///
/// Any node can stand where a step can, and a workflow is a step of other workflows (by its
/// type's name). Registering the outer workflow registers every processor inside it.
///
/// ```
/// # use am2z::{processor, workflow, Error, LocalRuntime, Processor, Runtime};
/// #[derive(Clone, Debug)]
/// pub enum Tier { Gold, Standard }
///
/// #[processor] async fn tier_of(cents: i64) -> Result<(Tier, i64), Error> {
///     Ok((if cents > 100 { Tier::Gold } else { Tier::Standard }, cents))
/// }
/// #[processor] async fn discount(t: (Tier, i64)) -> Result<i64, Error> { Ok(t.1 - 10) }
/// #[processor] async fn full_price(t: (Tier, i64)) -> Result<i64, Error> { Ok(t.1) }
/// #[processor] async fn add_one(x: i64) -> Result<i64, Error> { Ok(x + 1) }
/// #[processor] async fn double(x: i64) -> Result<i64, Error> { Ok(x * 2) }
///
/// workflow! {
///     /// A chain inside a route inside a chain, with a parallel at the end.
///     pub Pricing(i64) -> (i64, i64) {
///         chain![
///             tier_of,
///             route!(match |t: &(Tier, i64)| t.0 {
///                 Tier::Gold => chain![discount, add_one],
///                 Tier::Standard => full_price,
///             }),
///             parallel![add_one, double],
///         ]
///     }
///
///     /// A workflow used as a step.
///     pub Prices(Vec<i64>) -> Vec<Result<(i64, i64), Error>> {
///         map![Pricing]
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// # let runtime = LocalRuntime::new();
/// # runtime.start().await?;
/// assert_eq!(Pricing::run(&runtime, 200).await?.output, (192, 382));
/// let prices = Prices::run(&runtime, vec![200, 50]).await?.output;
/// assert_eq!(prices[1].as_ref().ok(), Some(&(51, 100)));
/// runtime.register(Prices);
/// assert!(runtime.registered().contains(&"Pricing".to_owned()));
/// assert!(runtime.registered().contains(&"discount".to_owned()));
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
///
/// ## Node options
///
/// `chain!`, `parallel!` and `map!` take `key = value` options after their nodes, and `route!`
/// after its arms: `name = "..."` names the node in the plan, stats and errors (by default
/// `"chain"`, `"parallel"`, `"route"` or `"map"`); `map!` also takes `concurrency`, and
/// `parallel!` `policy`.
///
/// ```
/// # use am2z::{processor, workflow, Error, Processor};
/// # use am2z::plan::NodeKind;
/// # #[processor] async fn add_one(x: i64) -> Result<i64, Error> { Ok(x + 1) }
/// # #[processor] async fn double(x: i64) -> Result<i64, Error> { Ok(x * 2) }
/// workflow! {
///     pub Named(i64) -> (i64, i64) {
///         chain![add_one, parallel![add_one, double, name = "fan-out"], name = "pricing"]
///     }
/// }
///
/// let plan = Named.plan();
/// assert_eq!(plan.step_names(), ["add_one", "double"]);
/// let named = |wanted: &str| plan.nodes.iter().any(|node| match &node.kind {
///     NodeKind::Chain { name, .. } | NodeKind::Parallel { name, .. } => name == wanted,
///     _ => false,
/// });
/// assert!(named("pricing") && named("fan-out"));
/// ```
///
/// # Workflow options
///
/// Before the body, each ending in `;`. Each example is followed by the same configuration
/// written without the macro.
///
/// | option | example | means |
/// | --- | --- | --- |
/// | `name` | `name = "orders.checkout";` | the registered name; by default the type's name as written, `"Checkout"` |
/// | `description` | `description = "Takes an order to a receipt";` | shown in [`ProcessorInfo`] |
/// | `timeout` | `timeout = "5m";` | a limit on the whole run (durations as in [`processor`]) |
/// | `version` | `version = 2;` | the contract version |
/// | `crate` | `crate = payments_rt;` | the path to am2z, when `Cargo.toml` does not name it (as [`processor`]'s `crate`) |
///
/// ```
/// # use std::time::Duration;
/// # use am2z::{processor, workflow, Error, Processor, ProcessorConfig, Workflow};
/// # #[processor] async fn add_one(x: i64) -> Result<i64, Error> { Ok(x + 1) }
/// workflow! {
///     pub Checkout(i64) -> i64 {
///         name = "orders.checkout";
///         description = "Takes an order to a receipt";
///         timeout = "5m";
///         version = 2;
///         add_one
///     }
/// }
///
/// let config = ProcessorConfig::new()
///     .description("Takes an order to a receipt")
///     .timeout(Duration::from_secs(300))
///     .version(2);
/// let without_macro = Workflow::new("orders.checkout", AddOne).with_config(config);
/// assert_eq!(Checkout.name(), without_macro.name());
/// assert_eq!(Checkout.config(), without_macro.config());
/// ```
///
/// # What it generates
///
/// For `pub Checkout(Order) -> Receipt { .. }`: a unit struct `Checkout` (deriving `Clone`,
/// `Copy`, `Debug` and `Default`, with your attributes and docs) that implements
/// [`Processor`] with `Input = Order` and `Output = Receipt` by running
/// `Workflow::new("Checkout", body)`, plus [`Accepts<Order>`](Accepts) and
/// [`Returns<Receipt>`](Returns), and the inherent `Checkout::run(&runtime, input)` and
/// `Checkout::run_in_session(&runtime, &session, input)`. Helper items are hidden in a
/// `const _: () = { .. };` block, and the code names nothing but `::core`, `::std` and
/// `<crate>::__private`, so it compiles under `#![deny(warnings)]` and clippy, with
/// `Result`, `Option` or `Box` shadowed.
///
/// # Type errors
///
/// A macro cannot see types, so every edge is checked by a call placed on your step, and
/// rustc reports a mismatch there, once, naming the step as you wrote it, both types, and
/// where the value it is given comes from:
///
/// - a step whose input is not what flows into it: "step `charge` takes `Payment`, but the
///   step before it, `validate`, returns `ValidOrder`" (or "..., but it is the first step of
///   workflow `Checkout`, which takes `Order`", "..., but every branch of its `parallel!` is
///   given `Order`", "..., but every arm of its `route!` is given `Order`");
/// - a route arm that returns something else than the first arm: "step `standard` returns
///   `ValidOrder`, but the first arm of its `route!`, `gold`, returns `Receipt`";
/// - a merge fn (or closure) whose parameters are not the branch outputs: "merge fn
///   `merge_checks` takes `(u32, u64)`, but the branches of its `parallel!` return `(u32,
///   String)`";
/// - `map!` given something other than a `Vec`: "`map!` runs `send_email` on each item of a
///   `Vec`, but the step before it, `archive`, returns `Receipt`";
/// - a `match` route missing a variant: rustc's non-exhaustive patterns error, on your `match`;
/// - a workflow whose last step does not return the declared output: "workflow `Checkout`
///   returns `Receipt`, but its last step, `validate`, returns `ValidOrder`";
/// - a step name that names nothing: rustc's "cannot find value", which suggests the processor
///   fns of a similar name.
///
/// A mistake the macro itself reports (a bad option, a node it does not know) still leaves
/// the workflow's type, so code that uses it reports nothing more.
///
/// ```compile_fail,E0277
/// # use am2z::{processor, workflow, Error};
/// # #[derive(Clone, Debug)] pub struct Order;
/// # #[derive(Clone, Debug)] pub struct ValidOrder;
/// # #[derive(Clone, Debug)] pub struct Payment;
/// # #[derive(Clone, Debug)] pub struct Receipt;
/// #[processor] async fn validate(o: Order) -> Result<ValidOrder, Error> { Ok(ValidOrder) }
/// #[processor] async fn charge(p: Payment) -> Result<Receipt, Error> { Ok(Receipt) }
///
/// workflow! {
///     pub Checkout(Order) -> Receipt {
///         chain![validate, charge]   // error: step `charge` takes `Payment`, but the step before it, `validate`, returns `ValidOrder`
///     }
/// }
/// ```
pub use am2z_macros::workflow;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
