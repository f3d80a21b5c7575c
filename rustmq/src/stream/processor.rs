//! [`MessageProcessor`]: what a stream runs on its messages.

use async_trait::async_trait;

use crate::error::{ClientError, Result};
use crate::message::Message;

/// The default [`MessageProcessor::process`]'s refusal: the one failure that stops a stream
/// whatever its error strategy.
pub(crate) const BATCHES_ONLY: &str = "this MessageProcessor implements only process_batch: run it in batch or windowed mode, or implement process";

/// Whether `error` is the default `process`'s refusal.
pub(crate) fn is_batches_only(error: &ClientError) -> bool {
    matches!(error, ClientError::InvalidConfig(why) if why == BATCHES_ONLY)
}

/// The user's processing step, called by a [`MessageStream`](super::MessageStream).
///
/// `Ok(Some(message))` is an output: it is produced to the stream's `output_topic` (or, without
/// one, to the topic the message names) before the input is committed. `Ok(None)` means no
/// output. An error is handled by the stream's [`ErrorStrategy`](super::ErrorStrategy), but
/// for the default [`process`](MessageProcessor::process)'s refusal, which stops the stream.
///
/// Implement it with `#[async_trait]` (re-exported as [`rustmq::async_trait`](crate::async_trait)):
///
/// ```
/// use rustmq::stream::MessageProcessor;
/// use rustmq::{async_trait, Message, Result};
///
/// struct Upper;
///
/// #[async_trait]
/// impl MessageProcessor for Upper {
///     async fn process(&self, message: &Message) -> Result<Option<Message>> {
///         let text = message.payload_as_string()?.to_uppercase();
///         Ok(Some(Message::builder().topic("upper").payload(text).build()?))
///     }
/// }
/// ```
#[async_trait]
pub trait MessageProcessor: Send + Sync + 'static {
    /// Processes one message ([`StreamMode::Individual`](super::StreamMode::Individual)).
    ///
    /// A processor for batches or windows only may implement
    /// [`process_batch`](Self::process_batch) alone, as the seed README's windowed
    /// aggregation does: this default then fails a message given to it alone with
    /// [`ClientError::InvalidConfig`], which stops the stream with that error whatever the
    /// error strategy (skipping or dead-lettering every message would lose them all).
    async fn process(&self, message: &Message) -> Result<Option<Message>> {
        let _ = message;
        Err(ClientError::InvalidConfig(BATCHES_ONLY.into()))
    }

    /// Processes a batch or a window; every `Some` in the result is an output (the result
    /// need not have one entry per message). The default calls [`process`](Self::process)
    /// on each message in turn and fails with the first error.
    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.process(message).await?);
        }
        Ok(results)
    }

    /// Called once by [`MessageStream::start`](super::MessageStream::start) before the first
    /// message; an error fails the start.
    async fn on_start(&self) -> Result<()> {
        Ok(())
    }

    /// Called once when the stream ends: after [`MessageStream::stop`](super::MessageStream::stop)
    /// or an error that ends it, once the last message was finished and the final commit
    /// tried (it may have failed: `stop` or `wait` then return the error, and the work not
    /// committed is processed again by the next start); also when a stop comes while
    /// [`on_start`](Self::on_start) runs. Not called if the stream is dropped without a stop.
    async fn on_stop(&self) -> Result<()> {
        Ok(())
    }

    /// Called for every message of a unit whose processing attempt failed (once per attempt),
    /// before the error strategy applies. Errors it returns are logged. A unit's calls
    /// together are bounded by
    /// [`StreamConfig::processing_timeout`](super::StreamConfig::processing_timeout): the call
    /// running then is given up (and logged), and the unit's later members get none.
    async fn on_error(&self, message: &Message, error: &ClientError) -> Result<()> {
        let _ = (message, error);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed README's windowed aggregation implements `process_batch` alone.
    struct OnlyBatches;

    #[async_trait]
    impl MessageProcessor for OnlyBatches {
        async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
            Ok(vec![None; messages.len()])
        }
    }

    #[tokio::test]
    async fn a_processor_of_batches_only_fails_single_messages_with_a_clear_error() {
        let m = Message::builder().topic("t").payload("x").build().unwrap();
        assert_eq!(
            OnlyBatches
                .process_batch(std::slice::from_ref(&m))
                .await
                .unwrap()
                .len(),
            1
        );
        match OnlyBatches.process(&m).await {
            Err(ClientError::InvalidConfig(why)) => assert!(why.contains("process_batch"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
