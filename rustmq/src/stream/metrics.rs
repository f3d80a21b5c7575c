//! [`StreamMetrics`]: counters of a running stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::RwLock;

/// Counters of a [`MessageStream`](super::MessageStream), shared with it (read them at any
/// time with relaxed loads).
#[derive(Debug, Default)]
pub struct StreamMetrics {
    /// Input messages processed successfully (in a successful call of `process` or
    /// `process_batch`), counted once their outputs are stored: a message whose outputs could
    /// not be written, and that is processed again, counts once.
    pub messages_processed: AtomicU64,
    /// Input messages whose processing failed for good (after the retries the strategy allows).
    pub messages_failed: AtomicU64,
    /// Input messages dropped after a failure ([`ErrorStrategy::Skip`](super::ErrorStrategy::Skip),
    /// or retries exhausted).
    pub messages_skipped: AtomicU64,
    /// Failed messages written to the dead-letter topic (counted once stored).
    pub messages_dead_lettered: AtomicU64,
    /// Messages that arrived after one of their windows had closed.
    pub late_messages: AtomicU64,
    /// Input messages passed over on a restart because their outputs were already in the
    /// output log (exactly-once recovery).
    pub messages_recovered: AtomicU64,
    /// Output messages acknowledged by the broker.
    pub outputs_produced: AtomicU64,
    /// Windows handed to the processor.
    pub windows_closed: AtomicU64,
    /// Processor attempts that failed (each retry counts).
    pub processing_errors: AtomicU64,
    /// Offset commits made.
    pub commits: AtomicU64,
    /// Input messages fetched and not yet finished, now (at most `max_in_flight` per
    /// session; after an abort the units of the session before may still be counted while
    /// the next one starts).
    pub messages_in_flight: AtomicU64,
    /// Their bytes as counted against `with_max_in_flight_bytes` (payload, key and headers;
    /// a message larger than the bound counts as the bound), now.
    pub bytes_in_flight: AtomicU64,
    /// Mean duration of a processor call (`process` or `process_batch`), in milliseconds.
    /// Read it with `try_read()`.
    pub average_processing_time: RwLock<f64>,
    calls: AtomicU64,
    total_ns: AtomicU64,
}

impl StreamMetrics {
    /// Records one processor call of `elapsed`.
    pub(crate) fn record_call(&self, elapsed: Duration) {
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let total = self
            .total_ns
            .fetch_add(ns, Ordering::Relaxed)
            .saturating_add(ns);
        // Never waits: a reader holding the lock only delays the value to the next call.
        if let Ok(mut average) = self.average_processing_time.try_write() {
            *average = total as f64 / calls as f64 / 1e6;
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_is_in_milliseconds() {
        let m = StreamMetrics::default();
        m.record_call(Duration::from_millis(2));
        m.record_call(Duration::from_millis(4));
        let avg = *m.average_processing_time.try_read().unwrap();
        assert!((avg - 3.0).abs() < 1e-9, "{avg}");
    }
}
