//! `#[processor(...)]`: parse the attribute (`attr`), check the fn (`validate`), generate the
//! processor type (`expand`).

mod attr;
mod expand;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

use crate::errors::Errors;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(error) => {
            let error = syn::Error::new(
                error.span(),
                "`#[processor]` goes on an `async fn`: `async fn name(input: In) -> Result<Out, E>`",
            )
            .to_compile_error();
            // Keep the item so that the rest of the crate still resolves it.
            return quote!(#error #item);
        }
    };
    let attr = attr::parse(args, &mut errors);
    let generated = match validate::step_fn(&item, &mut errors) {
        Some(step) => expand::processor(&step, &attr),
        // The fn is still emitted, and the processor type with stub impls, so one mistake does
        // not cascade into "cannot find" errors wherever the fn or its type is used.
        None => expand::fallback(&item, &attr),
    };
    let errors = errors.to_compile_errors();
    quote!(#errors #generated)
}
