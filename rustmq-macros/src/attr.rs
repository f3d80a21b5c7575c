//! `name = value` options shared by `#[topic(..)]` and `#[handler(..)]`.
//!
//! Options are parsed as a comma-separated list of `syn::Meta`, whose paths may be keywords
//! (syn reads their segments with `Ident::parse_any`): that is how `crate = ".."` reads as
//! an option named `crate`. Every mistake is recorded in
//! the [`Ctxt`] and parsing goes on, so that one compile shows all of them: an unknown option
//! (with the closest known name when one is close), a duplicate (at the duplicate), an option
//! without a value, and values of the wrong kind.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, LitInt, LitStr, Meta, Token};

use crate::ctxt::Ctxt;

/// One `name = value` option, accepted by [`parse_options`].
pub(crate) struct NameValue {
    /// The option's name, spanned at the user's token.
    pub(crate) name: syn::Ident,
    /// The value, with invisible `Group`s from `macro_rules!` expansions removed.
    pub(crate) value: Expr,
}

impl NameValue {
    /// Whether this option is called `name`.
    pub(crate) fn is(&self, name: &str) -> bool {
        self.name == name
    }
}

/// Parses the arguments of an attribute (the tokens inside `#[topic(..)]`), keeping the known,
/// first-seen `name = value` options. `what` names the attribute in messages ("topic").
///
/// Returns `None` when the tokens are not a list of options at all (the syntax error is
/// recorded): the caller then cannot tell which options were meant, and should not pile
/// "missing option" errors on top.
pub(crate) fn parse_options(
    cx: &Ctxt,
    what: &str,
    known: &[&'static str],
    args: TokenStream,
) -> Option<Vec<NameValue>> {
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(error) => {
            cx.syn_error(error);
            return None;
        }
    };
    let mut options: Vec<NameValue> = Vec::new();
    for meta in metas {
        let Some(name) = meta.path().get_ident().cloned() else {
            cx.error_spanned_by(meta.path(), format!("unknown {what} option"));
            continue;
        };
        let Some(&known_name) = known.iter().find(|k| name == **k) else {
            let mut message = format!("unknown {what} option `{name}`");
            if let Some(close) = closest(&name.to_string(), known.iter().copied()) {
                message += &format!("; did you mean `{close}`?");
            }
            message += &format!(" (known options: {})", known.join(", "));
            cx.error_spanned_by(&name, message);
            continue;
        };
        let value = match meta {
            Meta::NameValue(nv) => ungroup(nv.value),
            Meta::Path(_) | Meta::List(_) => {
                cx.error_spanned_by(&meta, format!("expected a value: `{known_name} = ...`"));
                continue;
            }
        };
        if options.iter().any(|o| o.name == name) {
            cx.error_spanned_by(&name, format!("duplicate {what} option `{name}`"));
            continue;
        }
        options.push(NameValue { name, value });
    }
    Some(options)
}

/// Strips the invisible groups that `macro_rules!` puts around `$e:expr` fragments.
fn ungroup(mut expr: Expr) -> Expr {
    while let Expr::Group(group) = expr {
        expr = *group.expr;
    }
    expr
}

/// The value of `option` as a string literal, or an error at the value.
pub(crate) fn lit_str(cx: &Ctxt, option: &NameValue, example: &str) -> Option<LitStr> {
    match &option.value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.clone()),
        other => {
            cx.error_spanned_by(
                other,
                format!(
                    "expected a string literal for `{}`, e.g. `{} = {example}`",
                    option.name, option.name
                ),
            );
            None
        }
    }
}

/// What an error about `generics` is spanned by: the parameters when there are any, else the
/// where clause (`Generics` prints no where clause, and nothing at all without parameters,
/// which would put the error at the macro's call site).
pub(crate) fn generics_tokens(generics: &syn::Generics) -> &dyn quote::ToTokens {
    match &generics.where_clause {
        Some(clause) if generics.params.is_empty() => clause,
        _ => generics,
    }
}

/// The value of `option` as an integer literal of at least `min`, or an error at the value.
pub(crate) fn lit_int_at_least<N>(cx: &Ctxt, option: &NameValue, min: N) -> Option<(N, LitInt)>
where
    N: std::str::FromStr + PartialOrd + std::fmt::Display,
    N::Err: std::fmt::Display,
{
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Int(int), ..
    }) = &option.value
    else {
        cx.error_spanned_by(
            &option.value,
            format!(
                "expected an integer literal for `{}`, e.g. `{} = {min}`",
                option.name, option.name
            ),
        );
        return None;
    };
    match int.base10_parse::<N>() {
        Ok(n) if n >= min => Some((n, int.clone())),
        Ok(_) => {
            cx.error_spanned_by(int, format!("`{}` must be at least {min}", option.name));
            None
        }
        Err(error) => {
            cx.error_spanned_by(int, format!("invalid `{}`: {error}", option.name));
            None
        }
    }
}

/// The known name closest to `unknown`, when it is close enough to be a typo.
pub(crate) fn closest<'k>(
    unknown: &str,
    known: impl IntoIterator<Item = &'k str>,
) -> Option<&'k str> {
    known
        .into_iter()
        .map(|k| (levenshtein(unknown, k), k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    const KNOWN: &[&str] = &["name", "partitions"];

    fn errors(cx: Ctxt) -> Vec<String> {
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn keeps_known_options_in_order() {
        let cx = Ctxt::new();
        let options = parse_options(&cx, "topic", KNOWN, quote!(partitions = 3, name = "a"));
        let names: Vec<String> = options
            .unwrap()
            .iter()
            .map(|o| o.name.to_string())
            .collect();
        assert_eq!(names, ["partitions", "name"]);
        assert!(errors(cx).is_empty());
    }

    #[test]
    fn reports_every_mistake_at_once() {
        let cx = Ctxt::new();
        let options = parse_options(
            &cx,
            "topic",
            KNOWN,
            quote!(nmae = "a", name = "a", name = "b", partitions, a::b = 1),
        )
        .unwrap();
        assert_eq!(options.len(), 1);
        assert_eq!(
            errors(cx),
            [
                "unknown topic option `nmae`; did you mean `name`? (known options: name, partitions)",
                "duplicate topic option `name`",
                "expected a value: `partitions = ...`",
                "unknown topic option",
            ]
        );
    }

    #[test]
    fn keyword_option_names() {
        let cx = Ctxt::new();
        let known = &["name", "crate"];
        let options = parse_options(&cx, "topic", known, quote!(crate = "a::b", name = "x"));
        let options = options.unwrap();
        assert!(options[0].is("crate") && options[1].is("name"));
        let options = parse_options(&cx, "topic", known, quote!(krate = "a", self = "b")).unwrap();
        assert!(options.is_empty());
        assert_eq!(
            errors(cx),
            [
                "unknown topic option `krate`; did you mean `crate`? (known options: name, crate)",
                "unknown topic option `self` (known options: name, crate)",
            ]
        );
    }

    #[test]
    fn syntax_error_returns_none() {
        let cx = Ctxt::new();
        assert!(parse_options(&cx, "topic", KNOWN, quote!(name = = "a")).is_none());
        assert_eq!(errors(cx).len(), 1);
    }

    #[test]
    fn value_kinds() {
        let cx = Ctxt::new();
        let options = parse_options(&cx, "topic", KNOWN, quote!(name = 3, partitions = 0)).unwrap();
        assert!(lit_str(&cx, &options[0], "\"orders\"").is_none());
        assert!(lit_int_at_least(&cx, &options[1], 1u32).is_none());
        assert_eq!(
            errors(cx),
            [
                "expected a string literal for `name`, e.g. `name = \"orders\"`",
                "`partitions` must be at least 1",
            ]
        );
    }

    #[test]
    fn integers_in_range_are_kept() {
        let cx = Ctxt::new();
        let options = parse_options(&cx, "topic", KNOWN, quote!(partitions = 12)).unwrap();
        assert_eq!(lit_int_at_least(&cx, &options[0], 1u32).unwrap().0, 12);
        let options = parse_options(&cx, "topic", KNOWN, quote!(partitions = 5000000000)).unwrap();
        assert!(lit_int_at_least(&cx, &options[0], 1u32).is_none());
        assert_eq!(
            errors(cx),
            ["invalid `partitions`: number too large to fit in target type"]
        );
    }

    #[test]
    fn suggestions_only_for_close_names() {
        let known = || KNOWN.iter().copied();
        assert_eq!(closest("partition", known()), Some("partitions"));
        assert_eq!(closest("nme", known()), Some("name"));
        assert_eq!(closest("codec", known()), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
    }
}
