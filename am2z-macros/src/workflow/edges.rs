//! The check `workflow!` generates for each edge of the graph, and the words of its error.
//!
//! Each check is a trait generated for that one edge, inside the workflow's body fn: its
//! `#[diagnostic::on_unimplemented]` text names the step as written and says where the value
//! it is given comes from; its only impl is the identity, so it holds exactly when the two
//! types are the same. Its one method also builds the node (through `__private`), typed with
//! what the workflow expects, so nothing built on it is checked again when the edge is broken.
//! The call is put on the user's tokens (`on_user_tokens`), so rustc reports it there and
//! nowhere else.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::{Ident, Path};

use super::parse::Node;

/// What a value flowing into a node comes from, in words.
#[derive(Clone)]
pub(crate) enum Source {
    /// The workflow's declared input (the node is the first step of workflow `.0`).
    Workflow(String),
    /// What the node before it in a chain returns.
    After(Before),
    /// A parallel's input, given to every branch.
    Branch,
    /// A route's input, given to every arm.
    Arm,
    /// One item of the `Vec` a map is given.
    MapItem,
}

/// A node, as the one that comes before another, or that a workflow or route arm ends with.
#[derive(Clone)]
pub(crate) enum Before {
    Step(String),
    Node(&'static str),
    MergeFn(String),
    MergeClosure,
}

impl Before {
    /// The node that hands its output on: a chain's is its last node's.
    pub(crate) fn of(node: &Node) -> Before {
        match node {
            Node::Step(path) => Before::Step(path_text(path)),
            Node::Chain { nodes, .. } => match nodes.last() {
                Some(last) => Before::of(last),
                None => Before::Node("chain!"),
            },
            Node::Parallel { merge: None, .. } => Before::Node("parallel!"),
            Node::Parallel {
                merge: Some(syn::Expr::Closure(_)),
                ..
            } => Before::MergeClosure,
            Node::Parallel {
                merge: Some(merge), ..
            } => Before::MergeFn(expr_text(merge)),
            Node::Route { .. } => Before::Node("route!"),
            Node::Map { .. } => Before::Node("map!"),
        }
    }

    /// "the step before it, `approve`, returns `T`".
    fn returns_before(&self, ty: &str) -> String {
        match self {
            Before::Step(name) => format!("the step before it, `{name}`, returns `{ty}`"),
            Before::Node(kind) => format!("the `{kind}` before it returns `{ty}`"),
            Before::MergeFn(name) => format!("the merge fn before it, `{name}`, returns `{ty}`"),
            Before::MergeClosure => format!("the merge closure before it returns `{ty}`"),
        }
    }

    /// "`approve`", "the `parallel!`".
    fn short(&self) -> String {
        match self {
            Before::Step(name) | Before::MergeFn(name) => format!("`{name}`"),
            Before::Node(kind) => format!("the `{kind}`"),
            Before::MergeClosure => "the merge closure".to_owned(),
        }
    }

    /// "its last step, `ship`, returns `T`" (what a workflow ends with).
    fn returns_at_end(&self, ty: &str) -> String {
        match self {
            Before::Step(name) => format!("its last step, `{name}`, returns `{ty}`"),
            Before::Node(kind) => format!("the `{kind}` it ends with returns `{ty}`"),
            Before::MergeFn(name) => {
                format!("the merge fn it ends with, `{name}`, returns `{ty}`")
            }
            Before::MergeClosure => format!("the merge closure it ends with returns `{ty}`"),
        }
    }

    /// "the first arm of its `route!`, `gold`, returns `T`".
    fn returns_as_first_arm(&self, ty: &str) -> String {
        match self {
            Before::Step(name) | Before::MergeFn(name) => {
                format!("the first arm of its `route!`, `{name}`, returns `{ty}`")
            }
            _ => format!("the first arm of its `route!` returns `{ty}`"),
        }
    }

    /// "step `standard`", "this arm's `chain!`".
    fn as_subject(&self) -> String {
        match self {
            Before::Step(name) => format!("step `{name}`"),
            Before::Node(kind) => format!("this arm's `{kind}`"),
            Before::MergeFn(name) => format!("merge fn `{name}`"),
            Before::MergeClosure => "this arm's merge closure".to_owned(),
        }
    }
}

impl Source {
    /// "the step before it, `approve`, returns `T`": where a value of type `ty` comes from.
    fn gives(&self, ty: &str) -> String {
        match self {
            Source::Workflow(workflow) => {
                format!("it is the first step of workflow `{workflow}`, which takes `{ty}`")
            }
            Source::After(before) => before.returns_before(ty),
            Source::Branch => format!("every branch of its `parallel!` is given `{ty}`"),
            Source::Arm => format!("every arm of its `route!` is given `{ty}`"),
            Source::MapItem => format!("its `map!` runs it on each item of a `Vec<{ty}>`"),
        }
    }

    /// How to mend a step `name` taking `takes` where a `given` flows.
    fn mend(&self, name: &str, takes: &str, given: &str) -> String {
        let change = format!("change `{name}`'s input type to `{given}`");
        match self {
            Source::Workflow(workflow) => format!(
                "change the input type of `{workflow}` to `{takes}`, or start the workflow with a \
                 step that turns `{given}` into `{takes}`"
            ),
            Source::After(before) => format!(
                "{change}, or put a step that turns `{given}` into `{takes}` between {} and `{name}`",
                before.short()
            ),
            Source::Branch => format!(
                "each branch of a `parallel!` is given the parallel's input: {change}, or make \
                 this branch a `chain!` that first turns `{given}` into `{takes}`"
            ),
            Source::Arm => format!(
                "each arm of a `route!` is given the route's input: {change}, or make this arm \
                 a `chain!` that first turns `{given}` into `{takes}`"
            ),
            Source::MapItem => format!(
                "`map!` runs its step on each item of the `Vec` it is given: {change}, or map a \
                 step that takes `{given}`"
            ),
        }
    }
}

/// The generated parts every check shares: the path to `__private`.
pub(crate) struct Checks<'a> {
    pub(crate) private: &'a TokenStream,
}

impl Checks<'_> {
    /// A step where a value witnessed by `given` flows: `Prefix<Given, Step::Output>`.
    pub(crate) fn step_input(
        &self,
        name: &str,
        source: &Source,
        given: &Ident,
        written: Option<&Path>,
        step: &Path,
        tokens: (Span, Span),
    ) -> TokenStream {
        let private = self.private;
        let message = format!(
            "step `{name}` takes `{{Self}}`, but {}",
            source.gives("{__Am2zGiven}")
        );
        let label = "takes `{Self}`, not `{__Am2zGiven}`";
        let note = source.mend(name, "{Self}", "{__Am2zGiven}");
        let attr = on_unimplemented(&message, label, &note);
        let step = as_written(quote!(#step));
        let call = on_user_tokens(
            quote! {
                __Am2zTakes::__am2z_step(&#given, #private::input_of(&#step), #step)
            },
            tokens,
        );
        // A fn's name as written, looked up too: a typo is then reported with the fns of a
        // similar name (rustc's "a function with a similar name exists"), not only the types.
        let written = written.map(|path| {
            let path = as_written(quote!(#path));
            quote!(let _ = #path;)
        });
        quote! {{
            #written
            #attr
            trait __Am2zTakes<__Am2zGiven>: ::core::marker::Sized {
                fn __am2z_step<__Am2zStep: #private::StepOf<Self>>(
                    given: &#private::Witness<__Am2zGiven>,
                    takes: #private::Witness<Self>,
                    step: __Am2zStep,
                ) -> #private::Prefix<__Am2zGiven, <__Am2zStep as #private::Processor>::Output>
                where
                    __Am2zGiven: #private::Data;
            }
            impl<__Am2zT> __Am2zTakes<__Am2zT> for __Am2zT {
                fn __am2z_step<__Am2zStep: #private::StepOf<__Am2zT>>(
                    given: &#private::Witness<__Am2zT>,
                    _takes: #private::Witness<__Am2zT>,
                    step: __Am2zStep,
                ) -> #private::Prefix<__Am2zT, <__Am2zStep as #private::Processor>::Output>
                where
                    __Am2zT: #private::Data,
                {
                    #private::step(given, step)
                }
            }
            #call
        }}
    }

    /// A route arm after the first, held in `arm`, whose output must be what the first arm
    /// returns (witnessed by `expected`): `Prefix<Arm::Input, Expected>`.
    pub(crate) fn arm_output(
        &self,
        this: &Before,
        first: &Before,
        expected: &Ident,
        arm: &Ident,
        tokens: (Span, Span),
    ) -> TokenStream {
        let private = self.private;
        let subject = this.as_subject();
        let message = format!(
            "{subject} returns `{{Self}}`, but {}",
            first.returns_as_first_arm("{__Am2zExpected}")
        );
        let label = "returns `{Self}`, not `{__Am2zExpected}`";
        let note = format!(
            "every arm of a `route!` returns the same type, the route's output: end this arm \
             with a step that returns `{{__Am2zExpected}}`, or change the output type of {}",
            this.short()
        );
        let attr = on_unimplemented(&message, label, &note);
        let call = on_user_tokens(
            quote! {
                __Am2zReturns::__am2z_arm(&#expected, #private::output_of(&#arm), #arm)
            },
            tokens,
        );
        quote! {{
            #attr
            trait __Am2zReturns<__Am2zExpected>: ::core::marker::Sized {
                fn __am2z_arm<__Am2zArm: #private::Processor<Output = Self>>(
                    expected: &#private::Witness<__Am2zExpected>,
                    returns: #private::Witness<Self>,
                    arm: __Am2zArm,
                ) -> #private::Prefix<<__Am2zArm as #private::Processor>::Input, __Am2zExpected>;
            }
            impl<__Am2zT> __Am2zReturns<__Am2zT> for __Am2zT {
                fn __am2z_arm<__Am2zArm: #private::Processor<Output = __Am2zT>>(
                    _expected: &#private::Witness<__Am2zT>,
                    _returns: #private::Witness<__Am2zT>,
                    arm: __Am2zArm,
                ) -> #private::Prefix<<__Am2zArm as #private::Processor>::Input, __Am2zT> {
                    #private::prefix(arm)
                }
            }
            #call
        }}
    }

    /// The merge fn `merge` (its tokens as written), whose parameters must be the branch
    /// outputs witnessed by `outputs`: the merge fn, or an error type when the check fails.
    pub(crate) fn merge_params(
        &self,
        subject: &str,
        outputs: &Ident,
        merge: &TokenStream,
        tokens: (Span, Span),
    ) -> TokenStream {
        let private = self.private;
        let message = format!(
            "{subject} takes `{{Self}}`, but the branches of its `parallel!` return `{{__Am2zOutputs}}`"
        );
        let label = "takes `{Self}`, not `{__Am2zOutputs}`";
        let note = "a merge fn takes one parameter per branch, in branch order, each of the type \
                    that branch returns: here `{__Am2zOutputs}`";
        let attr = on_unimplemented(&message, label, note);
        // The merge fn is written twice: once read for its parameters, once kept.
        let merge = as_written(merge.clone());
        let call = on_user_tokens(
            quote! {
                __Am2zMerge::__am2z_merge(&#outputs, #private::params_of(&#merge), #merge)
            },
            tokens,
        );
        quote! {{
            #attr
            trait __Am2zMerge<__Am2zOutputs>: ::core::marker::Sized {
                type Merge<__Am2zF>;
                fn __am2z_merge<__Am2zF>(
                    outputs: &#private::Witness<__Am2zOutputs>,
                    params: #private::Witness<Self>,
                    merge: __Am2zF,
                ) -> Self::Merge<__Am2zF>;
            }
            impl<__Am2zT> __Am2zMerge<__Am2zT> for __Am2zT {
                type Merge<__Am2zF> = __Am2zF;
                fn __am2z_merge<__Am2zF>(
                    _outputs: &#private::Witness<__Am2zT>,
                    _params: #private::Witness<__Am2zT>,
                    merge: __Am2zF,
                ) -> __Am2zF {
                    merge
                }
            }
            #call
        }}
    }

    /// The items of the `Vec` a map is given (witnessed by `given`): the witness of one item
    /// and the fn that hands the `Vec` over, both error types when the check fails.
    pub(crate) fn map_items(
        &self,
        step: Option<&str>,
        source: &Source,
        given: &Ident,
        tokens: (Span, Span),
    ) -> TokenStream {
        let private = self.private;
        let runs = match step {
            Some(name) => format!("`{name}`"),
            None => "its step".to_owned(),
        };
        let message = format!(
            "`map!` runs {runs} on each item of a `Vec`, but {}",
            source.gives("{Self}")
        );
        let label = "takes a `Vec`, not `{Self}`";
        let note = format!(
            "put a step that returns a `Vec` of {runs}'s inputs before the `map!`, or run {runs} \
             once, without `map!`"
        );
        let attr = on_unimplemented(&message, label, &note);
        let call = on_user_tokens(
            quote!(__Am2zItems::__am2z_items(#private::witness_of(&#given))),
            tokens,
        );
        quote! {{
            #attr
            trait __Am2zItems: ::core::marker::Sized {
                type Item;
                fn __am2z_items(
                    given: #private::Witness<Self>,
                ) -> (
                    #private::Witness<Self::Item>,
                    fn(Self) -> #private::std::vec::Vec<Self::Item>,
                );
            }
            impl<__Am2zT> __Am2zItems for #private::std::vec::Vec<__Am2zT> {
                type Item = __Am2zT;
                fn __am2z_items(
                    _given: #private::Witness<Self>,
                ) -> (
                    #private::Witness<__Am2zT>,
                    fn(Self) -> #private::std::vec::Vec<__Am2zT>,
                ) {
                    (#private::witness(), ::core::convert::identity)
                }
            }
            #call
        }}
    }

    /// The workflow's body in `body`, whose output must be the declared `output` type.
    pub(crate) fn declared_output(
        &self,
        workflow: &str,
        end: &Before,
        output: &syn::Type,
        body: &Ident,
        tokens: (Span, Span),
    ) -> TokenStream {
        let private = self.private;
        let message = format!(
            "workflow `{workflow}` returns `{{__Am2zDeclared}}`, but {}",
            end.returns_at_end("{Self}")
        );
        let label = "the body returns `{Self}`, not `{__Am2zDeclared}`";
        let note = format!(
            "change the output type of `{workflow}` to `{{Self}}`, or end the workflow with a step \
             that turns `{{Self}}` into `{{__Am2zDeclared}}`"
        );
        let attr = on_unimplemented(&message, label, &note);
        let call = on_user_tokens(
            quote! {
                __Am2zDeclared::__am2z_finish(
                    &#private::witness::<#output>(),
                    #private::output_of(&#body),
                    #body,
                )
            },
            tokens,
        );
        quote! {{
            #attr
            trait __Am2zDeclared<__Am2zDeclared>: ::core::marker::Sized {
                fn __am2z_finish<__Am2zBody: #private::Processor<Output = Self>>(
                    declared: &#private::Witness<__Am2zDeclared>,
                    returns: #private::Witness<Self>,
                    body: __Am2zBody,
                ) -> #private::Prefix<<__Am2zBody as #private::Processor>::Input, __Am2zDeclared>;
            }
            impl<__Am2zT> __Am2zDeclared<__Am2zT> for __Am2zT {
                fn __am2z_finish<__Am2zBody: #private::Processor<Output = __Am2zT>>(
                    _declared: &#private::Witness<__Am2zT>,
                    _returns: #private::Witness<__Am2zT>,
                    body: __Am2zBody,
                ) -> #private::Prefix<<__Am2zBody as #private::Processor>::Input, __Am2zT> {
                    #private::prefix(body)
                }
            }
            #call
        }}
    }
}

/// `#[diagnostic::on_unimplemented(..)]` with these texts.
fn on_unimplemented(message: &str, label: &str, note: &str) -> TokenStream {
    quote! {
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
    }
}

/// The first and last spans of `tokens`, for `on_user_tokens`.
pub(crate) fn span_range(tokens: impl ToTokens) -> (Span, Span) {
    let tokens: Vec<TokenTree> = tokens.into_token_stream().into_iter().collect();
    let first = match tokens.first() {
        Some(TokenTree::Group(group)) => group.span_open(),
        Some(other) => other.span(),
        None => Span::call_site(),
    };
    let last = match tokens.last() {
        Some(TokenTree::Group(group)) => group.span_close(),
        Some(other) => other.span(),
        None => first,
    };
    (first, last)
}

/// `tokens` placed on the user's tokens from `first` to `last`, so that every expression in
/// them spans the user's tokens whole (rustc spans an expression from its first token to its
/// last, and points at the innermost expression it can blame): in each comma-separated part,
/// the first token goes on `first`, and the last token, a group, and a name followed by a group
/// (a call) on `last`. The user's own tokens, in an invisible group (`as_written`), keep theirs.
pub(crate) fn on_user_tokens(tokens: TokenStream, (first, last): (Span, Span)) -> TokenStream {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut placed = Vec::with_capacity(tokens.len());
    let mut starts_part = true;
    for (i, token) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1);
        let ends_part = match next {
            None => true,
            Some(TokenTree::Punct(punct)) => matches!(punct.as_char(), ',' | ';'),
            Some(_) => false,
        };
        let called = matches!(next, Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Parenthesis);
        let span = if starts_part {
            first
        } else if ends_part || called || matches!(token, TokenTree::Group(_)) {
            last
        } else {
            first
        };
        starts_part =
            matches!(token, TokenTree::Punct(punct) if matches!(punct.as_char(), ',' | ';'));
        placed.push(match token {
            TokenTree::Group(group) if group.delimiter() == Delimiter::None => token.clone(),
            TokenTree::Group(group) => {
                let inner = on_user_tokens(group.stream(), (first, last));
                let mut group = Group::new(group.delimiter(), inner);
                group.set_span(span);
                TokenTree::Group(group)
            }
            other => {
                let mut other = other.clone();
                other.set_span(span);
                other
            }
        });
    }
    placed.into_iter().collect()
}

/// The user's tokens in an invisible group, which `on_user_tokens` leaves on their spans.
pub(crate) fn as_written(tokens: TokenStream) -> TokenStream {
    TokenTree::Group(Group::new(Delimiter::None, tokens)).into()
}

/// A path as written, without the spaces `quote` puts between its tokens.
pub(crate) fn path_text(path: &Path) -> String {
    expr_text(path)
}

/// An expression (a merge fn's path), as written.
pub(crate) fn expr_text(tokens: &impl ToTokens) -> String {
    let text = tokens.to_token_stream().to_string();
    text.replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" ::", "::")
        .replace(" < ", "<")
        .replace(" >", ">")
        .replace("{", "{{")
        .replace("}", "}}")
}
