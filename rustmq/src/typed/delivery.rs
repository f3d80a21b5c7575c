//! A delivery: one received message on its way through a handler's service stack.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::consumer::ConsumerMessage;
use crate::message::Message;
use crate::producer::Producer;
use crate::RustMqClient;

/// What the runtime shares with every delivery of one handler.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// The handler's topic, shared by every delivery's [`Metadata`].
    pub(crate) topic: Arc<str>,
    pub(crate) client: Option<RustMqClient>,
    pub(crate) handler: &'static str,
    pub(crate) group: String,
    pub(crate) dead_letter: String,
    pub(crate) producers: Mutex<HashMap<String, Producer>>,
}

/// One received message with its delivery attempt, as handed to a handler's service.
///
/// Cheap to clone (retry layers resend it): the message is shared, and so is the attempt
/// counter, so that layers outside a retry layer see how many attempts were made.
///
/// A delivery made by a running [`Service`](super::Service) holds the consumer's message
/// until its last clone is dropped. It is settled when the handler's service is done, whoever
/// still holds a clone; but a message that is never settled (abandoned at shutdown) is only
/// handed back for redelivery once every clone is gone, so layers should not keep clones
/// beyond the call.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message and its attempt counter, in one allocation.
    shared: Arc<Shared>,
    pub(crate) ctx: Arc<Context>,
}

#[derive(Debug)]
struct Shared {
    source: Source,
    attempt: AtomicU32,
}

/// Where a delivery's message came from. A received message stays inside its
/// `ConsumerMessage` (settled through it once the service is done) instead of being cloned out
/// of it for every delivery.
#[derive(Debug)]
enum Source {
    Detached(Message),
    Received(ConsumerMessage),
}

impl Delivery {
    /// A delivery of `message` outside any service (benchmarks, unit tests of handlers).
    /// Extractors that need a broker (producers) fail on it.
    pub fn new(message: Message) -> Self {
        // A delivery outside a service owns nothing but its message: its context is empty but
        // for the topic, shared (as a handler's is) by the deliveries of one topic in a row.
        thread_local! {
            static DETACHED: std::cell::RefCell<Option<Arc<Context>>> = const {
                std::cell::RefCell::new(None)
            };
        }
        let ctx = DETACHED.with_borrow_mut(|last| match last {
            Some(ctx) if *ctx.topic == *message.topic => Arc::clone(ctx),
            _ => Arc::clone(last.insert(Arc::new(Context {
                topic: message.topic.as_str().into(),
                ..Context::default()
            }))),
        });
        Delivery::from_source(Source::Detached(message), 1, ctx)
    }

    /// A delivery of a message a handler's consumer received; it is settled through
    /// [`Delivery::received`] once the service is done with it.
    pub(crate) fn receiving(message: ConsumerMessage, ctx: Arc<Context>) -> Self {
        let attempt = message.delivery_attempt();
        Delivery::from_source(Source::Received(message), attempt, ctx)
    }

    fn from_source(source: Source, attempt: u32, ctx: Arc<Context>) -> Self {
        Delivery {
            shared: Arc::new(Shared {
                source,
                attempt: AtomicU32::new(attempt),
            }),
            ctx,
        }
    }

    /// The received message.
    pub fn message(&self) -> &Message {
        match &self.shared.source {
            Source::Detached(message) => message,
            Source::Received(received) => &received.message,
        }
    }

    /// The consumer's message this delivery settles; `None` outside a service.
    pub(crate) fn received(&self) -> Option<&ConsumerMessage> {
        match &self.shared.source {
            Source::Detached(_) => None,
            Source::Received(received) => Some(received),
        }
    }

    /// 1 for the first delivery, then 2, 3, ... as retries happen.
    pub fn attempt(&self) -> u32 {
        self.shared.attempt.load(Ordering::Acquire)
    }

    /// Counts one more attempt of the same message (used by retry layers) and returns it.
    pub fn next_attempt(&self) -> Self {
        self.shared.attempt.fetch_add(1, Ordering::AcqRel);
        self.clone()
    }

    /// The consumer group this delivery was received in (empty outside a service).
    pub fn group(&self) -> &str {
        &self.ctx.group
    }

    /// The handler's name (empty outside a service).
    pub fn handler_name(&self) -> &'static str {
        self.ctx.handler
    }

    /// The dead-letter topic of the handler's topic.
    pub fn dead_letter_topic(&self) -> &str {
        &self.ctx.dead_letter
    }

    /// The client of the service, if any.
    pub fn client(&self) -> Option<&RustMqClient> {
        self.ctx.client.as_ref()
    }

    /// An untyped producer for `topic`, shared by the handler's deliveries.
    pub async fn producer_for(&self, topic: &str) -> crate::Result<Producer> {
        self.ctx.producer(topic, None).await
    }
}

impl Context {
    /// The handler's producer for `topic`, started (and the topic created with `partitions`,
    /// when given) on first use.
    pub(crate) async fn producer(
        &self,
        topic: &str,
        partitions: Option<u32>,
    ) -> crate::Result<Producer> {
        if let Some(p) = self.producers.lock().get(topic) {
            return Ok(p.clone());
        }
        let client = self.client.as_ref().ok_or_else(|| {
            crate::ClientError::InvalidConfig("this delivery has no client to produce with".into())
        })?;
        super::producer::ensure_topic_named(client, topic, partitions).await?;
        let producer = client.create_producer(topic).await?;
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
    /// Topic (shared with the handler's other deliveries, not copied for each).
    pub topic: Arc<str>,
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
