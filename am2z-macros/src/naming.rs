//! The one naming rule shared by both macros: a processor fn's type is its name in
//! UpperCamelCase.

use proc_macro2::Ident;

/// `charge_card` → `ChargeCard`; `fetch_v2` → `FetchV2`; `InnerWorkflow` stays as it is.
///
/// The rule: split at underscores, uppercase the first letter of each part, keep the rest of
/// each part as written. A raw identifier loses its `r#`.
pub(crate) fn type_name_of(ident: &Ident) -> Ident {
    let text = ident.to_string();
    let text = text.strip_prefix("r#").unwrap_or(&text);
    let mut out = String::with_capacity(text.len());
    for part in text.split('_').filter(|part| !part.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        // `_` or `_1` have no usable camel form; keep a valid identifier.
        out.insert_str(0, "Am2z");
    }
    Ident::new(&out, ident.span())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::Span;

    fn camel(name: &str) -> String {
        type_name_of(&Ident::new(name, Span::call_site())).to_string()
    }

    #[test]
    fn upper_camel_case() {
        assert_eq!(camel("charge_card"), "ChargeCard");
        assert_eq!(camel("fetch_v2"), "FetchV2");
        assert_eq!(camel("validate"), "Validate");
        assert_eq!(camel("InnerWorkflow"), "InnerWorkflow");
        assert_eq!(camel("__private_step"), "PrivateStep");
        assert_eq!(camel("http_GET"), "HttpGET");
    }
}
