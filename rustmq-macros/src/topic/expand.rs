//! Code generation for `#[derive(Topic)]`.
//!
//! Three impls inside one `const _: () = { ... };`: `rustmq::Topic` itself, and the two
//! extractor traits that make the type usable as a handler's payload argument. The extractor
//! impls live here rather than as blanket impls in rustmq because `impl<T: Topic>
//! FromDelivery<S> for T` would conflict with every other extractor impl.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::ast::{Key, KeyField, Topic};
use crate::krate::Krate;

/// The generated items, reaching `rustmq` through `topic.krate`.
pub(crate) fn expand(topic: &Topic<'_>) -> TokenStream {
    let krate = &topic.krate;
    let ident = topic.ident;
    let name = &topic.name;
    let name_len = topic.name.value().len();
    let codec = &topic.codec;
    let partitions = topic.partitions.map(|n| {
        quote! {
            const PARTITIONS: ::core::option::Option<::core::primitive::u32> =
                ::core::option::Option::Some(#n);
        }
    });
    let dead_letter = topic.dead_letter.as_ref().map(|dlq| {
        quote! {
            const DEAD_LETTER: ::core::option::Option<&'static ::core::primitive::str> =
                ::core::option::Option::Some(#dlq);
        }
    });
    let key = topic.key.as_ref().map(|key| {
        let body = key_body(key, krate);
        quote! {
            #[inline]
            fn key(&self) -> ::core::option::Option<#krate::__private::Bytes> {
                #body
            }
        }
    });
    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl #krate::Topic for #ident {
                const NAME: &'static ::core::primitive::str = #name;
                type Codec = #codec;
                #partitions
                #dead_letter
                #key
            }

            #[automatically_derived]
            impl<__S> #krate::__private::FromDelivery<__S> for #ident
            where
                __S: ::core::marker::Send + ::core::marker::Sync + 'static,
            {
                #[inline]
                fn from_delivery(
                    __delivery: &#krate::__private::Delivery,
                    __state: &__S,
                ) -> ::core::result::Result<Self, #krate::__private::Rejection> {
                    #krate::__private::decode_payload::<Self>(__delivery)
                }
            }

            #[automatically_derived]
            impl #krate::__private::ExtractorKind for #ident {
                const IS_PAYLOAD: ::core::primitive::bool = true;
                // The name's length as written (not through `Topic`, which a type missing
                // its serde derives does not get: that error is reported once, there).
                const PAYLOAD_TOPIC_LEN: ::core::primitive::usize = #name_len;
                #[inline]
                fn payload_topic() -> ::core::option::Option<#krate::__private::TopicInfo> {
                    ::core::option::Option::Some(#krate::__private::TopicInfo::of::<Self>())
                }
            }
        };
    }
}

/// The key conversion, spanned at the key field's type so that a type without `TopicKey`
/// is reported at the user's field. `self` and `__key` keep the macro's span: with a user span
/// they would not resolve when the type is declared inside a `macro_rules!`.
fn key_body(key: &Key<'_>, krate: &Krate) -> TokenStream {
    match key {
        Key::Struct(field) => {
            let member = &field.member;
            convert(field, quote!(&self.#member), krate)
        }
        Key::Enum(variants) => {
            let arms = variants.iter().map(|(variant, field)| {
                let member = &field.member;
                let call = convert(field, quote!(__key), krate);
                quote!(Self::#variant { #member: ref __key, .. } => #call,)
            });
            quote!(match *self { #(#arms)* })
        }
    }
}

fn convert(field: &KeyField<'_>, value: TokenStream, krate: &Krate) -> TokenStream {
    let ty = field.ty;
    quote_spanned! {ty.span()=>
        <#ty as #krate::__private::TopicKey>::message_key(#value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::Ctxt;
    use syn::{parse_quote, DeriveInput};

    fn expand_str(input: DeriveInput) -> String {
        let cx = Ctxt::new();
        let topic = Topic::from_ast(&cx, &input).expect("valid input");
        cx.check().unwrap();
        expand(&topic).to_string()
    }

    #[test]
    fn only_given_options_are_emitted() {
        let out = expand_str(parse_quote!(
            #[topic(name = "pings")]
            struct Ping;
        ));
        assert!(out.contains("const NAME"));
        assert!(out.contains("type Codec = :: rustmq :: codec :: Json"));
        assert!(!out.contains("PARTITIONS") && !out.contains("DEAD_LETTER"));
        assert!(!out.contains("fn key"));
    }

    #[test]
    fn options_and_struct_key() {
        let out = expand_str(parse_quote! {
            #[topic(name = "orders", key = "id", partitions = 4, dead_letter = "orders.bad")]
            struct Order { id: String }
        });
        assert!(out.contains("Some (4u32)"), "{out}");
        assert!(out.contains("Some (\"orders.bad\")"), "{out}");
        assert!(
            out.contains(
                "< String as :: rustmq :: __private :: TopicKey > :: message_key (& self . id)"
            ),
            "{out}"
        );
    }

    #[test]
    fn crate_override_reaches_every_path() {
        let out = expand_str(parse_quote! {
            #[topic(name = "orders", key = "id", crate = "crate::sdk::mq")]
            enum Event { A { id: u64 } }
        });
        assert!(!out.contains("rustmq"), "{out}");
        for path in [
            "impl crate :: sdk :: mq :: Topic for Event",
            "type Codec = crate :: sdk :: mq :: codec :: Json",
            "-> :: core :: option :: Option < crate :: sdk :: mq :: __private :: Bytes >",
            "< u64 as crate :: sdk :: mq :: __private :: TopicKey > :: message_key (__key)",
            "impl < __S > crate :: sdk :: mq :: __private :: FromDelivery < __S > for Event",
            "crate :: sdk :: mq :: __private :: decode_payload :: < Self > (__delivery)",
            "impl crate :: sdk :: mq :: __private :: ExtractorKind for Event",
        ] {
            assert!(out.contains(path), "{path} not in {out}");
        }
    }

    #[test]
    fn enum_key_is_a_match() {
        let out = expand_str(parse_quote! {
            #[topic(name = "orders", key = "id")]
            enum Event { A { id: u64 }, B { x: u8, id: u64 } }
        });
        assert!(out.contains("match * self"), "{out}");
        assert!(out.contains("Self :: A { id : ref __key , .. }"), "{out}");
        assert!(out.contains("Self :: B { id : ref __key , .. }"), "{out}");
    }

    #[test]
    fn tuple_key_uses_the_index() {
        let out = expand_str(parse_quote!(
            #[topic(name = "ids", key = 0)]
            struct Id(String);
        ));
        assert!(out.contains("message_key (& self . 0)"), "{out}");
    }

    #[test]
    fn no_bare_prelude_names() {
        let out = expand_str(parse_quote! {
            #[topic(name = "orders", key = "id", partitions = 1, dead_letter = "d")]
            enum Event { A { id: u64 } }
        });
        for bare in [
            " Option ", " Some ", " Result ", " Ok ", " Err ", " u32 ", " str ",
        ] {
            for (i, _) in out.match_indices(bare) {
                assert_eq!(&out[i - 2..i], "::", "bare `{bare}` in {out}");
            }
        }
    }
}
