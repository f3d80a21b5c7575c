//! Request and response bodies.
//!
//! Each request kind has one response kind (`kind | RESPONSE_BIT`); any request may instead be
//! answered with an [`ErrorResponse`]. All kinds are at version 1.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{wire_enum, wire_struct, Decode, Encode, Reader};
use crate::error::{ProtocolError, Result};
use crate::error_code::ErrorCode;

/// The protocol version spoken by this crate (negotiated in [`HelloRequest`]).
pub const PROTOCOL_VERSION: u16 = 1;
/// The ALPN protocol id of RustMQ over QUIC.
pub const ALPN: &[u8] = b"rustmq/1";

/// The smallest UDP payload a QUIC path must carry (RFC 9000, section 14), and the smallest
/// `max_udp_payload_size` a RustMQ peer may be configured with.
pub const MIN_UDP_PAYLOAD_SIZE: u16 = 1200;

/// The largest UDP payload a RustMQ peer accepts and probes for by default: QUIC's
/// `max_udp_payload_size`, and the upper bound of path MTU discovery (RFC 8899).
///
/// Discovery finds what the path carries: about 1,450–1,470 bytes over Ethernet, and up to
/// this bound over loopback or jumbo frames, where fewer, larger datagrams move the same bytes
/// with a fraction of the per-datagram work (interleaved runs on loopback against quinn's
/// default bound of 1,452: W1 0.98–1.32x, W2 1.46x, W3 1.11–1.29x; see
/// `docs/PERFORMANCE-HISTORY.md`, the session of 2026-11-27 from 14:12).
///
/// It is also the largest value allowed: quinn sends up to 10 datagrams in one GSO call, and
/// Linux refuses a call of more than 64 KiB (`EMSGSIZE`, which quinn drops silently), so with
/// larger datagrams whole batches are lost. Measured: W3 took 27 s instead of 0.5 s with a
/// bound of 7,000.
pub const MAX_UDP_PAYLOAD_SIZE: u16 = 6550;

/// How many ack-eliciting packets a RustMQ peer lets the other end receive before it must
/// acknowledge them in a packet of its own (QUIC's ACK frequency extension,
/// draft-ietf-quic-ack-frequency, which quinn speaks on both ends). Until then the
/// acknowledgements ride on the other end's own packets (its answers, its next requests), or
/// go out after its `max_ack_delay` (25 ms). quinn's behaviour without the extension is 1: an
/// acknowledgement for every other packet.
///
/// At 2, a consumer's next fetch and a produce request that reach the broker one after the
/// other no longer draw an acknowledgement packet of their own ahead of the answers: a
/// `sendmsg` on the broker and a wake-up of the client saved for about one message in three
/// of W4 (3,452 such packets in 10,000 messages before). Interleaved runs against no extension:
/// W4 p50 0.86x, W5 1.04–1.07x msgs/s, W2 1.07x, W3 1.05x, W1 unchanged, but W7 consume
/// 0.89–0.96x over four series (see `docs/PERFORMANCE.md`). Larger values
/// save more acknowledgements in bulk transfers, but a sender held back by a small congestion
/// window (after losses, on real networks) then waits up to the delay for them.
pub const ACK_ELICITING_THRESHOLD: u32 = 2;

/// Checks a configured `max_udp_payload_size` against [`MIN_UDP_PAYLOAD_SIZE`] and
/// [`MAX_UDP_PAYLOAD_SIZE`]; the error names the setting as `name`.
pub fn check_udp_payload_size(name: &str, size: u16) -> std::result::Result<(), String> {
    if (MIN_UDP_PAYLOAD_SIZE..=MAX_UDP_PAYLOAD_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be between {MIN_UDP_PAYLOAD_SIZE} and {MAX_UDP_PAYLOAD_SIZE} bytes \
             (got {size})"
        ))
    }
}

wire_enum! {
    /// How much durability a produce waits for before it is answered.
    pub enum Acks {
        /// The broker answers as soon as it has read the request; nothing is promised.
        None = 0,
        /// The broker answers after appending to its log (page cache).
        Leader = 1,
        /// The broker answers after the append is on disk (fdatasync).
        All = 2,
    }
}

// ---- connection ----------------------------------------------------------------------------

/// Credentials presented in the hello exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Username and password (SASL PLAIN style).
    Plain {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token.
    Token(String),
}

impl Encode for Credentials {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Credentials::Plain { username, password } => {
                buf.put_u8(1);
                username.encode(buf);
                password.encode(buf);
            }
            Credentials::Token(token) => {
                buf.put_u8(2);
                token.encode(buf);
            }
        }
    }
}

impl Decode for Credentials {
    fn decode(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            1 => Ok(Credentials::Plain {
                username: String::decode(r)?,
                password: String::decode(r)?,
            }),
            2 => Ok(Credentials::Token(String::decode(r)?)),
            v => Err(ProtocolError::InvalidValue {
                field: "credentials",
                value: v.into(),
            }),
        }
    }
}

wire_struct! {
    /// First request on a connection: version negotiation and credentials.
    pub struct HelloRequest {
        /// Lowest protocol version the client speaks.
        pub min_version: u16,
        /// Highest protocol version the client speaks.
        pub max_version: u16,
        /// Client identifier for logs and metrics.
        pub client_id: String,
        /// Optional credentials.
        pub credentials: Option<Credentials>,
    }
}

wire_struct! {
    /// Limits a broker enforces; clients size their requests by them.
    pub struct BrokerLimits {
        /// Largest frame body accepted.
        pub max_frame_bytes: u32,
        /// Largest record batch accepted.
        pub max_batch_bytes: u32,
        /// Requests in flight per connection.
        pub max_in_flight: u32,
    }
}

wire_struct! {
    /// Answer to [`HelloRequest`].
    pub struct HelloResponse {
        /// The version both sides will speak.
        pub version: u16,
        /// The broker's id.
        pub broker_id: u32,
        /// The broker's limits.
        pub limits: BrokerLimits,
        /// The principal the connection was authenticated as (`anonymous` without credentials).
        pub principal: String,
    }
}

wire_struct! {
    /// Liveness probe.
    pub struct PingRequest {
        /// Echoed back.
        pub nonce: u64,
    }
}

wire_struct! {
    /// Answer to [`PingRequest`].
    pub struct PingResponse {
        /// The request's nonce.
        pub nonce: u64,
    }
}

// ---- metadata and topics ----------------------------------------------------------------------

wire_struct! {
    /// Asks for brokers and topics.
    pub struct MetadataRequest {
        /// Topics of interest; `None` for all.
        pub topics: Option<Vec<String>>,
    }
}

wire_struct! {
    /// A broker's address.
    pub struct BrokerInfo {
        /// Broker id.
        pub id: u32,
        /// Host the broker is reachable at.
        pub host: String,
        /// UDP port.
        pub port: u16,
    }
}

wire_struct! {
    /// Where a partition lives.
    pub struct PartitionMetadata {
        /// Partition number.
        pub partition: u32,
        /// Broker id of the leader.
        pub leader: u32,
    }
}

wire_struct! {
    /// A topic's partitions.
    pub struct TopicMetadata {
        /// Topic name.
        pub name: String,
        /// Its partitions.
        pub partitions: Vec<PartitionMetadata>,
    }
}

wire_struct! {
    /// Answer to [`MetadataRequest`].
    pub struct MetadataResponse {
        /// The answering broker.
        pub broker_id: u32,
        /// Known brokers.
        pub brokers: Vec<BrokerInfo>,
        /// Requested topics that exist.
        pub topics: Vec<TopicMetadata>,
    }
}

wire_struct! {
    /// Per-topic settings; `None` takes the broker default.
    #[derive(Default)]
    pub struct TopicSettings {
        /// Delete segments older than this (ms).
        pub retention_ms: Option<u64>,
        /// Delete old segments while a partition is larger than this.
        pub retention_bytes: Option<u64>,
        /// Roll a new segment at this size.
        pub segment_bytes: Option<u64>,
    }
}

wire_struct! {
    /// Creates a topic.
    pub struct CreateTopicRequest {
        /// Topic name.
        pub name: String,
        /// Number of partitions; 0 asks for the broker's default (its `default_partitions`,
        /// which auto-created topics get too).
        pub partitions: u32,
        /// Settings.
        pub settings: TopicSettings,
    }
}

wire_struct! {
    /// Answer to [`CreateTopicRequest`].
    pub struct CreateTopicResponse {
        /// Topic name.
        pub name: String,
        /// Partitions created.
        pub partitions: u32,
    }
}

wire_struct! {
    /// The partition count of a topic about to be produced to, creating the topic first where
    /// the broker auto-creates topics, as a produce to it would (with the broker's default
    /// partitions): a producer then partitions its first keyed messages by the topic's real
    /// count, not by a guess. Needs `write` on the topic (and `create` to create it), as a
    /// produce does. Answered with [`CreateTopicResponse`] (`partitions`: the topic's count);
    /// [`ErrorCode::UnknownTopic`] when the topic neither exists nor is auto-created. Brokers
    /// before this request answer [`ErrorCode::UnknownRequestKind`].
    pub struct AutoCreateTopicRequest {
        /// Topic name.
        pub name: String,
    }
}

wire_struct! {
    /// Deletes a topic and its data.
    pub struct DeleteTopicRequest {
        /// Topic name.
        pub name: String,
    }
}

wire_struct! {
    /// Answer to [`DeleteTopicRequest`].
    pub struct DeleteTopicResponse {
        /// Topic name.
        pub name: String,
    }
}

wire_struct! {
    /// Lists topics.
    pub struct ListTopicsRequest {}
}

wire_struct! {
    /// One listed topic.
    pub struct TopicSummary {
        /// Topic name.
        pub name: String,
        /// Partition count.
        pub partitions: u32,
    }
}

wire_struct! {
    /// Answer to [`ListTopicsRequest`].
    pub struct ListTopicsResponse {
        /// Topics, sorted by name.
        pub topics: Vec<TopicSummary>,
    }
}

wire_struct! {
    /// Describes a topic.
    pub struct DescribeTopicRequest {
        /// Topic name.
        pub name: String,
    }
}

wire_struct! {
    /// State of one partition.
    pub struct PartitionDescription {
        /// Partition number.
        pub partition: u32,
        /// First offset still stored.
        pub log_start_offset: u64,
        /// Offset the next record will get.
        pub high_watermark: u64,
        /// Bytes on disk.
        pub size_bytes: u64,
        /// Number of segment files.
        pub segments: u32,
    }
}

wire_struct! {
    /// Answer to [`DescribeTopicRequest`].
    pub struct DescribeTopicResponse {
        /// Topic name.
        pub name: String,
        /// Effective settings.
        pub settings: TopicSettings,
        /// Partitions in order.
        pub partitions: Vec<PartitionDescription>,
    }
}

// ---- data ----------------------------------------------------------------------------------------

wire_struct! {
    /// Appends one record batch to a partition.
    pub struct ProduceRequest {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// Durability to wait for.
        pub acks: Acks,
        /// Longest the broker may take before answering (ms).
        pub timeout_ms: u32,
        /// One encoded record batch (see [`crate::batch`]).
        pub batch: Bytes,
    }
}

wire_struct! {
    /// Answer to [`ProduceRequest`].
    pub struct ProduceResponse {
        /// Offset assigned to the first record.
        pub base_offset: u64,
        /// Time the broker appended the batch (ms).
        pub log_append_time: i64,
        /// First offset still stored in the partition.
        pub log_start_offset: u64,
        /// The batch was a duplicate of one already stored (idempotence); nothing was appended.
        pub duplicate: bool,
    }
}

wire_struct! {
    /// Reads batches from a partition.
    pub struct FetchRequest {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// First offset wanted.
        pub offset: u64,
        /// Soft cap on the answer size; at least one whole batch is always returned.
        pub max_bytes: u32,
        /// Longest to wait when nothing is available at `offset` (ms).
        pub max_wait_ms: u32,
    }
}

wire_struct! {
    /// Answer to [`FetchRequest`].
    pub struct FetchResponse {
        /// Offset the next record will get.
        pub high_watermark: u64,
        /// First offset still stored.
        pub log_start_offset: u64,
        /// Whole stored batches, concatenated; the first one contains `offset`.
        pub records: Bytes,
    }
}

/// Which offset [`ListOffsetsRequest`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first stored offset.
    Earliest,
    /// The offset the next record will get.
    Latest,
    /// The first offset whose record timestamp is at or after this time (ms).
    Timestamp(i64),
}

impl Encode for OffsetSpec {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            OffsetSpec::Earliest => buf.put_u8(0),
            OffsetSpec::Latest => buf.put_u8(1),
            OffsetSpec::Timestamp(ts) => {
                buf.put_u8(2);
                buf.put_i64(*ts);
            }
        }
    }
}

impl Decode for OffsetSpec {
    fn decode(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            0 => Ok(OffsetSpec::Earliest),
            1 => Ok(OffsetSpec::Latest),
            2 => Ok(OffsetSpec::Timestamp(r.i64()?)),
            v => Err(ProtocolError::InvalidValue {
                field: "offset spec",
                value: v.into(),
            }),
        }
    }
}

wire_struct! {
    /// Looks up an offset in a partition.
    pub struct ListOffsetsRequest {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// What to look up.
        pub spec: OffsetSpec,
    }
}

wire_struct! {
    /// Answer to [`ListOffsetsRequest`].
    pub struct ListOffsetsResponse {
        /// The offset found; for a timestamp with no later record, the high watermark.
        pub offset: u64,
        /// Timestamp of the record at `offset`, if one was found by timestamp.
        pub timestamp: Option<i64>,
        /// Offset the next record will get.
        pub high_watermark: u64,
    }
}

wire_struct! {
    /// Obtains an idempotent producer id and epoch.
    pub struct InitProducerRequest {
        /// A stable name: the same name gets the same id and a higher epoch, fencing older
        /// instances. `None` gets a fresh id.
        pub name: Option<String>,
    }
}

wire_struct! {
    /// Answer to [`InitProducerRequest`].
    pub struct InitProducerResponse {
        /// Producer id.
        pub producer_id: i64,
        /// Producer epoch.
        pub epoch: i16,
    }
}

// ---- consumer groups -------------------------------------------------------------------------

wire_struct! {
    /// Partitions of one topic.
    pub struct TopicPartitions {
        /// Topic name.
        pub topic: String,
        /// Partition numbers.
        pub partitions: Vec<u32>,
    }
}

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Largest `segment_bytes` a topic may set: brokers index their segments with 32-bit file
/// positions.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// The longest consumer group name a broker takes, in bytes (a group's offsets file is named
/// by the hex of its name, within a file name's 255 bytes).
pub const MAX_GROUP_NAME_LEN: usize = 120;

/// The longest member id a join may carry, in bytes.
pub const MAX_MEMBER_ID_LEN: usize = 255;

/// The longest client id a hello or a join may carry, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 255;

/// Most topics one member of a consumer group may subscribe to (a join's `topics`).
pub const MAX_SUBSCRIBED_TOPICS: usize = 1_000;

/// Most topics a [`MetadataRequest`] may name (`None` asks for them all).
pub const MAX_METADATA_TOPICS: usize = 10_000;

/// Most entries (partitions, counted over every topic) one [`CommitOffsetsRequest`] or
/// [`FetchOffsetsRequest`] may carry: what one group's offsets can hold in a few megabytes.
pub const MAX_OFFSET_ENTRIES: usize = 100_000;

/// The largest hello a broker takes, in bytes of frame body: a hello is read before the
/// connection has any room in the broker's request budget, so client id and credentials
/// together must fit in it.
pub const MAX_HELLO_BYTES: u32 = 4096;

/// A member id made from a client id: the client id's first 200 bytes (cut at a character
/// boundary), `-` and `random` in 16 hex digits, within [`MAX_MEMBER_ID_LEN`] whatever the
/// client id's length.
pub fn member_id(client_id: &str, random: u64) -> String {
    let mut end = client_id.len().min(200);
    while !client_id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{random:016x}", &client_id[..end])
}

/// The committed-offsets entry of stream processing's windowed mode in earlier builds
/// (partition 0: every window ending at or before its offset is finished), one for the whole
/// group. It names no topic. Read, not written, since the entries went per input partition
/// (`__closed.<topic>`).
pub const CLOSED_ENTRY: &str = "__closed";

/// Prefixes of stream processing's committed-offsets entries about a topic: `__out.<topic>`
/// (exactly-once outputs), `__seen.<topic>` (inputs seen) and `__closed.<topic>` (windows
/// finished, per input partition).
pub const ENTRY_PREFIXES_ABOUT_TOPIC: [&str; 3] = ["__out.", "__seen.", "__closed."];

/// The topic a library entry is about (`__seen.<topic>` and the other
/// [`ENTRY_PREFIXES_ABOUT_TOPIC`]), if it is one.
pub fn entry_topic(name: &str) -> Option<&str> {
    ENTRY_PREFIXES_ABOUT_TOPIC
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
}

/// Whether a committed-offsets entry is one of the client libraries' own ([`CLOSED_ENTRY`],
/// or an entry about a topic) rather than a topic's offsets: unless a topic has that name.
pub fn is_library_entry(name: &str) -> bool {
    name == CLOSED_ENTRY
        || ENTRY_PREFIXES_ABOUT_TOPIC
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

wire_struct! {
    /// Joins (or rejoins) a consumer group; answered once the group's assignment is settled.
    pub struct JoinGroupRequest {
        /// Group name.
        pub group: String,
        /// The member's id: from an earlier join, or one the member chose (at most
        /// [`MAX_MEMBER_ID_LEN`] bytes; see [`member_id`]), so that a join sent again is the
        /// same member's; empty for a new member the broker names. An id the group does not
        /// know joins as a new member.
        pub member_id: String,
        /// Client id for descriptions.
        pub client_id: String,
        /// Topics the member subscribes to.
        pub topics: Vec<String>,
        /// The member is removed if no heartbeat arrives for this long (ms).
        pub session_timeout_ms: u32,
        /// How long the broker waits for members to rejoin during a rebalance (ms).
        pub rebalance_timeout_ms: u32,
    }
}

wire_struct! {
    /// Answer to [`JoinGroupRequest`].
    pub struct JoinGroupResponse {
        /// The member's id.
        pub member_id: String,
        /// The group generation this assignment belongs to.
        pub generation: u32,
        /// Partitions assigned to this member.
        pub assignment: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// Keeps a membership alive.
    pub struct HeartbeatRequest {
        /// Group name.
        pub group: String,
        /// Member id.
        pub member_id: String,
        /// Generation the member is in.
        pub generation: u32,
    }
}

wire_struct! {
    /// Answer to [`HeartbeatRequest`].
    pub struct HeartbeatResponse {
        /// The group is rebalancing: the member should commit and rejoin.
        pub rebalance: bool,
    }
}

wire_struct! {
    /// Leaves a group.
    pub struct LeaveGroupRequest {
        /// Group name.
        pub group: String,
        /// Member id.
        pub member_id: String,
    }
}

wire_struct! {
    /// Answer to [`LeaveGroupRequest`].
    pub struct LeaveGroupResponse {}
}

wire_struct! {
    /// One committed position.
    pub struct PartitionOffset {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// Next offset to consume.
        pub offset: u64,
    }
}

wire_struct! {
    /// Commits offsets for a group, fenced by generation.
    pub struct CommitOffsetsRequest {
        /// Group name.
        pub group: String,
        /// Member id; empty for a commit outside group membership.
        pub member_id: String,
        /// Generation; ignored when `member_id` is empty.
        pub generation: u32,
        /// Positions to commit.
        pub offsets: Vec<PartitionOffset>,
    }
}

wire_struct! {
    /// Answer to [`CommitOffsetsRequest`].
    pub struct CommitOffsetsResponse {}
}

wire_struct! {
    /// Reads committed offsets.
    pub struct FetchOffsetsRequest {
        /// Group name.
        pub group: String,
        /// Partitions of interest.
        pub partitions: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// A committed position, if any.
    pub struct CommittedOffset {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// Next offset to consume, `None` if nothing was committed.
        pub offset: Option<u64>,
    }
}

wire_struct! {
    /// Answer to [`FetchOffsetsRequest`].
    pub struct FetchOffsetsResponse {
        /// One entry per requested partition.
        pub offsets: Vec<CommittedOffset>,
    }
}

wire_struct! {
    /// Describes a group.
    pub struct DescribeGroupRequest {
        /// Group name.
        pub group: String,
    }
}

wire_struct! {
    /// One member of a group.
    pub struct MemberDescription {
        /// Member id.
        pub member_id: String,
        /// Client id.
        pub client_id: String,
        /// Assigned partitions.
        pub assignment: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// Answer to [`DescribeGroupRequest`].
    pub struct DescribeGroupResponse {
        /// Group name.
        pub group: String,
        /// `empty`, `rebalancing` or `stable`.
        pub state: String,
        /// Current generation.
        pub generation: u32,
        /// Members.
        pub members: Vec<MemberDescription>,
        /// Committed offsets.
        pub offsets: Vec<PartitionOffset>,
    }
}

wire_struct! {
    /// Lists groups.
    pub struct ListGroupsRequest {}
}

wire_struct! {
    /// Answer to [`ListGroupsRequest`].
    pub struct ListGroupsResponse {
        /// Group names.
        pub groups: Vec<String>,
    }
}

wire_struct! {
    /// An error answer to any request.
    pub struct ErrorResponse {
        /// What went wrong, for programs.
        pub code: ErrorCode,
        /// What went wrong, for people.
        pub message: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_fit_whatever_the_client_id() {
        assert_eq!(member_id("c", 0xab), "c-00000000000000ab");
        let long = "é".repeat(300);
        let id = member_id(&long, u64::MAX);
        assert!(id.len() <= MAX_MEMBER_ID_LEN, "{}", id.len());
        assert!(id.ends_with("-ffffffffffffffff"));
    }

    #[test]
    fn library_entries_are_the_stream_processors_own() {
        assert!(is_library_entry("__closed") && is_library_entry("__out.orders"));
        assert!(is_library_entry("__closed.orders") && is_library_entry("__seen.orders"));
        assert!(is_library_entry("__seen.orders"));
        assert!(!is_library_entry("__audit") && !is_library_entry("orders"));
    }
}
