//! Puts generated tokens on the user's span, so the error for a generated check lands on the
//! user's step (once: a call whose callee and arguments share one span is reported once).

use proc_macro2::{Group, Span, TokenStream, TokenTree};

/// `tokens` with every span set to `span`.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                TokenTree::Group(respanned)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}
