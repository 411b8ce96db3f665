//! The syntax tree of `workflow!` and its parser.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, Pat, Path, Token, Type, Visibility, braced, token};

use crate::options::KeyValue;

/// Everything inside one `workflow! { ... }`: the workflows read, and the error that stopped
/// the reading of a workflow's name or types, if one did.
pub(crate) struct Input {
    pub(crate) workflows: Vec<WorkflowDef>,
    pub(crate) error: Option<syn::Error>,
}

/// `#[attrs] vis Name(In) -> Out { options; body }`.
pub(crate) struct WorkflowDef {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    pub(crate) input: Type,
    pub(crate) output: Type,
    /// What is between the braces, read on its own: a mistake there still leaves the name and
    /// types, so the workflow's type is emitted and its uses do not cascade.
    pub(crate) contents: syn::Result<Contents>,
}

/// The options and the body of a workflow.
pub(crate) struct Contents {
    pub(crate) options: Vec<KeyValue>,
    pub(crate) body: Node,
}

/// One node of the graph.
pub(crate) enum Node {
    /// A step, written as its processor fn's name (or a processor type's name).
    Step(Path),
    Chain {
        span: Span,
        /// The first and last spans of `chain![..]` as written, for errors on the whole node.
        range: (Span, Span),
        nodes: Vec<Node>,
        options: Vec<KeyValue>,
    },
    Parallel {
        span: Span,
        range: (Span, Span),
        branches: Vec<Node>,
        options: Vec<KeyValue>,
        merge: Option<Expr>,
    },
    Route {
        span: Span,
        range: (Span, Span),
        selector: Selector,
        arms: Vec<RouteArm>,
        options: Vec<KeyValue>,
    },
    Map {
        span: Span,
        range: (Span, Span),
        step: Box<Node>,
        options: Vec<KeyValue>,
    },
}

/// How a route picks its arm.
pub(crate) enum Selector {
    /// `|x: &In| key`, with keyed arms.
    Keyed(Expr),
    /// `match |x: &In| scrutinee { Pattern => step, ... }`: a generated `match`.
    Match {
        match_token: Token![match],
        params: TokenStream,
        scrutinee: Expr,
    },
}

pub(crate) struct RouteArm {
    pub(crate) key: ArmKey,
    pub(crate) step: Node,
}

pub(crate) enum ArmKey {
    /// A keyed arm's key expression.
    Key(Expr),
    /// A pattern of the exhaustive form, with its guard.
    Pattern(Pat, Option<Expr>),
    /// `_ =>` in the keyed form.
    Fallback(Token![_]),
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut workflows = Vec::new();
        let mut error = None;
        while !input.is_empty() {
            match input.parse() {
                Ok(workflow) => workflows.push(workflow),
                Err(e) => {
                    error = Some(e);
                    // What follows cannot be told apart from the broken workflow.
                    input.parse::<TokenStream>()?;
                }
            }
        }
        if workflows.is_empty() && error.is_none() {
            return Err(input.error(
                "expected a workflow: `workflow! { pub Name(Input) -> Output { chain![first_step, second_step] } }`",
            ));
        }
        Ok(Input { workflows, error })
    }
}

impl Parse for WorkflowDef {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let ident: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the workflow's name: `pub Name(Input) -> Output { ... }`",
            )
        })?;
        if input.peek(Token![<]) {
            return Err(input
                .error("a workflow cannot be generic: its input and output are concrete types"));
        }
        let content;
        syn::parenthesized!(content in input);
        let input_ty: Type = content.parse()?;
        if !content.is_empty() {
            return Err(content.error("a workflow takes one input type: `Name(Input) -> Output`; use a struct or tuple for several values"));
        }
        if !input.peek(Token![->]) {
            return Err(input.error(
                "expected `-> Output` after the input type: `Name(Input) -> Output { ... }`",
            ));
        }
        input.parse::<Token![->]>()?;
        let output: Type = input.parse()?;
        if !input.peek(token::Brace) {
            return Err(input.error(
                "expected the workflow's body in braces: `Name(Input) -> Output { chain![first_step, second_step] }`",
            ));
        }
        let body: proc_macro2::Group = input.parse()?;
        // Read on their own, so that a mistake inside the braces leaves this workflow's name
        // and types (and the workflows after it) read; an error at their end points at `}`,
        // as it would inside `braced!`.
        let contents =
            syn::parse::Parser::__parse_scoped(contents, body.span_close(), body.stream());
        Ok(WorkflowDef {
            attrs,
            vis,
            ident,
            input: input_ty,
            output,
            contents,
        })
    }
}

/// A workflow's options and body: `timeout = "5m"; chain![..]`.
fn contents(body: ParseStream<'_>) -> syn::Result<Contents> {
    let mut options = Vec::new();
    while is_option(body) {
        options.push(body.parse()?);
        body.parse::<Token![;]>().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected `;` after a workflow option: `timeout = \"5m\";`",
            )
        })?;
    }
    if body.is_empty() {
        return Err(body.error(
            "expected the workflow's body after its options, e.g. `chain![first_step, second_step]`",
        ));
    }
    let node = body.parse()?;
    if body.peek(Token![;]) {
        body.parse::<Token![;]>()?;
    }
    if !body.is_empty() {
        return Err(body.error("a workflow's body is one node: put several steps in `chain![..]`"));
    }
    Ok(Contents {
        options,
        body: node,
    })
}

/// Whether the next tokens are `key = value` (not `key => ...` or a step).
fn is_option(input: ParseStream<'_>) -> bool {
    input.peek(Ident::peek_any)
        && input.peek2(Token![=])
        && !input.peek2(Token![=>])
        && !input.peek2(Token![==])
}

/// The nodes and options of a `chain![..]`, `parallel![..]` or `map![..]` list.
fn list(input: ParseStream<'_>) -> syn::Result<(Vec<Node>, Vec<KeyValue>)> {
    let mut nodes = Vec::new();
    let mut options = Vec::new();
    while !input.is_empty() {
        if is_option(input) {
            options.push(input.parse()?);
        } else if options.is_empty() {
            nodes.push(input.parse()?);
        } else {
            return Err(
                input.error("steps come before options: write `name = \"..\"` and the like last")
            );
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok((nodes, options))
}

fn group(input: ParseStream<'_>) -> syn::Result<(Span, TokenStream)> {
    input.step(|cursor| {
        if let Some((proc_macro2::TokenTree::Group(group), rest)) = cursor.token_tree() {
            return Ok(((group.span(), group.stream()), rest));
        }
        Err(cursor.error("expected `[..]` or `(..)` after the `!`"))
    })
}

const NODE_KINDS: &str = "a step (a processor fn's name such as `validate_order`, or a processor type such as `InnerWorkflow`), `chain![..]`, `parallel![..]`, `route!(..)` or `map![..]`";

impl Parse for Node {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(Ident) && input.peek2(Token![!]) {
            let name: Ident = input.parse()?;
            input.parse::<Token![!]>()?;
            let (span, tokens) = group(input)?;
            let whole = name.span().join(span).unwrap_or(span);
            let range = (name.span(), span);
            return match name.to_string().as_str() {
                "chain" => {
                    let (nodes, options) = syn::parse::Parser::parse2(list, tokens)?;
                    Ok(Node::Chain {
                        span: whole,
                        range,
                        nodes,
                        options,
                    })
                }
                "parallel" => {
                    let (branches, options) = syn::parse::Parser::parse2(list, tokens)?;
                    let merge = if input.peek(Token![=>]) {
                        input.parse::<Token![=>]>()?;
                        Some(Expr::parse_without_eager_brace(input)?)
                    } else {
                        None
                    };
                    Ok(Node::Parallel {
                        span: whole,
                        range,
                        branches,
                        options,
                        merge,
                    })
                }
                "map" => {
                    let (mut nodes, options) = syn::parse::Parser::parse2(list, tokens)?;
                    if nodes.len() != 1 {
                        return Err(syn::Error::new(
                            span,
                            "`map!` takes one step, then its options: `map![send_email, concurrency = 8]`",
                        ));
                    }
                    let step = Box::new(nodes.remove(0));
                    Ok(Node::Map {
                        span: whole,
                        range,
                        step,
                        options,
                    })
                }
                "route" => {
                    let (selector, arms, options) = syn::parse::Parser::parse2(route, tokens)?;
                    Ok(Node::Route {
                        span: whole,
                        range,
                        selector,
                        arms,
                        options,
                    })
                }
                _ => Err(syn::Error::new(
                    name.span(),
                    format_args!("unknown node `{name}!`; a node is {NODE_KINDS}"),
                )),
            };
        }
        if input.peek(Ident::peek_any) || input.peek(Token![::]) {
            return Ok(Node::Step(input.parse()?));
        }
        Err(input.error(format_args!("expected a node: {NODE_KINDS}")))
    }
}

type RouteParts = (Selector, Vec<RouteArm>, Vec<KeyValue>);

/// `selector, { key => step, _ => step }, options` or `match |x| scrutinee { Pat => step }, options`.
fn route(input: ParseStream<'_>) -> syn::Result<RouteParts> {
    let (selector, arms) = if input.peek(Token![match]) {
        let match_token: Token![match] = input.parse()?;
        let params = closure_params(input)?;
        let scrutinee = Expr::parse_without_eager_brace(input)?;
        let content;
        braced!(content in input);
        let mut arms = Vec::new();
        while !content.is_empty() {
            let pat = Pat::parse_multi_with_leading_vert(&content)?;
            let guard = if content.peek(Token![if]) {
                content.parse::<Token![if]>()?;
                Some(content.parse()?)
            } else {
                None
            };
            content.parse::<Token![=>]>()?;
            let step = content.parse()?;
            arms.push(RouteArm {
                key: ArmKey::Pattern(pat, guard),
                step,
            });
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        let selector = Selector::Match {
            match_token,
            params,
            scrutinee,
        };
        (selector, arms)
    } else {
        let selector: Expr = input.parse()?;
        input.parse::<Token![,]>().map_err(|e| {
            syn::Error::new(e.span(), "expected `,` and the arms: `route!(|x: &In| key, { \"a\" => step_a, _ => other })`")
        })?;
        if !input.peek(token::Brace) {
            return Err(
                input.error("expected the arms in braces: `{ \"a\" => step_a, _ => other }`")
            );
        }
        let content;
        braced!(content in input);
        let mut arms = Vec::new();
        while !content.is_empty() {
            let key = if content.peek(Token![_]) && content.peek2(Token![=>]) {
                ArmKey::Fallback(content.parse()?)
            } else {
                ArmKey::Key(content.parse()?)
            };
            content.parse::<Token![=>]>()?;
            let step = content.parse()?;
            arms.push(RouteArm { key, step });
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        (Selector::Keyed(selector), arms)
    };
    let mut options = Vec::new();
    while !input.is_empty() {
        input.parse::<Token![,]>()?;
        if input.is_empty() {
            break;
        }
        options.push(input.parse()?);
    }
    Ok((selector, arms, options))
}

/// `|x: &In|` (or `|x|`), kept as tokens for the generated closure.
fn closure_params(input: ParseStream<'_>) -> syn::Result<TokenStream> {
    let mut tokens = TokenStream::new();
    let open: Token![|] = input.parse().map_err(|e| {
        syn::Error::new(e.span(), "expected a closure after `match`: `route!(match |x: &In| x.kind { Kind::A => step_a, .. })`")
    })?;
    quote::ToTokens::to_tokens(&open, &mut tokens);
    let mut params: Punctuated<TokenStream, Token![,]> = Punctuated::new();
    while !input.peek(Token![|]) {
        let pat = Pat::parse_single(input)?;
        let mut param = quote::quote!(#pat);
        if input.peek(Token![:]) {
            let colon: Token![:] = input.parse()?;
            let ty: Type = input.parse()?;
            param = quote::quote!(#param #colon #ty);
        }
        params.push_value(param);
        if input.peek(Token![|]) {
            break;
        }
        params.push_punct(input.parse()?);
    }
    let close: Token![|] = input.parse()?;
    quote::ToTokens::to_tokens(&params, &mut tokens);
    quote::ToTokens::to_tokens(&close, &mut tokens);
    Ok(tokens)
}
