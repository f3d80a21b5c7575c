//! The checks on a `#[handler]` function's signature.
//!
//! A handler is a free `async fn` whose arguments are `name: Type` extractors. Everything the
//! generated `Handler` impl could not express is reported here, at the offending token, all at
//! once: the `impl` would otherwise fail with errors about generated code.

use proc_macro2::{Span, TokenStream};
use quote::{quote_spanned, ToTokens};
use syn::visit::Visit;
use syn::{FnArg, ReturnType, Signature, Type};

use crate::ctxt::Ctxt;

/// The most arguments the runtime's blanket `Handler` impls accept.
pub(crate) const MAX_ARGS: usize = 8;

/// The argument and return types of a valid handler signature.
#[derive(Debug)]
pub(crate) struct HandlerSig {
    /// Each argument's type, in order.
    pub(crate) args: Vec<Type>,
    /// The return type; `()` spanned at the function name when omitted.
    pub(crate) output: TokenStream,
}

impl HandlerSig {
    /// Checks `sig`, recording every problem in `cx`; `None` when `cx` has errors.
    pub(crate) fn check(cx: &Ctxt, sig: &Signature) -> Option<Self> {
        check_qualifiers(cx, sig);
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            cx.error_spanned_by(
                crate::attr::generics_tokens(&sig.generics),
                "#[handler] does not support generic parameters: a handler's argument types \
                 must be concrete (a plain generic `async fn`, instantiated as `f::<T>`, is \
                 still a handler through the blanket impl)",
            );
        }
        if let Some(variadic) = &sig.variadic {
            cx.error_spanned_by(variadic, "a #[handler] cannot be variadic");
        }
        if sig.inputs.is_empty() {
            cx.error_at(
                sig.paren_token.span.join(),
                "a #[handler] needs arguments: exactly one payload (a type that derives \
                 `Topic`) and any other extractors",
            );
        }
        let mut args = Vec::new();
        for (index, input) in sig.inputs.iter().enumerate() {
            if index == MAX_ARGS {
                cx.error_spanned_by(
                    input,
                    format!("a #[handler] takes at most {MAX_ARGS} arguments"),
                );
            }
            match input {
                FnArg::Receiver(receiver) => cx.error_spanned_by(
                    receiver,
                    "a #[handler] is a free function and cannot take `self`; \
                     share data with a `State<T>` argument instead",
                ),
                FnArg::Typed(typed) => {
                    // `#[cfg]` would take the argument out of `handle` but not out of the
                    // handler's argument tuple, and rustc would then report the generated
                    // code; other attributes (`#[allow]`, say) are harmless.
                    for attr in &typed.attrs {
                        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
                            cx.error_spanned_by(
                                attr,
                                "`#[cfg]` and `#[cfg_attr]` are not supported on a #[handler]'s \
                                 arguments: put the `#[cfg]` on the whole handler, or write one \
                                 handler for each configuration",
                            );
                        }
                    }
                    check_type(cx, &typed.ty, "argument");
                    check_binding(cx, &typed.pat, &sig.ident);
                    args.push((*typed.ty).clone());
                }
            }
        }
        let output = match &sig.output {
            ReturnType::Default => quote_spanned!(sig.ident.span()=> ()),
            ReturnType::Type(_, ty) => {
                check_type(cx, ty, "return type");
                ty.to_token_stream()
            }
        };
        // Generation only happens without errors anywhere, so any error ends here.
        (!cx.has_errors()).then_some(HandlerSig { args, output })
    }
}

fn check_qualifiers(cx: &Ctxt, sig: &Signature) {
    if let Some(constness) = &sig.constness {
        cx.error_spanned_by(constness, "a #[handler] cannot be a `const fn`");
    }
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            "#[handler] needs an `async fn`: write `async fn`",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.error_spanned_by(unsafety, "a #[handler] cannot be an `unsafe fn`");
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(abi, "a #[handler] cannot have an `extern` ABI");
    }
}

/// An argument bound to the handler's own name (at any depth of its pattern, as in
/// `State(config): State<Config>` of a handler `config`) would be read as a pattern of the
/// unit struct `#[handler]` makes under that name, and fail with a type mismatch that does
/// not say why. (A `let` of that name in the body, or elsewhere in the module, fails the same
/// way; the macro does not see those.)
fn check_binding(cx: &Ctxt, pat: &syn::Pat, handler: &syn::Ident) {
    struct Bindings<'a> {
        cx: &'a Ctxt,
        handler: &'a syn::Ident,
    }
    impl<'ast> Visit<'ast> for Bindings<'_> {
        fn visit_pat_ident(&mut self, binding: &'ast syn::PatIdent) {
            if binding.ident == *self.handler {
                let handler = self.handler;
                self.cx.error_spanned_by(
                    &binding.ident,
                    format!(
                        "an argument cannot be named `{handler}` like its #[handler]: the \
                         macro makes a unit struct of that name, which the argument would \
                         match as a pattern; rename the argument or the function"
                    ),
                );
            }
            syn::visit::visit_pat_ident(self, binding);
        }
    }
    Bindings { cx, handler }.visit_pat(pat);
}

fn check_type(cx: &Ctxt, ty: &Type, what: &str) {
    let mut finder = ImplTraitFinder(Vec::new());
    finder.visit_type(ty);
    for span in finder.0 {
        cx.error_at(
            span,
            format!("`impl Trait` is not supported in a #[handler]'s {what}: name the type"),
        );
    }
    if let (Type::Reference(reference), "argument") = (ty, what) {
        cx.error_spanned_by(
            reference.and_token,
            "a #[handler] argument is an owned extractor: take it by value, not by reference",
        );
    }
}

/// Collects the `impl` tokens of `impl Trait` types.
struct ImplTraitFinder(Vec<Span>);

impl<'ast> Visit<'ast> for ImplTraitFinder {
    fn visit_type_impl_trait(&mut self, node: &'ast syn::TypeImplTrait) {
        self.0.push(node.impl_token.span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn check(sig: Signature) -> Result<HandlerSig, Vec<String>> {
        let cx = Ctxt::new();
        let checked = HandlerSig::check(&cx, &sig);
        match cx.check() {
            Ok(()) => Ok(checked.expect("no errors, so a signature")),
            Err(e) => Err(e.into_iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn patterns_are_kept_as_written() {
        // `handle` keeps the signature, so axum-style destructuring works.
        let sig = check(parse_quote!(async fn page(alert: Alert, State(out): State<Out>))).unwrap();
        assert_eq!(sig.args.len(), 2);
    }

    #[test]
    fn valid_signatures() {
        let sig = check(parse_quote!(
            async fn bill(order: Order, mut meta: Metadata, _: Headers) -> Result<(), E>
        ))
        .unwrap();
        assert_eq!(sig.args.len(), 3);
        assert_eq!(sig.output.to_string(), "Result < () , E >");
        let sig = check(parse_quote!(async fn log(order: Order))).unwrap();
        assert_eq!(sig.output.to_string(), "()");
    }

    #[test]
    fn every_mistake_at_once() {
        let errors = check(parse_quote!(
            const unsafe extern "C" fn bad<T>(&self, (a, b): (A, B), c: impl Extract, d: &Meta)
                -> impl Settle
        ))
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "a #[handler] cannot be a `const fn`",
                "#[handler] needs an `async fn`: write `async fn`",
                "a #[handler] cannot be an `unsafe fn`",
                "a #[handler] cannot have an `extern` ABI",
                "#[handler] does not support generic parameters: a handler's argument types \
                 must be concrete (a plain generic `async fn`, instantiated as `f::<T>`, is \
                 still a handler through the blanket impl)",
                "a #[handler] is a free function and cannot take `self`; \
                 share data with a `State<T>` argument instead",
                "`impl Trait` is not supported in a #[handler]'s argument: name the type",
                "a #[handler] argument is an owned extractor: take it by value, not by reference",
                "`impl Trait` is not supported in a #[handler]'s return type: name the type",
            ]
        );
    }

    #[test]
    fn no_arguments() {
        assert_eq!(
            check(parse_quote!(async fn empty())).unwrap_err(),
            [
                "a #[handler] needs arguments: exactly one payload (a type that derives \
              `Topic`) and any other extractors"
            ]
        );
    }

    #[test]
    fn too_many_arguments() {
        let errors = check(parse_quote!(
            async fn many(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H, i: I)
        ))
        .unwrap_err();
        assert_eq!(errors, ["a #[handler] takes at most 8 arguments"]);
    }

    #[test]
    fn nested_impl_trait() {
        let errors = check(parse_quote!(async fn f(a: A, b: Vec<impl Into<u8>>))).unwrap_err();
        assert_eq!(errors.len(), 1);
    }
}
