//! `workflow!`: parse the declaration (`parse`), check its options and shape (`validate`),
//! generate the workflow type and the body that builds its combinators (`expand`, with the
//! check of each edge and its words in `edges`).

mod edges;
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
        let generated = match &def.contents {
            Ok(contents) => {
                let options = validate::workflow_options(&contents.options, &mut errors);
                let shape_ok = validate::check(&contents.body, &mut errors);
                if validate::clashes_with_a_step(def, &contents.body, &mut errors) {
                    // The step's processor type already has this name: emitting another type
                    // would only add conflicting impls to the one error.
                    TokenStream::new()
                } else if shape_ok {
                    expand::workflow(def, &contents.body, &options, &mut errors)
                } else {
                    expand::stub(def, &options)
                }
            }
            Err(error) => {
                errors.push(error.clone());
                expand::stub(def, &validate::WorkflowOptions::default())
            }
        };
        let errors = errors.to_compile_errors();
        output.extend(quote!(#errors #generated));
    }
    if let Some(error) = &input.error {
        output.extend(error.to_compile_error());
    }
    output
}
