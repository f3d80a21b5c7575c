//! A delivery: one received message on its way through a handler's service stack.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::consumer::ConsumerMessage;
use crate::message::{Message, TopicName};
use crate::producer::Producer;
use crate::RustMqClient;

use super::service::PoisonPolicy;

/// What the runtime shares with every delivery of one handler.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// The handler's topic.
    pub(crate) topic: TopicName,
    pub(crate) client: Option<RustMqClient>,
    pub(crate) handler: &'static str,
    pub(crate) group: String,
    pub(crate) dead_letter: String,
    pub(crate) producers: Mutex<HashMap<String, Producer>>,
    /// The service's poison policy, which a dead-letter layer follows too.
    pub(crate) poison: PoisonPolicy,
    /// Made for deliveries outside any service ([`Delivery::new`]).
    pub(crate) detached: bool,
}

/// One received message with its delivery attempt, as handed to a handler's service.
///
/// Cheap to clone (retry layers resend it): the message is shared, and so is the attempt
/// counter, so that layers outside a retry layer see how many attempts were made.
///
/// A delivery made by a running [`Service`](super::Service) holds the consumer's message
/// until its last clone is dropped. It is settled when the handler's service is done, whoever
/// still holds a clone; a message that is never settled (abandoned at shutdown) is left
/// unsettled and delivered again after a restart. Layers should not keep clones beyond the
/// call: a kept clone keeps the message's memory.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message, its attempt counter and the handler's context, in one allocation that a
    /// runner reuses for its next message once no clone is left ([`Delivery::recycle`]).
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    source: Source,
    attempt: AtomicU32,
    ctx: Arc<Context>,
}

/// Where a delivery's message came from. A received message stays inside its
/// `ConsumerMessage` (settled through it once the service is done) instead of being cloned out
/// of it for every delivery.
#[derive(Debug)]
enum Source {
    Detached(Message),
    Received(ConsumerMessage),
    /// Emptied by [`Delivery::into_spare`]: only ever inside a [`Spare`], never a `Delivery`.
    Vacant,
}

/// A finished delivery's allocation, its message dropped, kept for the next message.
#[derive(Debug)]
pub(crate) struct Spare(Arc<Shared>);

impl Spare {
    /// A delivery of `source` in this allocation; `ctx` replaces the context it holds, if
    /// given. (The message is still copied twice on its way in: the source is assembled aside,
    /// before the allocation is checked, and then moved in.)
    #[inline(always)]
    fn refill(self, source: Source, attempt: u32, ctx: Option<Arc<Context>>) -> Delivery {
        let mut shared = self.0;
        let place = Arc::get_mut(&mut shared).expect("a spare is never shared");
        if let Some(ctx) = ctx {
            place.ctx = ctx;
        }
        *place.attempt.get_mut() = attempt;
        // Replaced rather than assigned: the vacant source has nothing to drop, and assigning
        // would call its drop glue anyway.
        debug_assert!(matches!(place.source, Source::Vacant));
        std::mem::forget(std::mem::replace(&mut place.source, source));
        Delivery { shared }
    }
}

thread_local! {
    /// The context of deliveries made outside a service: empty but for the topic, shared (as
    /// a handler's is) by the deliveries of one topic in a row.
    static DETACHED: std::cell::RefCell<Option<Arc<Context>>> = const {
        std::cell::RefCell::new(None)
    };
}

/// The context of a delivery of `message` outside any service.
fn detached_context(message: &Message) -> Arc<Context> {
    DETACHED.with_borrow_mut(|last| match last {
        Some(ctx) if ctx.topic == message.topic => Arc::clone(ctx),
        _ => Arc::clone(last.insert(Arc::new(Context {
            topic: message.topic.clone(),
            detached: true,
            ..Context::default()
        }))),
    })
}

impl Delivery {
    /// A delivery of `message` outside any service (benchmarks, unit tests of handlers).
    /// Extractors that need a broker (producers) fail on it.
    pub fn new(message: Message) -> Self {
        let ctx = detached_context(&message);
        Delivery::make(Source::Detached(message), 1, ctx)
    }

    /// A delivery of `message` outside any service, as [`Delivery::new`], made in this
    /// delivery's allocation when no clone of it is left (else in a new one): what a service's
    /// runner does from one message to the next, without an allocation per message. This
    /// delivery's message is dropped.
    pub fn recycle(self, message: Message) -> Self {
        let Some(spare) = self.into_spare() else {
            return Delivery::new(message);
        };
        // The spare's context is kept only if it is a detached one of the same topic: a
        // service's context (group, handler, client) must not follow the message.
        let kept = spare.0.ctx.detached && spare.0.ctx.topic == message.topic;
        let ctx = (!kept).then(|| detached_context(&message));
        spare.refill(Source::Detached(message), 1, ctx)
    }

    /// A delivery of a message a handler's consumer received, in `spare` if there is one; it
    /// is settled through [`Delivery::received`] once the service is done with it.
    pub(crate) fn receiving(
        spare: Option<Spare>,
        message: ConsumerMessage,
        ctx: &Arc<Context>,
    ) -> Self {
        let attempt = message.delivery_attempt();
        match spare {
            Some(spare) => {
                let ctx = (!Arc::ptr_eq(&spare.0.ctx, ctx)).then(|| Arc::clone(ctx));
                spare.refill(Source::Received(message), attempt, ctx)
            }
            None => Delivery::make(Source::Received(message), attempt, Arc::clone(ctx)),
        }
    }

    /// A delivery in a new allocation.
    fn make(source: Source, attempt: u32, ctx: Arc<Context>) -> Self {
        Delivery {
            shared: Arc::new(Shared {
                source,
                attempt: AtomicU32::new(attempt),
                ctx,
            }),
        }
    }

    /// Drops this delivery's message and keeps its allocation for another, when this is its
    /// last clone.
    pub(crate) fn into_spare(mut self) -> Option<Spare> {
        let shared = Arc::get_mut(&mut self.shared)?;
        shared.source = Source::Vacant;
        Some(Spare(self.shared))
    }

    /// The handler's context.
    #[inline]
    pub(crate) fn ctx(&self) -> &Arc<Context> {
        &self.shared.ctx
    }

    /// The received message.
    #[inline]
    pub fn message(&self) -> &Message {
        match &self.shared.source {
            Source::Detached(message) => message,
            Source::Received(received) => &received.message,
            Source::Vacant => unreachable!("a vacant delivery is only ever a spare"),
        }
    }

    /// The consumer's message this delivery settles; `None` outside a service.
    #[inline]
    pub(crate) fn received(&self) -> Option<&ConsumerMessage> {
        match &self.shared.source {
            Source::Detached(_) | Source::Vacant => None,
            Source::Received(received) => Some(received),
        }
    }

    /// 1 for the first delivery, then 2, 3, ... as retries happen.
    #[inline]
    pub fn attempt(&self) -> u32 {
        self.shared.attempt.load(Ordering::Acquire)
    }

    /// Counts one more attempt of the same message and returns it: for retry layers of one's
    /// own (`RetryLayer` counts through the same counter).
    pub fn next_attempt(&self) -> Self {
        self.count_attempt();
        self.clone()
    }

    /// Counts one more attempt of the same message and returns its number.
    pub(crate) fn count_attempt(&self) -> u32 {
        self.shared.attempt.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The consumer group this delivery was received in (empty outside a service).
    #[inline]
    pub fn group(&self) -> &str {
        &self.shared.ctx.group
    }

    /// The handler's name (empty outside a service).
    #[inline]
    pub fn handler_name(&self) -> &'static str {
        self.shared.ctx.handler
    }

    /// The dead-letter topic of the handler's topic.
    #[inline]
    pub fn dead_letter_topic(&self) -> &str {
        &self.shared.ctx.dead_letter
    }

    /// The client of the service, if any.
    #[inline]
    pub fn client(&self) -> Option<&RustMqClient> {
        self.shared.ctx.client.as_ref()
    }

    /// An untyped producer for `topic`, shared by the handler's deliveries.
    pub async fn producer_for(&self, topic: &str) -> crate::Result<Producer> {
        self.shared.ctx.producer(topic, None).await
    }

    /// The producer of the dead-letter topic `topic`: as [`producer_for`](Self::producer_for),
    /// but started with [`dead_letter_config`](crate::consumer::retry::dead_letter_config)
    /// (acks=all) when this is its first use.
    pub(crate) async fn dead_letter_producer(&self, topic: &str) -> crate::Result<Producer> {
        let config = self
            .client()
            .map(crate::consumer::retry::dead_letter_config);
        self.shared.ctx.producer_with(topic, None, config).await
    }
}

impl Context {
    /// Waits until what the handler's deliveries sent so far is answered (stored, or failed
    /// for good): before each commit of the handler's consumer, so that an input is never
    /// committed while an output its handling sent with `send_async` may still fail.
    pub(crate) async fn flush_producers(&self) {
        let producers: Vec<Producer> = self.producers.lock().values().cloned().collect();
        for producer in producers {
            if let Err(e) = producer.flush().await {
                tracing::warn!(handler = self.handler, topic = producer.topic(), error = %e, "flushing a handler's producer before a commit failed");
            }
        }
    }

    /// Closes the producers the handler's deliveries started (typed producers it was given,
    /// dead-letter publication), once they sent what they hold: at a shutdown, before the
    /// messages whose handling sent it are committed. The first error is returned.
    pub(crate) async fn close_producers(&self) -> crate::Result<()> {
        let producers: Vec<Producer> = self.producers.lock().drain().map(|(_, p)| p).collect();
        let mut closed = Ok(());
        for producer in producers {
            let result = producer.close().await;
            if closed.is_ok() {
                closed = result;
            }
        }
        closed
    }

    /// The handler's producer for `topic`, started (and the topic created with `partitions`,
    /// when given) on first use.
    pub(crate) async fn producer(
        &self,
        topic: &str,
        partitions: Option<u32>,
    ) -> crate::Result<Producer> {
        self.producer_with(topic, partitions, None).await
    }

    /// [`producer`](Self::producer), started with `config` if this is its first use (without,
    /// as a producer built without settings: the client's compression, the defaults).
    pub(crate) async fn producer_with(
        &self,
        topic: &str,
        partitions: Option<u32>,
        config: Option<crate::producer::ProducerConfig>,
    ) -> crate::Result<Producer> {
        if let Some(p) = self.producers.lock().get(topic) {
            return Ok(p.clone());
        }
        let client = self.client.as_ref().ok_or_else(|| {
            crate::ClientError::InvalidConfig("this delivery has no client to produce with".into())
        })?;
        super::producer::ensure_topic_named(client, topic, partitions).await?;
        let builder = crate::producer::ProducerBuilder::new()
            .topic(topic)
            .client(client.clone());
        let producer = match config {
            Some(config) => builder.config(config),
            None => builder,
        }
        .build()
        .await?;
        Ok(self
            .producers
            .lock()
            .entry(topic.to_owned())
            .or_insert(producer)
            .clone())
    }
}

/// Where a message came from: an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Topic (the message's, shared, not copied).
    pub topic: TopicName,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Timestamp (ms since the Unix epoch).
    pub timestamp: u64,
    /// Delivery attempt, from 1.
    pub attempt: u32,
}

/// The message's headers: an extractor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub HashMap<String, String>);

impl Headers {
    /// A header's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The service's shared state: an extractor (`Service::with_state`).
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

/// The delivery attempt (1, 2, ...): an extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &'static str) -> Message {
        Message::builder()
            .topic(topic)
            .payload(payload)
            .build()
            .unwrap()
    }

    /// A delivery is remade in place only when no clone is left; a clone keeps its message,
    /// and a recycled delivery starts again at attempt 1 with its topic's context.
    #[test]
    fn recycling_reuses_the_allocation_only_when_no_clone_is_left() {
        let first = Delivery::new(message("a", "1"));
        first.next_attempt();
        let place = Arc::as_ptr(&first.shared);
        let second = first.recycle(message("a", "2"));
        assert!(std::ptr::eq(Arc::as_ptr(&second.shared), place));
        assert_eq!(&second.message().payload[..], b"2");
        assert_eq!(second.attempt(), 1);

        let kept = second.clone();
        let third = second.recycle(message("b", "3"));
        assert!(!std::ptr::eq(Arc::as_ptr(&third.shared), place));
        assert_eq!(&kept.message().payload[..], b"2");
        assert_eq!(&third.message().payload[..], b"3");
        assert_eq!(&*third.ctx().topic, "b");
        assert_eq!(&*kept.ctx().topic, "a");

        // Recycled into another topic: the context follows the message.
        let place = Arc::as_ptr(&third.shared);
        let fourth = third.recycle(message("c", "4"));
        assert!(std::ptr::eq(Arc::as_ptr(&fourth.shared), place));
        assert_eq!(&*fourth.ctx().topic, "c");
        assert!(kept.into_spare().is_some());

        // A service's context does not follow a recycled delivery, even of its own topic.
        let service = Arc::new(Context {
            topic: "a".into(),
            handler: "h",
            group: "g".into(),
            ..Context::default()
        });
        let received = Delivery::make(Source::Detached(message("a", "5")), 1, service);
        assert_eq!(received.handler_name(), "h");
        let recycled = received.recycle(message("a", "6"));
        assert_eq!((recycled.handler_name(), recycled.group()), ("", ""));
        assert!(recycled.ctx().detached);
    }

    /// Dead letters are produced with acks=all (the input's commit that follows is synced),
    /// while the handler's own producer of another topic keeps the default; both with the
    /// client's compression.
    #[tokio::test]
    async fn dead_letters_are_produced_with_acks_all() {
        use crate::transport::test_broker::{Script, TestBroker};
        use rustmq_protocol::Acks;
        let broker = TestBroker::start(Script {
            produce_base_offset: Some(0),
            ..Script::default()
        })
        .await;
        // A build without codecs refuses a client with compression on.
        let compression = crate::config::CompressionConfig {
            enabled: cfg!(feature = "compression"),
            ..Default::default()
        };
        let client = RustMqClient::new(crate::config::ClientConfig {
            brokers: vec![broker.address()],
            compression: compression.clone(),
            ..crate::config::ClientConfig::default()
        })
        .await
        .unwrap();
        for topic in ["a", "a.dlq", "out"] {
            client.create_topic(topic, 1).await.unwrap();
        }
        let ctx = Arc::new(Context {
            topic: "a".into(),
            client: Some(client),
            handler: "h",
            group: "g".into(),
            dead_letter: "a.dlq".into(),
            ..Context::default()
        });
        let delivery = Delivery::make(Source::Detached(message("a", "1")), 1, ctx);
        let published = crate::typed::layers::publish_dead_letter(&delivery, None, "failed", "x")
            .await
            .unwrap();
        assert_eq!(published, "a.dlq");
        let output = delivery.producer_for("out").await.unwrap();
        output.send(message("out", "2")).await.unwrap();
        assert_eq!(
            *broker.state.produced.lock(),
            [
                ("a.dlq".to_owned(), Acks::All),
                ("out".to_owned(), Acks::Leader)
            ]
        );
        for topic in ["a.dlq", "out"] {
            let producer = delivery.producer_for(topic).await.unwrap();
            assert_eq!(producer.config().compression, compression, "{topic}");
        }
    }
}
