//! Producer counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one producer, updated as batches are answered.
#[derive(Debug, Default)]
pub struct ProducerMetrics {
    /// Messages acknowledged by the broker.
    pub messages_sent: AtomicU64,
    /// Payload + key + header bytes of acknowledged messages.
    pub bytes_sent: AtomicU64,
    /// Batches acknowledged.
    pub batches_sent: AtomicU64,
    /// Messages that failed for good.
    pub messages_failed: AtomicU64,
    /// Failed requests (including ones retried successfully later).
    pub errors: AtomicU64,
    /// Batches resent after a retryable failure.
    pub retries: AtomicU64,
    /// Sum of send latencies, in microseconds: for each message, the time from its batch's
    /// opening (its first message accepted) to the batch's acknowledgement. A message that
    /// joined a batch late counts from the batch's opening, so this bounds each message's
    /// own latency from above, by up to the batch's linger (no clock is read per message).
    pub send_latency_us_total: AtomicU64,
    /// Largest send latency seen (a batch's, as counted above), in microseconds.
    pub send_latency_us_max: AtomicU64,
}

impl ProducerMetrics {
    /// Mean send latency per message: from its batch's opening to its acknowledgement (see
    /// [`send_latency_us_total`](Self::send_latency_us_total)).
    pub fn average_send_latency(&self) -> Duration {
        let n = self.messages_sent.load(Ordering::Relaxed);
        if n == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.send_latency_us_total.load(Ordering::Relaxed) / n)
    }

    /// Largest send latency: from a batch's opening to its acknowledgement.
    pub fn max_send_latency(&self) -> Duration {
        Duration::from_micros(self.send_latency_us_max.load(Ordering::Relaxed))
    }

    pub(crate) fn record_batch(
        &self,
        messages: u64,
        bytes: u64,
        latency_us_sum: u64,
        latency_us_max: u64,
    ) {
        self.messages_sent.fetch_add(messages, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        self.batches_sent.fetch_add(1, Ordering::Relaxed);
        self.send_latency_us_total
            .fetch_add(latency_us_sum, Ordering::Relaxed);
        self.send_latency_us_max
            .fetch_max(latency_us_max, Ordering::Relaxed);
    }
}

/// The producer's handles into the installed `metrics` recorder, labelled with its topic and
/// registered once (not per message). See [`crate::telemetry`] for the names. Without the
/// `metrics` feature, a twin of the same shape that records nothing (below).
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct ProducerInstruments {
    messages_sent: metrics::Counter,
    bytes_sent: metrics::Counter,
    batches_sent: metrics::Counter,
    pub(crate) messages_failed: metrics::Counter,
    pub(crate) errors: metrics::Counter,
    pub(crate) retries: metrics::Counter,
    send_latency: metrics::Histogram,
}

#[cfg(feature = "metrics")]
impl ProducerInstruments {
    pub(crate) fn new(topic: &str) -> Self {
        use crate::telemetry::names::*;
        let labels = [("topic", topic.to_owned())];
        Self {
            messages_sent: metrics::counter!(PRODUCER_MESSAGES_SENT, &labels),
            bytes_sent: metrics::counter!(PRODUCER_BYTES_SENT, &labels),
            batches_sent: metrics::counter!(PRODUCER_BATCHES_SENT, &labels),
            messages_failed: metrics::counter!(PRODUCER_MESSAGES_FAILED, &labels),
            errors: metrics::counter!(PRODUCER_ERRORS, &labels),
            retries: metrics::counter!(PRODUCER_RETRIES, &labels),
            send_latency: metrics::histogram!(PRODUCER_SEND_LATENCY, &labels),
        }
    }

    pub(crate) fn record_batch(&self, messages: u64, bytes: u64, latency: Duration) {
        self.messages_sent.increment(messages);
        self.bytes_sent.increment(bytes);
        self.batches_sent.increment(1);
        self.send_latency.record(latency.as_secs_f64());
    }
}

/// [`ProducerInstruments`] without the `metrics` feature: records nothing.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct ProducerInstruments {
    pub(crate) messages_failed: crate::telemetry::NoopCounter,
    pub(crate) errors: crate::telemetry::NoopCounter,
    pub(crate) retries: crate::telemetry::NoopCounter,
}

#[cfg(not(feature = "metrics"))]
impl ProducerInstruments {
    pub(crate) fn new(_topic: &str) -> Self {
        use crate::telemetry::NoopCounter;
        Self {
            messages_failed: NoopCounter,
            errors: NoopCounter,
            retries: NoopCounter,
        }
    }

    #[inline(always)]
    pub(crate) fn record_batch(&self, _messages: u64, _bytes: u64, _latency: Duration) {}
}
