//! The typed variant: processors over `T: Topic` values instead of raw messages.

use async_trait::async_trait;

use super::processor::MessageProcessor;
use crate::codec::Codec;
use crate::error::{ClientError, Result};
use crate::message::Message;
use crate::typed::Topic;

/// A processor from `Input` values to `Output` values, run by
/// [`MessageStream::with_typed_processor`](super::MessageStream::with_typed_processor).
///
/// Inputs are decoded with `Input`'s codec (a payload that does not decode is a
/// [`ClientError::Deserialization`]: never retried, then skipped, dead-lettered or stopping
/// per the error strategy); outputs are encoded with `Output`'s codec, keyed by
/// [`Topic::key`], and sent to `Output::NAME` unless the stream names an `output_topic`.
///
/// ```
/// use rustmq::stream::TypedProcessor;
/// use rustmq::{async_trait, Message, Result, Topic};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Topic)]
/// #[topic(name = "payments")]
/// struct Payment { user: String, cents: u64 }
///
/// #[derive(Serialize, Deserialize, Topic)]
/// #[topic(name = "large-payments", key = "user")]
/// struct Large { user: String, cents: u64 }
///
/// struct OnlyLarge;
///
/// #[async_trait]
/// impl TypedProcessor for OnlyLarge {
///     type Input = Payment;
///     type Output = Large;
///     async fn process(&self, p: Payment, _source: &Message) -> Result<Option<Large>> {
///         Ok((p.cents >= 10_000).then(|| Large { user: p.user, cents: p.cents }))
///     }
/// }
/// ```
#[async_trait]
pub trait TypedProcessor: Send + Sync + 'static {
    /// Input values (their topic's codec decodes payloads).
    type Input: Topic;
    /// Output values.
    type Output: Topic;

    /// Processes one value; `source` is the message it came from.
    async fn process(&self, input: Self::Input, source: &Message) -> Result<Option<Self::Output>>;

    /// Processes a batch or window. The default calls [`process`](Self::process) on each.
    async fn process_batch(
        &self,
        inputs: Vec<(Self::Input, &Message)>,
    ) -> Result<Vec<Option<Self::Output>>> {
        let mut out = Vec::with_capacity(inputs.len());
        for (input, source) in inputs {
            out.push(self.process(input, source).await?);
        }
        Ok(out)
    }

    /// See [`MessageProcessor::on_start`].
    async fn on_start(&self) -> Result<()> {
        Ok(())
    }

    /// See [`MessageProcessor::on_stop`].
    async fn on_stop(&self) -> Result<()> {
        Ok(())
    }
}

/// A [`TypedProcessor`] as a [`MessageProcessor`].
#[derive(Debug)]
pub struct TypedAdapter<P>(P);

impl<P: TypedProcessor> TypedAdapter<P> {
    /// Wraps `processor`.
    pub fn new(processor: P) -> Self {
        Self(processor)
    }
}

fn decode<T: Topic>(m: &Message) -> Result<T> {
    <T::Codec as Codec>::decode(&m.payload).map_err(|e| ClientError::Deserialization(e.to_string()))
}

fn encode<T: Topic>(value: &T, source: &Message) -> Result<Message> {
    let payload = <T::Codec as Codec>::encode(value)
        .map_err(|e| ClientError::Serialization(e.to_string()))?;
    let mut b = Message::builder()
        .topic(T::NAME)
        .payload(payload)
        .header("content-type", <T::Codec as Codec>::NAME)
        .timestamp(source.timestamp);
    if let Some(key) = value.key() {
        b = b.key(key);
    }
    b.build()
}

#[async_trait]
impl<P: TypedProcessor> MessageProcessor for TypedAdapter<P> {
    async fn process(&self, message: &Message) -> Result<Option<Message>> {
        let input = decode::<P::Input>(message)?;
        match self.0.process(input, message).await? {
            Some(out) => Ok(Some(encode(&out, message)?)),
            None => Ok(None),
        }
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        let inputs = messages
            .iter()
            .map(|m| Ok((decode::<P::Input>(m)?, m)))
            .collect::<Result<Vec<_>>>()?;
        let outputs = self.0.process_batch(inputs).await?;
        let last = messages.last();
        outputs
            .into_iter()
            .enumerate()
            .map(|(i, out)| match (out, messages.get(i).or(last)) {
                (Some(out), Some(source)) => encode(&out, source).map(Some),
                _ => Ok(None),
            })
            .collect()
    }

    async fn on_start(&self) -> Result<()> {
        self.0.on_start().await
    }

    async fn on_stop(&self) -> Result<()> {
        self.0.on_stop().await
    }
}
