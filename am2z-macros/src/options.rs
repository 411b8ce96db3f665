//! `key = value` options, shared by `#[processor(...)]` and the option block of `workflow!`.
//!
//! Values are parsed as expressions and read per key, so every mistake is reported on the key
//! or the value it concerns, and a bad value does not stop the other keys from being read.

use std::fmt::Display;

use proc_macro2::{Literal, Span};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Path, Token, UnOp};

use crate::errors::Errors;
use crate::literal::{Rate, parse_duration_ms, parse_rate};

/// One `key = value`.
pub(crate) struct KeyValue {
    pub(crate) key: Ident,
    pub(crate) value: Expr,
}

impl Parse for KeyValue {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `Ident::parse_any` so that `crate = ...` parses.
        let key = Ident::parse_any(input)?;
        if !input.peek(Token![=]) || input.peek(Token![=>]) || input.peek(Token![==]) {
            return Err(syn::Error::new(
                key.span(),
                format_args!("expected `{key} = value`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(KeyValue { key, value })
    }
}

/// Tracks which keys were seen, reporting unknown and duplicate keys.
pub(crate) struct KeySet {
    valid: &'static [&'static str],
    seen: Vec<String>,
}

impl KeySet {
    pub(crate) fn new(valid: &'static [&'static str]) -> Self {
        KeySet {
            valid,
            seen: Vec::new(),
        }
    }

    /// The key's name when it is valid and seen for the first time; otherwise records why not.
    pub(crate) fn admit(&mut self, key: &Ident, errors: &mut Errors) -> Option<String> {
        let name = key.unraw().to_string();
        if !self.valid.contains(&name.as_str()) {
            let list = self
                .valid
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = closest(&name, self.valid)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            errors.at(
                key,
                format_args!("unknown key `{name}`{hint}\nvalid keys: {list}"),
            );
            return None;
        }
        if self.seen.contains(&name) {
            errors.at(
                key,
                format_args!("duplicate key `{name}`: it is already set above"),
            );
            return None;
        }
        self.seen.push(name.clone());
        Some(name)
    }
}

/// The valid key one edit-distance-ish step from `name`, for "did you mean".
pub(crate) fn closest(name: &str, valid: &[&'static str]) -> Option<&'static str> {
    valid
        .iter()
        .map(|k| (distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// A string literal value.
pub(crate) fn read_str(key: &str, value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit.clone()),
        other => {
            errors.at(
                other,
                format_args!("`{key}` takes a string literal, e.g. `{key} = \"...\"`"),
            );
            None
        }
    }
}

/// A `true` or `false` literal.
pub(crate) fn read_bool(key: &str, value: &Expr, errors: &mut Errors) -> Option<bool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(lit),
            ..
        }) => Some(lit.value),
        other => {
            errors.at(
                other,
                format_args!(
                    "`{key}` takes `true` or `false`, e.g. `{key} = true` (or `{key}` alone)"
                ),
            );
            None
        }
    }
}

/// A non-empty string literal (a name).
pub(crate) fn read_name(key: &str, value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    let lit = read_str(key, value, errors)?;
    if lit.value().trim().is_empty() {
        errors.at(&lit, format_args!("`{key}` must not be empty"));
        return None;
    }
    Some(lit)
}

/// A string literal read by `parse`, with the literal's span; anything else is refused with
/// `takes` (what the key takes), a parse error on the literal itself.
fn read_parsed<T>(
    value: &Expr,
    takes: impl Display,
    parse: impl FnOnce(&str) -> Result<T, String>,
    errors: &mut Errors,
) -> Option<(T, Span)> {
    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = value
    else {
        errors.at(value, takes);
        return None;
    };
    match parse(&lit.value()) {
        Ok(parsed) => Some((parsed, lit.span())),
        Err(message) => {
            errors.at(lit, message);
            None
        }
    }
}

/// A duration literal such as `"30s"`, in milliseconds, with its span.
pub(crate) fn read_duration(key: &str, value: &Expr, errors: &mut Errors) -> Option<Millis> {
    read_parsed(
        value,
        format_args!(
            "`{key}` takes a duration string such as `{key} = \"30s\"` (units: ms, s, m, h)"
        ),
        parse_duration_ms,
        errors,
    )
    .map(|(ms, span)| Millis { ms, span })
}

/// A duration in milliseconds and the span of the literal it came from.
#[derive(Clone, Copy)]
pub(crate) struct Millis {
    pub(crate) ms: u64,
    pub(crate) span: Span,
}

impl Millis {
    /// `::core::time::Duration::from_millis(ms)` through the private path.
    pub(crate) fn to_tokens(self, private: &proc_macro2::TokenStream) -> proc_macro2::TokenStream {
        let ms = Literal::u64_suffixed(self.ms);
        quote::quote_spanned!(self.span=> #private::Duration::from_millis(#ms))
    }
}

/// A rate literal such as `"100/min"`.
pub(crate) fn read_rate(key: &str, value: &Expr, errors: &mut Errors) -> Option<(Rate, Span)> {
    read_parsed(
        value,
        format_args!("`{key}` takes a rate string such as `{key} = \"100/min\"`"),
        parse_rate,
        errors,
    )
}

/// An integer literal that fits `u32` and is at least `min`.
pub(crate) fn read_u32(
    key: &str,
    value: &Expr,
    min: u32,
    why: &str,
    errors: &mut Errors,
) -> Option<u32> {
    let Expr::Lit(ExprLit {
        lit: Lit::Int(lit), ..
    }) = value
    else {
        errors.at(
            value,
            format_args!(
                "`{key}` takes a whole number, e.g. `{key} = {}`",
                min.max(3)
            ),
        );
        return None;
    };
    match lit.base10_parse::<u32>() {
        Ok(n) if n >= min => Some(n),
        Ok(_) => {
            errors.at(lit, format_args!("`{key}` must be at least {min}: {why}"));
            None
        }
        Err(_) => {
            errors.at(
                lit,
                format_args!("`{key}` must be a whole number from {min} to {}", u32::MAX),
            );
            None
        }
    }
}

/// An integer literal, possibly negative, that fits `i32`.
pub(crate) fn read_i32(key: &str, value: &Expr, errors: &mut Errors) -> Option<i32> {
    let (negative, lit) = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => (false, lit),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(lit), ..
            }) => (true, lit),
            _ => {
                errors.at(
                    value,
                    format_args!("`{key}` takes a whole number, e.g. `{key} = 10` or `{key} = -5`"),
                );
                return None;
            }
        },
        other => {
            errors.at(
                other,
                format_args!("`{key}` takes a whole number, e.g. `{key} = 10` or `{key} = -5`"),
            );
            return None;
        }
    };
    let parsed = lit
        .base10_parse::<i64>()
        .ok()
        .map(|n| if negative { -n } else { n })
        .and_then(|n| i32::try_from(n).ok());
    if parsed.is_none() {
        errors.at(
            value,
            format_args!("`{key}` must fit an `i32` ({} to {})", i32::MIN, i32::MAX),
        );
    }
    parsed
}

/// A path value (a fn, or a crate).
pub(crate) fn read_path(
    key: &str,
    value: &Expr,
    example: &str,
    errors: &mut Errors,
) -> Option<Path> {
    match value {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            Some(path.path.clone())
        }
        other => {
            errors.at(
                other,
                format_args!("`{key}` takes a path, e.g. `{key} = {example}`"),
            );
            None
        }
    }
}

/// The span to put generated code for an option on: the whole `key = value`.
pub(crate) fn option_span(kv: &KeyValue) -> Span {
    kv.key
        .span()
        .join(kv.value.span())
        .unwrap_or_else(|| kv.key.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_key() {
        let keys = &["name", "retries", "timeout", "rate", "crate"];
        assert_eq!(closest("retires", keys), Some("retries"));
        assert_eq!(closest("timout", keys), Some("timeout"));
        assert_eq!(closest("colour", keys), None);
    }
}
