//! `workflow!`: parse the declaration (`parse`), check its options and shape (`validate`),
//! generate the workflow type and the body that builds its combinators (`expand`).

mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;

use crate::errors::Errors;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: parse::Input = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut output = TokenStream::new();
    for def in &input.workflows {
        let mut errors = Errors::default();
        let options = validate::workflow_options(&def.options, &mut errors);
        let generated = if validate::check(&def.body, &mut errors) {
            expand::workflow(def, &options, &mut errors)
        } else {
            TokenStream::new()
        };
        let errors = errors.to_compile_errors();
        output.extend(quote!(#errors #generated));
    }
    output
}
