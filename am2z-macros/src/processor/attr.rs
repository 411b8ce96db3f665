//! Parses `#[processor(...)]`'s arguments into typed slots, recording every mistake.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::discouraged::Speculative;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{
    Expr, ExprAssign, ExprCall, ExprLit, ExprPath, Ident, Lit, LitBool, LitStr, Path, Token,
};

use crate::errors::Errors;
use crate::literal::Rate;
use crate::options::{
    KeySet, KeyValue, Millis, read_bool, read_duration, read_i32, read_name, read_path, read_rate,
    read_str, read_u32,
};

/// The keys `#[processor]` accepts, in the order the docs list them.
pub(crate) const KEYS: &[&str] = &[
    "name",
    "description",
    "timeout",
    "retries",
    "backoff",
    "retry_if",
    "concurrency",
    "priority",
    "rate",
    "delay",
    "version",
    "redact",
    "crate",
];

/// The keys that may be written alone, meaning `key = true`.
const FLAGS: &[&str] = &["redact"];

/// The cap of an exponential backoff written without `max`.
pub(crate) const DEFAULT_BACKOFF_MAX_MS: u64 = 60_000;

/// Everything `#[processor(...)]` was given (a slot stays `None` when unset or invalid).
#[derive(Default)]
pub(crate) struct ProcessorAttr {
    pub(crate) name: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
    pub(crate) timeout: Option<Millis>,
    pub(crate) retries: Option<(u32, Span)>,
    pub(crate) backoff: Option<(Backoff, Span)>,
    pub(crate) retry_if: Option<Path>,
    pub(crate) concurrency: Option<(u32, Span)>,
    pub(crate) priority: Option<(i32, Span)>,
    pub(crate) rate: Option<(Rate, Span)>,
    pub(crate) delay: Option<Millis>,
    pub(crate) version: Option<(u32, Span)>,
    pub(crate) redact: Option<(bool, Span)>,
    pub(crate) crate_path: Option<Path>,
}

pub(crate) enum Backoff {
    Fixed(Millis),
    Exponential {
        base: Millis,
        multiplier: f64,
        max: Millis,
    },
}

/// Parses the attribute's tokens. A token-level syntax error stops parsing (it is returned in
/// `errors`); a bad key or value is recorded and the other keys are still read.
pub(crate) fn parse(tokens: proc_macro2::TokenStream, errors: &mut Errors) -> ProcessorAttr {
    let mut attr = ProcessorAttr::default();
    let list = match Punctuated::<Argument, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(list) => list,
        Err(error) => {
            errors.push(error);
            return attr;
        }
    };
    let mut keys = KeySet::new(KEYS);
    for Argument(kv) in &list {
        let Some(key) = keys.admit(&kv.key, errors) else {
            continue;
        };
        let span = crate::options::option_span(kv);
        let value = &kv.value;
        match key.as_str() {
            "name" => attr.name = read_name(&key, value, errors),
            "description" => attr.description = read_str(&key, value, errors),
            "timeout" => {
                attr.timeout = read_duration(&key, value, errors);
                if let Some(t) = attr.timeout.filter(|t| t.ms == 0) {
                    errors.at_span(t.span, "a timeout of zero would fail every attempt: leave `timeout` out for no limit");
                    attr.timeout = None;
                }
            }
            "retries" => {
                attr.retries = read_u32(
                    &key,
                    value,
                    1,
                    "it counts every attempt, the first included (`retries = 1` means no retry)",
                    errors,
                )
                .map(|n| (n, span));
            }
            "backoff" => attr.backoff = read_backoff(value, errors).map(|b| (b, span)),
            "retry_if" => attr.retry_if = read_path(&key, value, "my_predicate", errors),
            "concurrency" => {
                attr.concurrency = read_u32(
                    &key,
                    value,
                    1,
                    "it is the most attempts running at once",
                    errors,
                )
                .map(|n| (n, span));
            }
            "priority" => attr.priority = read_i32(&key, value, errors).map(|n| (n, span)),
            "rate" => attr.rate = read_rate(&key, value, errors),
            "delay" => attr.delay = read_duration(&key, value, errors),
            "version" => {
                attr.version = read_u32(&key, value, 1, "contract versions start at 1", errors)
                    .map(|n| (n, span));
            }
            "redact" => attr.redact = read_bool(&key, value, errors).map(|b| (b, span)),
            "crate" => attr.crate_path = read_path(&key, value, "::am2z", errors),
            _ => {} // `KeySet::admit` only returns the keys listed in `KEYS`.
        }
    }
    attr
}

/// One argument: `key = value`, or a flag written alone (`redact`), read as `key = true`.
struct Argument(KeyValue);

impl Parse for Argument {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let ahead = input.fork();
        let alone = Ident::parse_any(&ahead)
            .ok()
            .filter(|key| FLAGS.contains(&key.unraw().to_string().as_str()))
            .filter(|_| ahead.is_empty() || ahead.peek(Token![,]));
        match alone {
            Some(key) => {
                input.advance_to(&ahead);
                let value = Expr::Lit(ExprLit {
                    attrs: Vec::new(),
                    lit: Lit::Bool(LitBool::new(true, key.span())),
                });
                Ok(Argument(KeyValue { key, value }))
            }
            None => input.parse().map(Argument),
        }
    }
}

const BACKOFF_FORMS: &str = "`backoff = fixed(\"1s\")` or `backoff = exponential(base = \"100ms\", multiplier = 2, max = \"10s\")`";

fn read_backoff(value: &Expr, errors: &mut Errors) -> Option<Backoff> {
    let Expr::Call(ExprCall { func, args, .. }) = value else {
        errors.at(value, format_args!("expected {BACKOFF_FORMS}"));
        return None;
    };
    let kind = match &**func {
        Expr::Path(ExprPath { path, .. }) => path.get_ident().map(ToString::to_string),
        _ => None,
    };
    match kind.as_deref() {
        Some("fixed") => {
            if args.len() != 1 {
                errors.at(
                    value,
                    "`fixed` takes one duration: `backoff = fixed(\"1s\")`",
                );
                return None;
            }
            read_duration("fixed", &args[0], errors).map(Backoff::Fixed)
        }
        Some("exponential") => read_exponential(value, args, errors),
        _ => {
            errors.at(
                func,
                format_args!("unknown backoff; expected {BACKOFF_FORMS}"),
            );
            None
        }
    }
}

fn read_exponential(
    whole: &Expr,
    args: &Punctuated<Expr, Token![,]>,
    errors: &mut Errors,
) -> Option<Backoff> {
    let mut keys = KeySet::new(&["base", "multiplier", "max"]);
    let (mut base, mut multiplier, mut max) = (None, None, None);
    let mut ok = true;
    for arg in args {
        let Expr::Assign(ExprAssign { left, right, .. }) = arg else {
            errors.at(
                arg,
                "expected `base = \"100ms\"`, `multiplier = 2` or `max = \"10s\"`",
            );
            ok = false;
            continue;
        };
        let Expr::Path(ExprPath { path, .. }) = &**left else {
            errors.at(left, "expected `base`, `multiplier` or `max`");
            ok = false;
            continue;
        };
        let Some(ident) = path.get_ident() else {
            errors.at(left, "expected `base`, `multiplier` or `max`");
            ok = false;
            continue;
        };
        let Some(key) = keys.admit(ident, errors) else {
            ok = false;
            continue;
        };
        match key.as_str() {
            "base" => base = read_duration("base", right, errors),
            "max" => max = read_duration("max", right, errors),
            _ => multiplier = read_multiplier(right, errors),
        }
    }
    let (Some(base), Some(multiplier)) = (base, multiplier) else {
        if ok
            && (base.is_none() && !args.iter().any(|a| is_key(a, "base"))
                || multiplier.is_none() && !args.iter().any(|a| is_key(a, "multiplier")))
        {
            errors.at(
                whole,
                "`exponential` needs `base` and `multiplier`: `exponential(base = \"100ms\", multiplier = 2)` (`max` defaults to \"60s\")",
            );
        }
        return None;
    };
    let max = max.unwrap_or(Millis {
        ms: DEFAULT_BACKOFF_MAX_MS.max(base.ms),
        span: base.span,
    });
    if max.ms < base.ms {
        errors.at_span(
            max.span,
            "`max` is shorter than `base`: the cap must be at least the first wait",
        );
        return None;
    }
    Some(Backoff::Exponential {
        base,
        multiplier,
        max,
    })
}

fn is_key(arg: &Expr, key: &str) -> bool {
    matches!(arg, Expr::Assign(ExprAssign { left, .. })
        if matches!(&**left, Expr::Path(p) if p.path.is_ident(key)))
}

fn read_multiplier(value: &Expr, errors: &mut Errors) -> Option<f64> {
    let parsed = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit.base10_parse::<u32>().ok().map(f64::from),
        Expr::Lit(ExprLit {
            lit: Lit::Float(lit),
            ..
        }) => lit.base10_parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(m) if m.is_finite() && m >= 1.0 => Some(m),
        Some(_) => {
            errors.at(
                value,
                "`multiplier` must be at least 1 (1 keeps the wait constant, 2 doubles it)",
            );
            None
        }
        None => {
            errors.at(
                value,
                "`multiplier` takes a number, e.g. `multiplier = 2` or `multiplier = 1.5`",
            );
            None
        }
    }
}
