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
    let generated =
        validate::step_fn(&item, &mut errors).map(|step| expand::processor(&step, &attr));
    let errors = errors.to_compile_errors();
    match generated {
        Some(generated) => quote!(#errors #generated),
        // The fn is still emitted, so one mistake does not cascade into "cannot find" errors.
        None => quote!(#errors #item),
    }
}
