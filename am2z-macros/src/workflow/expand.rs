//! Generates a workflow type and the body fn that builds its combinator value, with every edge
//! checked by a call spanned on the user's step (see `am2z::__private`).

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Path, PathSegment};

use super::parse::{ArmKey, Node, Selector, WorkflowDef};
use super::validate::{Policy, WorkflowOptions, node_options};
use crate::errors::Errors;
use crate::naming::type_name_of;
use crate::respan::respan;

pub(crate) fn workflow(
    def: &WorkflowDef,
    options: &WorkflowOptions,
    errors: &mut Errors,
) -> TokenStream {
    let krate = crate::krate::path(options.crate_path.as_ref());
    let private = quote!(#krate::__private);
    let WorkflowDef {
        attrs,
        vis,
        ident,
        input,
        output,
        body,
        ..
    } = def;

    let mut body_gen = Body {
        private: &private,
        statements: Vec::new(),
        next: 0,
        errors,
    };
    let start = body_gen.fresh("w");
    body_gen
        .statements
        .push(quote_spanned!(input.span()=> let #start = #private::witness::<#input>();));
    let root = body_gen.node(body, &start);
    let statements = body_gen.statements;
    let finish = respan(
        quote!(#private::finish::<#ident, #output, _>(&#private::witness::<#output>(), #root)),
        output.span(),
    );

    let name = match &options.name {
        Some(name) => quote!(#name),
        None => {
            let name = Literal::string(&ident.to_string());
            quote!(#name)
        }
    };
    let mut config = quote!(#private::ProcessorConfig::new());
    if let Some(description) = &options.description {
        config = quote!(#config.description(#description));
    }
    if let Some(timeout) = options.timeout {
        let timeout = timeout.to_tokens(&private);
        config = quote!(#config.timeout(#timeout));
    }
    if let Some(version) = options.version {
        config = quote!(#config.version(#version));
    }
    let has_docs = attrs.iter().any(|attr| attr.path().is_ident("doc"));
    let default_doc = (!has_docs).then(|| {
        let doc = format!(" The workflow `{ident}`, declared with `workflow!`.");
        quote!(#[doc = #doc])
    });

    let unit_struct = crate::typed::unit_struct(vis, ident);
    let entry_points = crate::typed::entry_points(vis, ident, input, output, &private, "workflow");
    let identity_edges = crate::typed::identity_edges(ident, input, output, &private);
    quote! {
        #(#attrs)*
        #default_doc
        #unit_struct

        #entry_points

        const _: () = {
            static __AM2Z_CONFIG: #private::ProcessorConfig = #config;

            fn __am2z_body() -> impl #private::Node<#input, #output> {
                #(#statements)*
                #finish
            }

            fn __am2z_workflow() -> #private::Workflow<impl #private::Node<#input, #output>> {
                #private::Workflow::new(#name, __am2z_body()).with_config(__AM2Z_CONFIG)
            }

            impl #private::Processor for #ident {
                type Input = #input;
                type Output = #output;

                fn name(&self) -> &'static str {
                    #name
                }

                fn config(&self) -> &#private::ProcessorConfig {
                    &__AM2Z_CONFIG
                }

                async fn process(
                    &self,
                    input: #input,
                    ctx: &#private::Ctx,
                ) -> #private::core::result::Result<#output, #private::Error> {
                    let workflow = __am2z_workflow();
                    #private::Processor::process(&workflow, input, ctx).await
                }

                fn is_step(&self) -> bool {
                    false
                }

                fn describe(&self, plan: &mut #private::PlanBuilder) -> #private::NodeId {
                    #private::Processor::describe(&__am2z_workflow(), plan)
                }

                fn visit(&self, visitor: &mut dyn ::core::ops::FnMut(#private::Registration)) {
                    visitor(#private::Registration::of(*self));
                    __am2z_workflow().visit_body(visitor);
                }

                fn compile(
                    &self,
                    graph: &mut #private::PortableGraph,
                ) -> #private::core::option::Option<#private::PortableId> {
                    #private::Processor::compile(&__am2z_workflow(), graph)
                }
            }

            #identity_edges
        };
    }
}

/// The statements of the body fn, built node by node.
struct Body<'a> {
    private: &'a TokenStream,
    statements: Vec<TokenStream>,
    next: usize,
    errors: &'a mut Errors,
}

impl Body<'_> {
    fn fresh(&mut self, what: &str) -> Ident {
        self.next += 1;
        format_ident!("__am2z_{}{}", what, self.next)
    }

    fn bind(&mut self, what: &str, span: Span, value: TokenStream) -> Ident {
        let var = self.fresh(what);
        self.statements
            .push(quote_spanned!(span=> let #var = #value;));
        var
    }

    /// The witness of what the processor in `var` returns.
    fn output_of(&mut self, var: &Ident) -> Ident {
        let private = self.private;
        self.bind("w", Span::call_site(), quote!(#private::output_of(&#var)))
    }

    /// Builds `node` where a value witnessed by `input` flows; returns the variable holding it.
    fn node(&mut self, node: &Node, input: &Ident) -> Ident {
        let private = self.private;
        let options = node_options(node, self.errors);
        let named = options.name.as_ref().map(|name| quote!(.named(#name)));
        match node {
            Node::Step(path) => {
                let ty = step_type(path);
                // Spanned on the user's step: a broken edge is reported there.
                self.bind(
                    "s",
                    path.span(),
                    quote_spanned!(path.span()=> #private::step(&#input, #ty)),
                )
            }
            Node::Chain { span, nodes, .. } => {
                let mut flowing = input.clone();
                let mut vars = Vec::new();
                for node in nodes {
                    let var = self.node(node, &flowing);
                    flowing = self.output_of(&var);
                    vars.push(var);
                }
                let Some((first, rest)) = vars.split_first() else {
                    return input.clone(); // `validate::check` rejects empty chains first.
                };
                if rest.is_empty() && named.is_none() {
                    return first.clone();
                }
                // Each prefix is boxed (`__private::prefix`) so a long chain's future does not
                // nest deeper than rustc's layout query limit.
                let mut chain = quote!(#first);
                for (i, next) in rest.iter().enumerate() {
                    chain = if i == 0 {
                        quote!(#private::Chain::new(#chain, #next))
                    } else {
                        quote!(#private::Chain::new(#private::prefix(#chain), #next))
                    };
                }
                self.bind("c", *span, quote!(#chain #named))
            }
            Node::Parallel {
                span,
                branches,
                merge,
                ..
            } => {
                let vars: Vec<_> = branches
                    .iter()
                    .map(|branch| self.node(branch, input))
                    .collect();
                let constructor = match options.policy {
                    Policy::AllOrNothing => quote!(new),
                    Policy::Collect => quote!(collect),
                };
                let parallel =
                    quote_spanned!(*span=> #private::Parallel::#constructor((#(#vars,)*)) #named);
                let Some(merge) = merge else {
                    return self.bind("p", *span, parallel);
                };
                // The merge fn is checked as a fn pointer whose parameters are compared with the
                // branch outputs (`__private::checked_merge`); the merge itself is built from the
                // fn as written, so the plan keeps its name.
                let parallel = self.bind("p", *span, parallel);
                let outputs = self.output_of(&parallel);
                let merge_span = merge.span();
                let merge_fn = self.bind("f", merge_span, quote!(#merge));
                let signature = self.fresh("sig");
                let params = branches.iter().map(|_| quote!(_));
                self.statements.push(respan(
                    quote!(let #signature: fn(#(#params),*) -> _ = #merge_fn;),
                    merge_span,
                ));
                let checked = respan(
                    quote!(#private::checked_merge(&#outputs, #signature, #merge_fn)),
                    merge_span,
                );
                let checked = self.bind("f", merge_span, checked);
                let merged = respan(quote!(#private::merge(#parallel, #checked)), merge_span);
                self.bind("p", merge_span, merged)
            }
            Node::Map { span, step, .. } => {
                // Respanned whole (the `#private` path included), so the error for a non-`Vec`
                // input lands on the `map!` and not on the whole `workflow!` call.
                let items = self.bind(
                    "w",
                    *span,
                    respan(quote!(#private::items_of(&#input)), *span),
                );
                let var = self.node(step, &items);
                let concurrency = options.concurrency.map(|n| {
                    let n = Literal::usize_suffixed(n as usize);
                    quote!(.concurrency(#n))
                });
                // Spanned like `items_of`: when the input is not a `Vec`, both report the same
                // unmet `Batch` bound at the same place, which rustc shows once.
                let map = quote!(#private::Map::new(#var) #concurrency #named);
                let batch = respan(quote!(#private::batch(&#input, #map)), *span);
                self.bind("m", *span, batch)
            }
            Node::Route {
                span,
                selector,
                arms,
                ..
            } => {
                let mut steps = Vec::new();
                let mut out = None;
                for arm in arms {
                    let var = match (&out, &arm.step) {
                        (None, _) => self.node(&arm.step, input),
                        (Some(out), Node::Step(path)) => {
                            let ty = step_type(path);
                            let check =
                                respan(quote!(#private::step_to(&#input, &#out, #ty)), path.span());
                            self.bind("s", path.span(), check)
                        }
                        (Some(out), nested) => {
                            let var = self.node(nested, input);
                            self.bind("s", *span, quote!(#private::step_to(&#input, &#out, #var)))
                        }
                    };
                    if out.is_none() {
                        out = Some(self.output_of(&var));
                    }
                    steps.push(var);
                }
                let mut value = match selector {
                    Selector::Keyed(selector) => quote!(#private::route(&#input, #selector)),
                    Selector::Match {
                        match_token,
                        params,
                        scrutinee,
                    } => {
                        let arms = arms.iter().map(|arm| match &arm.key {
                            ArmKey::Pattern(pat, guard) => {
                                let key = pattern_key(pat, guard.as_ref());
                                let guard = guard.as_ref().map(|g| quote!(if #g));
                                quote!(#pat #guard => #key,)
                            }
                            _ => TokenStream::new(),
                        });
                        // The `match` carries the user's span, so a variant left out is rustc's
                        // non-exhaustive error on their match.
                        let matched = quote_spanned!(match_token.span=> #match_token #scrutinee { #(#arms)* });
                        quote!(#private::route(&#input, #params -> &'static str { #matched }))
                    }
                };
                for (arm, step) in arms.iter().zip(&steps) {
                    value = match &arm.key {
                        ArmKey::Key(key) => {
                            quote!(#value.arm(#private::core::convert::Into::into(#key), #step))
                        }
                        ArmKey::Pattern(pat, guard) => {
                            let key = pattern_key(pat, guard.as_ref());
                            quote!(#value.arm(#key, #step))
                        }
                        ArmKey::Fallback(_) => quote!(#value.fallback(#step)),
                    };
                }
                if matches!(selector, Selector::Match { .. }) {
                    value = quote!(#value.exhaustive());
                }
                self.bind("r", *span, quote!(#value #named))
            }
        }
    }
}

/// A step's type: its last segment by the UpperCamelCase rule (`payments::charge_card` →
/// `payments::ChargeCard`; `InnerWorkflow` stays).
fn step_type(path: &Path) -> Path {
    let mut path = path.clone();
    if let Some(last) = path.segments.pop() {
        let last = last.into_value();
        path.segments.push(PathSegment {
            ident: type_name_of(&last.ident),
            arguments: last.arguments,
        });
    }
    path
}

/// The key of an exhaustive arm: its pattern (and guard) as written, for the plan.
fn pattern_key(pat: &syn::Pat, guard: Option<&syn::Expr>) -> Literal {
    let mut key = quote!(#pat).to_string();
    if let Some(guard) = guard {
        key = format!("{key} if {}", quote!(#guard));
    }
    Literal::string(
        &key.replace(" :: ", "::")
            .replace(" (", "(")
            .replace(" {", "{"),
    )
}
