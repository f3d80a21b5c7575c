//! Topic and consumer-group administration types, returned by [`RustMqClient`](crate::RustMqClient)'s admin
//! methods.
//!
//! These are the client's own types rather than the wire structs, so that the wire format can
//! evolve without breaking users (and so that durations are [`Duration`]s, not milliseconds).

use std::time::Duration;

use rustmq_protocol as wire;

/// Per-topic settings; `None` takes the broker's default.
///
/// ```
/// use std::time::Duration;
/// use rustmq::TopicSettings;
///
/// let settings = TopicSettings::new()
///     .with_retention(Duration::from_secs(7 * 24 * 3600))
///     .with_segment_bytes(64 * 1024 * 1024);
/// assert_eq!(settings.retention_bytes, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSettings {
    /// Segments whose records are all older than this are deleted.
    pub retention: Option<Duration>,
    /// Old segments are deleted while a partition is larger than this many bytes.
    pub retention_bytes: Option<u64>,
    /// A partition rolls to a new segment file at this size: at most 4 GiB - 1
    /// ([`MAX_SEGMENT_BYTES`](rustmq_protocol::MAX_SEGMENT_BYTES)), which `u64::MAX` ("as
    /// large as there is") is sent as; a broker refuses any other larger value.
    pub segment_bytes: Option<u64>,
}

impl TopicSettings {
    /// Broker defaults for everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time-based retention.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Sets the size-based retention, per partition.
    pub fn with_retention_bytes(mut self, bytes: u64) -> Self {
        self.retention_bytes = Some(bytes);
        self
    }

    /// Sets the segment size.
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = Some(bytes);
        self
    }
}

/// Brokers take settings up to `i64::MAX` (what their topic files hold): larger ones, the
/// natural way to say "unlimited" (`Duration::MAX`, `u64::MAX`), are sent as that, which is
/// as unlimited (292 million years, 8 EiB). A segment size of `u64::MAX` is sent as the
/// largest a broker takes, 4 GiB - 1.
impl From<TopicSettings> for wire::TopicSettings {
    fn from(s: TopicSettings) -> Self {
        let most = |v: u64| v.min(i64::MAX as u64);
        wire::TopicSettings {
            // Rounded up: a retention under a millisecond is not zero, which would keep
            // nothing past the next retention pass.
            retention_ms: s
                .retention
                .map(|d| most(u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))),
            retention_bytes: s.retention_bytes.map(most),
            segment_bytes: s.segment_bytes.map(|b| match b {
                u64::MAX => wire::MAX_SEGMENT_BYTES,
                b => b,
            }),
        }
    }
}

impl From<wire::TopicSettings> for TopicSettings {
    fn from(s: wire::TopicSettings) -> Self {
        TopicSettings {
            retention: s.retention_ms.map(Duration::from_millis),
            retention_bytes: s.retention_bytes,
            segment_bytes: s.segment_bytes,
        }
    }
}

/// A topic as listed by [`RustMqClient::list_topics`](crate::RustMqClient::list_topics).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
}

impl From<wire::TopicSummary> for TopicSummary {
    fn from(t: wire::TopicSummary) -> Self {
        TopicSummary {
            name: t.name,
            partitions: t.partitions,
        }
    }
}

/// A topic's settings and partitions, from
/// [`RustMqClient::describe_topic`](crate::RustMqClient::describe_topic).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Effective settings (broker defaults filled in where the broker reports them).
    pub settings: TopicSettings,
    /// Partitions, in partition order.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicDescription {
    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        u32::try_from(self.partitions.len()).unwrap_or(u32::MAX)
    }
}

impl From<wire::DescribeTopicResponse> for TopicDescription {
    fn from(t: wire::DescribeTopicResponse) -> Self {
        TopicDescription {
            name: t.name,
            settings: t.settings.into(),
            partitions: t.partitions.into_iter().map(PartitionInfo::from).collect(),
        }
    }
}

/// State of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored (earlier records were removed by retention).
    pub log_start_offset: u64,
    /// Offset the next record will get.
    pub high_watermark: u64,
    /// Bytes on the broker's disk.
    pub size_bytes: u64,
    /// Number of segment files.
    pub segments: u32,
}

impl PartitionInfo {
    /// Records currently stored (`high_watermark - log_start_offset`).
    pub fn record_count(&self) -> u64 {
        self.high_watermark.saturating_sub(self.log_start_offset)
    }
}

impl From<wire::PartitionDescription> for PartitionInfo {
    fn from(p: wire::PartitionDescription) -> Self {
        PartitionInfo {
            partition: p.partition,
            log_start_offset: p.log_start_offset,
            high_watermark: p.high_watermark,
            size_bytes: p.size_bytes,
            segments: p.segments,
        }
    }
}

/// Brokers and topic layout, from [`RustMqClient::metadata`](crate::RustMqClient::metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterMetadata {
    /// Id of the broker that answered.
    pub broker_id: u32,
    /// Known brokers.
    pub brokers: Vec<BrokerInfo>,
    /// Requested topics that exist (all topics when none were named).
    pub topics: Vec<TopicMetadata>,
}

impl ClusterMetadata {
    /// The metadata of `topic`, if it exists.
    pub fn topic(&self, topic: &str) -> Option<&TopicMetadata> {
        self.topics.iter().find(|t| t.name == topic)
    }
}

impl From<wire::MetadataResponse> for ClusterMetadata {
    fn from(m: wire::MetadataResponse) -> Self {
        ClusterMetadata {
            broker_id: m.broker_id,
            brokers: m
                .brokers
                .into_iter()
                .map(|b| BrokerInfo {
                    id: b.id,
                    host: b.host,
                    port: b.port,
                })
                .collect(),
            topics: m
                .topics
                .into_iter()
                .map(|t| TopicMetadata {
                    name: t.name,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionMetadata {
                            partition: p.partition,
                            leader: p.leader,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A broker's identity and address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerInfo {
    /// Broker id.
    pub id: u32,
    /// Host the broker is reachable at.
    pub host: String,
    /// UDP port.
    pub port: u16,
}

/// Where a topic's partitions live.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Its partitions.
    pub partitions: Vec<PartitionMetadata>,
}

/// Where one partition lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionMetadata {
    /// Partition number.
    pub partition: u32,
    /// Id of the broker leading it.
    pub leader: u32,
}

/// A consumer group as the broker sees it, from
/// [`RustMqClient::describe_group`](crate::RustMqClient::describe_group).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupDescription {
    /// Group name.
    pub name: String,
    /// `empty`, `rebalancing` or `stable`.
    pub state: String,
    /// Current generation (bumped by every completed rebalance).
    pub generation: u32,
    /// Members, in member-id order.
    pub members: Vec<GroupMember>,
    /// Committed offsets (the next offset to consume), by topic and partition.
    pub offsets: Vec<CommittedOffset>,
}

impl GroupDescription {
    /// The committed offset of `topic`/`partition`, if the group committed one.
    pub fn committed(&self, topic: &str, partition: u32) -> Option<u64> {
        self.offsets
            .iter()
            .find(|o| o.topic == topic && o.partition == partition)
            .map(|o| o.offset)
    }

    /// The member that owns `topic`/`partition` in the current assignment.
    pub fn owner(&self, topic: &str, partition: u32) -> Option<&GroupMember> {
        self.members.iter().find(|m| {
            m.assignment
                .iter()
                .any(|(t, ps)| t == topic && ps.contains(&partition))
        })
    }
}

impl From<wire::DescribeGroupResponse> for GroupDescription {
    fn from(g: wire::DescribeGroupResponse) -> Self {
        GroupDescription {
            name: g.group,
            state: g.state,
            generation: g.generation,
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    assignment: m
                        .assignment
                        .into_iter()
                        .map(|tp| (tp.topic, tp.partitions))
                        .collect(),
                })
                .collect(),
            offsets: g
                .offsets
                .into_iter()
                .map(|o| CommittedOffset {
                    topic: o.topic,
                    partition: o.partition,
                    offset: o.offset,
                })
                .collect(),
        }
    }
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupMember {
    /// Member id given by the broker.
    pub member_id: String,
    /// The client id the member joined with.
    pub client_id: String,
    /// Assigned partitions, by topic.
    pub assignment: Vec<(String, Vec<u32>)>,
}

/// A group's committed position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommittedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Next offset the group will consume.
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_convert_both_ways() {
        let s = TopicSettings::new()
            .with_retention(Duration::from_secs(60))
            .with_retention_bytes(10)
            .with_segment_bytes(20);
        let w: wire::TopicSettings = s.clone().into();
        assert_eq!(
            (w.retention_ms, w.retention_bytes, w.segment_bytes),
            (Some(60_000), Some(10), Some(20))
        );
        assert_eq!(TopicSettings::from(w), s);
        assert_eq!(
            wire::TopicSettings::from(TopicSettings::new()).retention_ms,
            None
        );
        let retention_ms =
            |d| wire::TopicSettings::from(TopicSettings::new().with_retention(d)).retention_ms;
        assert_eq!(
            retention_ms(Duration::from_micros(500)),
            Some(1),
            "rounded up, not 0"
        );
        assert_eq!(retention_ms(Duration::from_micros(1_500)), Some(2));
        assert_eq!(retention_ms(Duration::ZERO), Some(0));
        assert_eq!(retention_ms(Duration::MAX), Some(i64::MAX as u64));
        let segment_bytes =
            |b| wire::TopicSettings::from(TopicSettings::new().with_segment_bytes(b)).segment_bytes;
        assert_eq!(
            segment_bytes(u64::MAX),
            Some(wire::MAX_SEGMENT_BYTES),
            "the largest"
        );
        assert_eq!(
            segment_bytes(8 << 30),
            Some(8 << 30),
            "sent as it is, for the broker to refuse"
        );
    }

    #[test]
    fn record_count_saturates() {
        let p = PartitionInfo {
            partition: 0,
            log_start_offset: 10,
            high_watermark: 25,
            size_bytes: 0,
            segments: 1,
        };
        assert_eq!(p.record_count(), 15);
        assert_eq!(
            PartitionInfo {
                log_start_offset: 30,
                ..p
            }
            .record_count(),
            0
        );
    }
}
