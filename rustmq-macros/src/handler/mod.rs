//! `#[handler]`: parse the options ([`options`]) and check the signature ([`signature`]),
//! then generate ([`expand`]).

mod expand;
mod options;
mod signature;

use proc_macro2::TokenStream;
use syn::ItemFn;

use crate::ctxt::Ctxt;
use crate::krate::Krate;

/// Expands `#[handler(args)] item`. With any error, the errors come out next to the item as
/// the user wrote it (tokio-macros' way), so that the rest of the crate and IDEs still see
/// the function.
pub(crate) fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let mut options = options::Options::parse(&cx, args);
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => Some(function),
        Err(error) => {
            cx.syn_error(syn::Error::new(
                error.span(),
                format!("#[handler] goes on an `async fn`: {error}"),
            ));
            None
        }
    };
    let sig = function
        .as_ref()
        .and_then(|f| signature::HandlerSig::check(&cx, &f.sig));
    match (cx.check(), function, sig) {
        (Ok(()), Some(function), Some(sig)) => {
            let krate = Krate::or_resolve(options.krate.take());
            expand::expand(&function, &sig, &options, &krate)
        }
        (result, _, _) => {
            let mut out = result
                .err()
                .map(|e| e.to_compile_error())
                .unwrap_or_default();
            out.extend(item);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn errors_keep_the_original_item() {
        let item = quote!(
            fn bill(order: Order) {}
        );
        let out = handler(quote!(grup = "x"), item.clone()).to_string();
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
        assert!(out.ends_with(&item.to_string()), "{out}");
    }

    #[test]
    fn not_a_function() {
        let item = quote!(
            struct Bill;
        );
        let out = handler(TokenStream::new(), item.clone()).to_string();
        assert!(out.contains("#[handler] goes on an `async fn`"), "{out}");
        assert!(out.ends_with(&item.to_string()), "{out}");
    }

    #[test]
    fn valid_handler_expands() {
        let out = handler(
            quote!(),
            quote!(
                async fn bill(order: Order) {}
            ),
        )
        .to_string();
        assert!(out.contains("struct bill"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
        // rustmq-macros' Cargo.toml has `rustmq` under its own name.
        assert!(out.contains(":: rustmq :: __private :: Handler"), "{out}");
    }

    #[test]
    fn crate_override_reaches_every_path() {
        let out = handler(
            quote!(crate = "my_sdk::mq"),
            quote!(
                async fn bill(order: Order) {}
            ),
        )
        .to_string();
        assert!(!out.contains("rustmq"), "{out}");
        assert!(
            out.contains("my_sdk :: mq :: __private :: Handler"),
            "{out}"
        );
    }
}
