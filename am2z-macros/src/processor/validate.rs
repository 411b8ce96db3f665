//! Checks that the annotated item is a fn `#[processor]` can wrap, and reads its types.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type};

use crate::errors::Errors;

/// What the generated code needs from the user's fn.
pub(crate) struct StepFn<'a> {
    pub(crate) item: &'a ItemFn,
    pub(crate) input: &'a Type,
    pub(crate) takes_ctx: bool,
    pub(crate) output: &'a Type,
    /// The whole `Result<Out, E>`, to span the error conversion on.
    pub(crate) result: &'a Type,
}

const SHAPE: &str = "a processor is `async fn name(input: In) -> Result<Out, E>`, or `async fn name(input: In, ctx: &Ctx) -> Result<Out, E>`";

/// Reads the fn's shape, recording every way it is not one `#[processor]` can wrap.
pub(crate) fn step_fn<'a>(item: &'a ItemFn, errors: &mut Errors) -> Option<StepFn<'a>> {
    let sig = &item.sig;
    let mut ok = true;
    let mut fail = |errors: &mut Errors, span: Span, message: String| {
        ok = false;
        errors.at_span(span, message);
    };

    if sig.asyncness.is_none() {
        fail(
            errors,
            sig.fn_token.span(),
            format!(
                "`#[processor]` needs an `async fn`: write `async fn {}`",
                sig.ident
            ),
        );
    }
    if let Some(constness) = &sig.constness {
        fail(
            errors,
            constness.span(),
            "a processor fn cannot be `const`".into(),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        fail(errors, unsafety.span(), "a processor fn cannot be `unsafe`: the runtime calls it with no way to uphold its contract".into());
    }
    if let Some(abi) = &sig.abi {
        fail(
            errors,
            abi.span(),
            "a processor fn cannot declare an ABI".into(),
        );
    }
    if let Some(variadic) = &sig.variadic {
        fail(
            errors,
            variadic.span(),
            "a processor fn cannot be variadic".into(),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let span = if sig.generics.params.is_empty() {
            sig.generics.where_clause.span()
        } else {
            sig.generics.span()
        };
        fail(errors, span, "a processor fn cannot be generic: the generated processor type names one concrete input and output type; write one processor per type".into());
    }
    let generated = crate::naming::type_name_of(&sig.ident);
    if generated == sig.ident {
        fail(
            errors,
            sig.ident.span(),
            format!(
                "name processor fns in snake_case: the generated processor type is the fn's name in UpperCamelCase, which for `{0}` is `{0}` itself and would clash with the fn",
                sig.ident
            ),
        );
    }

    let mut params = sig.inputs.iter();
    let mut input = None;
    let mut takes_ctx = false;
    match params.next() {
        None => fail(
            errors,
            sig.paren_token.span.join(),
            format!("a processor fn takes its input as the first parameter; {SHAPE}"),
        ),
        Some(FnArg::Receiver(receiver)) => fail(
            errors,
            receiver.span(),
            format!(
                "a processor fn cannot take `self`: `#[processor]` goes on a free `async fn`, not a method; {SHAPE}"
            ),
        ),
        Some(FnArg::Typed(arg)) => input = Some(&*arg.ty),
    }
    if let Some(second) = params.next() {
        match second {
            FnArg::Typed(arg) if matches!(&*arg.ty, Type::Reference(r) if r.mutability.is_none()) => {
                takes_ctx = true
            }
            FnArg::Typed(arg) => fail(
                errors,
                arg.ty.span(),
                "the second parameter of a processor fn is the context, taken as `&Ctx`".into(),
            ),
            FnArg::Receiver(receiver) => fail(
                errors,
                receiver.span(),
                "a processor fn cannot take `self`".into(),
            ),
        }
    }
    let extra: Vec<_> = params.collect();
    if let Some(first_extra) = extra.first() {
        fail(
            errors,
            first_extra.span(),
            format!(
                "a processor fn takes at most two parameters, found {}; {SHAPE}. Pass several values as one struct or tuple",
                sig.inputs.len()
            ),
        );
    }
    if let Some((ty, message)) = input.and_then(|ty| Some((ty, not_owned(ty)?))) {
        fail(errors, ty.span(), message);
    }

    let (output, result) = match &sig.output {
        ReturnType::Default => {
            fail(
                errors,
                sig.paren_token.span.join(),
                format!(
                    "a processor fn returns a `Result`, so failures can be retried and reported: add `-> Result<Out, am2z::Error>` (or any error that converts into `am2z::Error`); {SHAPE}"
                ),
            );
            (None, None)
        }
        ReturnType::Type(_, ty) => match ok_type(ty) {
            Some(out) => (Some(out), Some(&**ty)),
            None => {
                fail(
                    errors,
                    ty.span(),
                    format!(
                        "a processor fn returns `Result<Out, E>` (with `E: Into<am2z::Error>`), found `{}`",
                        quote::quote!(#ty)
                    ),
                );
                (None, None)
            }
        },
    };

    if !ok {
        return None;
    }
    Some(StepFn {
        item,
        input: input?,
        takes_ctx,
        output: output?,
        result: result?,
    })
}

/// The input and output types to give the processor type of a fn `#[processor]` refused, so
/// that its uses still type-check: each as written when it can be a processor's, else `()`.
pub(crate) fn fallback_types(item: &ItemFn) -> (Type, Type) {
    let unit: Type = syn::parse_quote!(());
    if !item.sig.generics.params.is_empty() {
        return (unit.clone(), unit);
    }
    let input = match item.sig.inputs.first() {
        Some(FnArg::Typed(arg)) if not_owned(&arg.ty).is_none() => (*arg.ty).clone(),
        _ => unit.clone(),
    };
    let output = match &item.sig.output {
        ReturnType::Type(_, ty) => match ok_type(ty) {
            Some(out) => out.clone(),
            None if !matches!(**ty, Type::ImplTrait(_) | Type::Reference(_)) => (**ty).clone(),
            None => unit,
        },
        ReturnType::Default => unit,
    };
    (input, output)
}

/// The `Out` of a `Result<Out, E>` (any path whose last segment ends in `Result`, so
/// `am2z::Result<Out>` and aliases like `io::Result<Out>` work).
fn ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if !last.ident.to_string().ends_with("Result") {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(out) => Some(out),
        _ => None,
    }
}

/// Why `ty` cannot be a processor's input, if it cannot.
fn not_owned(ty: &Type) -> Option<String> {
    match ty {
        Type::Reference(reference) => {
            let inner = &reference.elem;
            Some(format!("a processor's input is owned, because it is kept for retries and may cross threads or machines: take `{}` (or an owned equivalent such as `String` for `&str`)", quote::quote!(#inner)))
        }
        Type::ImplTrait(_) => Some("a processor fn cannot be generic (`impl Trait` in argument position is a generic): take one concrete input type".into()),
        _ => None,
    }
}
