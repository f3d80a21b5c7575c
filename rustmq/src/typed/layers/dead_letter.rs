//! Dead-lettering: what retries could not save goes to the dead-letter topic, with the failure
//! and the source position in headers, and is then acknowledged (committed).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::consumer::{
    DLQ_ATTEMPTS, DLQ_ERROR, DLQ_ORIGINAL_OFFSET, DLQ_ORIGINAL_PARTITION, DLQ_ORIGINAL_TOPIC,
};
use crate::message::{Message, MessageBuilder};
use crate::typed::delivery::Delivery;
use crate::typed::service::PoisonPolicy;
use crate::typed::settle::{BoxError, Settlement};

/// Header: original topic.
pub const DLQ_HEADER_TOPIC: &str = DLQ_ORIGINAL_TOPIC;
/// Header: original partition.
pub const DLQ_HEADER_PARTITION: &str = DLQ_ORIGINAL_PARTITION;
/// Header: original offset.
pub const DLQ_HEADER_OFFSET: &str = DLQ_ORIGINAL_OFFSET;
/// Header: delivery attempts made.
pub const DLQ_HEADER_ATTEMPTS: &str = DLQ_ATTEMPTS;
/// Header: the last error.
pub const DLQ_HEADER_ERROR: &str = DLQ_ERROR;
/// Header: `poison` (did not decode), `failed` (handler failures) or `rejected` (the handler
/// asked for it).
pub const DLQ_HEADER_KIND: &str = "rustmq.dlq.kind";

/// Publishes the delivery's message to `topic` (or the handler's dead-letter topic) with the
/// failure in headers; returns the topic used.
///
/// Boxed: this is the rare path, and its future (producer lookup and send) is some 2.5 KB,
/// which would otherwise be part of every delivery's future that may dead-letter (this layer's
/// and the runner's), allocated and moved for every message.
pub(crate) fn publish_dead_letter<'a>(
    delivery: &'a Delivery,
    topic: Option<&'static str>,
    kind: &'a str,
    error: &'a str,
) -> Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send + 'a>> {
    Box::pin(publish(delivery, topic, kind, error))
}

async fn publish(
    delivery: &Delivery,
    topic: Option<&'static str>,
    kind: &str,
    error: &str,
) -> Result<String, BoxError> {
    use crate::consumer::retry::{content_dropped_builder, dead_letter_builder, never_storable};
    let original = delivery.message();
    let dlq = topic.unwrap_or_else(|| delivery.dead_letter_topic());
    // The whole copy, or (too large for the broker) its headers alone.
    let copy = |make: fn(&str, &Message, u32, u64, u32, &str) -> MessageBuilder| {
        make(
            dlq,
            original,
            original.partition,
            original.offset,
            delivery.attempt(),
            error,
        )
        .header(DLQ_HEADER_KIND, kind)
        .timestamp(original.timestamp)
        .build()
    };
    let producer = delivery.dead_letter_producer(dlq).await?;
    match producer.send(copy(dead_letter_builder)?).await {
        Ok(_) => {}
        // As the consumer's dead letters do.
        Err(e) if never_storable(&e) => {
            tracing::warn!(topic = %original.topic, partition = original.partition, offset = original.offset, dead_letter = dlq, bytes = original.size(), "the message's copy is too large for the dead-letter topic: its key, payload and headers are left out");
            producer.send(copy(content_dropped_builder)?).await?;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::warn!(
        topic = %original.topic, partition = original.partition, offset = original.offset,
        dead_letter = dlq, kind, error, "message dead-lettered"
    );
    Ok(dlq.to_owned())
}

/// Sends failed deliveries to a dead-letter topic (default: the topic's, `"<topic>.dlq"`):
/// failures, retries given up on, messages the handler rejects, and poison messages unless
/// the service's [`PoisonPolicy`] says to skip them or to stop
/// ([`Service::on_poison`](crate::typed::Service::on_poison)). Dead letters are produced
/// with acks=all: on the broker's disk before the message is acknowledged and committed.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadLetterLayer {
    topic: Option<&'static str>,
}

impl DeadLetterLayer {
    /// Dead-letters into `topic` instead of the handler topic's dead-letter topic.
    pub fn topic(topic: &'static str) -> Self {
        Self { topic: Some(topic) }
    }
}

impl<S> tower::Layer<S> for DeadLetterLayer {
    type Service = DeadLetter<S>;

    fn layer(&self, inner: S) -> DeadLetter<S> {
        DeadLetter {
            inner,
            topic: self.topic,
        }
    }
}

/// The service of [`DeadLetterLayer`].
#[derive(Debug, Clone)]
pub struct DeadLetter<S> {
    inner: S,
    topic: Option<&'static str>,
}

impl<S> DeadLetter<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> tower::Service<Delivery> for DeadLetter<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
{
    type Response = Settlement;
    type Error = BoxError;
    type Future = DeadLetterFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, delivery: Delivery) -> Self::Future {
        DeadLetterFuture {
            inner: self.inner.call(delivery.clone()),
            delivery,
            topic: self.topic,
            publishing: None,
        }
    }
}

/// Publishing a dead letter (owning what it needs, as the future that holds it cannot lend it).
type Publishing = Pin<Box<dyn Future<Output = Result<Settlement, BoxError>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`DeadLetter`]: the inner service's, then the dead letter's publication
    /// when the settlement calls for one.
    pub struct DeadLetterFuture<F> {
        #[pin]
        inner: F,
        delivery: Delivery,
        topic: Option<&'static str>,
        publishing: Option<Publishing>,
    }
}

impl<F> std::fmt::Debug for DeadLetterFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterFuture")
            .field("topic", &self.topic)
            .field("publishing", &self.publishing.is_some())
            .finish()
    }
}

impl<F> Future for DeadLetterFuture<F>
where
    F: Future<Output = Result<Settlement, BoxError>>,
{
    type Output = Result<Settlement, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(publishing) = this.publishing.as_mut() {
            return publishing.as_mut().poll(cx);
        }
        let (kind, reason) = match std::task::ready!(this.inner.poll(cx)) {
            Ok(s @ (Settlement::Ack | Settlement::Skip | Settlement::DeadLettered { .. })) => {
                return Poll::Ready(Ok(s))
            }
            // A poison message is the service's poison policy's: dead-lettered here only
            // under the default policy (`Skip` or `Stop` asked for otherwise).
            Ok(Settlement::Poison(r)) if this.delivery.ctx().poison == PoisonPolicy::DeadLetter => {
                ("poison", r)
            }
            Ok(s @ Settlement::Poison(_)) => return Poll::Ready(Ok(s)),
            Ok(Settlement::DeadLetter(r)) => ("rejected", r),
            Ok(Settlement::Retry(r)) => ("failed", r),
            Err(e) => ("failed", e.to_string()),
        };
        let (delivery, topic) = (this.delivery.clone(), *this.topic);
        let publishing = this.publishing.insert(Box::pin(async move {
            let topic = publish_dead_letter(&delivery, topic, kind, &reason).await?;
            Ok(Settlement::DeadLettered { topic, reason })
        }));
        publishing.as_mut().poll(cx)
    }
}
