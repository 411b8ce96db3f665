//! Generates a workflow type and the body fn that builds its combinator value, with every edge
//! checked where the user wrote it (the checks and their words are in `edges`).

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, Path, PathSegment};

use super::edges::{Before, Checks, Source, expr_text, on_user_tokens, path_text, span_range};
use super::parse::{ArmKey, Node, Selector, WorkflowDef};
use super::validate::{Policy, WorkflowOptions, node_options};
use crate::errors::Errors;
use crate::naming::type_name_of;

pub(crate) fn workflow(
    def: &WorkflowDef,
    body: &Node,
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
        ..
    } = def;

    let mut body_gen = Body {
        private: &private,
        checks: Checks { private: &private },
        statements: Vec::new(),
        next: 0,
        errors,
    };
    let start = body_gen.fresh("w");
    body_gen
        .statements
        .push(quote_spanned!(input.span()=> let #start = #private::witness::<#input>();));
    let root = body_gen.node(body, &start, &Source::Workflow(ident.to_string()));
    let finish = body_gen.checks.declared_output(
        &ident.to_string(),
        &Before::of(body),
        output,
        &root,
        span_range(output),
    );
    let statements = body_gen.statements;

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

    let docs = quote!(#(#attrs)* #default_doc);
    let salt = quote!(#(#statements)*).to_string();
    let (ty_items, ty) = crate::typed::workflow_type(vis, ident, &docs, &salt);
    let entry_points = crate::typed::entry_points(vis, &ty, input, output, &private, "workflow");
    let identity_edges = crate::typed::identity_edges(&ty, input, output, &private);
    quote! {
        #ty_items

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

            impl #private::Processor for #ty {
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

/// What is emitted for a workflow whose body has a mistake (reported beside it): its type,
/// with the entry points and stub impls, so its uses elsewhere do not cascade.
pub(crate) fn stub(def: &WorkflowDef, options: &WorkflowOptions) -> TokenStream {
    let krate = crate::krate::path(options.crate_path.as_ref());
    let private = quote!(#krate::__private);
    let WorkflowDef {
        attrs,
        vis,
        ident,
        input,
        output,
        ..
    } = def;
    let name = Literal::string(&ident.to_string());
    let docs = quote!(#(#attrs)*);
    let (ty_items, ty) = crate::typed::workflow_type(vis, ident, &docs, &ident.to_string());
    let entry_points = crate::typed::entry_points(vis, &ty, input, output, &private, "workflow");
    let stub = crate::typed::stub_processor(&ty, &name, input, output, &private);
    quote! {
        #ty_items
        #entry_points
        #stub
    }
}

/// The statements of the body fn, built node by node.
struct Body<'a> {
    private: &'a TokenStream,
    checks: Checks<'a>,
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

    /// Builds `node` where a value witnessed by `input` flows, which comes from `source`;
    /// returns the variable holding it.
    fn node(&mut self, node: &Node, input: &Ident, source: &Source) -> Ident {
        let private = self.private;
        let options = node_options(node, self.errors);
        let named = options.name.as_ref().map(|name| quote!(.named(#name)));
        match node {
            Node::Step(path) => {
                let check = self.checks.step_input(
                    &path_text(path),
                    source,
                    input,
                    written_fn(path),
                    &step_type(path),
                    span_range(path),
                );
                self.bind("s", path.span(), check)
            }
            Node::Chain { span, nodes, .. } => {
                let mut flowing = input.clone();
                let mut source = source.clone();
                let mut vars = Vec::new();
                for node in nodes {
                    let var = self.node(node, &flowing, &source);
                    flowing = self.output_of(&var);
                    source = Source::After(Before::of(node));
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
                    .map(|branch| self.node(branch, input, &Source::Branch))
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
                let parallel = self.bind("p", *span, parallel);
                let outputs = self.output_of(&parallel);
                let merged = self.merge(merge, branches.len(), &outputs);
                let built = on_user_tokens(
                    quote!(#private::merge(#parallel, #merged)),
                    span_range(merge),
                );
                self.bind("p", merge.span(), built)
            }
            Node::Map {
                span, range, step, ..
            } => {
                let step_name = match &**step {
                    Node::Step(path) => Some(path_text(path)),
                    _ => None,
                };
                let items = self.fresh("w");
                let into_items = self.fresh("into");
                let check = self
                    .checks
                    .map_items(step_name.as_deref(), source, input, *range);
                self.statements
                    .push(quote!(let (#items, #into_items) = #check;));
                let var = self.node(step, &items, &Source::MapItem);
                let concurrency = options.concurrency.map(|n| {
                    let n = Literal::usize_suffixed(n as usize);
                    quote!(.concurrency(#n))
                });
                let map = quote!(#private::Map::new(#var) #concurrency #named);
                self.bind(
                    "m",
                    *span,
                    quote!(#private::batch(&#input, #into_items, #map)),
                )
            }
            Node::Route {
                span,
                selector,
                arms,
                ..
            } => {
                let mut steps = Vec::new();
                let mut first_arm: Option<(Ident, Before)> = None;
                for arm in arms {
                    let var = self.node(&arm.step, input, &Source::Arm);
                    let var = match &first_arm {
                        None => {
                            first_arm = Some((self.output_of(&var), Before::of(&arm.step)));
                            var
                        }
                        Some((expected, first)) => {
                            let check = self.checks.arm_output(
                                &Before::of(&arm.step),
                                first,
                                expected,
                                &var,
                                node_span_range(&arm.step),
                            );
                            self.bind("s", *span, check)
                        }
                    };
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
                        // non-exhaustive error on their match. Its last arm never matches (a
                        // guarded arm does not count for exhaustiveness) and has a context of
                        // its own, so rustc does not suggest adding `Variant => todo!()` after
                        // the user's last arm: that would not be a step.
                        let never = quote_spanned!(Span::mixed_site()=> _ if false => "",);
                        let matched = quote_spanned!(match_token.span=> #match_token #scrutinee { #(#arms)* #never });
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

    /// The merge fn `merge` of a parallel with `branches` branches whose outputs are witnessed
    /// by `outputs`, checked: the variable holding it.
    fn merge(&mut self, merge: &Expr, branches: usize, outputs: &Ident) -> Ident {
        let tokens = span_range(merge);
        let written = quote!(#merge);
        let check = match merge {
            Expr::Closure(closure) if !closure.inputs.iter().all(is_typed) => {
                // Untyped parameters are given the branch outputs, as rustc infers a closure's
                // parameters from the `Fn` bound of the fn it is passed to.
                let params: Vec<_> = (0..branches)
                    .map(|i| format_ident!("__Am2zA{}", i))
                    .collect();
                let private = self.private;
                quote! {{
                    fn __am2z_expect<#(#params,)* __Am2zO, __Am2zF>(
                        _outputs: &#private::Witness<(#(#params,)*)>,
                        merge: __Am2zF,
                    ) -> __Am2zF
                    where
                        __Am2zF: ::core::ops::Fn(#(#params),*) -> __Am2zO,
                    {
                        merge
                    }
                    __am2z_expect(&#outputs, #written)
                }}
            }
            Expr::Closure(_) => {
                self.checks
                    .merge_params("the merge closure", outputs, &written, tokens)
            }
            _ => {
                let subject = format!("merge fn `{}`", expr_text(merge));
                self.checks
                    .merge_params(&subject, outputs, &written, tokens)
            }
        };
        self.bind("f", merge.span(), check)
    }
}

/// Whether a closure parameter has a written type.
fn is_typed(param: &syn::Pat) -> bool {
    matches!(param, syn::Pat::Type(_))
}

/// The first and last spans of a node as written: a step's path, else the node's macro call.
fn node_span_range(node: &Node) -> (Span, Span) {
    match node {
        Node::Step(path) => span_range(path),
        Node::Chain { range, .. }
        | Node::Parallel { range, .. }
        | Node::Route { range, .. }
        | Node::Map { range, .. } => *range,
    }
}

/// The fn a step names, when it names one by a fn's name (its last segment is not already
/// the processor type's name).
fn written_fn(path: &Path) -> Option<&Path> {
    let last = &path.segments.last()?.ident;
    (type_name_of(last) != *last).then_some(path)
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
