//! What every generated processor type gets, whether `#[processor]` or `workflow!` made it:
//! its unit struct, the typed entry points and the identity `Accepts`/`Returns` impls for its
//! one input and output type.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote};
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
    ty: &impl ToTokens,
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
    ty: &impl ToTokens,
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
    ty: &impl ToTokens,
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

/// A workflow's type: a unit struct in a hidden module of its own, glob-imported under its
/// name (with the workflow's visibility), and the path the generated impls name it by.
///
/// A glob import gives way to any other item of the same name without an error, and the impls
/// name the struct by its own path, so a clash (a fn `quote`, whose processor type is `Quote`,
/// beside a workflow `Quote`) adds no conflicting impls: the check below is its one error.
pub(crate) fn workflow_type(
    vis: &Visibility,
    ident: &Ident,
    attrs: &TokenStream,
    salt: &str,
) -> (TokenStream, TokenStream) {
    let module = format_ident!("__am2z_workflow_{}_{:08x}", ident, fnv(salt));
    let path = quote!(#module::#ident);
    let unit_struct = unit_struct(&one_module_deeper(vis), ident);
    let snake = snake_case(&ident.to_string());
    let message =
        format!("`{ident}` names another item in this module, not the workflow `{ident}`");
    let label = format!("the name `{ident}` is taken");
    let note = format!(
        "`#[processor]` on a fn `{snake}` names its processor type `{ident}`, and a struct, \
         enum or import named `{ident}` takes the name too: rename the workflow, or the other item"
    );
    let items = quote! {
        #[doc(hidden)]
        #[allow(non_snake_case)]
        mod #module {
            #attrs
            #unit_struct
        }
        #[allow(unused_imports)]
        #vis use #module::*;

        const _: () = {
            #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
            trait __Am2zThisWorkflow {
                fn __am2z_check() {}
            }
            #[diagnostic::do_not_recommend]
            impl __Am2zThisWorkflow for #path {}
            #[allow(dead_code)]
            fn __am2z_check() {
                <#ident as __Am2zThisWorkflow>::__am2z_check();
            }
        };
    };
    (items, path)
}

/// The visibility that, on an item of a module declared beside an item of visibility `vis`,
/// reaches as far (so the glob import can carry `vis`, and no `pub` item is unreachable).
fn one_module_deeper(vis: &Visibility) -> Visibility {
    match vis {
        Visibility::Public(_) => vis.clone(),
        Visibility::Inherited => syn::parse_quote!(pub(super)),
        Visibility::Restricted(restricted) => {
            let path = &restricted.path;
            match path
                .segments
                .first()
                .map(|s| s.ident.to_string())
                .as_deref()
            {
                Some("self") if path.segments.len() == 1 => syn::parse_quote!(pub(super)),
                Some("self") => {
                    let rest = path.segments.iter().skip(1);
                    syn::parse_quote!(pub(in super #(::#rest)*))
                }
                Some("super") => syn::parse_quote!(pub(in super::#path)),
                _ => vis.clone(),
            }
        }
    }
}

/// `PrintLabel` → `print_label` (for words only: the fn a processor type may come from).
fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// FNV-1a, for a module name that two workflows of one name but different bodies do not share.
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}
