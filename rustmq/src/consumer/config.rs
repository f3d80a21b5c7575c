//! Consumer settings.

use std::time::Duration;

use crate::error::{ClientError, Result};

/// Where a consumer starts reading a partition for which its group has no committed offset.
///
/// Used only where nothing is committed: a committed offset always wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The first offset still stored in the partition.
    #[default]
    Earliest,
    /// The partition's high watermark: only records produced after the assignment.
    Latest,
    /// This offset (clamped into the partition's stored range if it lies outside).
    Offset(u64),
    /// The first record whose timestamp is at or after this time (the high watermark when no
    /// record is that recent), in milliseconds since the Unix epoch; values below 10^11 are
    /// taken as seconds, as the seed SDK passed them.
    Timestamp(u64),
}

/// Settings of one consumer; every field is read.
///
/// The first nine fields are the seed README's; the others (group timing, retry backoff and
/// the buffer bound) have defaults, so build a config with `..Default::default()`:
///
/// ```
/// use std::time::Duration;
/// use rustmq::consumer::{ConsumerConfig, StartPosition};
///
/// let config = ConsumerConfig {
///     consumer_id: Some("consumer-1".to_string()),
///     consumer_group: "payment-processors".to_string(),
///     enable_auto_commit: true,
///     auto_commit_interval: Duration::from_secs(5),
///     fetch_size: 500,
///     fetch_timeout: Duration::from_secs(1),
///     start_position: StartPosition::Earliest,
///     max_retry_attempts: 3,
///     dead_letter_queue: Some("failed-payments".to_string()),
///     ..Default::default()
/// };
/// assert_eq!(config.retry_backoff, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Name of this consumer in the group (the broker derives the member id from it) and in
    /// logs; `None` uses the client's `client_id`.
    pub consumer_id: Option<String>,
    /// The consumer group. `client.create_consumer(topic, group)` and
    /// [`ConsumerBuilder::consumer_group`](super::ConsumerBuilder::consumer_group) override it;
    /// it must not be empty once the consumer is built.
    pub consumer_group: String,
    /// Commit the acknowledged offsets every `auto_commit_interval` (and on rebalance and
    /// close, which always commit). With `false`, only [`Consumer::commit`](super::Consumer::commit),
    /// rebalances and [`Consumer::close`](super::Consumer::close) commit.
    pub enable_auto_commit: bool,
    /// Period of automatic commits.
    pub auto_commit_interval: Duration,
    /// Most records one fetch hands over per partition; the fetch's byte budget is sized from
    /// it and the average record size seen so far. A partition's buffer holds at least one
    /// whole fetch: a `fetch_size` above `max_buffered_messages_per_partition` raises that
    /// bound to `fetch_size` (`max_buffered_bytes_per_partition` still applies).
    pub fetch_size: usize,
    /// How long a fetch waits at the broker for new records before answering empty (the
    /// long-poll wait).
    pub fetch_timeout: Duration,
    /// Where to start in partitions without a committed offset.
    pub start_position: StartPosition,
    /// How many times a nacked message is redelivered before it goes to the dead-letter
    /// queue: with 3, a message is delivered at most 4 times (the first delivery and 3
    /// retries).
    pub max_retry_attempts: u32,
    /// Topic that receives messages whose retries ran out, with the failure in headers,
    /// produced with acks=all (on the broker's disk before the message counts as processed
    /// and its offset can be committed); with `None` they are dropped with a warning (and counted in
    /// [`ConsumerMetrics::messages_dropped`](super::ConsumerMetrics::messages_dropped)).
    pub dead_letter_queue: Option<String>,
    /// The broker removes this consumer from the group if it sends no heartbeat for this long;
    /// its partitions then move to the other members.
    pub session_timeout: Duration,
    /// Period of heartbeats; also how quickly this consumer notices a rebalance. Must be
    /// shorter than `session_timeout` and than `rebalance_timeout`.
    pub heartbeat_interval: Duration,
    /// How long the broker waits for every member to rejoin during a rebalance before it
    /// removes the ones that did not.
    pub rebalance_timeout: Duration,
    /// Delay before the first redelivery of a nacked message; the n-th retry waits
    /// `retry_backoff * 2^(n-1)` (2 s, 4 s, 8 s with the default).
    pub retry_backoff: Duration,
    /// Upper bound of a retry delay.
    pub max_retry_backoff: Duration,
    /// Messages fetched but not yet received, per partition, at least `fetch_size` (a larger
    /// `fetch_size` raises it, so that the buffer holds one whole fetch). A buffer more than
    /// half full stops that partition's fetching until the application catches up. It bounds
    /// memory only with the message size: `max_buffered_bytes_per_partition` bounds it
    /// whatever the size. Nacked messages waiting for their retry count against it too.
    pub max_buffered_messages_per_partition: usize,
    /// Bytes of fetched records not yet received, per partition: the records sections of
    /// their batches as held in memory (decompressed), and 32 bytes per record for where its
    /// fields lie (so that it is not parsed twice); large messages reach it long before
    /// the message count. A partition stops fetching once it holds more than half of this, and
    /// a fetch takes no more than the room left but always at least one batch: a partition
    /// holds at most this, or half of it plus one batch larger than the room left. (Counted
    /// per batch: an uncompressed batch shares its fetch answer's memory, which is freed once
    /// the last batch of the answer is taken, so the memory held may exceed the count by up
    /// to one answer.) Nacked messages waiting for their retry count with their payload and
    /// key bytes. Messages already received are the application's to drop and not counted.
    pub max_buffered_bytes_per_partition: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            consumer_id: None,
            consumer_group: String::new(),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            fetch_size: 500,
            fetch_timeout: Duration::from_millis(500),
            start_position: StartPosition::Earliest,
            max_retry_attempts: 3,
            dead_letter_queue: None,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            rebalance_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(2),
            max_retry_backoff: Duration::from_secs(300),
            max_buffered_messages_per_partition: 1000,
            max_buffered_bytes_per_partition: 32 << 20,
        }
    }
}

impl ConsumerConfig {
    /// Checks the settings; the message names the field.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ClientError::InvalidConfig(m.to_owned()));
        if self.consumer_group.is_empty() {
            return bad("consumer_group must not be empty");
        }
        if let Some(id) = self
            .consumer_id
            .as_deref()
            .filter(|id| id.len() > rustmq_protocol::MAX_CLIENT_ID_LEN)
        {
            return Err(ClientError::InvalidConfig(format!(
                "consumer_id is {} bytes long; brokers take client ids of at most {}",
                id.len(),
                rustmq_protocol::MAX_CLIENT_ID_LEN
            )));
        }
        if self.consumer_group.len() > rustmq_protocol::MAX_GROUP_NAME_LEN {
            return Err(ClientError::InvalidConfig(format!(
                "consumer_group is {} bytes long; brokers take group names of at most {}",
                self.consumer_group.len(),
                rustmq_protocol::MAX_GROUP_NAME_LEN
            )));
        }
        if self.fetch_size == 0 {
            return bad("consumer fetch_size must be at least 1");
        }
        if self.max_buffered_messages_per_partition == 0 {
            return bad("consumer max_buffered_messages_per_partition must be at least 1");
        }
        if self.max_buffered_bytes_per_partition == 0 {
            return bad("consumer max_buffered_bytes_per_partition must be at least 1");
        }
        if self.enable_auto_commit && self.auto_commit_interval.is_zero() {
            return bad("consumer auto_commit_interval must be greater than zero");
        }
        if self.fetch_timeout > Duration::from_millis(u64::from(u32::MAX)) {
            return bad("consumer fetch_timeout is too long");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            return bad("consumer heartbeat_interval must be greater than zero and shorter than session_timeout");
        }
        // A member learns of a rebalance from its next heartbeat's answer and must rejoin
        // within the rebalance timeout: heartbeats as far apart would miss it and have the
        // member removed at every rebalance, and rejoin, and rebalance the group again.
        if self.heartbeat_interval >= self.rebalance_timeout {
            return bad("consumer heartbeat_interval must be shorter than rebalance_timeout");
        }
        let ms = |d: Duration| d.as_millis();
        if !(100..=600_000).contains(&ms(self.session_timeout)) {
            return bad("consumer session_timeout must be between 100 ms and 10 min");
        }
        if !(100..=600_000).contains(&ms(self.rebalance_timeout)) {
            return bad("consumer rebalance_timeout must be between 100 ms and 10 min");
        }
        if let Some(dlq) = &self.dead_letter_queue {
            crate::message::validate_topic(dlq).map_err(|e| {
                ClientError::InvalidConfig(format!("consumer dead_letter_queue: {e}"))
            })?;
        }
        Ok(())
    }

    /// Messages a partition buffers at most: `max_buffered_messages_per_partition`, raised to
    /// `fetch_size` so that one whole fetch fits.
    pub(crate) fn buffer_cap(&self) -> usize {
        self.max_buffered_messages_per_partition
            .max(self.fetch_size)
    }

    /// The delay before retry number `retry` (1-based): `retry_backoff * 2^(retry-1)`, capped
    /// by `max_retry_backoff`.
    pub(crate) fn retry_delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry_backoff
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_retry_backoff)
    }

    /// A duration in milliseconds for the wire, saturating.
    pub(crate) fn ms(d: Duration) -> u32 {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ConsumerConfig {
        ConsumerConfig {
            consumer_group: "g".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid_once_a_group_is_set() {
        assert!(ConsumerConfig::default().validate().is_err());
        valid().validate().unwrap();
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            ConsumerConfig {
                fetch_size: 0,
                ..valid()
            },
            ConsumerConfig {
                max_buffered_messages_per_partition: 0,
                ..valid()
            },
            ConsumerConfig {
                max_buffered_bytes_per_partition: 0,
                ..valid()
            },
            ConsumerConfig {
                heartbeat_interval: Duration::from_secs(20),
                ..valid()
            },
            ConsumerConfig {
                session_timeout: Duration::from_millis(10),
                heartbeat_interval: Duration::from_millis(5),
                ..valid()
            },
            ConsumerConfig {
                dead_letter_queue: Some("bad topic".into()),
                ..valid()
            },
            ConsumerConfig {
                auto_commit_interval: Duration::ZERO,
                ..valid()
            },
        ];
        for c in cases {
            assert!(
                matches!(c.validate(), Err(ClientError::InvalidConfig(_))),
                "{c:?}"
            );
        }
        ConsumerConfig {
            auto_commit_interval: Duration::ZERO,
            enable_auto_commit: false,
            ..valid()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn heartbeats_must_come_more_often_than_the_rebalance_timeout() {
        let slow_heartbeats = ConsumerConfig {
            heartbeat_interval: Duration::from_millis(500),
            rebalance_timeout: Duration::from_millis(500),
            ..valid()
        };
        match slow_heartbeats.validate() {
            Err(ClientError::InvalidConfig(m)) => assert!(m.contains("rebalance_timeout"), "{m}"),
            other => panic!("{other:?}"),
        }
        ConsumerConfig {
            heartbeat_interval: Duration::from_millis(499),
            ..slow_heartbeats
        }
        .validate()
        .unwrap();
    }

    /// A consumer id the broker would refuse in the join (over 255 bytes) is refused here.
    #[test]
    fn a_consumer_id_the_broker_would_refuse_is_refused() {
        let with_id = |len: usize| ConsumerConfig {
            consumer_id: Some("c".repeat(len)),
            ..valid()
        };
        match with_id(rustmq_protocol::MAX_CLIENT_ID_LEN + 1).validate() {
            Err(ClientError::InvalidConfig(m)) => assert!(m.contains("consumer_id"), "{m}"),
            other => panic!("{other:?}"),
        }
        with_id(rustmq_protocol::MAX_CLIENT_ID_LEN)
            .validate()
            .unwrap();
    }

    #[test]
    fn the_buffer_holds_at_least_one_fetch() {
        assert_eq!(valid().buffer_cap(), 1_000);
        let big_fetches = ConsumerConfig {
            fetch_size: 10_000,
            ..valid()
        };
        assert_eq!(big_fetches.buffer_cap(), 10_000);
    }

    #[test]
    fn retry_delays_double_and_are_capped() {
        let c = valid();
        assert_eq!(c.retry_delay(1), Duration::from_secs(2));
        assert_eq!(c.retry_delay(2), Duration::from_secs(4));
        assert_eq!(c.retry_delay(3), Duration::from_secs(8));
        assert_eq!(c.retry_delay(40), Duration::from_secs(300));
        assert_eq!(c.retry_delay(0), Duration::from_secs(2));
    }
}
