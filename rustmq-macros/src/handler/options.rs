//! `#[handler(group = "billing", concurrency = 4, start = "earliest", crate = "my::rustmq")]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::LitStr;

use crate::attr::{self, NameValue};
use crate::ctxt::Ctxt;
use crate::krate::{Krate, CRATE};

/// `group = "billing"`: the consumer group (non-empty).
pub(crate) const GROUP: &str = "group";
/// `concurrency = 4`: messages handled at once (1 to [`MAX_CONCURRENCY`]).
pub(crate) const CONCURRENCY: &str = "concurrency";
/// The most workers a handler may have (`rustmq::typed::MAX_CONCURRENCY`): each is a task
/// with a queue of its own, made when the service starts.
pub(crate) const MAX_CONCURRENCY: usize = 1024;
/// `start = "earliest" | "latest"`: where a group without committed offsets starts.
pub(crate) const START: &str = "start";

const OPTIONS: &[&str] = &[GROUP, CONCURRENCY, START, CRATE];
/// The longest consumer group name the broker takes (`rustmq_protocol::MAX_GROUP_NAME_LEN`).
pub(crate) const MAX_GROUP_LEN: usize = 120;

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// `start = "earliest"`.
    Earliest,
    /// `start = "latest"`.
    Latest,
}

/// The options of one `#[handler(..)]`, each `None` when not given.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// `group`.
    pub(crate) group: Option<LitStr>,
    /// `concurrency`.
    pub(crate) concurrency: Option<usize>,
    /// `start`.
    pub(crate) start: Option<Start>,
    /// `crate`: the path of the `rustmq` crate, when given.
    pub(crate) krate: Option<Krate>,
}

impl Options {
    /// Parses the attribute's arguments, recording every mistake in `cx`.
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> Self {
        let mut options = Options::default();
        for option in attr::parse_options(cx, "handler", OPTIONS, args).unwrap_or_default() {
            options.read(cx, &option);
        }
        options
    }

    fn read(&mut self, cx: &Ctxt, option: &NameValue) {
        if option.is(GROUP) {
            self.group = attr::lit_str(cx, option, "\"billing\"").filter(|group| {
                let len = group.value().len();
                if len == 0 {
                    cx.error_spanned_by(group, "`group` must not be empty");
                } else if len > MAX_GROUP_LEN {
                    cx.error_spanned_by(
                        group,
                        format!(
                            "`group` is {len} bytes long; the broker takes group names of at \
                             most {MAX_GROUP_LEN}"
                        ),
                    );
                }
                (1..=MAX_GROUP_LEN).contains(&len)
            });
        } else if option.is(CONCURRENCY) {
            self.concurrency = attr::lit_int_at_least(cx, option, 1usize).and_then(|(n, int)| {
                if n > MAX_CONCURRENCY {
                    cx.error_spanned_by(
                        int,
                        format!(
                            "`concurrency` must be at most {MAX_CONCURRENCY}: each is a \
                                 worker task made when the service starts"
                        ),
                    );
                    return None;
                }
                Some(n)
            });
        } else if option.is(START) {
            let lit = attr::lit_str(cx, option, "\"earliest\"");
            self.start = lit.and_then(|lit| match lit.value().as_str() {
                "earliest" => Some(Start::Earliest),
                "latest" => Some(Start::Latest),
                other => {
                    cx.error_spanned_by(
                        &lit,
                        format!("unknown start {other:?}: use \"earliest\" or \"latest\""),
                    );
                    None
                }
            });
        } else if option.is(CRATE) {
            self.krate = Krate::from_option(cx, option);
        }
    }

    /// The chained setters after `HandlerOptions::new(name)`.
    pub(crate) fn setters(&self) -> TokenStream {
        let group = self.group.as_ref().map(|g| quote!(.group(#g)));
        let concurrency = self.concurrency.map(|n| quote!(.concurrency(#n)));
        let start = self.start.map(|start| match start {
            Start::Earliest => quote!(.start_earliest()),
            Start::Latest => quote!(.start_latest()),
        });
        quote!(#group #concurrency #start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: TokenStream) -> Result<Options, Vec<String>> {
        let cx = Ctxt::new();
        let options = Options::parse(&cx, args);
        match cx.check() {
            Ok(()) => Ok(options),
            Err(e) => Err(e.into_iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn all_options() {
        let options = parse(quote!(
            group = "billing",
            concurrency = 4,
            start = "earliest"
        ))
        .unwrap();
        assert_eq!(options.group.as_ref().unwrap().value(), "billing");
        assert_eq!(options.concurrency, Some(4));
        assert_eq!(options.start, Some(Start::Earliest));
        assert_eq!(
            options.setters().to_string(),
            quote!(.group("billing").concurrency(4usize).start_earliest()).to_string()
        );
        assert_eq!(
            parse(quote!(start = "latest")).unwrap().start,
            Some(Start::Latest)
        );
        let krate = parse(quote!(crate = "my_sdk::rustmq", group = "g"))
            .unwrap()
            .krate
            .unwrap();
        assert_eq!(quote!(#krate).to_string(), "my_sdk :: rustmq");
    }

    #[test]
    fn none_given() {
        let options = parse(TokenStream::new()).unwrap();
        assert!(
            options.group.is_none()
                && options.concurrency.is_none()
                && options.start.is_none()
                && options.krate.is_none()
        );
        assert!(options.setters().is_empty());
    }

    #[test]
    fn every_mistake_at_once() {
        let errors = parse(quote!(
            grop = "a",
            group = "",
            concurrency = 0,
            start = "beginning",
            start = "latest",
            crate = "not a path!",
            krate = "x"
        ))
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "unknown handler option `grop`; did you mean `group`? \
                 (known options: group, concurrency, start, crate)",
                "duplicate handler option `start`",
                "unknown handler option `krate`; did you mean `crate`? \
                 (known options: group, concurrency, start, crate)",
                "`group` must not be empty",
                "`concurrency` must be at least 1",
                "unknown start \"beginning\": use \"earliest\" or \"latest\"",
                "`crate` must be the path of the rustmq crate, e.g. \
                 `crate = \"my_sdk::rustmq\"`; \"not a path!\" is not a path: unexpected token",
            ]
        );
    }

    #[test]
    fn concurrency_is_bounded() {
        assert_eq!(
            parse(quote!(concurrency = 1024)).unwrap().concurrency,
            Some(1024)
        );
        assert_eq!(
            parse(quote!(concurrency = 1025)).unwrap_err(),
            [
                "`concurrency` must be at most 1024: each is a worker task made when the service \
              starts"
            ]
        );
    }

    #[test]
    fn wrong_value_kinds() {
        let errors = parse(quote!(group = billing, concurrency = "4")).unwrap_err();
        assert_eq!(
            errors,
            [
                "expected a string literal for `group`, e.g. `group = \"billing\"`",
                "expected an integer literal for `concurrency`, e.g. `concurrency = 1`",
            ]
        );
    }
}
