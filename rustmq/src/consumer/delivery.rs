//! [`ConsumerMessage`]: a received message and its settlement (ack or nack).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{retry, Inner};
use crate::error::Result;
use crate::message::Message;

/// A message handed out by [`Consumer::receive`](super::Consumer::receive), to be settled
/// once with [`ack`](Self::ack) or [`nack`](Self::nack).
///
/// - `ack` marks it processed: its offset becomes committable once every earlier delivered
///   offset of the partition is settled too.
/// - `nack` redelivers it after `retry_backoff · 2^(n-1)` for the n-th retry, without holding
///   up other messages; after `max_retry_attempts` retries it goes to the dead-letter queue
///   (and counts as processed).
/// - Dropping it unsettled counts as a nack, so a forgotten message is redelivered instead of
///   holding the partition's commits back forever.
///
/// Settling twice, or settling a message whose partition was since sought or revoked (another
/// member now owns it and will deliver it again), does nothing.
pub struct ConsumerMessage {
    /// The message, with `partition` and `offset` filled in.
    pub message: Message,
    partition: u32,
    offset: u64,
    epoch: u64,
    attempt: u32,
    inner: Arc<Inner>,
    settled: AtomicBool,
}

impl fmt::Debug for ConsumerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerMessage")
            .field("message", &self.message)
            .field("attempt", &self.attempt)
            .field("settled", &self.settled.load(Ordering::Relaxed))
            .finish()
    }
}

impl ConsumerMessage {
    /// A delivery of `message` (taken from the consumer's state with `epoch`, the
    /// partition's epoch then, and `attempt`).
    #[inline(always)]
    pub(crate) fn new(inner: Arc<Inner>, message: Message, epoch: u64, attempt: u32) -> Self {
        Self {
            partition: message.partition,
            offset: message.offset,
            message,
            epoch,
            attempt,
            inner,
            settled: AtomicBool::new(false),
        }
    }

    /// What a nack hands to the retry machinery.
    fn failed(&self) -> retry::Failed {
        retry::Failed {
            message: self.message.clone(),
            partition: self.partition,
            offset: self.offset,
            epoch: self.epoch,
            attempt: self.attempt,
        }
    }

    /// How many times this message has been delivered, this one included (1 the first time).
    pub fn delivery_attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether `ack` or `nack` was called.
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Marks the message processed.
    pub async fn ack(&self) -> Result<()> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if self
            .inner
            .state
            .lock()
            .resolve(self.partition, self.epoch, self.offset)
        {
            self.inner
                .metrics
                .messages_processed
                .fetch_add(1, Ordering::Relaxed);
            self.inner.instruments.processed.increment(1);
        } else {
            tracing::debug!(
                partition = self.partition,
                offset = self.offset,
                "ack ignored: partition sought or revoked"
            );
        }
        Ok(())
    }

    /// Marks the message failed: it is redelivered with exponential backoff, or dead-lettered
    /// once its retries ran out (the `rustmq.dlq.error` header then says `nacked`).
    pub async fn nack(&self) -> Result<()> {
        self.nack_with_error("nacked").await
    }

    /// Like [`nack`](Self::nack), recording `error` as the reason (in the dead-letter
    /// header `rustmq.dlq.error` should the retries run out).
    ///
    /// When the message is dead-lettered this waits for the dead-letter topic to store it;
    /// if that fails, the error is returned and the message is retried again later (a copy
    /// too large for the broker goes without the message's content, see
    /// [`DLQ_CONTENT_DROPPED`](super::DLQ_CONTENT_DROPPED)).
    pub async fn nack_with_error(&self, error: impl Into<String>) -> Result<()> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        retry::nack(&self.inner, self.failed(), error.into()).await
    }
}

impl ConsumerMessage {
    /// Leaves the message neither acknowledged nor failed: it holds the partition's commits
    /// back, so it is delivered again after a restart, and counts as no failed attempt.
    pub(crate) fn abandon(&self) {
        self.settled.store(true, Ordering::Release);
    }
}

impl Drop for ConsumerMessage {
    fn drop(&mut self) {
        if self.settled.load(Ordering::Acquire) {
            return;
        }
        {
            let state = self.inner.state.lock();
            if state.closed || state.abandoning {
                return;
            }
        }
        tracing::debug!(
            partition = self.partition,
            offset = self.offset,
            "message dropped without ack or nack: redelivering"
        );
        retry::nack_detached(
            &self.inner,
            self.failed(),
            "dropped without ack or nack".into(),
        );
    }
}
