//! Code generation for `#[handler]`.
//!
//! `async fn bill(..)` becomes a unit struct `bill` (so `.handler(bill)` still reads the same)
//! whose `Handler` impl calls the original function, kept as `bill::handle`, through the
//! runtime's blanket impl. Checks in the same `const _` block, spanned at the user's tokens,
//! report a mistake once and there: an argument that is no extractor, no payload or two, a
//! return type that is no settlement, a future that is not `Send`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, ItemFn};

use super::options::{Options, MAX_GROUP_LEN};
use super::signature::HandlerSig;
use crate::krate::Krate;

/// Where the function's attributes go.
struct FnAttrs<'a> {
    /// `#[cfg]`: on every generated item.
    cfg: Vec<&'a Attribute>,
    /// Docs and `#[deprecated]`: on the struct, which is what users name.
    on_struct: Vec<&'a Attribute>,
    /// Everything else (`#[inline]`, `#[tracing::instrument]`, ...): on `handle`, the function.
    on_handle: Vec<&'a Attribute>,
}

fn split_attrs(attrs: &[Attribute]) -> FnAttrs<'_> {
    let mut split = FnAttrs {
        cfg: Vec::new(),
        on_struct: Vec::new(),
        on_handle: Vec::new(),
    };
    for attr in attrs {
        let path = attr.path();
        if path.is_ident("cfg") {
            split.cfg.push(attr);
        } else if path.is_ident("doc") || path.is_ident("deprecated") {
            split.on_struct.push(attr);
        } else if ["allow", "warn", "deny", "forbid"]
            .iter()
            .any(|l| path.is_ident(l))
        {
            // Lint levels hold for both; `expect` would be unfulfilled on one of them.
            split.on_struct.push(attr);
            split.on_handle.push(attr);
        } else {
            split.on_handle.push(attr);
        }
    }
    split
}

/// The generated items for a checked handler.
/// `krate` is the path of the `rustmq` crate, prefixed to every path into it.
pub(crate) fn expand(
    item: &ItemFn,
    sig: &HandlerSig,
    options: &Options,
    krate: &Krate,
) -> TokenStream {
    let ident = &item.sig.ident;
    let vis = &item.vis;
    let block = &item.block;
    let attrs = split_attrs(&item.attrs);
    let (cfg, on_struct, on_handle) = (&attrs.cfg, &attrs.on_struct, &attrs.on_handle);
    let mut handle_sig = item.sig.clone();
    handle_sig.ident = format_ident!("handle", span = ident.span());

    // `r#type` is the handler "type".
    let name = ident.unraw().to_string();
    let setters = options.setters();
    let args = &sig.args;
    let output = &sig.output;
    // `for<'__r>` keeps the bounds from being "trivial" (global): rustc reports a false
    // trivial bound at the impl, in a second error next to the checks below.
    let extractor_bounds = args
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> for<'__r> #ty: #krate::__private::FromDelivery<__S>,));
    let settlement_bound = quote_spanned!(output.span()=>
        for<'__r> #output: #krate::__private::IntoSettlement,
    );
    let payload_check = payload_check(&name, ident.span(), sig, krate);
    let group_check = match options.group {
        Some(_) => TokenStream::new(),
        None => default_group_check(&name, ident.span(), sig, krate),
    };
    let settlement_check = settlement_check(output, krate);
    let send_check = send_check(ident, args);

    quote! {
        #(#cfg)*
        #(#on_struct)*
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #ident;

        #(#cfg)*
        #[allow(deprecated)]
        const _: () = {
            impl #ident {
                /// The handler function itself, callable directly (e.g. in unit tests).
                #(#on_handle)*
                #vis #handle_sig #block
            }

            #[automatically_derived]
            impl<__S> #krate::__private::Handler<(#(#args,)*), __S> for #ident
            where
                __S: ::core::clone::Clone
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static,
                #(#extractor_bounds)*
                #settlement_bound
            {
                fn call(
                    &self,
                    __delivery: #krate::__private::Delivery,
                    __state: __S,
                ) -> #krate::__private::HandlerFuture {
                    #krate::__private::call_handler(#ident::handle, __delivery, __state)
                }

                fn options(&self) -> #krate::__private::HandlerOptions {
                    #krate::__private::HandlerOptions::new(#name) #setters
                }
            }

            #payload_check
            #group_check
            #settlement_check
            #send_check
        };
    }
}

/// A const assertion that exactly one argument is a payload. Each argument's `ExtractorKind`
/// is read at its own span: a type that is no extractor at all fails there, and a second
/// payload panics the const evaluation at the second payload's type.
///
/// Only items (`__PAYLOADS`), no local variables, are named from user-spanned tokens: local
/// variables are hygienic when the handler is written inside a `macro_rules!`.
fn payload_check(
    name: &str,
    fn_span: proc_macro2::Span,
    sig: &HandlerSig,
    krate: &Krate,
) -> TokenStream {
    let missing = format!(
        "#[handler] `{name}` has no payload argument: one argument must be a type that \
         derives `Topic`"
    );
    let extra = format!(
        "#[handler] `{name}` has more than one payload argument: only one argument may be a \
         type that derives `Topic`"
    );
    let count = sig.args.len();
    let kinds = sig.args.iter().map(
        |ty| quote_spanned!(ty.span()=> <#ty as #krate::__private::ExtractorKind>::IS_PAYLOAD),
    );
    let extra_checks = sig.args.iter().enumerate().skip(1).map(|(i, ty)| {
        let before = (0..i).map(|j| quote!(__PAYLOADS[#j]));
        quote_spanned! {ty.span()=>
            ::core::assert!(!__PAYLOADS[#i] || !(#(#before)||*), #extra);
        }
    });
    let all = (0..count).map(|j| quote!(__PAYLOADS[#j]));
    let missing_check = quote_spanned!(fn_span=> ::core::assert!(#(#all)||*, #missing););
    quote! {
        const _: () = {
            const __PAYLOADS: [::core::primitive::bool; #count] = [#(#kinds),*];
            #(#extra_checks)*
            #missing_check
        };
    }
}

/// Without `group`, a const assertion that the default group, `"<topic>.<name>"`, is not
/// longer than brokers take (the topic's name is the payload's, known to the compiler only):
/// else the service would refuse the handler when it starts. Spanned at the function's name.
fn default_group_check(
    name: &str,
    fn_span: proc_macro2::Span,
    sig: &HandlerSig,
    krate: &Krate,
) -> TokenStream {
    let len = name.len() + 1;
    let message = format!(
        "#[handler] `{name}`: its default group, \"<topic>.{name}\", is longer than the \
         {MAX_GROUP_LEN} bytes brokers take; name one with `#[handler(group = \"...\")]`"
    );
    let lens = sig
        .args
        .iter()
        .map(|ty| quote!(<#ty as #krate::__private::ExtractorKind>::PAYLOAD_TOPIC_LEN));
    let check = quote_spanned! {fn_span=>
        ::core::assert!(
            #(#lens +)* #len <= #krate::__private::MAX_GROUP_NAME_LEN,
            #message
        );
    };
    quote!(const _: () = { #check };)
}

/// A future that is not `Send` (a `!Send` value held across an `.await`) fails the runtime's
/// blanket `Handler` impl with an error about the whole function; this check, never called,
/// gets rustc's own "future cannot be sent between threads safely" at the function's name,
/// which shows the value and the `.await`.
fn send_check(ident: &syn::Ident, args: &[syn::Type]) -> TokenStream {
    let names: Vec<syn::Ident> = (0..args.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let call = quote_spanned!(ident.span()=> __assert_send(#ident::handle(#(#names),*)));
    quote! {
        #[allow(dead_code, clippy::too_many_arguments)]
        fn __handler_future_is_send(#(#names: #args),*) {
            fn __assert_send<F: ::core::marker::Send>(_: F) {}
            #call;
        }
    }
}

/// A return type that is no settlement, reported at the return type.
fn settlement_check(output: &TokenStream, krate: &Krate) -> TokenStream {
    let check = quote_spanned! {output.span()=>
        let _ = <#output as #krate::__private::IntoSettlement>::into_settlement;
    };
    quote!(const _: () = { #check };)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::Ctxt;
    use syn::parse_quote;

    fn expand_str(item: ItemFn, options: TokenStream) -> String {
        let cx = Ctxt::new();
        let options = Options::parse(&cx, options);
        let sig = HandlerSig::check(&cx, &item.sig);
        cx.check().unwrap();
        let krate = Krate::or_resolve(None);
        expand(&item, &sig.unwrap(), &options, &krate).to_string()
    }

    #[test]
    fn shape() {
        let out = expand_str(
            parse_quote! {
                /// Bills an order.
                #[inline]
                pub async fn bill(order: OrderPlaced, meta: Metadata) -> Result<(), E> { Ok(()) }
            },
            quote!(group = "billing", concurrency = 4, start = "earliest"),
        );
        let expected_struct = quote! {
            #[doc = r" Bills an order."]
            #[allow(non_camel_case_types)]
            #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
            pub struct bill;
        };
        assert!(out.starts_with(&expected_struct.to_string()), "{out}");
        assert!(out.contains("# [inline] pub async fn handle (order : OrderPlaced , meta : Metadata) -> Result < () , E >"), "{out}");
        assert!(
            out.contains("Handler < (OrderPlaced , Metadata ,) , __S > for bill"),
            "{out}"
        );
        assert!(
            out.contains("OrderPlaced : :: rustmq :: __private :: FromDelivery < __S > ,"),
            "{out}"
        );
        assert!(
            out.contains("Result < () , E > : :: rustmq :: __private :: IntoSettlement ,"),
            "{out}"
        );
        assert!(
            out.contains("call_handler (bill :: handle , __delivery , __state)"),
            "{out}"
        );
        assert!(
            out.contains("HandlerOptions :: new (\"bill\") . group (\"billing\") . concurrency (4usize) . start_earliest ()"),
            "{out}"
        );
        assert!(
            out.contains("< Metadata as :: rustmq :: __private :: ExtractorKind > :: IS_PAYLOAD"),
            "{out}"
        );
    }

    #[test]
    fn checks() {
        let out = expand_str(
            parse_quote!(
                async fn f(a: A, b: B, c: C) -> R {}
            ),
            TokenStream::new(),
        );
        let expected = [
            // (rustfmt would add a trailing comma to an array in `quote!`.)
            quote! {
                const __PAYLOADS: [::core::primitive::bool; 3usize] = [
                    <A as ::rustmq::__private::ExtractorKind>::IS_PAYLOAD,
                    <B as ::rustmq::__private::ExtractorKind>::IS_PAYLOAD,
                    <C as ::rustmq::__private::ExtractorKind>::IS_PAYLOAD
                ];
            },
            quote!(::core::assert!(
                !__PAYLOADS[1usize] || !(__PAYLOADS[0usize]),
            )),
            quote!(::core::assert!(
                !__PAYLOADS[2usize] || !(__PAYLOADS[0usize] || __PAYLOADS[1usize]),
            )),
            quote!(::core::assert!(
                __PAYLOADS[0usize] || __PAYLOADS[1usize] || __PAYLOADS[2usize],
            )),
            quote!(let _ = <R as ::rustmq::__private::IntoSettlement>::into_settlement;),
            quote!(fn __handler_future_is_send(__arg0: A, __arg1: B, __arg2: C)),
            quote!(__assert_send(f::handle(__arg0, __arg1, __arg2));),
        ];
        for part in expected {
            // The assertions are written without their message: drop the closing parenthesis.
            let part = part.to_string();
            let part = part.trim_end_matches(')').trim_end();
            assert!(out.contains(part), "{part} not in {out}");
        }
    }

    #[test]
    fn unit_return_and_raw_name() {
        let out = expand_str(
            parse_quote!(
                async fn r#type(order: Order) {}
            ),
            TokenStream::new(),
        );
        assert!(
            out.contains("() : :: rustmq :: __private :: IntoSettlement"),
            "{out}"
        );
        assert!(out.contains("HandlerOptions :: new (\"type\")"), "{out}");
        assert!(out.contains("struct r#type ;"), "{out}");
    }

    #[test]
    fn attributes_are_split() {
        let item: ItemFn = parse_quote! {
            #[cfg(feature = "billing")]
            #[doc = "docs"]
            #[allow(clippy::too_many_arguments)]
            #[deprecated]
            #[tracing::instrument]
            async fn bill(order: Order) {}
        };
        let attrs = split_attrs(&item.attrs);
        let paths = |attrs: &[&Attribute]| -> Vec<String> {
            attrs.iter().map(|a| quote!(#a).to_string()).collect()
        };
        assert_eq!(paths(&attrs.cfg), ["# [cfg (feature = \"billing\")]"]);
        assert_eq!(
            paths(&attrs.on_struct),
            [
                "# [doc = \"docs\"]",
                "# [allow (clippy :: too_many_arguments)]",
                "# [deprecated]"
            ]
        );
        assert_eq!(
            paths(&attrs.on_handle),
            [
                "# [allow (clippy :: too_many_arguments)]",
                "# [tracing :: instrument]"
            ]
        );
    }
}
