//! What every generated processor type gets, whether `#[processor]` or `workflow!` made it:
//! its unit struct, the typed entry points and the identity `Accepts`/`Returns` impls for its
//! one input and output type.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Ident, Type, Visibility};

/// The processor's type: a unit struct (its attributes, e.g. docs, come first).
pub(crate) fn unit_struct(vis: &Visibility, ty: &Ident) -> TokenStream {
    quote! {
        #[derive(
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::fmt::Debug,
            ::core::default::Default,
        )]
        #[allow(dead_code)]
        #vis struct #ty;
    }
}

/// `Ty::run(&runtime, input)` and `Ty::run_in_session(&runtime, &session, input)`.
pub(crate) fn entry_points(
    vis: &Visibility,
    ty: &Ident,
    input: &Type,
    output: &Type,
    private: &TokenStream,
    noun: &str,
) -> TokenStream {
    let run_doc = format!(" Runs this {noun} on `runtime`, in the default session.");
    let run_in_session_doc = format!(" Runs this {noun} on `runtime`, in `session`.");
    quote! {
        #[allow(dead_code)]
        impl #ty {
            #[doc = #run_doc]
            #vis async fn run<__Am2zRuntime>(
                runtime: &__Am2zRuntime,
                input: #input,
            ) -> #private::RunOutcome<#output>
            where
                __Am2zRuntime: #private::Executes<#ty>,
            {
                #private::Executes::execute(runtime, &#ty, input).await
            }

            #[doc = #run_in_session_doc]
            #vis async fn run_in_session<__Am2zRuntime>(
                runtime: &__Am2zRuntime,
                session: &#private::SessionId,
                input: #input,
            ) -> #private::RunOutcome<#output>
            where
                __Am2zRuntime: #private::Executes<#ty>,
            {
                #private::Executes::execute_in_session(runtime, session, &#ty, input).await
            }
        }
    }
}

/// `Accepts<In>` and `Returns<Out>` for exactly the declared types: a step wired to anything
/// else is an E0277 in `Accepts`'s or `Returns`'s words.
pub(crate) fn identity_edges(
    ty: &Ident,
    input: &Type,
    output: &Type,
    private: &TokenStream,
) -> TokenStream {
    quote! {
        impl #private::Accepts<#input> for #ty {
            fn accept(input: #input) -> #input {
                input
            }
        }

        impl #private::Returns<#output> for #ty {
            fn output(output: #output) -> #output {
                output
            }
        }
    }
}

/// The `Processor` impl of a type whose macro reported an error: it exists so that uses of the
/// type type-check and report nothing more; its body never runs, because the crate does not
/// compile.
pub(crate) fn stub_processor(
    ty: &Ident,
    name: &proc_macro2::Literal,
    input: &Type,
    output: &Type,
    private: &TokenStream,
) -> TokenStream {
    let identity_edges = identity_edges(ty, input, output, private);
    quote! {
        const _: () = {
            impl #private::Processor for #ty {
                type Input = #input;
                type Output = #output;

                fn name(&self) -> &'static str {
                    #name
                }

                fn config(&self) -> &#private::ProcessorConfig {
                    static __AM2Z_CONFIG: #private::ProcessorConfig =
                        #private::ProcessorConfig::new();
                    &__AM2Z_CONFIG
                }

                async fn process(
                    &self,
                    _: #input,
                    _: &#private::Ctx,
                ) -> #private::core::result::Result<#output, #private::Error> {
                    ::core::unreachable!()
                }
            }

            #identity_edges
        };
    }
}
