//! The consumer's handles into the installed `metrics` recorder, labelled with its topic and
//! group and registered once per consumer (the lag gauges once per partition). Without the
//! `metrics` feature, a twin of the same shape that records nothing.

#[cfg(feature = "metrics")]
pub(crate) use recording::ConsumerInstruments;

#[cfg(not(feature = "metrics"))]
pub(crate) use noop::ConsumerInstruments;

#[cfg(feature = "metrics")]
mod recording {
    use std::collections::HashMap;

    use metrics::{Counter, Gauge};
    use parking_lot::Mutex;

    use crate::telemetry::names::*;

    /// See [`crate::telemetry`] for the names.
    #[derive(Debug)]
    pub(crate) struct ConsumerInstruments {
        labels: [(&'static str, String); 2],
        pub(crate) received: Counter,
        pub(crate) processed: Counter,
        pub(crate) failed: Counter,
        pub(crate) retried: Counter,
        pub(crate) dead_lettered: Counter,
        lag: Mutex<HashMap<u32, Gauge>>,
    }

    impl ConsumerInstruments {
        pub(crate) fn new(topic: &str, group: &str) -> Self {
            let labels = [("topic", topic.to_owned()), ("group", group.to_owned())];
            Self {
                received: metrics::counter!(CONSUMER_MESSAGES_RECEIVED, &labels),
                processed: metrics::counter!(CONSUMER_MESSAGES_PROCESSED, &labels),
                failed: metrics::counter!(CONSUMER_MESSAGES_FAILED, &labels),
                retried: metrics::counter!(CONSUMER_MESSAGES_RETRIED, &labels),
                dead_lettered: metrics::counter!(CONSUMER_MESSAGES_DEAD_LETTERED, &labels),
                labels,
                lag: Mutex::new(HashMap::new()),
            }
        }

        /// Sets the lag gauge of `partition`.
        pub(crate) fn set_lag(&self, partition: u32, lag: u64) {
            self.lag
                .lock()
                .entry(partition)
                .or_insert_with(|| {
                    let mut labels = self.labels.to_vec();
                    labels.push(("partition", partition.to_string()));
                    metrics::gauge!(CONSUMER_LAG, &labels)
                })
                .set(lag as f64);
        }

        /// Zeroes and forgets the gauges of partitions no longer owned.
        pub(crate) fn retain_lag(&self, owned: &[u32]) {
            self.lag.lock().retain(|p, gauge| {
                let keep = owned.contains(p);
                if !keep {
                    gauge.set(0.0);
                }
                keep
            });
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod noop {
    use crate::telemetry::NoopCounter;

    /// [`ConsumerInstruments`] without the `metrics` feature: records nothing.
    #[derive(Debug)]
    pub(crate) struct ConsumerInstruments {
        pub(crate) received: NoopCounter,
        pub(crate) processed: NoopCounter,
        pub(crate) failed: NoopCounter,
        pub(crate) retried: NoopCounter,
        pub(crate) dead_lettered: NoopCounter,
    }

    impl ConsumerInstruments {
        pub(crate) fn new(_topic: &str, _group: &str) -> Self {
            Self {
                received: NoopCounter,
                processed: NoopCounter,
                failed: NoopCounter,
                retried: NoopCounter,
                dead_lettered: NoopCounter,
            }
        }

        #[inline(always)]
        pub(crate) fn set_lag(&self, _partition: u32, _lag: u64) {}

        #[inline(always)]
        pub(crate) fn retain_lag(&self, _owned: &[u32]) {}
    }
}
