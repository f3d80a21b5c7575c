//! Consumer counters.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;

/// Counters of one consumer, shared with [`Consumer::metrics`](super::Consumer::metrics).
///
/// ```no_run
/// # async fn demo(consumer: rustmq::consumer::Consumer) {
/// use std::sync::atomic::Ordering;
/// let metrics = consumer.metrics().await;
/// println!("received {}", metrics.messages_received.load(Ordering::Relaxed));
/// println!("lag as of the latest fetches: {:?}", metrics.partition_lag());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct ConsumerMetrics {
    /// Messages handed to the application for the first time (redeliveries not counted).
    pub messages_received: AtomicU64,
    /// Messages acknowledged with `ack()`.
    pub messages_processed: AtomicU64,
    /// `nack()` calls (and messages dropped without being settled).
    pub messages_failed: AtomicU64,
    /// Redeliveries scheduled after a nack.
    pub messages_retried: AtomicU64,
    /// Messages written to the dead-letter queue after their retries ran out.
    pub messages_dead_lettered: AtomicU64,
    /// Messages whose retries ran out with no dead-letter queue configured (dropped with a
    /// warning).
    pub messages_dropped: AtomicU64,
    /// Offset commits the broker accepted.
    pub commits: AtomicU64,
    /// Rebalances this consumer went through (joins after the first).
    pub rebalances: AtomicU64,
    lag: Mutex<HashMap<u32, u64>>,
}

impl ConsumerMetrics {
    /// Lag per assigned partition (high watermark minus the consumer's position), as of each
    /// partition's latest fetch or [`Consumer::get_lag`](super::Consumer::get_lag) call.
    pub fn partition_lag(&self) -> HashMap<u32, u64> {
        self.lag.lock().clone()
    }

    /// Sum of [`partition_lag`](Self::partition_lag), saturating (a broker's high watermarks
    /// are taken as they come).
    pub fn total_lag(&self) -> u64 {
        self.lag
            .lock()
            .values()
            .fold(0u64, |total, lag| total.saturating_add(*lag))
    }

    pub(crate) fn set_lag(&self, partition: u32, lag: u64) {
        self.lag.lock().insert(partition, lag);
    }

    pub(crate) fn retain_lag(&self, owned: &[u32]) {
        self.lag.lock().retain(|p, _| owned.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_lag_saturates() {
        let metrics = ConsumerMetrics::default();
        metrics.set_lag(0, 5);
        metrics.set_lag(1, 7);
        assert_eq!(metrics.total_lag(), 12);
        metrics.set_lag(0, u64::MAX);
        assert_eq!(metrics.total_lag(), u64::MAX);
    }
}
