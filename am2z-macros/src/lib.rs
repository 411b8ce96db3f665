//! Procedural macros for am2z: `#[processor]` and `workflow!`.
//!
//! Use them through the `am2z` crate, which re-exports them and documents them with examples.

use proc_macro::TokenStream;

mod errors;
mod literal;
mod naming;
mod options;
mod processor;
mod workflow;

/// Makes an `async fn` a processor: a named, configured, typed step.
///
/// ```ignore
/// use am2z::{processor, Ctx, Error};
///
/// /// Charges the customer's card.
/// #[processor(timeout = "30s", retries = 3, backoff = exponential(base = "100ms", multiplier = 2))]
/// pub async fn charge_card(payment: Payment, ctx: &Ctx) -> Result<Receipt, Error> {
///     # unimplemented!()
/// }
///
/// // The fn is unchanged and still callable; the processor is the type `ChargeCard`:
/// let outcome = ChargeCard::run(&runtime, payment).await?;
/// runtime.register(ChargeCard);
/// ```
///
/// (The examples on this page are compiled and run by `ui-tests/tests/ui/pass/`.)
///
/// # The fn
///
/// `async fn name(input: In) -> Result<Out, E>` or `async fn name(input: In, ctx: &Ctx) ->
/// Result<Out, E>`, where `In: Clone + Send + 'static` is owned, `Out: Send + 'static`, and `E`
/// converts into `am2z::Error` (`am2z::Result<Out>` works too). It cannot be generic, take
/// `self`, or be `const`/`unsafe`. The fn is re-emitted unchanged, so it can be called and
/// unit-tested directly.
///
/// # What it generates
///
/// **The naming rule:** the processor type is the fn's name in UpperCamelCase — split at `_`,
/// first letter of each part uppercased, the rest kept: `charge_card` → `ChargeCard`,
/// `fetch_v2` → `FetchV2`. `workflow!` maps step names to types by the same rule.
///
/// ```ignore
/// #[derive(Clone, Copy, Debug, Default)]
/// pub struct ChargeCard;                 // same visibility as the fn, the fn's docs
///
/// impl ChargeCard {
///     pub async fn run<R: Executes<ChargeCard>>(runtime: &R, input: Payment) -> RunOutcome<Receipt>;
///     pub async fn run_in_session<R: Executes<ChargeCard>>(
///         runtime: &R, session: &SessionId, input: Payment) -> RunOutcome<Receipt>;
/// }
///
/// impl Processor for ChargeCard {
///     type Input = Payment;
///     type Output = Receipt;
///     fn name(&self) -> &'static str { "charge_card" }
///     fn config(&self) -> &ProcessorConfig {
///         static CONFIG: ProcessorConfig = ProcessorConfig::new()
///             .timeout(Duration::from_millis(30_000))
///             .retries(3)
///             .backoff(Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_millis(60_000)));
///         &CONFIG
///     }
///     async fn process(&self, input: Payment, ctx: &Ctx) -> Result<Receipt, Error> {
///         charge_card(input, ctx).await.map_err(Into::into)
///     }
/// }
/// impl Accepts<Payment> for ChargeCard { /* identity */ }
/// impl Returns<Receipt> for ChargeCard { /* identity */ }
/// ```
///
/// `Accepts`/`Returns` are implemented for the one input and output type, so a step wired to
/// the wrong type fails with "step `ChargeCard` cannot take `ValidOrder` as its input".
///
/// # Keys
///
/// Every value is checked at compile time, with the error on the value. Durations are a whole
/// number and a unit: `ms`, `s`, `m` (minutes) or `h` — `"1500ms"`, `"30s"`, `"2m"`, `"1h"`.
///
/// | key | example | without the macro |
/// | --- | --- | --- |
/// | `name` | `name = "payments.charge"` | `fn name(&self) -> &'static str { "payments.charge" }` (default: the fn's name, `"charge_card"`) |
/// | `description` | `description = "Charges the card"` | `.description("Charges the card")` |
/// | `timeout` | `timeout = "30s"` | `.timeout(Duration::from_secs(30))` (per attempt) |
/// | `retries` | `retries = 3` | `.retries(3)`: attempts in all, the first included; at least 1 |
/// | `backoff` | `backoff = fixed("1s")` | `.backoff(Backoff::fixed(Duration::from_secs(1)))` |
/// | `backoff` | `backoff = exponential(base = "100ms", multiplier = 2, max = "10s")` | `.backoff(Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10)))`; `max` defaults to `"60s"` (or `base`, if longer); `multiplier` is at least 1 and may be fractional (`1.5`) |
/// | `retry_if` | `retry_if = is_transient` | `.retry_if(is_transient)`, a `fn(&Error, u32) -> bool` given the error and the attempt about to be made |
/// | `concurrency` | `concurrency = 5` | `.concurrency(5)`: attempts running at once; at least 1 |
/// | `priority` | `priority = 10`, `priority = -5` | `.priority(10)`: higher runs first |
/// | `rate` | `rate = "100/min"` | `.rate_limit(100, Duration::from_secs(60))`; the period is `s`/`sec`/`second`, `m`/`min`/`minute`, `h`/`hour`, or a duration such as `"10/30s"` |
/// | `delay` | `delay = "1s"` | `.delay(Duration::from_secs(1))`: a wait before the first attempt |
/// | `version` | `version = 2` | `.version(2)`: the contract version; bump it when the input or output changes meaning |
/// | `crate` | `crate = ::renamed` | generated code names `::renamed::__private` instead of `::am2z::__private` (for a renamed dependency) |
///
/// An unknown key lists the valid ones; a key given twice is an error at the second.
#[proc_macro_attribute]
pub fn processor(args: TokenStream, item: TokenStream) -> TokenStream {
    processor::expand(args.into(), item.into()).into()
}

/// Declares a typed workflow. (Documented on `am2z::workflow`.)
#[proc_macro]
pub fn workflow(input: TokenStream) -> TokenStream {
    workflow::expand(input.into()).into()
}

/// The path generated code reaches am2z through: `::am2z` unless `crate = path` says otherwise.
fn crate_path(custom: Option<&syn::Path>) -> proc_macro2::TokenStream {
    match custom {
        Some(path) => quote::quote!(#path),
        None => quote::quote!(::am2z),
    }
}
