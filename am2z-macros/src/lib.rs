//! Procedural macros for am2z: `#[processor]` and `workflow!`.
//!
//! Use them through the `am2z` crate, which re-exports them: their documentation is on those
//! re-exports, because doctests there compile against `am2z` (this crate cannot depend on it).

use proc_macro::TokenStream;

mod errors;
mod krate;
mod literal;
mod naming;
mod options;
mod processor;
mod typed;
mod workflow;

/// (`#[processor]` is defined in `am2z-macros` and documented on its re-export,
/// `am2z::processor`, where every example is compiled and run against `am2z`.)
#[proc_macro_attribute]
pub fn processor(args: TokenStream, item: TokenStream) -> TokenStream {
    processor::expand(args.into(), item.into()).into()
}

/// (`workflow!` is defined in `am2z-macros` and documented on its re-export, `am2z::workflow`,
/// where every example is compiled and run against `am2z`.)
#[proc_macro]
pub fn workflow(input: TokenStream) -> TokenStream {
    workflow::expand(input.into()).into()
}
