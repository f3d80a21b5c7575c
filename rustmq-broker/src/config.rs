//! Broker configuration: defaults, the TOML file format, and validation.
//!
//! ```toml
//! listen = "127.0.0.1:9092"
//! data_dir = "./rustmq-data"
//! broker_id = 0
//! auto_create_topics = true
//! default_partitions = 1
//! metrics_listen = "127.0.0.1:9100"   # optional: Prometheus metrics over HTTP
//!
//! [tls]
//! cert = "/etc/rustmq/broker.pem"   # omit both for a generated, persisted self-signed certificate
//! key = "/etc/rustmq/broker-key.pem"
//! client_auth = "required"          # "none" (default), "optional" or "required"
//! client_ca = "/etc/rustmq/clients-ca.pem"
//! principal_from = "cn"             # or "san": which certificate name is the principal
//!
//! [auth]                            # see security::AuthSettings
//! required = true
//! users_file = "/etc/rustmq/users.toml"
//!
//! [[acl]]                           # see security::AclRule; no rules = open
//! principal = "alice"
//! resource = "topic"
//! name = "orders"
//! operations = ["write"]
//!
//! [limits]
//! max_frame_bytes = 16777216
//! max_batch_bytes = 8388608
//! max_connections = 1024
//! max_unauthenticated_per_address = 64        # connections of one IP not yet answered a hello
//! max_in_flight_per_connection = 256
//! hello_timeout_ms = 10000                     # a connection's handshake, then its hello
//! max_request_memory_bytes = 268435456         # request and answer bytes held, all connections
//! max_request_memory_per_connection = 33554432 # the same per connection (>= max_frame_bytes)
//! max_decompressing_bytes = 268435456          # produced batches being decompressed at once
//! max_partitions = 10000                       # partitions over all topics; more are refused
//!
//! [quic]
//! max_udp_payload_size = 6550      # largest datagram probed for (path MTU discovery)
//! ack_eliciting_threshold = 2       # broker packets a client may leave unacknowledged (0: none)
//!
//! [log]
//! segment_bytes = 134217728
//! segment_ms = 604800000            # roll the active segment at the first append after it is
//!                                   # this old (7 days; retention_ms instead when shorter)
//! index_interval_bytes = 4096
//! retention_ms = 604800000          # optional
//! retention_bytes = 1073741824      # optional, per partition
//! flush = "os"                      # "always", "os", or "interval:100ms"
//! retention_check_interval = "30s"
//! producer_id_expiration_ms = 86400000  # forget an idle idempotent producer (1 day)
//! named_producer_expiration_ms = 604800000 # forget an idle producer name (7 days)
//! group_expiration_ms = 604800000          # forget a group idle without members (7 days)
//! message_timestamp_after_max_ms = 3600000 # refuse records stamped further ahead (1 hour)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::security::{AclRule, AuthSettings};
use crate::storage::{FlushPolicy, LogConfig, MIN_RETENTION_ROLL_MS};
use crate::tls::{ClientAuth, PrincipalFrom};

/// Everything a broker needs to start. Every field has a working default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// UDP address to listen on (QUIC). Default `127.0.0.1:9092`.
    pub listen: SocketAddr,
    /// Host name advertised in metadata; defaults to the listen IP.
    pub advertised_host: Option<String>,
    /// Directory holding topics, group offsets and the generated certificate.
    pub data_dir: PathBuf,
    /// This broker's id.
    pub broker_id: u32,
    /// Create a topic on the first produce to it.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic.
    pub default_partitions: u32,
    /// TLS certificate; when absent a self-signed one is generated and kept in the data dir.
    pub tls: TlsSettings,
    /// Request and connection limits.
    pub limits: Limits,
    /// QUIC transport settings.
    pub quic: QuicSettings,
    /// Storage settings applied to every partition unless a topic overrides them.
    pub log: LogSettings,
    /// Where the broker binaries serve Prometheus metrics over HTTP (`GET /metrics`); none
    /// by default. An embedding program installs its own recorder instead (see
    /// [`crate::metrics`]).
    pub metrics_listen: Option<SocketAddr>,
    /// Authentication of the hello exchange (users, tokens, whether it is required).
    pub auth: AuthSettings,
    /// Authorization rules (`[[acl]]`); none means every request is allowed.
    pub acl: Vec<AclRule>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: None,
            data_dir: PathBuf::from("./rustmq-data"),
            broker_id: 0,
            auto_create_topics: true,
            default_partitions: 1,
            tls: TlsSettings::default(),
            limits: Limits::default(),
            quic: QuicSettings::default(),
            log: LogSettings::default(),
            metrics_listen: None,
            auth: AuthSettings::default(),
            acl: Vec::new(),
        }
    }
}

/// Certificate and key of the broker, and how clients' certificates are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Whether clients present a certificate (mutual TLS).
    pub client_auth: ClientAuth,
    /// PEM bundle of the CAs client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Which certificate name becomes the connection's principal.
    pub principal_from: PrincipalFrom,
}

/// Limits that protect the broker from any one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request frame body (bytes).
    pub max_frame_bytes: u32,
    /// Largest record batch in a produce request (bytes).
    pub max_batch_bytes: u32,
    /// Concurrent client connections; more are refused.
    pub max_connections: u32,
    /// Connections from one IP address (one IPv6 /64) whose hello has not been answered yet (in their
    /// handshake, or not yet authenticated); more from that address are refused. With
    /// `hello_timeout_ms`, this keeps one host that connects and says nothing from taking
    /// every one of `max_connections`: it can hold this many. When an eighth of
    /// `max_connections` are waiting for their hello, a new connection must first prove
    /// its address (a QUIC retry, one round trip more), so that addresses made up hold none.
    pub max_unauthenticated_per_address: u32,
    /// Concurrent requests (QUIC streams) per connection. The connection is granted one
    /// stream more, which clients keep for health pings: a connection whose every slot holds
    /// a long poll still answers its ping, even with a limit of 1.
    pub max_in_flight_per_connection: u32,
    /// A request's stream is abandoned when its frame header, or then its body, has been
    /// waited for longer than this (ms); so is one whose answer the peer has not taken (read
    /// far enough for it all to be sent) within it. At least 100 ms.
    pub request_read_timeout_ms: u64,
    /// A connection is closed if its handshake, or then its hello, has not reached the broker
    /// within this (ms): a peer that connects and says nothing would otherwise hold one of
    /// `max_connections` for as long as it keeps the connection alive. A hello being checked
    /// is waited for, up to three times this from the handshake. At least 1 s.
    pub hello_timeout_ms: u64,
    /// Longest long-poll a fetch may ask for (ms). At least 10 ms.
    pub max_fetch_wait_ms: u32,
    /// Bytes of requests and fetch answers the broker holds at once over all connections: each
    /// frame's body is reserved from its header until its request is handled, each fetch
    /// answer's records from the read until the transport lets go of them, and what finds no
    /// room waits (see [`crate::memory`]). At least `max_request_memory_per_connection`.
    pub max_request_memory_bytes: u64,
    /// The same for one connection. At least `max_frame_bytes`.
    pub max_request_memory_per_connection: u32,
    /// Bytes of compressed produced batches being decompressed (to be checked) at once, over
    /// all connections, counted by the size each batch declares; a batch declaring more is
    /// refused, and one finding no room waits. Decompression runs off the threads that serve
    /// connections, so a small batch that decompresses to a lot slows only other compressed
    /// produces, and holds no more memory than this. At least 64 KiB: a batch declaring at
    /// most 64 KiB is checked where it arrives, outside the budget.
    pub max_decompressing_bytes: u64,
    /// Partitions over all topics: a creation, or a producer's auto-creation, that would pass
    /// it is refused (`InvalidTopic`). Each partition holds open files and memory for good,
    /// so this keeps one client creating topics from exhausting the broker's descriptors
    /// for everyone. Topics already there count, but are never refused when the broker
    /// opens them. At least 1.
    pub max_partitions: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: rustmq_protocol::DEFAULT_MAX_FRAME_BYTES,
            max_batch_bytes: 8 * 1024 * 1024,
            max_connections: 1024,
            max_unauthenticated_per_address: 64,
            max_in_flight_per_connection: 256,
            request_read_timeout_ms: 30_000,
            hello_timeout_ms: 10_000,
            max_fetch_wait_ms: 60_000,
            max_request_memory_bytes: 256 * 1024 * 1024,
            max_request_memory_per_connection: 32 * 1024 * 1024,
            max_decompressing_bytes: 256 * 1024 * 1024,
            max_partitions: 10_000,
        }
    }
}

/// QUIC transport settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicSettings {
    /// Largest UDP payload, in bytes, the broker accepts and probes for on each connection:
    /// QUIC's `max_udp_payload_size`, and the upper bound of path MTU discovery, which finds
    /// what the path carries (about 1,452 bytes over Ethernet, up to this bound over loopback
    /// or jumbo frames). Between 1,200 and 6,550, the default
    /// ([`MAX_UDP_PAYLOAD_SIZE`](rustmq_protocol::MAX_UDP_PAYLOAD_SIZE) says why).
    pub max_udp_payload_size: u16,
    /// Ack-eliciting packets a client may receive from the broker before it acknowledges them
    /// in a packet of its own; until then its acknowledgements ride on its requests or wait at
    /// most 25 ms (QUIC's ACK frequency extension). 0 asks for an acknowledgement of every
    /// packet at once. Default 2
    /// ([`ACK_ELICITING_THRESHOLD`](rustmq_protocol::ACK_ELICITING_THRESHOLD) says why).
    pub ack_eliciting_threshold: u32,
}

impl Default for QuicSettings {
    fn default() -> Self {
        Self {
            max_udp_payload_size: rustmq_protocol::MAX_UDP_PAYLOAD_SIZE,
            ack_eliciting_threshold: rustmq_protocol::ACK_ELICITING_THRESHOLD,
        }
    }
}

/// The least [`LogSettings::producer_id_expiration_ms`]: ten minutes, past a producer's retries
/// of a batch (with the client's defaults, four attempts of up to 30 s and their backoff).
pub const MIN_PRODUCER_ID_EXPIRATION_MS: u64 = 10 * 60 * 1000;

/// The default [`LogSettings::named_producer_expiration_ms`]: 7 days, as Kafka's
/// `transactional.id.expiration.ms`.
pub const DEFAULT_NAMED_PRODUCER_EXPIRATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The least [`LogSettings::group_expiration_ms`]: ten minutes, past a consumer's restart.
pub const MIN_GROUP_EXPIRATION_MS: u64 = 10 * 60 * 1000;

/// The default [`LogSettings::group_expiration_ms`]: 7 days, as Kafka's
/// `offsets.retention.minutes`.
pub const DEFAULT_GROUP_EXPIRATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Roll a segment at this size (bytes).
    pub segment_bytes: u64,
    /// Roll the active segment at the first append after its first batch is this old (ms;
    /// default 7 days, as Kafka's `segment.ms`), or `retention_ms` old when that is shorter:
    /// retention deletes sealed segments, so without it a partition receiving little data
    /// would keep its records past the retention in a segment that never fills (one receiving
    /// nothing has its active segment rolled by retention once all its records are past
    /// `retention_ms`). Broker-wide; at least ten seconds
    /// ([`MIN_RETENTION_ROLL_MS`]). See [`LogConfig::segment_ms`].
    pub segment_ms: u64,
    /// One sparse index entry per this many bytes.
    pub index_interval_bytes: u32,
    /// Delete segments older than this (ms).
    pub retention_ms: Option<u64>,
    /// Keep at most about this many bytes per partition.
    pub retention_bytes: Option<u64>,
    /// When appended data is forced to disk: `always`, `os` or `interval:<duration>` (at
    /// least 1 ms).
    pub flush: FlushSetting,
    /// How often retention runs (at least 1 s).
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Duration,
    /// Forget an idempotent producer's sequences in a partition once it has not written there
    /// for this many milliseconds (Kafka's `producer.id.expiration.ms`; default 1 day; at least
    /// ten minutes, [`MIN_PRODUCER_ID_EXPIRATION_MS`]), checked at each retention pass. See
    /// [`LogConfig::producer_id_expiration_ms`].
    pub producer_id_expiration_ms: u64,
    /// Forget a named producer (a stream's, say) that has not been initialised, nor written to
    /// any partition, for this many milliseconds (Kafka's `transactional.id.expiration.ms`;
    /// default 7 days; at least ten minutes, [`MIN_PRODUCER_ID_EXPIRATION_MS`]), checked at
    /// each retention pass: its epoch is no longer kept in every partition, and its next
    /// initialisation gets a new id at epoch 0, as a new name does. Until then a name costs a
    /// few bytes in every partition of the broker.
    pub named_producer_expiration_ms: u64,
    /// Forget a consumer group, and its committed offsets with it, once it has had no member
    /// and no commit for this many milliseconds (Kafka's `offsets.retention.minutes`; default
    /// 7 days; at least ten minutes, [`MIN_GROUP_EXPIRATION_MS`]), counted from the last
    /// join, heartbeat, leave or commit (after a restart, from the offsets file's last write,
    /// which the check touches while the group has members, and not within ten minutes of the
    /// start), checked at each retention interval: a group name used once (a command-line consumer's, a test's) does
    /// not stay in memory, on disk and in `ListGroups` for good. A consumer of a group that
    /// expired starts again from its `start_position`.
    pub group_expiration_ms: u64,
    /// Refuse a produced batch whose largest record timestamp is more than this many
    /// milliseconds ahead of the broker's clock, with `InvalidTimestamp` (Kafka's
    /// `log.message.timestamp.after.max.ms`; default 1 hour, as Kafka's since 4.0). Retention
    /// by time goes by a segment's largest timestamp and deletes segments oldest first, so one
    /// record stamped years ahead would keep its segment and every later one. Any value; a
    /// very large one accepts every timestamp.
    pub message_timestamp_after_max_ms: u64,
}

impl Default for LogSettings {
    fn default() -> Self {
        let log = LogConfig::default();
        Self {
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            index_interval_bytes: log.index_interval_bytes,
            retention_ms: None,
            retention_bytes: None,
            flush: FlushSetting(FlushPolicy::Os),
            retention_check_interval: Duration::from_secs(30),
            producer_id_expiration_ms: log.producer_id_expiration_ms,
            named_producer_expiration_ms: DEFAULT_NAMED_PRODUCER_EXPIRATION_MS,
            group_expiration_ms: DEFAULT_GROUP_EXPIRATION_MS,
            message_timestamp_after_max_ms: log.message_timestamp_after_max_ms,
        }
    }
}

impl LogSettings {
    /// The storage config for one partition, with topic overrides applied.
    pub fn log_config(&self, overrides: &rustmq_protocol::TopicSettings) -> LogConfig {
        LogConfig {
            segment_bytes: overrides.segment_bytes.unwrap_or(self.segment_bytes),
            segment_ms: self.segment_ms,
            index_interval_bytes: self.index_interval_bytes,
            retention_bytes: overrides.retention_bytes.or(self.retention_bytes),
            retention_ms: overrides.retention_ms.or(self.retention_ms),
            flush: self.flush.0.clone(),
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            message_timestamp_after_max_ms: self.message_timestamp_after_max_ms,
            ..LogConfig::default()
        }
    }
}

/// A [`FlushPolicy`] written as `always`, `os` or `interval:100ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushSetting(pub FlushPolicy);

impl FromStr for FlushSetting {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let policy = match s.trim() {
            "always" => FlushPolicy::Always,
            "os" => FlushPolicy::Os,
            other => match other.strip_prefix("interval:") {
                Some(d) => FlushPolicy::Interval(
                    humantime_serde::re::humantime::parse_duration(d.trim())
                        .map_err(|e| ConfigError::Invalid(format!("flush interval {d:?}: {e}")))?,
                ),
                None => {
                    return Err(ConfigError::Invalid(format!(
                        "flush must be \"always\", \"os\" or \"interval:<duration>\", not {other:?}"
                    )))
                }
            },
        };
        Ok(FlushSetting(policy))
    }
}

impl std::fmt::Display for FlushSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Os => f.write_str("os"),
            FlushPolicy::Interval(d) => write!(
                f,
                "interval:{}",
                humantime_serde::re::humantime::format_duration(*d)
            ),
        }
    }
}

impl Serialize for FlushSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FlushSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The longest a connection's timeouts (`limits.request_read_timeout_ms`,
/// `limits.hello_timeout_ms`) may be: a day.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// The longest period of the broker's periodic tasks (the flush interval, the retention
/// check): tokio's timers add it to the clock unchecked.
const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest `limits.request_read_timeout_ms`.
pub const MIN_REQUEST_READ_TIMEOUT_MS: u64 = 100;
/// The shortest `limits.hello_timeout_ms`: a handshake and a hello over a slow link.
pub const MIN_HELLO_TIMEOUT_MS: u64 = 1_000;
/// The shortest `limits.max_fetch_wait_ms`.
pub const MIN_FETCH_WAIT_MS: u32 = 10;
/// The shortest `log.flush` interval.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(1);
/// The shortest `log.retention_check_interval`.
pub const MIN_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl BrokerConfig {
    /// Reads a TOML file; fields not present keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.default_partitions == 0 || self.default_partitions > crate::topics::MAX_PARTITIONS {
            // Every topic made with the default would be refused.
            return Err(ConfigError::Invalid(format!(
                "default_partitions must be between 1 and {}",
                crate::topics::MAX_PARTITIONS
            )));
        }
        if self.limits.max_frame_bytes < 1024 {
            return bad("limits.max_frame_bytes must be at least 1024");
        }
        if self.limits.max_batch_bytes == 0
            || self.limits.max_batch_bytes > self.limits.max_frame_bytes
        {
            return bad("limits.max_batch_bytes must be between 1 and limits.max_frame_bytes");
        }
        // Below the lower bounds every connection would be cut before it could say anything
        // (a handshake and a hello take a few round trips) or every request while its body is
        // on its way: a broker that serves nobody. The upper bound keeps the deadlines, the
        // clock plus these, from overflowing.
        if !(MIN_REQUEST_READ_TIMEOUT_MS..=MAX_TIMEOUT_MS)
            .contains(&self.limits.request_read_timeout_ms)
        {
            return Err(ConfigError::Invalid(format!(
                "limits.request_read_timeout_ms must be between {MIN_REQUEST_READ_TIMEOUT_MS} \
                 and 86400000 (a day)"
            )));
        }
        if !(MIN_HELLO_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&self.limits.hello_timeout_ms) {
            return Err(ConfigError::Invalid(format!(
                "limits.hello_timeout_ms must be between {MIN_HELLO_TIMEOUT_MS} and 86400000 \
                 (a day)"
            )));
        }
        // Zero would answer every fetch at once, and consumers with nothing to read would ask
        // again and again, as fast as the network goes.
        if self.limits.max_fetch_wait_ms < MIN_FETCH_WAIT_MS {
            return Err(ConfigError::Invalid(format!(
                "limits.max_fetch_wait_ms must be at least {MIN_FETCH_WAIT_MS}: idle consumers \
                 would otherwise poll without pause"
            )));
        }
        if self.limits.max_decompressing_bytes < 64 * 1024 {
            // Batches declaring up to 64 KiB are checked where they arrive, outside the budget.
            return bad("limits.max_decompressing_bytes must be at least 65536");
        }
        if self.limits.max_partitions == 0 {
            return bad("limits.max_partitions must be at least 1");
        }
        if self.limits.max_unauthenticated_per_address == 0 {
            return bad("limits.max_unauthenticated_per_address must be at least 1");
        }
        if self.limits.max_connections == 0 || self.limits.max_in_flight_per_connection == 0 {
            return bad(
                "limits.max_connections and limits.max_in_flight_per_connection must be at least 1",
            );
        }
        if self.limits.max_request_memory_per_connection < self.limits.max_frame_bytes
            || u64::from(self.limits.max_request_memory_per_connection)
                > self.limits.max_request_memory_bytes
        {
            return bad(
                "limits.max_request_memory_per_connection must be between limits.max_frame_bytes \
                 and limits.max_request_memory_bytes",
            );
        }
        rustmq_protocol::check_udp_payload_size(
            "quic.max_udp_payload_size",
            self.quic.max_udp_payload_size,
        )
        .map_err(ConfigError::Invalid)?;
        if self.log.segment_bytes < crate::topics::MIN_SEGMENT_BYTES {
            return bad("log.segment_bytes must be at least 1024");
        }
        if self.log.segment_bytes > crate::topics::MAX_SEGMENT_BYTES {
            return Err(ConfigError::Invalid(format!(
                "log.segment_bytes must be at most {} (index entries hold 32-bit file \
                 positions)",
                crate::topics::MAX_SEGMENT_BYTES
            )));
        }
        // Shorter, nearly every append would start a segment of its own (a file, its indexes
        // and a directory sync each), as retention's rolls are kept from doing.
        if self.log.segment_ms < MIN_RETENTION_ROLL_MS {
            return Err(ConfigError::Invalid(format!(
                "log.segment_ms must be at least {MIN_RETENTION_ROLL_MS} (ten seconds)"
            )));
        }
        if self.log.producer_id_expiration_ms < MIN_PRODUCER_ID_EXPIRATION_MS {
            return Err(ConfigError::Invalid(format!(
                "log.producer_id_expiration_ms must be at least {MIN_PRODUCER_ID_EXPIRATION_MS} (ten minutes): a producer forgotten between a batch and its retry would have the retry written twice, and a producer's retries with the client's defaults span minutes"
            )));
        }
        if self.log.named_producer_expiration_ms < MIN_PRODUCER_ID_EXPIRATION_MS {
            return Err(ConfigError::Invalid(format!(
                "log.named_producer_expiration_ms must be at least {MIN_PRODUCER_ID_EXPIRATION_MS} (ten minutes): a stream's producer is initialised at each session start and may write rarely"
            )));
        }
        if self.log.group_expiration_ms < MIN_GROUP_EXPIRATION_MS {
            return Err(ConfigError::Invalid(format!(
                "log.group_expiration_ms must be at least {MIN_GROUP_EXPIRATION_MS} (ten minutes): a consumer group's members may be away for a restart"
            )));
        }
        if self.log.index_interval_bytes == 0 {
            return bad("log.index_interval_bytes must be at least 1");
        }
        // A periodic task cannot tick every zero seconds (tokio's `interval` panics), nor at
        // a period that overflows the clock when added to it (its first tick panics).
        // Shorter periods would sync every partition, or walk every partition and group,
        // back to back: the disk or a runtime thread busy with nothing else.
        if let FlushPolicy::Interval(d) = self.log.flush.0 {
            if d < MIN_FLUSH_INTERVAL || d > MAX_PERIOD {
                return bad("log.flush interval must be at least 1ms and at most 365 days");
            }
        }
        let retention = self.log.retention_check_interval;
        if retention < MIN_RETENTION_CHECK_INTERVAL || retention > MAX_PERIOD {
            return bad("log.retention_check_interval must be at least 1s and at most 365 days");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key must be given together");
        }
        if self.tls.client_auth != ClientAuth::None && self.tls.client_ca.is_none() {
            return bad("tls.client_auth = \"optional\" or \"required\" needs tls.client_ca");
        }
        // A client CA without client certificates asked for is a forgotten `client_auth`: the
        // broker would start asking for none, and every client be anonymous.
        if self.tls.client_auth == ClientAuth::None && self.tls.client_ca.is_some() {
            return bad(
                "tls.client_ca is set but tls.client_auth is \"none\": set it to \"optional\" \
                 or \"required\" to ask for client certificates, or remove tls.client_ca",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod client_auth_tests {
    use super::*;

    /// A client CA is refused without client certificates asked for, as client certificates
    /// asked for are without a CA.
    #[test]
    fn a_client_ca_needs_client_auth_and_the_other_way_round() {
        let with = |client_auth, client_ca: Option<&str>| {
            let mut cfg = BrokerConfig::default();
            cfg.tls.client_auth = client_auth;
            cfg.tls.client_ca = client_ca.map(PathBuf::from);
            cfg.validate()
        };
        let err = with(ClientAuth::None, Some("ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.client_auth is \"none\""), "{err}");
        assert!(with(ClientAuth::Required, None).is_err());
        with(ClientAuth::Required, Some("ca.pem")).unwrap();
        with(ClientAuth::None, None).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let cfg: BrokerConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:9999"
            data_dir = "/tmp/x"
            auto_create_topics = false
            metrics_listen = "127.0.0.1:9100"
            [limits]
            max_frame_bytes = 2048
            max_batch_bytes = 1024
            [log]
            flush = "interval:250ms"
            segment_ms = 3600000
            producer_id_expiration_ms = 7200000
            named_producer_expiration_ms = 86400000
            message_timestamp_after_max_ms = 60000
            retention_bytes = 100
            retention_check_interval = "5s"
            [quic]
            max_udp_payload_size = 1452
            ack_eliciting_threshold = 0
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.listen.port(), 9999);
        assert_eq!(
            cfg.log.flush.0,
            FlushPolicy::Interval(Duration::from_millis(250))
        );
        assert_eq!(cfg.log.retention_check_interval, Duration::from_secs(5));
        assert_eq!(cfg.log.segment_ms, 3_600_000);
        let log = cfg
            .log
            .log_config(&rustmq_protocol::TopicSettings::default());
        assert_eq!((log.segment_ms, log.roll_ms()), (3_600_000, 3_600_000));
        assert_eq!(log.producer_id_expiration_ms, 7_200_000);
        assert_eq!(cfg.log.named_producer_expiration_ms, 86_400_000);
        assert_eq!(
            BrokerConfig::default().log.named_producer_expiration_ms,
            604_800_000
        );
        assert_eq!(cfg.log.message_timestamp_after_max_ms, 60_000);
        assert_eq!(
            BrokerConfig::default().log.message_timestamp_after_max_ms,
            3_600_000
        );
        // A retention shorter than segment_ms rolls segments by the retention.
        let log = cfg.log.log_config(&rustmq_protocol::TopicSettings {
            retention_ms: Some(60_000),
            ..Default::default()
        });
        assert_eq!((log.segment_ms, log.roll_ms()), (3_600_000, 60_000));
        // ... but not under 10 s: a retention of a millisecond would roll at every append.
        let log = cfg.log.log_config(&rustmq_protocol::TopicSettings {
            retention_ms: Some(1),
            ..Default::default()
        });
        assert_eq!(log.roll_ms(), crate::storage::MIN_RETENTION_ROLL_MS);
        assert_eq!(
            BrokerConfig::default().log.segment_ms,
            7 * 24 * 3_600_000,
            "Kafka's default"
        );
        assert_eq!(
            BrokerConfig::default().log.producer_id_expiration_ms,
            24 * 3_600_000,
            "Kafka's default"
        );
        assert!(!cfg.auto_create_topics);
        assert_eq!(cfg.quic.max_udp_payload_size, 1452);
        assert_eq!(cfg.quic.ack_eliciting_threshold, 0);
        assert_eq!(
            cfg.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
    }

    /// Timings that would leave a broker serving nobody, or busy with nothing: each refused
    /// by name just below its bound, and its bound taken.
    #[test]
    fn timings_below_what_a_broker_can_serve_with_are_refused() {
        type Set = fn(&mut BrokerConfig, bool);
        let cases: [(&str, Set); 6] = [
            ("limits.request_read_timeout_ms", |c, below| {
                c.limits.request_read_timeout_ms = MIN_REQUEST_READ_TIMEOUT_MS - u64::from(below)
            }),
            ("limits.hello_timeout_ms", |c, below| {
                c.limits.hello_timeout_ms = MIN_HELLO_TIMEOUT_MS - u64::from(below)
            }),
            ("limits.max_fetch_wait_ms", |c, below| {
                c.limits.max_fetch_wait_ms = MIN_FETCH_WAIT_MS - u32::from(below)
            }),
            ("log.segment_ms", |c, below| {
                c.log.segment_ms = MIN_RETENTION_ROLL_MS - u64::from(below)
            }),
            ("log.flush interval", |c, below| {
                c.log.flush.0 = FlushPolicy::Interval(if below {
                    Duration::from_micros(999)
                } else {
                    MIN_FLUSH_INTERVAL
                })
            }),
            ("log.retention_check_interval", |c, below| {
                c.log.retention_check_interval = if below {
                    Duration::from_millis(999)
                } else {
                    MIN_RETENTION_CHECK_INTERVAL
                }
            }),
        ];
        for (name, set) in cases {
            let mut cfg = BrokerConfig::default();
            set(&mut cfg, true);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("{name} must be")), "{name}: {err}");
            set(&mut cfg, false);
            cfg.validate()
                .unwrap_or_else(|e| panic!("{name} at its bound: {e}"));
        }
    }

    /// Index entries hold 32-bit file positions: a larger segment size is refused, not
    /// silently capped.
    #[test]
    fn a_segment_size_past_the_indexes_reach_is_refused() {
        let mut cfg = BrokerConfig::default();
        cfg.log.segment_bytes = u64::from(u32::MAX) + 1;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("log.segment_bytes must be at most"), "{err}");
        cfg.log.segment_bytes = u64::from(u32::MAX);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<BrokerConfig>("listne = \"1.2.3.4:1\"").is_err());
        assert!(toml::from_str::<BrokerConfig>("[log]\nflush = \"sometimes\"").is_err());
        for every in [Duration::ZERO, Duration::from_secs(366 * 24 * 3600)] {
            let mut cfg = BrokerConfig::default();
            cfg.log.retention_check_interval = every;
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.contains("log.retention_check_interval must be"),
                "{err}"
            );
        }
        for partitions in [0, crate::topics::MAX_PARTITIONS + 1] {
            let cfg = BrokerConfig {
                default_partitions: partitions,
                ..Default::default()
            };
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.contains("default_partitions must be between 1 and"),
                "{err}"
            );
        }
        BrokerConfig {
            default_partitions: crate::topics::MAX_PARTITIONS,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let with_size = |size| {
            let mut cfg = BrokerConfig::default();
            cfg.quic.max_udp_payload_size = size;
            cfg.validate()
        };
        for size in [0, 1199, 6551] {
            let err = with_size(size).unwrap_err().to_string();
            assert!(
                err.contains("quic.max_udp_payload_size must be between 1200 and 6550"),
                "{err}"
            );
        }
        for size in [1200, 6550] {
            with_size(size).unwrap();
        }
        // The request budget must hold a whole frame, and a connection's within the broker's.
        let with_memory = |frame: u32, per_connection: u32, total: u64| {
            let mut cfg = BrokerConfig::default();
            cfg.limits.max_frame_bytes = frame;
            cfg.limits.max_batch_bytes = frame;
            cfg.limits.max_request_memory_per_connection = per_connection;
            cfg.limits.max_request_memory_bytes = total;
            cfg.validate()
        };
        for (frame, per_connection, total) in [(4096, 4095, 1 << 20), (4096, 8192, 8191)] {
            let err = with_memory(frame, per_connection, total)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("limits.max_request_memory_per_connection must be between"),
                "{err}"
            );
        }
        with_memory(4096, 4096, 4096).unwrap();
        // Zero durations that would stop the broker's work or time everything out.
        let mut cfg = BrokerConfig::default();
        cfg.log.retention_check_interval = Duration::ZERO;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("log.retention_check_interval"), "{err}");
        assert!(
            toml::from_str::<BrokerConfig>("[log]\nretention_check_interval = \"0s\"")
                .unwrap()
                .validate()
                .is_err()
        );
        let mut cfg = BrokerConfig::default();
        cfg.log.segment_ms = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("log.segment_ms must be at least 10000"),
            "{err}"
        );
        let mut cfg = BrokerConfig::default();
        cfg.log.producer_id_expiration_ms = 599_999;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("log.producer_id_expiration_ms must be at least 600000"),
            "{err}"
        );
        cfg.log.producer_id_expiration_ms = 600_000;
        cfg.validate().unwrap();
        cfg.log.named_producer_expiration_ms = 599_999;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("log.named_producer_expiration_ms must be at least 600000"),
            "{err}"
        );
        cfg.log.named_producer_expiration_ms = 600_000;
        cfg.validate().unwrap();
        cfg.log.group_expiration_ms = 599_999;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("log.group_expiration_ms must be at least 600000"),
            "{err}"
        );
        cfg.log.group_expiration_ms = 600_000;
        cfg.validate().unwrap();
        // Limits of zero, each refused by name.
        type Zero = fn(&mut Limits);
        let zeroed: [(&str, Zero); 5] = [
            ("limits.max_partitions", |l| l.max_partitions = 0),
            ("limits.max_unauthenticated_per_address", |l| {
                l.max_unauthenticated_per_address = 0
            }),
            ("limits.request_read_timeout_ms", |l| {
                l.request_read_timeout_ms = 0
            }),
            ("limits.hello_timeout_ms", |l| l.hello_timeout_ms = 0),
            ("limits.max_decompressing_bytes", |l| {
                l.max_decompressing_bytes = 0
            }),
        ];
        for (name, zero) in zeroed {
            let mut cfg = BrokerConfig::default();
            zero(&mut cfg.limits);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        // Timeouts so long that the clock plus them overflows, each refused by name.
        let endless: [(&str, Zero); 2] = [
            ("limits.request_read_timeout_ms", |l| {
                l.request_read_timeout_ms = u64::MAX
            }),
            ("limits.hello_timeout_ms", |l| l.hello_timeout_ms = u64::MAX),
        ];
        for (name, endless) in endless {
            let mut cfg = BrokerConfig::default();
            endless(&mut cfg.limits);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}
