//! The typed producer: sends `&T` to `T`'s topic, keyed and encoded as `T` says.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::delivery::Context;
use super::topic::Topic;
use crate::codec::{encode_shared, Codec};
use crate::error::{ClientError, Result};
use crate::message::{Message, TopicName};
use crate::producer::{Producer, ProducerBuilder, ProducerConfig, SendResult};
use crate::RustMqClient;

/// Sends values of `T` to `T::NAME`, with everything the untyped [`Producer`] does underneath
/// (batching, partitioning by `T`'s key, compression, retries). Cheap to clone.
///
/// Get one with [`RustMqClient::producer`], or as a handler argument.
pub struct TypedProducer<T> {
    client: RustMqClient,
    cell: Arc<OnceCell<Producer>>,
    ctx: Option<Arc<Context>>,
    config: Option<Arc<ProducerConfig>>,
    _topic: PhantomData<fn(T)>,
}

impl<T> Clone for TypedProducer<T> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            cell: Arc::clone(&self.cell),
            ctx: self.ctx.clone(),
            config: self.config.clone(),
            _topic: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for TypedProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedProducer")
            .field("topic", &std::any::type_name::<T>())
            .finish()
    }
}

impl RustMqClient {
    /// A typed producer for `T`'s topic. The underlying producer starts on the first send (and
    /// creates the topic with `T::PARTITIONS` partitions if it asks for them).
    pub fn producer<T: Topic>(&self) -> TypedProducer<T> {
        TypedProducer {
            client: self.clone(),
            cell: Arc::new(OnceCell::new()),
            ctx: None,
            config: None,
            _topic: PhantomData,
        }
    }

    /// Like [`producer`](Self::producer), with the underlying producer's settings (batching,
    /// acks, compression, buffer) given rather than the defaults.
    pub fn producer_with_config<T: Topic>(&self, config: ProducerConfig) -> TypedProducer<T> {
        TypedProducer {
            config: Some(Arc::new(config)),
            ..self.producer()
        }
    }
}

/// Creates `T`'s topic with its declared partition count if it does not exist yet.
pub(crate) async fn ensure_topic<T: Topic>(client: &RustMqClient) -> Result<()> {
    ensure_topic_named(client, T::NAME, T::PARTITIONS).await
}

/// Creates `name` with `partitions` partitions if it does not exist yet; with `None`, leaves
/// it to the broker, which creates it on the first message (auto-creation) with its default
/// partition count.
pub(crate) async fn ensure_topic_named(
    client: &RustMqClient,
    name: &str,
    partitions: Option<u32>,
) -> Result<()> {
    match partitions {
        Some(partitions) => client.ensure_topic(name, partitions).await,
        None => Ok(()),
    }
}

impl<T: Topic> TypedProducer<T> {
    pub(crate) fn shared(client: RustMqClient, ctx: Arc<Context>) -> Self {
        Self {
            client,
            cell: Arc::new(OnceCell::new()),
            ctx: Some(ctx),
            config: None,
            _topic: PhantomData,
        }
    }

    async fn producer(&self) -> Result<Producer> {
        if let Some(ctx) = &self.ctx {
            return ctx.producer(T::NAME, T::PARTITIONS).await;
        }
        self.cell
            .get_or_try_init(|| async {
                ensure_topic::<T>(&self.client).await?;
                let builder = ProducerBuilder::new()
                    .topic(T::NAME)
                    .client(self.client.clone());
                match &self.config {
                    Some(config) => builder.config(ProducerConfig::clone(config)).build().await,
                    None => builder.build().await,
                }
            })
            .await
            .cloned()
    }

    /// The message `value` becomes: encoded payload, `T`'s key.
    pub fn to_message(value: &T) -> Result<Message> {
        let payload = <T::Codec as Codec>::encode(value)
            .map_err(|e| ClientError::Serialization(e.to_string()))?;
        Self::message(value, payload.into())
    }

    /// [`to_message`](Self::to_message) for a message handed to `send_async`, which copies
    /// it into its batch and drops it (or holds it only while waiting for buffer space): the
    /// payload is encoded in memory that later payloads reuse once it is dropped. (An awaited
    /// `send` holds its message until the answer, so it keeps its own allocation.)
    fn to_sent_message(value: &T) -> Result<Message> {
        let payload = encode_shared::<T::Codec, T>(value)
            .map_err(|e| ClientError::Serialization(e.to_string()))?;
        Self::message(value, payload)
    }

    #[inline]
    fn message(value: &T, payload: Bytes) -> Result<Message> {
        let builder = Message::builder()
            // A constant: the name's validity is checked at compile time, not per message.
            .topic(const { TopicName::from_static(T::NAME) })
            .payload(payload);
        match value.key() {
            Some(key) => builder.key(key).build(),
            None => builder.build(),
        }
    }

    /// Sends `value` and waits for the acknowledgement.
    pub async fn send(&self, value: &T) -> Result<SendResult> {
        match self.cell.get() {
            Some(producer) => producer.send(Self::to_message(value)?).await,
            None => {
                let message = Self::to_message(value)?;
                self.producer().await?.send(message).await
            }
        }
    }

    /// Sends `value` without waiting for the acknowledgement (failures are logged and counted).
    pub async fn send_async(&self, value: &T) -> Result<()> {
        // Once this producer's own producer is made (not for a handler's, which its service
        // shares), it is borrowed rather than cloned for every message, and the message is
        // built straight into the send's future rather than held across a wait and moved
        // again (it is ~200 bytes). A value that does not encode fails before anything is
        // made.
        match self.cell.get() {
            Some(producer) => {
                producer
                    .send_async(Self::to_sent_message(value)?, None)
                    .await
            }
            None => {
                let message = Self::to_sent_message(value)?;
                self.producer().await?.send_async(message, None).await
            }
        }
    }

    /// Waits until everything sent so far is acknowledged.
    pub async fn flush(&self) -> Result<()> {
        self.producer().await?.flush().await
    }

    /// The untyped producer underneath (metrics, close).
    pub async fn inner(&self) -> Result<Producer> {
        self.producer().await
    }
}
