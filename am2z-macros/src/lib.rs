//! Procedural macros for am2z: `#[processor]` and `workflow!`.
//!
//! Use them through the `am2z` crate, which re-exports them.

use proc_macro::TokenStream;

/// Makes an `async fn` a processor (skeleton: re-emits the fn unchanged).
#[proc_macro_attribute]
pub fn processor(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Declares a typed workflow (skeleton: expands to nothing).
#[proc_macro]
pub fn workflow(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
