//! Producer settings.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::CompressionConfig;

/// How much durability a send waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckLevel {
    /// Fire and forget: a batch's sends resolve as soon as its request is written to its
    /// stream, with [`SendResult::UNKNOWN_OFFSET`] as their offset, and the partition's next
    /// batch may follow at once: batches are pipelined, never retried. At most five batches of
    /// a partition are unanswered at a time (the default of Kafka's
    /// `max.in.flight.requests.per.connection`): a sixth waits for the oldest answer before it
    /// is written, so that one partition cannot take every in-flight slot of the connections
    /// (which fetches and heartbeats need too).
    ///
    /// There is no order guarantee: each batch travels on a stream of its own, and the broker
    /// may store a partition's pipelined batches (up to five apart) in another order than they
    /// were sent.
    ///
    /// The answers are still read, by a task of their own: a failure is logged and counted
    /// in [`ProducerMetrics`](super::ProducerMetrics) (`errors`, `messages_failed`), but no
    /// send hears of it. A message holds its room in `buffer_memory` until its batch's answer
    /// is read, and [`flush`](super::Producer::flush) and [`close`](super::Producer::close)
    /// wait for the answers, so that closing the client afterwards cuts nothing short.
    ///
    /// With `idempotent`, a partition's batches go one at a time instead (the broker checks
    /// their sequence numbers in order), each send resolving with its offset once answered;
    /// they are not retried either, but for a batch refused unwritten for an unknown producer
    /// id (see [`ProducerConfig::idempotent`](super::ProducerConfig::idempotent)).
    ///
    /// [`SendResult::UNKNOWN_OFFSET`]: super::SendResult::UNKNOWN_OFFSET
    None,
    /// The broker has appended the batch to its log.
    #[default]
    Leader,
    /// The batch is on the broker's disk (fdatasync) before the send resolves.
    All,
}

/// Most batches of one partition written and not yet answered with [`AckLevel::None`] (the
/// number its docs give).
pub(crate) const MAX_UNANSWERED_BATCHES: usize = 5;

impl AckLevel {
    pub(crate) fn wire(self) -> rustmq_protocol::Acks {
        match self {
            AckLevel::None => rustmq_protocol::Acks::None,
            AckLevel::Leader => rustmq_protocol::Acks::Leader,
            AckLevel::All => rustmq_protocol::Acks::All,
        }
    }
}

/// Settings of one producer; every field is read.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Name of this producer in its logs and spans (field `producer`); default
    /// `"<client id>/<topic>"`.
    pub producer_id: Option<String>,
    /// A batch is sent once it holds this many messages.
    pub batch_size: usize,
    /// A batch is sent at the latest this long after its first message arrived. With zero, a
    /// partition's batch goes as soon as the previous request of that partition is answered:
    /// batches then form naturally while a request is in flight. While a send waits for room
    /// in `buffer_memory`, a partition's open batch goes as soon as the partition has nothing
    /// on the way, its linger not waited for: the room comes back only as batches are
    /// answered. A send refused with `BufferFull` has the open batches of the partitions with
    /// nothing on the way sent at once (the others keep their linger).
    pub batch_timeout: Duration,
    /// A batch is sent once its records take this many bytes (capped by the broker's limit).
    pub batch_max_bytes: usize,
    /// Largest message (payload + key + headers); a larger one fails with
    /// `ClientError::MessageTooLarge` before anything is sent.
    pub max_message_size: usize,
    /// Durability each send waits for.
    pub ack_level: AckLevel,
    /// Broker-side de-duplication of resent batches (producer id + epoch + sequence).
    ///
    /// Each partition's batches carry a producer id the broker issued. A broker that did not
    /// issue it (after a failover to another broker of `ClientConfig::brokers`, or a broker
    /// that lost its data) refuses the batch unwritten with `UnknownProducer`; the batch then
    /// goes again, once, under a new id from that broker.
    pub idempotent: bool,
    /// Compression of batches whose records exceed `min_size` bytes. Left at its default
    /// ([`CompressionConfig::default`], disabled), the producer takes its client's
    /// ([`crate::ClientConfig::compression`]); to keep one producer's batches uncompressed under
    /// a client that compresses, set `algorithm` to [`crate::CompressionAlgorithm::None`].
    pub compression: CompressionConfig,
    /// Headers added to every message that does not set them itself.
    pub default_properties: HashMap<String, String>,
    /// Bytes of messages accepted but not yet acknowledged; past it, `send` waits or fails.
    pub buffer_memory: usize,
    /// With a full buffer: `true` waits for room (backpressure), `false` fails at once with
    /// `ClientError::BufferFull`.
    pub block_on_buffer_full: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            producer_id: None,
            batch_size: 1000,
            batch_timeout: Duration::ZERO,
            batch_max_bytes: 1024 * 1024,
            max_message_size: 4 * 1024 * 1024,
            ack_level: AckLevel::Leader,
            idempotent: false,
            compression: CompressionConfig::default(),
            default_properties: HashMap::new(),
            buffer_memory: 32 * 1024 * 1024,
            block_on_buffer_full: true,
        }
    }
}

impl ProducerConfig {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::ClientError::InvalidConfig(m.to_owned()));
        if self.batch_size == 0 {
            return bad("producer batch_size must be at least 1");
        }
        if self.batch_max_bytes < 1024 {
            return bad("producer batch_max_bytes must be at least 1024");
        }
        if self.max_message_size == 0 {
            return bad("producer max_message_size must be at least 1");
        }
        if self.buffer_memory < self.max_message_size {
            return bad("producer buffer_memory must be at least max_message_size");
        }
        if self.buffer_memory > u32::MAX as usize {
            return bad("producer buffer_memory must be below 4 GiB");
        }
        self.compression.validate().map_err(|e| match e {
            crate::ClientError::InvalidConfig(m) => {
                crate::ClientError::InvalidConfig(format!("producer {m}"))
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CompressionAlgorithm;

    #[cfg(feature = "compression")]
    #[test]
    fn compression_is_checked_as_the_clients_is() {
        use crate::config::ClientConfig;

        let compression = |algorithm, level| CompressionConfig {
            enabled: true,
            algorithm,
            level,
            ..CompressionConfig::default()
        };
        for (algorithm, level, valid) in [
            (CompressionAlgorithm::Zstd, 3, true),
            (CompressionAlgorithm::Zstd, 0, false),
            (CompressionAlgorithm::Zstd, 23, false),
            (CompressionAlgorithm::Gzip, 9, true),
            (CompressionAlgorithm::Gzip, 10, false),
            (CompressionAlgorithm::Lz4, 12, true),
            (CompressionAlgorithm::Lz4, 13, false),
        ] {
            let producer = ProducerConfig {
                compression: compression(algorithm, level),
                ..ProducerConfig::default()
            };
            let client = ClientConfig {
                compression: compression(algorithm, level),
                ..ClientConfig::default()
            };
            assert_eq!(producer.validate().is_ok(), valid, "{algorithm:?} {level}");
            assert_eq!(client.validate().is_ok(), valid, "{algorithm:?} {level}");
            if let Err(e) = producer.validate() {
                assert!(e.to_string().contains("producer compression.level"), "{e}");
            }
        }
        let disabled = ProducerConfig {
            compression: CompressionConfig {
                enabled: false,
                ..compression(CompressionAlgorithm::Zstd, 99)
            },
            ..ProducerConfig::default()
        };
        assert!(disabled.validate().is_ok());
    }

    /// Without the `compression` feature a producer set to compress is refused when it is
    /// built, by this check (before the client is asked anything), naming the feature.
    #[cfg(not(feature = "compression"))]
    #[test]
    fn a_codec_without_the_compression_feature_is_an_invalid_config() {
        let producer = |enabled, algorithm| ProducerConfig {
            compression: CompressionConfig {
                enabled,
                algorithm,
                ..CompressionConfig::default()
            },
            ..ProducerConfig::default()
        };
        match producer(true, CompressionAlgorithm::Lz4).validate() {
            Err(crate::ClientError::InvalidConfig(m)) => {
                assert!(
                    m.starts_with("producer compression.algorithm \"lz4\""),
                    "{m}"
                );
                assert!(m.contains("`compression` feature"), "{m}");
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
        for algorithm in [CompressionAlgorithm::Zstd, CompressionAlgorithm::Gzip] {
            assert!(matches!(
                producer(true, algorithm).validate(),
                Err(crate::ClientError::InvalidConfig(_))
            ));
        }
        producer(false, CompressionAlgorithm::Lz4)
            .validate()
            .unwrap();
        producer(true, CompressionAlgorithm::None)
            .validate()
            .unwrap();
        ProducerConfig::default().validate().unwrap();
    }
}
