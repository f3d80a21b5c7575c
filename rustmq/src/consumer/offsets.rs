//! Positions: seeking (by offset or timestamp), lag and committed offsets.
//!
//! Timestamps are **milliseconds** since the Unix epoch, as in [`Message::timestamp`];
//! values below 10^11 are taken as seconds, as the seed SDK passed them (its README's
//! `one_hour_ago` is `as_secs() - 3600`). 10^11 ms is March 1973 and 10^11 s the year 5138,
//! so no timestamp a consumer could mean is read the wrong way.
//!
//! [`Message::timestamp`]: crate::Message::timestamp

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::try_join_all;
use rustmq_protocol::{
    FetchOffsetsRequest, ListOffsetsRequest, ListOffsetsResponse, OffsetSpec, Request, Response,
    TopicPartitions,
};

use super::{Consumer, Inner};
use crate::error::{ClientError, Result};

/// How far `position` is behind `hw` in a log that starts at `log_start`: records deleted
/// before they were read are not lag, as they can never be consumed.
pub(crate) fn lag_of(hw: u64, log_start: u64, position: u64) -> u64 {
    hw.saturating_sub(position.max(log_start))
}

/// Asks the broker for an offset of one partition of the consumer's topic.
pub(crate) async fn list_offset(
    inner: &Inner,
    partition: u32,
    spec: OffsetSpec,
) -> Result<ListOffsetsResponse> {
    let request = Request::ListOffsets(ListOffsetsRequest {
        topic: inner.topic.clone(),
        partition,
        spec,
    });
    match inner
        .client
        .request(request)
        .await
        .map_err(|e| e.for_topic(&inner.topic))?
    {
        Response::ListOffsets(r) => Ok(r),
        other => Err(ClientError::unexpected_response(&other)),
    }
}

/// Below this a timestamp is in seconds: 10^11 ms is March 1973, 10^11 s the year 5138.
const SECONDS_BELOW: u64 = 100_000_000_000;

/// What a timestamp given to a consumer (a seek, a start position) stands for, in
/// milliseconds since the epoch: values below 10^11 are seconds, as the seed SDK passed them,
/// and are multiplied by 1,000; others are milliseconds already. For tools that look times up
/// themselves (with `ListOffsets`) and must read them as the consumer does.
///
/// ```
/// use rustmq::consumer::timestamp_ms;
/// assert_eq!(timestamp_ms(1_700_000_000), 1_700_000_000_000);
/// assert_eq!(timestamp_ms(1_700_000_000_000), 1_700_000_000_000);
/// ```
pub fn timestamp_ms(timestamp: u64) -> u64 {
    if timestamp < SECONDS_BELOW {
        timestamp * 1000
    } else {
        timestamp
    }
}

/// The broker's lookup of the first record at or after `timestamp` ([`timestamp_ms`]); every
/// timestamp the consumer is given goes through here.
pub(crate) fn timestamp_spec(timestamp: u64) -> OffsetSpec {
    OffsetSpec::Timestamp(i64::try_from(timestamp_ms(timestamp)).unwrap_or(i64::MAX))
}

impl Consumer {
    fn seek_local(&self, partition: u32, offset: u64) -> Result<()> {
        if self.inner.state.lock().seek(partition, offset) {
            tracing::debug!(topic = %self.inner.topic, partition, offset, "sought");
            Ok(())
        } else {
            Err(self.inner.not_assigned(partition))
        }
    }

    /// Continues `partition` at `offset`: messages buffered or awaiting a retry from that
    /// partition are dropped, acks of messages delivered before the seek are ignored, and the
    /// next commit stores `offset` (unless messages delivered after the seek are pending).
    ///
    /// An offset outside the stored range is moved to the nearest stored offset when it is
    /// fetched. Fails with [`ClientError::PartitionNotAssigned`] if the partition is not
    /// assigned to this consumer.
    pub async fn seek(&self, partition: u32, offset: u64) -> Result<()> {
        self.seek_local(partition, offset)
    }

    /// [`seek`](Self::seek)s every assigned partition to `offset`.
    pub async fn seek_all(&self, offset: u64) -> Result<()> {
        let owned = self.inner.state.lock().owned();
        for partition in owned {
            // A partition revoked meanwhile has nothing left to seek.
            let _ = self.seek_local(partition, offset);
        }
        Ok(())
    }

    /// Seeks `partition` to its first record with a timestamp at or after `timestamp_ms`,
    /// using the broker's time index; to the high watermark if no record is that recent.
    /// Returns the offset.
    ///
    /// `timestamp_ms` is in milliseconds since the epoch; values below 10^11 are taken as
    /// seconds, as the seed SDK passed them (`SystemTime::now()...as_secs() - 3600` is an
    /// hour ago, not January 1970).
    pub async fn seek_to_timestamp(&self, partition: u32, timestamp_ms: u64) -> Result<u64> {
        if !self.inner.state.lock().partitions.contains_key(&partition) {
            return Err(self.inner.not_assigned(partition));
        }
        let offset = list_offset(&self.inner, partition, timestamp_spec(timestamp_ms))
            .await?
            .offset;
        self.seek_local(partition, offset)?;
        Ok(offset)
    }

    /// [`seek_to_timestamp`](Self::seek_to_timestamp) on every assigned partition; returns
    /// partition -> offset.
    ///
    /// `timestamp_ms` is in milliseconds since the epoch; values below 10^11 are taken as
    /// seconds, as the seed SDK passed them.
    pub async fn seek_all_to_timestamp(&self, timestamp_ms: u64) -> Result<HashMap<u32, u64>> {
        let owned = self.inner.state.lock().owned();
        let found = try_join_all(owned.into_iter().map(|p| {
            let inner = Arc::clone(&self.inner);
            async move {
                let r = list_offset(&inner, p, timestamp_spec(timestamp_ms)).await?;
                Ok::<_, ClientError>((p, r.offset))
            }
        }))
        .await?;
        let mut sought = HashMap::new();
        for (partition, offset) in found {
            if self.seek_local(partition, offset).is_ok() {
                sought.insert(partition, offset);
            }
        }
        Ok(sought)
    }

    /// Lag per assigned partition: the high watermark (asked of the broker now) minus this
    /// consumer's position (the offset after the last message handed to the application;
    /// messages fetched but not yet received count as lag). Records retention deleted before
    /// they were read do not count: they can never be consumed (a paused partition's position
    /// stays where it was while its log start moves on).
    pub async fn get_lag(&self) -> Result<HashMap<u32, u64>> {
        let owned = self.inner.state.lock().owned();
        let marks = try_join_all(owned.into_iter().map(|p| {
            let inner = Arc::clone(&self.inner);
            async move {
                // The earliest offset's answer carries the high watermark too.
                let r = list_offset(&inner, p, OffsetSpec::Earliest).await?;
                Ok::<_, ClientError>((p, r.offset, r.high_watermark))
            }
        }))
        .await?;
        let state = self.inner.state.lock();
        let mut lag = HashMap::new();
        for (partition, log_start, hw) in marks {
            if let Some(p) = state.partitions.get(&partition) {
                let behind = lag_of(hw, log_start, p.tracker.position());
                self.inner.metrics.set_lag(partition, behind);
                self.inner.instruments.set_lag(partition, behind);
                lag.insert(partition, behind);
            }
        }
        Ok(lag)
    }

    /// The position of an assigned partition: the offset after the last message handed to
    /// the application (or where delivery starts). `None` if not assigned.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.inner
            .state
            .lock()
            .partitions
            .get(&partition)
            .map(|p| p.tracker.position())
    }

    /// The offset the group has committed for `partition` (the next one to consume), as the
    /// broker has it; any partition of the topic may be asked, assigned or not. Fails with
    /// [`ClientError::NoCommittedOffset`] if the group never committed one.
    pub async fn committed_offset(&self, partition: u32) -> Result<u64> {
        let request = Request::FetchOffsets(FetchOffsetsRequest {
            group: self.inner.group.clone(),
            partitions: vec![TopicPartitions {
                topic: self.inner.topic.clone(),
                partitions: vec![partition],
            }],
        });
        let offset = match self.inner.client.request(request).await? {
            Response::FetchOffsets(r) => r
                .offsets
                .into_iter()
                .find(|o| o.topic == self.inner.topic && o.partition == partition)
                .and_then(|o| o.offset),
            other => return Err(ClientError::unexpected_response(&other)),
        };
        offset.ok_or_else(|| ClientError::NoCommittedOffset {
            group: self.inner.group.clone(),
            topic: self.inner.topic.clone(),
            partition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_below_ten_to_the_eleven_are_seconds() {
        // The seed README's `one_hour_ago` (seconds) and the same instant in milliseconds.
        assert_eq!(timestamp_ms(1_700_000_000), 1_700_000_000_000);
        assert_eq!(timestamp_ms(1_700_000_000_000), 1_700_000_000_000);
        assert_eq!(timestamp_ms(99_999_999_999), 99_999_999_999_000);
        assert_eq!(timestamp_ms(100_000_000_000), 100_000_000_000);
        assert_eq!(timestamp_ms(0), 0);
        assert_eq!(timestamp_spec(u64::MAX), OffsetSpec::Timestamp(i64::MAX));
        assert_eq!(
            timestamp_spec(1_700_000_000),
            OffsetSpec::Timestamp(1_700_000_000_000)
        );
    }
}
