//! The path through which generated code reaches the `rustmq` crate.
//!
//! Generated code names `rustmq`'s items by absolute paths (`<path>::Topic`,
//! `<path>::__private::Handler`), so it must know what the calling crate calls `rustmq`. By
//! default that is read from the calling crate's `Cargo.toml` with `proc-macro-crate`: a
//! dependency renamed in `Cargo.toml` (`rustmq-client = { package = "rustmq", .. }`) gives
//! `::rustmq_client`, anything else `::rustmq`. A crate that reaches `rustmq` through another
//! crate's re-export writes the path itself, as with serde's `#[serde(crate = "...")]`:
//! `#[topic(crate = "my_sdk::rustmq")]`, `#[handler(crate = "my_sdk::rustmq")]`.

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::ToTokens;
use syn::{Ident, LitStr, Path};

use crate::attr::{self, NameValue};
use crate::ctxt::Ctxt;

/// `crate = "my_sdk::rustmq"`: the path of the `rustmq` crate, for both attributes.
pub(crate) const CRATE: &str = "crate";

/// The `rustmq` crate's package name, as `proc-macro-crate` looks it up.
const PACKAGE: &str = "rustmq";

/// The path of the `rustmq` crate in the calling crate, emitted as a path prefix.
#[derive(Debug, Clone)]
pub(crate) struct Krate(Path);

impl Krate {
    /// The override if one was given, else what the calling crate's `Cargo.toml` calls
    /// `rustmq`. Called once per macro invocation: the lookup reads files (and, the first time
    /// in a compilation, asks `cargo` where the workspace is).
    pub(crate) fn or_resolve(given: Option<Krate>) -> Krate {
        given.unwrap_or_else(|| Krate::from_found(crate_name(PACKAGE).ok()))
    }

    /// `::<name>` for a dependency found under `name`; `::rustmq` when `rustmq` is the crate
    /// being compiled (its doc tests and examples link it as `rustmq`) or when the lookup
    /// failed (no `Cargo.toml`, or `rustmq` not a direct dependency: the user then writes
    /// `crate = ".."`).
    fn from_found(found: Option<FoundCrate>) -> Krate {
        let name = match found {
            Some(FoundCrate::Name(name)) => name,
            Some(FoundCrate::Itself) | None => PACKAGE.to_owned(),
        };
        // `proc-macro-crate` turns `-` into `_`; anything still not an identifier is not a
        // name Cargo accepts, and falls back to `rustmq`.
        let ident = syn::parse_str::<Ident>(&name)
            .unwrap_or_else(|_| Ident::new(PACKAGE, Span::call_site()));
        let mut path = Path::from(ident);
        path.leading_colon = Some(Default::default());
        Krate(path)
    }

    /// Reads `crate = "path"`: a string holding a module path (`"my_sdk::rustmq"`,
    /// `"crate::reexports::rustmq"`, `"::rustmq"`). The path's tokens carry the literal's span,
    /// so that a path that does not resolve is reported at the user's string.
    pub(crate) fn from_option(cx: &Ctxt, option: &NameValue) -> Option<Krate> {
        let lit: LitStr = attr::lit_str(cx, option, "\"my_sdk::rustmq\"")?;
        match lit.parse_with(Path::parse_mod_style) {
            Ok(path) => Some(Krate(path)),
            Err(error) => {
                cx.error_spanned_by(
                    &lit,
                    format!(
                        "`crate` must be the path of the rustmq crate, e.g. \
                         `crate = \"my_sdk::rustmq\"`; {:?} is not a path: {error}",
                        lit.value()
                    ),
                );
                None
            }
        }
    }
}

impl ToTokens for Krate {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.0.to_tokens(tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn read(args: TokenStream) -> Result<Option<String>, Vec<String>> {
        let cx = Ctxt::new();
        let krate = attr::parse_options(&cx, "topic", &[CRATE], args)
            .unwrap_or_default()
            .iter()
            .find_map(|option| Krate::from_option(&cx, option));
        match cx.check() {
            Ok(()) => Ok(krate.map(|k| k.to_token_stream().to_string())),
            Err(e) => Err(e.into_iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn default_path() {
        let found = |f| Krate::from_found(f).to_token_stream().to_string();
        assert_eq!(found(None), ":: rustmq");
        assert_eq!(found(Some(FoundCrate::Itself)), ":: rustmq");
        assert_eq!(
            found(Some(FoundCrate::Name("rustmq_client".into()))),
            ":: rustmq_client"
        );
        assert_eq!(
            found(Some(FoundCrate::Name("not an ident".into()))),
            ":: rustmq"
        );
        let given = Krate(syn::parse_quote!(my::rustmq));
        assert_eq!(
            Krate::or_resolve(Some(given)).to_token_stream().to_string(),
            "my :: rustmq"
        );
    }

    #[test]
    fn override_paths() {
        assert_eq!(
            read(quote!(crate = "my_sdk::rustmq")).unwrap().unwrap(),
            "my_sdk :: rustmq"
        );
        assert_eq!(
            read(quote!(crate = "::rustmq_client")).unwrap().unwrap(),
            ":: rustmq_client"
        );
        assert_eq!(
            read(quote!(crate = "crate::reexport::rustmq"))
                .unwrap()
                .unwrap(),
            "crate :: reexport :: rustmq"
        );
        assert_eq!(
            read(quote!(crate = "super::rustmq")).unwrap().unwrap(),
            "super :: rustmq"
        );
    }

    #[test]
    fn bad_paths() {
        let errors = |args| read(args).unwrap_err();
        assert_eq!(
            errors(quote!(crate = "not a path!")),
            [
                "`crate` must be the path of the rustmq crate, e.g. `crate = \"my_sdk::rustmq\"`; \
              \"not a path!\" is not a path: unexpected token"
            ]
        );
        for bad in [
            quote!(crate = ""),
            quote!(crate = "a::"),
            quote!(crate = "a::<T>"),
            quote!(crate = "a b"),
        ] {
            assert_eq!(errors(bad.clone()).len(), 1, "{bad}");
        }
        assert_eq!(
            errors(quote!(crate = my_sdk::rustmq)),
            ["expected a string literal for `crate`, e.g. `crate = \"my_sdk::rustmq\"`"]
        );
        assert_eq!(errors(quote!(crate)), ["expected a value: `crate = ...`"]);
    }
}
