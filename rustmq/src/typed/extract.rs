//! Extractors: what a handler's arguments can be (axum's `FromRequestParts`, for messages).

use crate::codec::{Codec, CodecError};
use crate::message::Message;

use super::delivery::{Attempt, Delivery, Headers, Metadata, State};
use super::producer::TypedProducer;
use super::settle::Settlement;
use super::topic::{Topic, TopicInfo};

/// Why an argument could not be extracted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The payload does not decode: a poison message, never retried.
    #[error("poison message: {0}")]
    Poison(#[from] CodecError),
    /// Something else failed (for example no client to make a producer with); retryable.
    #[error("{0}")]
    Failed(String),
}

impl Rejection {
    /// How a handler settles when an argument is rejected.
    pub fn into_result(self) -> Result<Settlement, crate::BoxError> {
        match self {
            Rejection::Poison(e) => Ok(Settlement::Poison(e.to_string())),
            Rejection::Failed(e) => Err(e.into()),
        }
    }
}

/// Classifies extractors; the payload extractor names the handler's topic.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "not an extractor",
    note = "handler arguments are the payload (a type that derives `Topic`), `Metadata`, `Headers`, `State<T>`, `Attempt` or `TypedProducer<T>`"
)]
pub trait ExtractorKind {
    /// Whether this is the payload (exactly one per handler).
    const IS_PAYLOAD: bool = false;
    /// The length of the payload's topic name (0 for the other extractors): `#[handler]`
    /// checks at compile time that a handler's default group, `"<topic>.<handler>"`, is not
    /// longer than brokers take.
    const PAYLOAD_TOPIC_LEN: usize = 0;
    /// The payload's topic.
    fn payload_topic() -> Option<TopicInfo> {
        None
    }
}

/// Builds a handler argument from a delivery and the service state.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "not an extractor",
    note = "handler arguments are the payload (a type that derives `Topic`), `Metadata`, `Headers`, `State<T>`, `Attempt` or `TypedProducer<T>`"
)]
pub trait FromDelivery<S>: ExtractorKind + Sized {
    /// Extracts the value.
    fn from_delivery(delivery: &Delivery, state: &S) -> Result<Self, Rejection>;
}

/// Decodes the payload of `delivery` as `T` (used by `#[derive(Topic)]`). A payload that does
/// not decode is poison; when the message names another codec in its `content-type` header
/// (as a typed stream processor writes it), the reason says so.
pub fn decode_payload<T: Topic>(delivery: &Delivery) -> Result<T, Rejection> {
    let message = delivery.message();
    match <T::Codec as Codec>::decode(&message.payload) {
        Ok(value) => Ok(value),
        Err(e) => Err(poison(e, message)),
    }
}

/// The rejection of `message`'s payload that did not decode. Out of line, so that what every
/// message pays for in [`decode_payload`] stays the decode alone.
#[cold]
#[inline(never)]
fn poison(mut e: CodecError, message: &Message) -> Rejection {
    if let Some(sent) = message.headers.get("content-type") {
        if sent != e.codec {
            e.message = format!("{} (the message's content-type is {sent:?})", e.message);
        }
    }
    Rejection::Poison(e)
}

impl ExtractorKind for Metadata {}
impl<S> FromDelivery<S> for Metadata {
    #[inline]
    fn from_delivery(d: &Delivery, _: &S) -> Result<Self, Rejection> {
        let m = d.message();
        Ok(Metadata {
            topic: m.topic.clone(),
            partition: m.partition,
            offset: m.offset,
            key: m.key.clone(),
            timestamp: m.timestamp,
            attempt: d.attempt(),
        })
    }
}

impl ExtractorKind for Headers {}
impl<S> FromDelivery<S> for Headers {
    fn from_delivery(d: &Delivery, _: &S) -> Result<Self, Rejection> {
        Ok(Headers(d.message().headers.clone()))
    }
}

impl ExtractorKind for Attempt {}
impl<S> FromDelivery<S> for Attempt {
    fn from_delivery(d: &Delivery, _: &S) -> Result<Self, Rejection> {
        Ok(Attempt(d.attempt()))
    }
}

impl<T> ExtractorKind for State<T> {}
impl<S: Clone> FromDelivery<S> for State<S> {
    fn from_delivery(_: &Delivery, state: &S) -> Result<Self, Rejection> {
        Ok(State(state.clone()))
    }
}

impl<T: Topic> ExtractorKind for TypedProducer<T> {}
impl<S, T: Topic> FromDelivery<S> for TypedProducer<T> {
    fn from_delivery(d: &Delivery, _: &S) -> Result<Self, Rejection> {
        let client = d.client().ok_or_else(|| {
            Rejection::Failed("no client in this delivery to produce with".into())
        })?;
        Ok(TypedProducer::shared(
            client.clone(),
            std::sync::Arc::clone(d.ctx()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Json;

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: String,
    }

    impl Topic for Order {
        const NAME: &'static str = "orders";
        type Codec = Json;
    }

    fn delivery(payload: &'static [u8], content_type: Option<&str>) -> Delivery {
        let mut builder = Message::builder().topic("orders").payload(payload);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        Delivery::new(builder.build().unwrap())
    }

    /// A payload that does not decode is poison; its reason names the codec the message says
    /// it was written with when that is another one.
    #[test]
    fn a_poison_reason_names_another_codec_of_the_messages_content_type() {
        let order: Order = decode_payload(&delivery(br#"{"id":"o-1"}"#, None)).unwrap();
        assert_eq!(order.id, "o-1");
        let reason =
            |content_type| match decode_payload::<Order>(&delivery(b"\x01\x02", content_type)) {
                Err(Rejection::Poison(e)) => e.to_string(),
                other => panic!("not poison: {other:?}"),
            };
        assert!(reason(Some("bincode")).contains("content-type is \"bincode\""));
        assert!(!reason(Some("json")).contains("content-type"));
        assert!(!reason(None).contains("content-type"));
    }
}
