//! The typed layer: topics as types, handlers as tower services.
//!
//! ```text
//!  T: Topic ──codec──► Message ──► Producer (batching, partitioning by T's key, ...)
//!
//!  Consumer ──► Delivery ──► layers (trace, timeout, retry, dead-letter, ..)
//!           ──► handler(extractors: T, Metadata, Headers, State, TypedProducer<U>)
//!           ──► Settlement ──► ack / nack / dead-letter
//! ```
//!
//! A payload that fails to decode is a poison message ([`Settlement::Poison`]): never retried,
//! handled by the service's [`PoisonPolicy`].

pub(crate) mod boxed;
pub(crate) mod delivery;
pub(crate) mod extract;
mod future;
pub(crate) mod handler;
pub mod layers;
pub(crate) mod producer;
pub(crate) mod service;
pub(crate) mod settle;
pub(crate) mod topic;

pub use boxed::BoxService;
pub use delivery::{Attempt, Delivery, Headers, Metadata, State};
pub use extract::{decode_payload, ExtractorKind, FromDelivery, Rejection};
pub use handler::{
    call_handler, Handler, HandlerArgs, HandlerFuture, HandlerOptions, HandlerService, StartFrom,
    MAX_CONCURRENCY,
};
pub use producer::TypedProducer;
pub use service::{HandlerLayer, PoisonPolicy, RunningService, Service};
pub use settle::{BoxError, IntoSettlement, Settlement};
pub use topic::{Topic, TopicInfo, TopicKey};
