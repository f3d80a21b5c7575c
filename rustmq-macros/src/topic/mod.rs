//! `#[derive(Topic)]`: parse ([`ast`]), check, generate ([`expand`]).

mod ast;
mod expand;
mod name;

use proc_macro2::TokenStream;
use syn::DeriveInput;

use crate::ctxt::Ctxt;

/// Expands the derive; on errors, only the errors (a derive cannot re-emit its item).
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let topic = ast::Topic::from_ast(&cx, input);
    match cx.check() {
        // `from_ast` returns `None` only after recording an error.
        Ok(()) => topic.map(|t| expand::expand(&t)).unwrap_or_default(),
        Err(errors) => errors.to_compile_error(),
    }
}
