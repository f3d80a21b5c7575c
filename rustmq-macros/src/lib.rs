//! Procedural macros for RustMQ's typed layer: `#[derive(Topic)]` and `#[handler]`.
//!
//! Use them through `rustmq` (`rustmq::Topic`, `rustmq::handler`), never from this crate
//! directly: the generated code reaches the runtime through paths into the `rustmq` crate
//! (`<rustmq>::Topic`, `<rustmq>::__private::..`).
//!
//! ```
//! use rustmq::{handler, Topic};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, Topic)]
//! #[topic(name = "orders", key = "order_id", partitions = 3)]
//! struct OrderPlaced {
//!     order_id: String,
//!     amount_cents: u64,
//! }
//!
//! /// Bills each placed order.
//! #[handler(group = "billing")]
//! async fn bill(order: OrderPlaced) {
//!     println!("billing {} cents for {}", order.amount_cents, order.order_id);
//! }
//!
//! assert_eq!(<OrderPlaced as rustmq::Topic>::NAME, "orders");
//! # let _ = bill;
//! ```
//!
//! The generated paths start with what the calling crate calls `rustmq`, read from its
//! `Cargo.toml` (with `proc-macro-crate`): `::rustmq` normally, `::rustmq_client` for the
//! dependency renamed as code written for the seed SDK has it
//! (`rustmq-client = { package = "rustmq", .. }`).
//! A crate that reaches `rustmq` only through another crate's re-export names the path itself
//! with `crate = ".."` (as with serde's `#[serde(crate = "..")]`), an option of both
//! attributes:
//!
//! ```
//! mod my_sdk {
//!     pub use ::rustmq as mq; // an SDK re-exporting rustmq
//! }
//! use my_sdk::mq::{handler, Topic};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Topic)]
//! #[topic(name = "orders", crate = "my_sdk::mq")]
//! struct OrderPlaced {
//!     order_id: String,
//! }
//!
//! #[handler(crate = "my_sdk::mq")]
//! async fn bill(order: OrderPlaced) {
//!     let _ = order;
//! }
//! # let _ = bill;
//! ```
//!
//! Both macros follow serde_derive's pipeline: the input is parsed into an AST while a
//! `Ctxt` collects every mistake, cross-option rules are checked, and code is generated
//! only when there were none, so that one compile shows all attribute mistakes, each at the
//! user's token.

mod attr;
mod ctxt;
mod handler;
mod krate;
mod topic;

use proc_macro::TokenStream;

/// Implements `rustmq::Topic` for a struct or an enum, and makes it usable as a handler's
/// payload argument.
///
/// Options of `#[topic(..)]` (several `#[topic]` attributes are merged):
///
/// | option | value | default |
/// | --- | --- | --- |
/// | `name` | the topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..` (checked at compile time) | required |
/// | `key` | the key field: `key = "order_id"`, or `key = 0` for a tuple struct; on an enum, the field must be in every variant | no key |
/// | `codec` | `"json"`, `"bincode"`, `"postcard"`, or the path of a type implementing `rustmq::codec::Codec` (`codec = my::Cbor`) | `"json"` |
/// | `partitions` | partitions when the topic is created (1 to 10,000) | the broker's default |
/// | `dead_letter` | the dead-letter topic, checked like `name` | `"<name>.dlq"` |
/// | `crate` | the path of the `rustmq` crate, as a string: `crate = "my_sdk::rustmq"`, for a crate that gets `rustmq` through a re-export | what the crate's `Cargo.toml` calls `rustmq`: `::rustmq`, or `::rustmq_client` after `rustmq-client = { package = "rustmq", .. }` |
///
/// The key field's type must implement `rustmq::__private::TopicKey` (strings, integers,
/// byte vectors and arrays, `Bytes`, and references to these).
///
/// Generic types are rejected: a topic has one name and one payload type.
///
/// ```
/// use rustmq::Topic;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Topic)]
/// #[topic(name = "orders.events", key = "order_id", codec = "postcard")]
/// enum OrderEvent {
///     Placed { order_id: u64, amount_cents: u64 },
///     Cancelled { order_id: u64, reason: String },
/// }
///
/// let event = OrderEvent::Cancelled { order_id: 7, reason: "late".into() };
/// assert_eq!(event.key().as_deref(), Some(&b"7"[..])); // integers key by their decimal text
/// assert_eq!(OrderEvent::DEAD_LETTER, None); // "orders.events.dlq" at run time
/// ```
#[proc_macro_derive(Topic, attributes(topic))]
pub fn derive_topic(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    topic::derive(&input).into()
}

/// Turns an `async fn` into a named handler with its consumer settings.
///
/// `#[handler] async fn bill(order: OrderPlaced, meta: Metadata) -> R` keeps the function
/// (as `bill::handle`, callable directly in tests) and defines a unit struct `bill` that
/// implements `rustmq`'s `Handler`, so `.handler(bill)` reads as for a plain function. A plain
/// `async fn` is already a handler through a blanket impl; the attribute adds settings and
/// compile errors at the user's code (an argument that is no extractor, no payload or two
/// payloads, a return type that is no settlement).
///
/// Options: `group = "billing"` (the consumer group, non-empty), `concurrency = 4` (1 to
/// 1,024: each is a worker task made when the service starts), `start = "earliest" | "latest"` (where a group without committed offsets starts),
/// `crate = "my_sdk::rustmq"` (the path of the `rustmq` crate, for a crate that gets it
/// through a re-export; by default what the crate's `Cargo.toml` calls `rustmq`, as for
/// `#[derive(Topic)]`).
///
/// The function must be a free, non-generic `async fn` whose 1 to 8 arguments are written
/// `name: Type` (or `mut name: Type`), exactly one of them a type that derives `Topic`.
/// Doc comments and `#[deprecated]` go on the struct, `#[cfg]` on everything, lint levels
/// (`#[allow]`, `#[warn]`, `#[deny]`, `#[forbid]`) on both the struct and `handle`, other
/// attributes on `handle`. Arguments cannot carry `#[cfg]` or `#[cfg_attr]`.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::handler(args.into(), item.into()).into()
}
