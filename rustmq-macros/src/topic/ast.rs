//! `#[derive(Topic)]`'s input, parsed and checked.
//!
//! [`Topic::from_ast`] reads every `#[topic(..)]` attribute into typed options, then checks the
//! rules that involve more than one option or the shape of the type (a key field that exists,
//! a dead-letter topic other than the topic). Mistakes go to the [`Ctxt`]; the caller turns
//! them into compile errors.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Expr, Fields, Ident, Lit, LitStr, Member, Type};

use super::name;
use crate::attr::{self, NameValue};
use crate::ctxt::Ctxt;
use crate::krate::{Krate, CRATE};

/// The attribute's name.
pub(crate) const TOPIC: &str = "topic";
/// `name = "orders"`: the topic name (required).
pub(crate) const NAME: &str = "name";
/// `key = "order_id"` / `key = 0`: the field that keys (partitions) each message.
pub(crate) const KEY: &str = "key";
/// `codec = "json" | "bincode" | "postcard" | path::To::Codec`.
pub(crate) const CODEC: &str = "codec";
/// `partitions = 3`: partitions when the topic is created.
pub(crate) const PARTITIONS: &str = "partitions";
/// `dead_letter = "orders.dlq"`: the dead-letter topic.
pub(crate) const DEAD_LETTER: &str = "dead_letter";

const OPTIONS: &[&str] = &[NAME, KEY, CODEC, PARTITIONS, DEAD_LETTER, CRATE];
const BUILTIN_CODECS: &[&str] = &["json", "bincode", "postcard"];

/// A type deriving `Topic`, as the code generator needs it.
pub(crate) struct Topic<'a> {
    /// The type's name.
    pub(crate) ident: &'a Ident,
    /// `NAME`.
    pub(crate) name: LitStr,
    /// The path of the `rustmq` crate (`crate = ".."`, else what `Cargo.toml` calls it).
    pub(crate) krate: Krate,
    /// The `Codec` type: a path to one of rustmq's codecs or to the user's.
    pub(crate) codec: TokenStream,
    /// `PARTITIONS`, when given.
    pub(crate) partitions: Option<u32>,
    /// `DEAD_LETTER`, when given.
    pub(crate) dead_letter: Option<LitStr>,
    /// How to reach the key, when there is one.
    pub(crate) key: Option<Key<'a>>,
}

/// Where the key field is.
pub(crate) enum Key<'a> {
    /// In a struct.
    Struct(KeyField<'a>),
    /// In every variant of an enum, in variant order.
    Enum(Vec<(&'a Ident, KeyField<'a>)>),
}

/// One key field: how to name it and its type (the span of key-conversion errors).
pub(crate) struct KeyField<'a> {
    /// `order_id` or `0`.
    pub(crate) member: Member,
    /// The field's declared type.
    pub(crate) ty: &'a Type,
}

/// `codec = ...` as written: a built-in codec becomes a path only once the crate's path is
/// known (a `crate = ".."` may follow it).
enum CodecSpec {
    /// `"json"`, `"bincode"` or `"postcard"`: the type's name in `rustmq::codec`.
    Builtin(&'static str),
    /// The path of the user's codec type.
    Custom(TokenStream),
}

/// `key = ...` as written.
enum KeySpec {
    Named(LitStr),
    Index(u32, syn::LitInt),
}

/// The options as written, before checks against the type's shape.
#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    key: Option<KeySpec>,
    codec: Option<CodecSpec>,
    partitions: Option<u32>,
    dead_letter: Option<LitStr>,
    krate: Option<Krate>,
    /// A `#[topic]` attribute could not be read at all (its syntax error is recorded).
    unreadable: bool,
    /// At least one `#[topic]` attribute was present.
    present: bool,
    /// `name = ..` was written, valid or not.
    name_given: bool,
}

impl<'a> Topic<'a> {
    /// Parses and checks `input`; `None` means errors were recorded in `cx`.
    pub(crate) fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Option<Self> {
        reject_generics(cx, input);
        reject_misplaced_attrs(cx, input);
        let options = read_options(cx, input);
        if !options.present {
            cx.error_spanned_by(
                &input.ident,
                format!(
                    "#[derive(Topic)] needs a #[topic(name = \"...\")] attribute \
                     naming the topic of `{}`",
                    input.ident
                ),
            );
        } else if !options.name_given && !options.unreadable {
            cx.error_spanned_by(
                &input.ident,
                "missing topic name: add `name = \"...\"` to #[topic(..)]",
            );
        }
        match (&options.name, &options.dead_letter) {
            (Some(name), Some(dead_letter)) if name.value() == dead_letter.value() => {
                cx.error_spanned_by(dead_letter, "`dead_letter` must differ from the topic name");
            }
            // The default dead-letter topic, `<name>.dlq`, must be a valid name too: else every
            // poison message would fail to be dead-lettered and come back for ever.
            (Some(name), None) if name.value().len() + ".dlq".len() > super::name::MAX_LEN => {
                cx.error_spanned_by(
                    name,
                    format!(
                        "the default dead-letter topic `<name>.dlq` would be {} characters \
                         long, over the {} a topic name may have: shorten `name` or set \
                         `dead_letter`",
                        name.value().len() + ".dlq".len(),
                        super::name::MAX_LEN
                    ),
                );
            }
            _ => {}
        }
        let key = match &options.key {
            Some(spec) => resolve_key(cx, input, spec),
            None => {
                if let Data::Union(data) = &input.data {
                    union_error(cx, data);
                }
                None
            }
        };
        if cx.has_errors() {
            return None;
        }
        let name = options.name?;
        let krate = Krate::or_resolve(options.krate);
        let codec = match options.codec.unwrap_or(CodecSpec::Builtin("Json")) {
            CodecSpec::Builtin(ty) => {
                let ty = Ident::new(ty, proc_macro2::Span::call_site());
                quote!(#krate::codec::#ty)
            }
            CodecSpec::Custom(path) => path,
        };
        Some(Topic {
            ident: &input.ident,
            name,
            krate,
            codec,
            partitions: options.partitions,
            dead_letter: options.dead_letter,
            key,
        })
    }
}

fn reject_generics(cx: &Ctxt, input: &DeriveInput) {
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        cx.error_spanned_by(
            attr::generics_tokens(&input.generics),
            "#[derive(Topic)] does not support generic types: a topic has one name and one \
             payload type; derive it on a concrete type",
        );
    }
}

/// `#[topic]` belongs on the type; on a field or a variant it would be silently ignored.
fn reject_misplaced_attrs(cx: &Ctxt, input: &DeriveInput) {
    let fields: Vec<&syn::Field> = match &input.data {
        Data::Struct(data) => data.fields.iter().collect(),
        Data::Enum(data) => {
            for variant in &data.variants {
                misplaced(cx, &variant.attrs, "variant");
            }
            data.variants.iter().flat_map(|v| &v.fields).collect()
        }
        Data::Union(data) => data.fields.named.iter().collect(),
    };
    for field in fields {
        misplaced(cx, &field.attrs, "field");
    }
}

fn misplaced(cx: &Ctxt, attrs: &[syn::Attribute], on: &str) {
    for attr in attrs.iter().filter(|a| a.path().is_ident(TOPIC)) {
        cx.error_spanned_by(
            attr,
            format!("#[topic(..)] goes on the type, not on a {on}"),
        );
    }
}

/// Most partitions a broker gives a topic (`rustmq_protocol::MAX_PARTITIONS`).
const MAX_PARTITIONS: u32 = 10_000;

fn read_options(cx: &Ctxt, input: &DeriveInput) -> Options {
    let mut options = Options::default();
    let mut seen: Vec<NameValue> = Vec::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident(TOPIC)) {
        options.present = true;
        let args = match &attr.meta {
            syn::Meta::List(list) => list.tokens.clone(),
            other => {
                cx.error_spanned_by(
                    other,
                    "expected options in parentheses: #[topic(name = \"...\")]",
                );
                options.unreadable = true;
                continue;
            }
        };
        let Some(parsed) = attr::parse_options(cx, TOPIC, OPTIONS, args) else {
            options.unreadable = true;
            continue;
        };
        for option in parsed {
            // Several #[topic] attributes are merged; a repeat across them is a duplicate too.
            if seen.iter().any(|s| s.name == option.name) {
                cx.error_spanned_by(
                    &option.name,
                    format!("duplicate topic option `{}`", option.name),
                );
                continue;
            }
            read_option(cx, &option, &mut options);
            seen.push(option);
        }
    }
    options
}

fn read_option(cx: &Ctxt, option: &NameValue, options: &mut Options) {
    if option.is(NAME) {
        options.name_given = true;
        options.name = topic_name(cx, option, "\"orders\"");
    } else if option.is(DEAD_LETTER) {
        options.dead_letter = topic_name(cx, option, "\"orders.dlq\"");
    } else if option.is(PARTITIONS) {
        options.partitions = attr::lit_int_at_least(cx, option, 1u32).and_then(|(n, int)| {
            if n > MAX_PARTITIONS {
                cx.error_spanned_by(
                    int,
                    format!("`partitions` must be at most {MAX_PARTITIONS}, as brokers take"),
                );
                return None;
            }
            Some(n)
        });
    } else if option.is(CODEC) {
        options.codec = codec(cx, option);
    } else if option.is(KEY) {
        options.key = key_spec(cx, option);
    } else if option.is(CRATE) {
        options.krate = Krate::from_option(cx, option);
    }
}

fn topic_name(cx: &Ctxt, option: &NameValue, example: &str) -> Option<LitStr> {
    let lit = attr::lit_str(cx, option, example)?;
    match name::check(&option.name.to_string(), &lit.value()) {
        Ok(()) => Some(lit),
        Err(message) => {
            cx.error_spanned_by(&lit, message);
            None
        }
    }
}

fn codec(cx: &Ctxt, option: &NameValue) -> Option<CodecSpec> {
    match &option.value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => match s.value().as_str() {
            "json" => Some(CodecSpec::Builtin("Json")),
            "bincode" => Some(CodecSpec::Builtin("Bincode")),
            "postcard" => Some(CodecSpec::Builtin("Postcard")),
            other => {
                cx.error_spanned_by(
                    s,
                    format!(
                        "unknown codec {other:?}: use \"json\", \"bincode\" or \"postcard\", \
                         or the path of a type implementing `rustmq::codec::Codec`"
                    ),
                );
                None
            }
        },
        Expr::Path(path) if path.attrs.is_empty() => {
            let ty = syn::TypePath {
                qself: path.qself.clone(),
                path: path.path.clone(),
            };
            Some(CodecSpec::Custom(quote!(#ty)))
        }
        other => {
            cx.error_spanned_by(
                other,
                format!(
                    "expected a codec: one of {} (a string) or a type path, \
                     e.g. `codec = my::Codec`",
                    BUILTIN_CODECS.join(", ")
                ),
            );
            None
        }
    }
}

fn key_spec(cx: &Ctxt, option: &NameValue) -> Option<KeySpec> {
    match &option.value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(KeySpec::Named(s.clone())),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(_), ..
        }) => attr::lit_int_at_least(cx, option, 0u32).map(|(n, lit)| KeySpec::Index(n, lit)),
        other => {
            cx.error_spanned_by(
                other,
                "expected the key field: `key = \"field\"`, or `key = 0` for a tuple struct",
            );
            None
        }
    }
}

fn union_error(cx: &Ctxt, data: &syn::DataUnion) {
    cx.error_spanned_by(
        data.union_token,
        "#[derive(Topic)] is not supported on unions: use a struct or an enum",
    );
}

/// Finds the key field in the type, reporting at the `key` value when it is not there.
fn resolve_key<'a>(cx: &Ctxt, input: &'a DeriveInput, spec: &KeySpec) -> Option<Key<'a>> {
    match &input.data {
        Data::Struct(data) => {
            if let Fields::Unit = data.fields {
                cx.error_spanned_by(
                    spec_tokens(spec),
                    format!(
                        "`{}` is a unit struct: it has no field to key on",
                        input.ident
                    ),
                );
                return None;
            }
            let field = find_field(&data.fields, spec);
            if field.is_none() {
                cx.error_spanned_by(
                    spec_tokens(spec),
                    missing_field(&format!("`{}`", input.ident), &data.fields, spec),
                );
            }
            field.map(Key::Struct)
        }
        Data::Enum(data) => {
            let mut fields = Vec::new();
            for variant in &data.variants {
                match find_field(&variant.fields, spec) {
                    Some(field) => fields.push((&variant.ident, field)),
                    None => cx.error_spanned_by(
                        &variant.ident,
                        format!(
                            "{}; the key field must be in every variant",
                            missing_field(
                                &format!("variant `{}`", variant.ident),
                                &variant.fields,
                                spec
                            )
                        ),
                    ),
                }
            }
            Some(Key::Enum(fields))
        }
        Data::Union(data) => {
            union_error(cx, data);
            None
        }
    }
}

fn spec_tokens(spec: &KeySpec) -> TokenStream {
    match spec {
        KeySpec::Named(s) => quote!(#s),
        KeySpec::Index(_, lit) => quote!(#lit),
    }
}

fn find_field<'a>(fields: &'a Fields, spec: &KeySpec) -> Option<KeyField<'a>> {
    match (fields, spec) {
        (Fields::Named(named), KeySpec::Named(wanted)) => named
            .named
            .iter()
            .find(|f| f.ident.as_ref().is_some_and(|i| unraw(i) == wanted.value()))
            .map(|f| KeyField {
                member: Member::Named(f.ident.clone().expect("named field")),
                ty: &f.ty,
            }),
        (Fields::Unnamed(unnamed), KeySpec::Index(index, lit)) => unnamed
            .unnamed
            .iter()
            .nth(*index as usize)
            .map(|f| KeyField {
                member: Member::Unnamed(syn::Index {
                    index: *index,
                    span: lit.span(),
                }),
                ty: &f.ty,
            }),
        _ => None,
    }
}

/// Why `spec` names no field of `fields` (in `owner`), with the closest name when one is close.
fn missing_field(owner: &str, fields: &Fields, spec: &KeySpec) -> String {
    match (fields, spec) {
        (Fields::Named(named), KeySpec::Named(wanted)) => {
            let names: Vec<String> = named
                .named
                .iter()
                .filter_map(|f| f.ident.as_ref())
                .map(unraw)
                .collect();
            let mut message = format!("{owner} has no field `{}`", wanted.value());
            if let Some(close) = attr::closest(&wanted.value(), names.iter().map(String::as_str)) {
                message += &format!("; did you mean `{close}`?");
            }
            message
        }
        (Fields::Named(_), KeySpec::Index(..)) => {
            format!("{owner} has named fields: use `key = \"field_name\"`")
        }
        (Fields::Unnamed(unnamed), KeySpec::Index(index, _)) => format!(
            "{owner} has no field {index} (it has {} field{})",
            unnamed.unnamed.len(),
            if unnamed.unnamed.len() == 1 { "" } else { "s" }
        ),
        (Fields::Unnamed(_), KeySpec::Named(_)) => {
            format!("{owner} has unnamed fields: use `key = 0` (the field's index)")
        }
        (Fields::Unit, _) => format!("{owner} has no fields"),
    }
}

fn unraw(ident: &Ident) -> String {
    ident.unraw().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn errors(input: &DeriveInput) -> Vec<String> {
        let cx = Ctxt::new();
        let parsed = Topic::from_ast(&cx, input).is_some();
        match cx.check() {
            Ok(()) => {
                assert!(parsed);
                Vec::new()
            }
            Err(e) => {
                assert!(!parsed);
                e.into_iter().map(|e| e.to_string()).collect()
            }
        }
    }

    fn parse(input: &DeriveInput) -> Topic<'_> {
        let cx = Ctxt::new();
        let topic = Topic::from_ast(&cx, input);
        cx.check().unwrap();
        topic.unwrap()
    }

    #[test]
    fn full_struct() {
        let input: DeriveInput = parse_quote! {
            #[topic(name = "orders", key = "order_id", codec = "bincode")]
            #[topic(partitions = 3, dead_letter = "orders.failed")]
            struct OrderPlaced { order_id: String, amount: u64 }
        };
        let topic = parse(&input);
        assert_eq!(topic.name.value(), "orders");
        assert_eq!(
            topic.codec.to_string(),
            quote!(::rustmq::codec::Bincode).to_string()
        );
        assert_eq!(topic.partitions, Some(3));
        assert_eq!(topic.dead_letter.unwrap().value(), "orders.failed");
        let Some(Key::Struct(field)) = topic.key else {
            panic!("struct key")
        };
        assert_eq!(field.member, parse_quote!(order_id));
    }

    #[test]
    fn defaults() {
        let input: DeriveInput = parse_quote! {
            #[topic(name = "pings")]
            struct Ping;
        };
        let topic = parse(&input);
        assert_eq!(
            topic.codec.to_string(),
            quote!(::rustmq::codec::Json).to_string()
        );
        assert!(topic.key.is_none() && topic.partitions.is_none() && topic.dead_letter.is_none());
    }

    #[test]
    fn tuple_key_raw_key_and_codec_path() {
        let input: DeriveInput = parse_quote! {
            #[topic(name = "ids", key = 1, codec = crate::codecs::Cbor)]
            struct Id(u8, String);
        };
        let topic = parse(&input);
        assert_eq!(
            topic.codec.to_string(),
            quote!(crate::codecs::Cbor).to_string()
        );
        let Some(Key::Struct(field)) = topic.key else {
            panic!("struct key")
        };
        assert_eq!(field.member, parse_quote!(1));

        let input: DeriveInput = parse_quote! {
            #[topic(name = "kw", key = "type")]
            struct Kw { r#type: String }
        };
        assert!(parse(&input).key.is_some());
    }

    #[test]
    fn enum_key_in_every_variant() {
        let input: DeriveInput = parse_quote! {
            #[topic(name = "orders", key = "id")]
            enum OrderEvent { Placed { id: u64, amount: u64 }, Cancelled { reason: String, id: u64 } }
        };
        let Some(Key::Enum(variants)) = parse(&input).key else {
            panic!("enum key")
        };
        let names: Vec<String> = variants.iter().map(|(v, _)| v.to_string()).collect();
        assert_eq!(names, ["Placed", "Cancelled"]);

        let input: DeriveInput = parse_quote! {
            #[topic(name = "orders", key = "id")]
            enum OrderEvent { Placed { id: u64 }, Cancelled { reason: String }, Ping, Raw(u64) }
        };
        assert_eq!(
            errors(&input),
            [
                "variant `Cancelled` has no field `id`; the key field must be in every variant",
                "variant `Ping` has no fields; the key field must be in every variant",
                "variant `Raw` has unnamed fields: use `key = 0` (the field's index); \
                 the key field must be in every variant",
            ]
        );
    }

    #[test]
    fn every_attribute_mistake_at_once() {
        let input: DeriveInput = parse_quote! {
            #[topic(nmae = "orders", key = "ordr_id", codec = "xml", partitions = 0)]
            #[topic(key = "x", dead_letter = "bad name")]
            struct OrderPlaced { order_id: String }
        };
        assert_eq!(
            errors(&input),
            [
                "unknown topic option `nmae`; did you mean `name`? \
                 (known options: name, key, codec, partitions, dead_letter, crate)",
                "unknown codec \"xml\": use \"json\", \"bincode\" or \"postcard\", \
                 or the path of a type implementing `rustmq::codec::Codec`",
                "`partitions` must be at least 1",
                "duplicate topic option `key`",
                "invalid character ' ' in `dead_letter`: topic names use only ASCII letters, \
                 digits, `.`, `_` and `-`",
                "missing topic name: add `name = \"...\"` to #[topic(..)]",
                "`OrderPlaced` has no field `ordr_id`; did you mean `order_id`?",
            ]
        );
    }

    #[test]
    fn shape_mistakes() {
        let missing: DeriveInput = parse_quote!(
            struct Plain {
                a: u8,
            }
        );
        assert_eq!(
            errors(&missing),
            ["#[derive(Topic)] needs a #[topic(name = \"...\")] attribute naming the topic of `Plain`"]
        );
        let unit: DeriveInput = parse_quote!(
            #[topic(name = "p", key = "a")]
            struct Ping;
        );
        assert_eq!(
            errors(&unit),
            ["`Ping` is a unit struct: it has no field to key on"]
        );
        let union: DeriveInput = parse_quote!(#[topic(name = "u")] union U { a: u8 });
        assert_eq!(
            errors(&union),
            ["#[derive(Topic)] is not supported on unions: use a struct or an enum"]
        );
        let generic: DeriveInput = parse_quote!(
            #[topic(name = "g")]
            struct G<T> {
                t: T,
            }
        );
        assert_eq!(errors(&generic).len(), 1);
        let tuple: DeriveInput = parse_quote!(
            #[topic(name = "t", key = 2)]
            struct T(u8, u8);
        );
        assert_eq!(errors(&tuple), ["`T` has no field 2 (it has 2 fields)"]);
        let misplaced: DeriveInput = parse_quote!(
            #[topic(name = "m")]
            struct M {
                #[topic(key = "a")]
                a: u8,
            }
        );
        assert_eq!(
            errors(&misplaced),
            ["#[topic(..)] goes on the type, not on a field"]
        );
    }

    #[test]
    fn unreadable_attribute_does_not_add_missing_name() {
        let input: DeriveInput = parse_quote!(
            #[topic = "orders"]
            struct A;
        );
        assert_eq!(
            errors(&input),
            ["expected options in parentheses: #[topic(name = \"...\")]"]
        );
    }

    #[test]
    fn crate_path() {
        let default: DeriveInput = parse_quote!(
            #[topic(name = "a", codec = "postcard")]
            struct A;
        );
        // rustmq-macros' Cargo.toml has `rustmq` under its own name.
        let topic = parse(&default);
        let krate = &topic.krate;
        assert_eq!(quote!(#krate).to_string(), ":: rustmq");

        // Given after the codec, in another attribute: the built-in codec follows it.
        let given: DeriveInput = parse_quote!(
            #[topic(name = "a", codec = "postcard")]
            #[topic(crate = "my_sdk::rustmq")]
            struct A;
        );
        let topic = parse(&given);
        let krate = &topic.krate;
        assert_eq!(quote!(#krate).to_string(), "my_sdk :: rustmq");
        assert_eq!(
            topic.codec.to_string(),
            quote!(my_sdk::rustmq::codec::Postcard).to_string()
        );
        let json: DeriveInput = parse_quote!(
            #[topic(name = "a", crate = "::rustmq_client")]
            struct A;
        );
        assert_eq!(
            parse(&json).codec.to_string(),
            quote!(::rustmq_client::codec::Json).to_string()
        );

        let bad: DeriveInput = parse_quote!(
            #[topic(name = "a", crate = "my sdk", crate = "x")]
            struct A;
        );
        assert_eq!(
            errors(&bad),
            [
                "duplicate topic option `crate`",
                "`crate` must be the path of the rustmq crate, e.g. \
                 `crate = \"my_sdk::rustmq\"`; \"my sdk\" is not a path: unexpected token",
            ]
        );
    }

    #[test]
    fn dead_letter_must_differ() {
        let input: DeriveInput = parse_quote!(
            #[topic(name = "a", dead_letter = "a")]
            struct A;
        );
        assert_eq!(
            errors(&input),
            ["`dead_letter` must differ from the topic name"]
        );
    }
}
