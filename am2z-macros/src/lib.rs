//! Procedural macros for am2z: `#[processor]` and `workflow!`.
//!
//! Use them through the `am2z` crate, which re-exports them and documents them with examples.

use proc_macro::TokenStream;

mod errors;
mod literal;
mod naming;
mod options;
mod processor;
mod respan;
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

/// Declares named, typed workflows: each is a type that is itself a processor, so it runs,
/// registers and nests like any other.
///
/// ```ignore
/// use am2z::workflow;
///
/// workflow! {
///     /// Doc comments and attributes carry over to the type.
///     pub OrderPipeline(Order) -> Receipt {
///         timeout = "5m";                                   // options first, each ending in `;`
///         description = "Takes an order to a receipt";
///         chain![
///             validate_order,                               // a step: a processor fn's name
///             parallel![check_stock, score_fraud] => merge_checks,
///             route!(|c: &Checked| c.tier.clone(), {
///                 "gold" => gold_path,
///                 _ => standard_path,                       // optional fallback, last
///             }),
///             route!(match |c: &Checked| c.kind { Kind::A => path_a, Kind::B => path_b }),
///             map![send_email, concurrency = 8],
///             summarize,
///             InnerWorkflow,                                // a workflow (or processor type) by name
///         ]
///     }
/// }
///
/// let outcome = OrderPipeline::run(&runtime, order).await?;
/// ```
///
/// (Compiled and run by `ui-tests/tests/ui/pass/`.)
///
/// # Syntax
///
/// `workflow! { #[attrs] vis Name(Input) -> Output { options; node } ... }` — one or more
/// workflows per invocation. A *node* is one of:
///
/// | node | means | without the macro |
/// | --- | --- | --- |
/// | `charge_card`, `payments::charge_card`, `InnerWorkflow` | a step: the last path segment is mapped to a type by `#[processor]`'s UpperCamelCase rule (`charge_card` → `ChargeCard`; `InnerWorkflow` stays) | `ChargeCard` |
/// | `chain![a, b, c]` | each on the previous one's output | `Chain::new(A, B).then(C)` |
/// | `parallel![a, b]` | the same input to every branch (2 to 8), all-or-nothing, a tuple of outputs | `Parallel::new((A, B))` |
/// | `parallel![a, b, policy = collect]` | every branch runs to its end, even when one fails; a tuple of `Result<_, am2z::Error>`, one per branch (`policy = all_or_nothing` is the default) | `Parallel::collect((A, B))` |
/// | `parallel![a, b] => merge` | the outputs through `fn merge(a_out, b_out) -> T` | `Parallel::new((A, B)).merge(merge)` |
/// | `route!(selector, { key => node, .., _ => node })` | `selector(&input)` picks the arm whose key equals it (keys convert with `Into`); `_` is the optional fallback, last | `Route::new(selector).arm(key.into(), A).fallback(B)` |
/// | `route!(match \|x: &In\| scrutinee { Pattern => node, .. })` | a generated `match`: a variant left out is rustc's non-exhaustive-patterns error on your `match` | `Route::new(\|x\| match scrutinee { Pattern => "Pattern", .. }).arm("Pattern", A).exhaustive()` |
/// | `map![node, concurrency = 8]` | the node over every item of a `Vec`, at most `concurrency` at once (default 16); one `Result` per item | `Map::new(A).concurrency(8)` |
///
/// Nodes nest to any depth. `chain!`, `parallel!`, `route!` and `map!` also take
/// `name = "..."` (last in their list; after the arms for `route!`), the name shown in the plan
/// and in errors. A selector closure's parameter type may be left out: it is the route's input.
///
/// # Workflow options
///
/// | option | example | without the macro |
/// | --- | --- | --- |
/// | `name` | `name = "orders";` | the registered name (default: the type's name as written, `"OrderPipeline"`) |
/// | `timeout` | `timeout = "5m";` | `Workflow::new(..).timeout(Duration::from_secs(300))`: a limit on the whole run |
/// | `description` | `description = "...";` | `.description("...")` |
/// | `version` | `version = 2;` | the contract version |
/// | `crate` | `crate = ::renamed;` | the path to am2z, for a renamed dependency |
///
/// # What it generates
///
/// A `#[derive(Clone, Copy, Debug, Default)]` unit struct `Name` implementing `Processor`
/// (`Input`/`Output` as declared; it runs and describes itself as
/// `Workflow::new("Name", body)`, and registering it registers every processor inside),
/// `Accepts<Input>` and `Returns<Output>`, and the inherent
/// `Name::run(&runtime, input)` and `Name::run_in_session(&runtime, &session, input)`.
///
/// # Type errors
///
/// Every edge is checked with a call spanned on your step, so rustc reports a mismatch there:
/// "step `ChargeCard` cannot take `ValidOrder` as its input", a merge fn that cannot take the
/// branch outputs, route arms that differ, a `match` route missing a variant, or a workflow
/// whose last step does not return the declared output. One broken edge gives one error.
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
