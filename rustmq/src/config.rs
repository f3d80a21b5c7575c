//! Client configuration.
//!
//! [`ClientConfig`] and its parts are plain structs with public fields and a [`Default`], so
//! the usual way to configure is struct update syntax:
//!
//! ```
//! use std::time::Duration;
//! use rustmq::{ClientConfig, TlsConfig};
//!
//! let config = ClientConfig {
//!     brokers: vec!["broker1.example.com:9092".to_string()],
//!     client_id: Some("billing-v1".to_string()),
//!     request_timeout: Duration::from_secs(5),
//!     tls_config: Some(TlsConfig {
//!         ca_cert: Some("/etc/rustmq/ca.pem".to_string()),
//!         ..Default::default()
//!     }),
//!     ..Default::default()
//! };
//! config.validate()?;
//! # Ok::<(), rustmq::ClientError>(())
//! ```
//!
//! Every field is honoured by the client; [`ClientConfig::validate`] (called by
//! [`RustMqClient::new`](crate::RustMqClient::new)) rejects values that cannot work. The
//! configs also implement serde's `Serialize`/`Deserialize` (durations as humantime strings such
//! as `"30s"`), so they can be read from a TOML or JSON file.

use std::fmt;
use std::time::Duration;

use rustmq_protocol::Compression;
use serde::{Deserialize, Serialize};

use crate::error::{ClientError, Result};
use crate::transport::BrokerAddress;

/// Largest value of a QUIC variable-length integer (2^62 - 1); QUIC transport parameters
/// cannot exceed it.
const QUIC_VARINT_MAX: u64 = (1 << 62) - 1;

/// Configuration of a [`RustMqClient`](crate::RustMqClient).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Broker addresses as `host:port` (`[ipv6]:port` for IPv6 literals): bootstrap and
    /// failover addresses, not a cluster. Brokers are standalone (each holds its own topics,
    /// offsets and groups), so the client uses one at a time: the first of the list that
    /// answers, and it keeps to it while it is reachable. At start every broker is tried at
    /// once, and one that answers is taken once every broker before it has failed (a dead
    /// first broker costs one `connect_timeout`). Only when the broker in use is lost (its
    /// connections fail, and reconnecting to it fails or backs off past a request's deadline)
    /// does the client move on to the next of the list (wrapping around to the first), which
    /// it then keeps to in turn. What the lost broker held is not on the next one: failing
    /// over suits brokers that share their data (a replacement at another address, say), not
    /// independent ones.
    pub brokers: Vec<String>,

    /// Identifies this client to the broker: in its log of the connection's hello and of
    /// failed authentications, and in consumer group descriptions (a member's `client_id`, and
    /// the start of its member id). Broker metrics are not labelled by client. `None`
    /// generates `rustmq-<random hex>` once per client.
    pub client_id: Option<String>,

    /// Bounds each connection attempt: QUIC handshake plus the hello exchange.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,

    /// Bounds each request from the moment it is issued until its answer is read, including
    /// waiting for a connection, an in-flight slot and transparent retries. Expiry yields
    /// [`ClientError::Timeout`].
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,

    /// Most connections opened to each broker (to the one in use: see
    /// [`brokers`](Self::brokers)). One is opened at start; more are opened on demand when
    /// every live connection is at its in-flight limit.
    pub max_connections: usize,

    /// Interval of the background health check, which pings every connection and drops
    /// those that do not answer within `health_check_timeout`. `Duration::ZERO` disables the
    /// background task ([`RustMqClient::health_check`](crate::RustMqClient::health_check)
    /// still works). QUIC-level keep-alives are configured in [`QuicConfig`].
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,

    /// Must be `true`: QUIC always runs TLS 1.3, so there is no plaintext mode. For a
    /// development broker with a self-signed certificate use
    /// [`TlsConfig::insecure_skip_verify`], or leave `tls_config` at `None` and connect to a
    /// loopback address (see [`ClientConfig::tls_config`]).
    pub enable_tls: bool,

    /// How the broker's certificate is verified and which client certificate is presented.
    ///
    /// With `None`, certificates are verified against the Mozilla roots (webpki-roots), except
    /// for a broker at a loopback address (`localhost`, 127.0.0.0/8, `::1`): then the local
    /// development broker's self-signed certificate is accepted ("loopback development
    /// trust"; the handshake signature is still checked against the certificate's key, only
    /// the chain of trust is waived). That exception never applies to a non-loopback address
    /// nor to any config that sets `tls_config`.
    pub tls_config: Option<TlsConfig>,

    /// Reconnection and retry policy.
    pub retry_config: RetryConfig,

    /// Default batch compression for producers created from this client: those built without
    /// a [`crate::ProducerConfig`], or with one whose `compression` is left at its default (and
    /// the compression of stream sinks). A codec other than `None` needs the `compression`
    /// feature.
    pub compression: CompressionConfig,

    /// Credentials sent in the hello exchange on every connection; `None` connects
    /// anonymously.
    pub auth: Option<AuthConfig>,

    /// QUIC transport parameters and UDP socket buffers.
    pub quic_config: QuicConfig,

    /// Bounds each health-check ping, by the background task and by
    /// [`RustMqClient::health_check`](crate::RustMqClient::health_check).
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            brokers: vec!["localhost:9092".to_string()],
            client_id: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 10,
            keep_alive_interval: Duration::from_secs(30),
            enable_tls: true,
            tls_config: None,
            retry_config: RetryConfig::default(),
            compression: CompressionConfig::default(),
            auth: None,
            quic_config: QuicConfig::default(),
            health_check_timeout: Duration::from_secs(5),
        }
    }
}

impl ClientConfig {
    /// `request_timeout` in milliseconds as requests carry it (at most `u32::MAX`): how long
    /// the broker may take over a produce before it answers `Timeout`.
    pub(crate) fn request_timeout_ms(&self) -> u32 {
        self.request_timeout.as_millis().min(u128::from(u32::MAX)) as u32
    }

    /// Checks every field; the error names the first offending one.
    pub fn validate(&self) -> Result<()> {
        if self.brokers.is_empty() {
            return Err(invalid("brokers must list at least one host:port"));
        }
        for broker in &self.brokers {
            BrokerAddress::parse(broker)?;
        }
        if self.client_id.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(
                "client_id must not be empty (use None to generate one)",
            ));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("health_check_timeout", self.health_check_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(&format!("{name} must be greater than zero")));
            }
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections must be at least 1"));
        }
        if !self.enable_tls {
            return Err(invalid(
                "enable_tls = false is not supported: QUIC always runs TLS 1.3; for a development \
                 broker set tls_config.insecure_skip_verify = true, or connect to a loopback \
                 address without tls_config",
            ));
        }
        if let Some(tls) = &self.tls_config {
            tls.validate()?;
            let quic = &self.quic_config;
            if let (Some(a), Some(b)) = (&tls.server_name, &quic.server_name) {
                if a != b {
                    return Err(invalid(&format!(
                        "tls_config.server_name {a:?} and quic_config.server_name {b:?} \
                         disagree: set one"
                    )));
                }
            }
            if quic.insecure && tls.ca_cert.is_some() {
                return Err(invalid(
                    "quic_config.insecure and tls_config.ca_cert contradict each other: set \
                     only one",
                ));
            }
        }
        self.retry_config.validate()?;
        self.compression.validate()?;
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        self.check_hello()?;
        self.quic_config.validate()
    }

    /// Checks that the hello this configuration makes is one a broker takes: a client id of
    /// at most [`rustmq_protocol::MAX_CLIENT_ID_LEN`] bytes, and with the credentials within
    /// [`rustmq_protocol::MAX_HELLO_BYTES`] (a broker reads a hello before the connection may
    /// send more).
    fn check_hello(&self) -> Result<()> {
        use rustmq_protocol::{HelloRequest, Request, MAX_CLIENT_ID_LEN, MAX_HELLO_BYTES};
        let client_id = self.client_id.clone().unwrap_or_default();
        if client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(invalid(&format!(
                "client_id has {} bytes; a broker takes at most {MAX_CLIENT_ID_LEN}",
                client_id.len()
            )));
        }
        let hello = Request::Hello(HelloRequest {
            min_version: 1,
            max_version: rustmq_protocol::PROTOCOL_VERSION,
            // Room for the id generated when none is set.
            client_id: format!("{client_id:16}"),
            credentials: self.auth.as_ref().map(AuthConfig::credentials),
        });
        let body = hello.to_frame(0).len() - rustmq_protocol::FRAME_HEADER_LEN;
        if body > MAX_HELLO_BYTES as usize {
            return Err(invalid(&format!(
                "client_id and auth credentials make a hello of {body} bytes; a broker takes \
                 at most {MAX_HELLO_BYTES}: shorten the token, username or password"
            )));
        }
        Ok(())
    }
}

fn invalid(message: &str) -> ClientError {
    ClientError::InvalidConfig(message.to_owned())
}

/// TLS settings: which certificate authorities to trust and which client certificate to
/// present. All paths name PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// CA bundle (PEM, one or more certificates). When set, the broker's certificate must
    /// chain to one of these and nothing else is trusted; when `None`, the Mozilla roots
    /// (webpki-roots) are used.
    pub ca_cert: Option<String>,
    /// Client certificate chain (PEM, leaf first) presented for mutual TLS; requires
    /// `client_key`.
    pub client_cert: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<String>,
    /// Name checked against the broker's certificate instead of the host part of each broker
    /// address (whose IP literals are checked as IP SANs).
    pub server_name: Option<String>,
    /// Accepts any broker certificate without checking its chain or name (the handshake
    /// signature is still checked). For development only: anyone on the path can impersonate
    /// the broker. The client logs a warning when this is set.
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    fn validate(&self) -> Result<()> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "tls_config.client_cert is set without tls_config.client_key",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls_config.client_key is set without tls_config.client_cert",
                ))
            }
            _ => {}
        }
        if self.insecure_skip_verify && self.ca_cert.is_some() {
            return Err(invalid(
                "tls_config.insecure_skip_verify and tls_config.ca_cert contradict each other: \
                 set only one",
            ));
        }
        if let Some(name) = &self.server_name {
            check_server_name("tls_config.server_name", name)?;
        }
        for (field, path) in [
            ("ca_cert", &self.ca_cert),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if path.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(&format!(
                    "tls_config.{field} must not be an empty path"
                )));
            }
        }
        Ok(())
    }
}

/// Reconnection and retry policy: exponential backoff with optional jitter.
///
/// Governs reconnecting to a broker after a failed attempt, and the transparent retry of
/// requests that are safe to repeat after a lost connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt: connection attempts per broker before
    /// [`RustMqClient::new`](crate::RustMqClient::new) or a request gives up, transparent
    /// re-sends of a safe request after a lost connection, a producer's re-sends of a batch,
    /// a consumer's first join and a stream's writes of its outputs. A consumer's fetches and
    /// rejoins and a stream's sessions retry without end (until they succeed or are closed),
    /// with these delays (each at least 10 ms).
    pub max_retries: u32,
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Cap on any delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Growth factor of the delay per attempt (at least 1.0).
    pub multiplier: f64,
    /// Randomises each delay within the upper half of its nominal value, so that clients
    /// that lost a broker together do not reconnect in lockstep.
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl RetryConfig {
    fn validate(&self) -> Result<()> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(invalid(
                "retry_config.multiplier must be a finite number >= 1.0",
            ));
        }
        if self.base_delay > self.max_delay {
            return Err(invalid(
                "retry_config.base_delay must not exceed retry_config.max_delay",
            ));
        }
        Ok(())
    }
}

/// Batch compression codecs. Those other than `None` need the `compression` feature (on by
/// default): without it, a [`CompressionConfig`] that enables one is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    /// No compression.
    None,
    /// LZ4: fast, moderate ratio; levels 4-12 trade speed for size (LZ4 HC).
    #[default]
    Lz4,
    /// Zstandard: good ratio; levels 1 to 22.
    Zstd,
    /// Gzip (DEFLATE): widely supported; levels 0 to 9.
    Gzip,
}

impl From<CompressionAlgorithm> for Compression {
    fn from(algorithm: CompressionAlgorithm) -> Self {
        match algorithm {
            CompressionAlgorithm::None => Compression::None,
            CompressionAlgorithm::Lz4 => Compression::Lz4,
            CompressionAlgorithm::Zstd => Compression::Zstd,
            CompressionAlgorithm::Gzip => Compression::Gzip,
        }
    }
}

/// The default batch compression of producers created from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Compresses record batches; when `false` they are sent as they are.
    pub enabled: bool,
    /// The codec used when enabled.
    pub algorithm: CompressionAlgorithm,
    /// Codec level: Zstd 1-22, Gzip 0-9, LZ4 0-12 (0-3 LZ4's fast mode, 4-12 LZ4 HC: smaller
    /// batches, slower to make, as fast to read). Higher compresses harder.
    pub level: i32,
    /// Batches whose records take fewer bytes than this are sent uncompressed: compressing
    /// them costs more CPU than it saves bytes.
    pub min_size: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: false,
            algorithm: CompressionAlgorithm::Lz4,
            level: 3,
            min_size: 1024,
        }
    }
}

impl CompressionConfig {
    /// The codec to apply to a batch: [`Compression::None`] when compression is disabled.
    pub fn codec(&self) -> Compression {
        if self.enabled {
            self.algorithm.into()
        } else {
            Compression::None
        }
    }

    /// Rejects a codec this build lacks (a codec other than `None` without the `compression`
    /// feature) and a level out of the codec's range (the codec would clamp it silently).
    /// Shared by [`ClientConfig::validate`] and the producer's own check of its settings.
    pub(crate) fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        // rustmq's own feature, not rustmq-protocol's: another crate of the build (a broker)
        // may turn the protocol's on without this crate asking for compression.
        if !cfg!(feature = "compression") && self.algorithm != CompressionAlgorithm::None {
            return Err(invalid(&format!(
                "compression.algorithm {:?} needs the `compression` feature of rustmq, which \
                 this build lacks: enable it, or set compression.enabled = false",
                Compression::from(self.algorithm).name()
            )));
        }
        let Some(range) = Compression::from(self.algorithm).levels() else {
            return Ok(());
        };
        if !range.contains(&self.level) {
            return Err(invalid(&format!(
                "compression.level {} is outside {}..={} for {:?}",
                self.level,
                range.start(),
                range.end(),
                self.algorithm
            )));
        }
        Ok(())
    }
}

/// How the client authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Username and password (SASL PLAIN style); the TLS channel protects them.
    #[default]
    SaslPlain,
    /// A bearer token.
    Token,
}

/// Credentials presented in the hello exchange of every connection.
///
/// `Debug` prints `<redacted>` instead of the password and the token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Which credentials to send.
    pub method: AuthMethod,
    /// User name, required by [`AuthMethod::SaslPlain`].
    pub username: Option<String>,
    /// Password, required by [`AuthMethod::SaslPlain`].
    pub password: Option<String>,
    /// Token, required by [`AuthMethod::Token`].
    pub token: Option<String>,
}

impl AuthConfig {
    fn validate(&self) -> Result<()> {
        match self.method {
            AuthMethod::SaslPlain if self.username.is_none() || self.password.is_none() => Err(
                invalid("auth.method sasl_plain requires auth.username and auth.password"),
            ),
            AuthMethod::Token if self.token.is_none() => {
                Err(invalid("auth.method token requires auth.token"))
            }
            _ => Ok(()),
        }
    }

    /// The credentials for the hello request (validated beforehand).
    pub(crate) fn credentials(&self) -> rustmq_protocol::Credentials {
        match self.method {
            AuthMethod::SaslPlain => rustmq_protocol::Credentials::Plain {
                username: self.username.clone().unwrap_or_default(),
                password: self.password.clone().unwrap_or_default(),
            },
            AuthMethod::Token => {
                rustmq_protocol::Credentials::Token(self.token.clone().unwrap_or_default())
            }
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthConfig")
            .field("method", &self.method)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("token", &redact(&self.token))
            .finish()
    }
}

/// QUIC transport parameters and UDP socket buffers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// Interval of QUIC keep-alive packets, which keep idle connections (and NAT bindings)
    /// open. `Duration::ZERO` disables them. Must be shorter than `max_idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// A connection on which nothing is received for this long is closed. The effective
    /// value is the smaller of this and the broker's. Also bounds how long a silently dead
    /// broker goes unnoticed between health checks.
    #[serde(with = "humantime_serde")]
    pub max_idle_timeout: Duration,
    /// Concurrent bidirectional streams the broker may open to the client, and the cap on
    /// the client's own requests in flight per connection (together with the broker's
    /// `max_in_flight`); RustMQ sends one request per bidirectional stream.
    pub initial_max_streams_bidi: u64,
    /// Concurrent unidirectional streams the broker may open to the client. RustMQ does not
    /// use them today, hence the default of 0.
    pub initial_max_streams_uni: u64,
    /// Connection-level flow-control window: bytes the broker may send before the client
    /// reads them. Also caps the client's unacknowledged bytes in flight (quinn's send window).
    pub initial_max_data: u64,
    /// Per-stream flow-control window for the answers the client reads.
    pub initial_max_stream_data_bidi_local: u64,
    /// Per-stream window for bidirectional streams the broker opens (the seed SDK's field).
    /// quinn advertises one per-stream window for every kind of stream, and RustMQ's brokers
    /// open no streams: 0 (the default) means the same as `initial_max_stream_data_bidi_local`,
    /// and any other value must equal it.
    pub initial_max_stream_data_bidi_remote: u64,
    /// Per-stream window for unidirectional streams the broker opens: as
    /// `initial_max_stream_data_bidi_remote` (0, the default, or equal to
    /// `initial_max_stream_data_bidi_local`).
    pub initial_max_stream_data_uni: u64,
    /// SO_SNDBUF of the client's UDP socket, in bytes; 0 keeps the OS default. The OS may cap
    /// it (Linux: `net.core.wmem_max`).
    pub send_buffer_size: usize,
    /// SO_RCVBUF of the client's UDP socket, in bytes; 0 keeps the OS default. The OS may cap
    /// it (Linux: `net.core.rmem_max`).
    pub recv_buffer_size: usize,
    /// Largest UDP payload, in bytes, the client accepts and probes for: QUIC's
    /// `max_udp_payload_size`, and the upper bound of path MTU discovery, which finds what the
    /// path carries (about 1,452 bytes over Ethernet, up to this bound over loopback or jumbo
    /// frames). Between 1,200 and 6,550 (the default,
    /// [`MAX_UDP_PAYLOAD_SIZE`](rustmq_protocol::MAX_UDP_PAYLOAD_SIZE), which says why).
    pub max_udp_payload_size: u16,
    /// Ack-eliciting packets the broker may receive from this client before it acknowledges
    /// them in a packet of its own; until then its acknowledgements ride on its answers or
    /// wait at most 25 ms (QUIC's ACK frequency extension). 0 asks for an acknowledgement of
    /// every packet at once. Default 2
    /// ([`ACK_ELICITING_THRESHOLD`](rustmq_protocol::ACK_ELICITING_THRESHOLD), which says
    /// why).
    pub ack_eliciting_threshold: u32,
    /// Name checked against the broker's certificate (and sent as SNI) instead of the host
    /// part of each broker address, as `tls_config.server_name` (the seed SDK has it in both
    /// places); set in both, they must agree.
    pub server_name: Option<String>,
    /// Application protocols offered in the TLS handshake (ALPN), in order of preference.
    /// Brokers speak [`ALPN`](rustmq_protocol::ALPN) (`rustmq/1`, the default), which the list
    /// must include; other entries serve what sits in front of a broker (a proxy routing by
    /// ALPN). Each is 1 to 255 bytes.
    pub alpn_protocols: Vec<Vec<u8>>,
    /// Accepts any broker certificate without checking its chain or name, as
    /// `tls_config.insecure_skip_verify` (either turns verification off; the handshake
    /// signature is still checked). For development only; the client logs a warning.
    pub insecure: bool,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            keep_alive_interval: Duration::from_secs(10),
            max_idle_timeout: Duration::from_secs(30),
            initial_max_streams_bidi: 100,
            initial_max_streams_uni: 0,
            initial_max_data: 32 * 1024 * 1024,
            initial_max_stream_data_bidi_local: 8 * 1024 * 1024,
            send_buffer_size: 2 * 1024 * 1024,
            recv_buffer_size: 2 * 1024 * 1024,
            max_udp_payload_size: rustmq_protocol::MAX_UDP_PAYLOAD_SIZE,
            ack_eliciting_threshold: rustmq_protocol::ACK_ELICITING_THRESHOLD,
            initial_max_stream_data_bidi_remote: 0,
            initial_max_stream_data_uni: 0,
            server_name: None,
            alpn_protocols: vec![rustmq_protocol::ALPN.to_vec()],
            insecure: false,
        }
    }
}

impl QuicConfig {
    fn validate(&self) -> Result<()> {
        if self.max_idle_timeout.is_zero() {
            return Err(invalid(
                "quic_config.max_idle_timeout must be greater than zero",
            ));
        }
        if u64::try_from(self.max_idle_timeout.as_millis()).map_or(true, |ms| ms > QUIC_VARINT_MAX)
        {
            return Err(invalid("quic_config.max_idle_timeout is too large"));
        }
        if !self.keep_alive_interval.is_zero() && self.keep_alive_interval >= self.max_idle_timeout
        {
            return Err(invalid(
                "quic_config.keep_alive_interval must be shorter than quic_config.max_idle_timeout",
            ));
        }
        rustmq_protocol::check_udp_payload_size(
            "quic_config.max_udp_payload_size",
            self.max_udp_payload_size,
        )
        .map_err(|m| invalid(&m))?;
        for (name, value, min) in [
            ("initial_max_streams_bidi", self.initial_max_streams_bidi, 1),
            ("initial_max_streams_uni", self.initial_max_streams_uni, 0),
            ("initial_max_data", self.initial_max_data, 1),
            (
                "initial_max_stream_data_bidi_local",
                self.initial_max_stream_data_bidi_local,
                1,
            ),
        ] {
            if value < min || value > QUIC_VARINT_MAX {
                return Err(invalid(&format!(
                    "quic_config.{name} must be between {min} and 2^62 - 1"
                )));
            }
        }
        let window = self.initial_max_stream_data_bidi_local;
        for (name, value) in [
            (
                "initial_max_stream_data_bidi_remote",
                self.initial_max_stream_data_bidi_remote,
            ),
            (
                "initial_max_stream_data_uni",
                self.initial_max_stream_data_uni,
            ),
        ] {
            if value != 0 && value != window {
                return Err(invalid(&format!(
                    "quic_config.{name} ({value}) differs from \
                     quic_config.initial_max_stream_data_bidi_local ({window}): quinn advertises \
                     one per-stream window for every kind of stream; set it to 0 or to the same"
                )));
            }
        }
        if let Some(name) = &self.server_name {
            check_server_name("quic_config.server_name", name)?;
        }
        let alpn = rustmq_protocol::ALPN;
        if let Some(bad) = self
            .alpn_protocols
            .iter()
            .find(|p| p.is_empty() || p.len() > 255)
        {
            return Err(invalid(&format!(
                "quic_config.alpn_protocols: {:?} is not 1 to 255 bytes long",
                String::from_utf8_lossy(bad)
            )));
        }
        if !self.alpn_protocols.iter().any(|p| p == alpn) {
            return Err(invalid(&format!(
                "quic_config.alpn_protocols must include {:?} (rustmq_protocol::ALPN), the \
                 protocol brokers speak",
                String::from_utf8_lossy(alpn)
            )));
        }
        Ok(())
    }
}

/// Checks that `name`, set at `field`, is a dns name or ip address a certificate can be
/// checked against.
fn check_server_name(field: &str, name: &str) -> Result<()> {
    rustls_pki_types::ServerName::try_from(name)
        .map(drop)
        .map_err(|_| {
            invalid(&format!(
                "{field} {name:?} is not a valid dns name or ip address"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejects(config: ClientConfig, needle: &str) {
        match config.validate() {
            Err(ClientError::InvalidConfig(msg)) => {
                assert!(msg.contains(needle), "{msg:?} should mention {needle:?}")
            }
            other => panic!("expected InvalidConfig mentioning {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_documented_values_and_validate() {
        let c = ClientConfig::default();
        assert_eq!(c.brokers, vec!["localhost:9092"]);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.keep_alive_interval, Duration::from_secs(30));
        assert!(c.enable_tls);
        assert!(c.tls_config.is_none());
        assert_eq!(c.health_check_timeout, Duration::from_secs(5));
        let r = RetryConfig::default();
        assert_eq!(
            (
                r.max_retries,
                r.base_delay,
                r.max_delay,
                r.multiplier,
                r.jitter
            ),
            (
                3,
                Duration::from_millis(100),
                Duration::from_secs(10),
                2.0,
                true
            )
        );
        c.validate().unwrap();
    }

    #[test]
    fn broker_list_and_addresses() {
        rejects(
            ClientConfig {
                brokers: vec![],
                ..Default::default()
            },
            "brokers",
        );
        rejects(
            ClientConfig {
                brokers: vec!["no-port".into()],
                ..Default::default()
            },
            "no-port",
        );
        rejects(
            ClientConfig {
                brokers: vec!["h:notaport".into()],
                ..Default::default()
            },
            "port",
        );
    }

    /// A hello a broker would refuse (a long client id, or credentials past its hello limit,
    /// answered with `FrameTooLarge`) is refused here, naming what to shorten.
    #[test]
    fn a_hello_the_broker_would_refuse_is_refused() {
        use rustmq_protocol::{MAX_CLIENT_ID_LEN, MAX_HELLO_BYTES};
        let with_id = |id: String| ClientConfig {
            client_id: Some(id),
            ..Default::default()
        };
        rejects(with_id("c".repeat(MAX_CLIENT_ID_LEN + 1)), "client_id");
        with_id("c".repeat(MAX_CLIENT_ID_LEN)).validate().unwrap();
        let with_token = |len: usize| ClientConfig {
            client_id: Some("c".repeat(MAX_CLIENT_ID_LEN)),
            auth: Some(AuthConfig {
                method: AuthMethod::Token,
                username: None,
                password: None,
                token: Some("t".repeat(len)),
            }),
            ..Default::default()
        };
        rejects(with_token(MAX_HELLO_BYTES as usize), "token");
        with_token(MAX_HELLO_BYTES as usize - 400)
            .validate()
            .unwrap();
    }

    #[test]
    fn zero_timeouts_and_connections() {
        rejects(
            ClientConfig {
                connect_timeout: Duration::ZERO,
                ..Default::default()
            },
            "connect_timeout",
        );
        rejects(
            ClientConfig {
                request_timeout: Duration::ZERO,
                ..Default::default()
            },
            "request_timeout",
        );
        rejects(
            ClientConfig {
                health_check_timeout: Duration::ZERO,
                ..Default::default()
            },
            "health_check_timeout",
        );
        rejects(
            ClientConfig {
                max_connections: 0,
                ..Default::default()
            },
            "max_connections",
        );
        rejects(
            ClientConfig {
                client_id: Some(String::new()),
                ..Default::default()
            },
            "client_id",
        );
        // Zero disables the background health task; it is not an error.
        ClientConfig {
            keep_alive_interval: Duration::ZERO,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn plaintext_is_rejected_with_a_pointer_to_development_options() {
        rejects(
            ClientConfig {
                enable_tls: false,
                ..Default::default()
            },
            "insecure_skip_verify",
        );
    }

    #[test]
    fn retry_policy() {
        let retry = |r: RetryConfig| ClientConfig {
            retry_config: r,
            ..Default::default()
        };
        rejects(
            retry(RetryConfig {
                multiplier: 0.5,
                ..Default::default()
            }),
            "multiplier",
        );
        rejects(
            retry(RetryConfig {
                multiplier: f64::NAN,
                ..Default::default()
            }),
            "multiplier",
        );
        rejects(
            retry(RetryConfig {
                base_delay: Duration::from_secs(20),
                ..Default::default()
            }),
            "base_delay",
        );
    }

    #[test]
    fn tls_combinations() {
        let tls = |t: TlsConfig| ClientConfig {
            tls_config: Some(t),
            ..Default::default()
        };
        rejects(
            tls(TlsConfig {
                client_cert: Some("c.pem".into()),
                ..Default::default()
            }),
            "client_key",
        );
        rejects(
            tls(TlsConfig {
                client_key: Some("k.pem".into()),
                ..Default::default()
            }),
            "client_cert",
        );
        rejects(
            tls(TlsConfig {
                ca_cert: Some("ca.pem".into()),
                insecure_skip_verify: true,
                ..Default::default()
            }),
            "contradict",
        );
        rejects(
            tls(TlsConfig {
                server_name: Some("not a name!".into()),
                ..Default::default()
            }),
            "server_name",
        );
        rejects(
            tls(TlsConfig {
                ca_cert: Some(String::new()),
                ..Default::default()
            }),
            "ca_cert",
        );
        tls(TlsConfig {
            server_name: Some("10.0.0.1".into()),
            ..Default::default()
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn auth_requires_its_fields() {
        let auth = |a: AuthConfig| ClientConfig {
            auth: Some(a),
            ..Default::default()
        };
        rejects(
            auth(AuthConfig {
                username: Some("u".into()),
                ..Default::default()
            }),
            "password",
        );
        rejects(
            auth(AuthConfig {
                method: AuthMethod::Token,
                ..Default::default()
            }),
            "token",
        );
        auth(AuthConfig {
            method: AuthMethod::Token,
            token: Some("t".into()),
            ..Default::default()
        })
        .validate()
        .unwrap();
    }

    #[cfg(feature = "compression")]
    #[test]
    fn compression_levels_and_codec() {
        let comp = |c: CompressionConfig| ClientConfig {
            compression: c,
            ..Default::default()
        };
        rejects(
            comp(CompressionConfig {
                enabled: true,
                algorithm: CompressionAlgorithm::Gzip,
                level: 12,
                ..Default::default()
            }),
            "level",
        );
        rejects(
            comp(CompressionConfig {
                enabled: true,
                algorithm: CompressionAlgorithm::Zstd,
                level: 0,
                ..Default::default()
            }),
            "level",
        );
        // LZ4 takes 0-12 (0-3 fast, 4-12 LZ4 HC): the seed README's 1, 4 and 6 included.
        for (level, ok) in [
            (-1, false),
            (0, true),
            (1, true),
            (4, true),
            (6, true),
            (12, true),
            (13, false),
        ] {
            let config = comp(CompressionConfig {
                enabled: true,
                algorithm: CompressionAlgorithm::Lz4,
                level,
                ..Default::default()
            });
            if ok {
                config.validate().unwrap();
            } else {
                rejects(config, "level");
            }
        }
        assert_eq!(CompressionConfig::default().codec(), Compression::None);
        let on = CompressionConfig {
            enabled: true,
            algorithm: CompressionAlgorithm::Zstd,
            ..Default::default()
        };
        assert_eq!(on.codec(), Compression::Zstd);
        let none = CompressionConfig {
            enabled: true,
            algorithm: CompressionAlgorithm::None,
            ..Default::default()
        };
        assert_eq!(none.codec(), Compression::None);
    }

    /// Without the feature a codec other than `None` is refused by name, before any
    /// connection; a disabled one (the default) and `None` are fine.
    #[cfg(not(feature = "compression"))]
    #[test]
    fn codecs_need_the_compression_feature() {
        let comp = |enabled, algorithm| ClientConfig {
            compression: CompressionConfig {
                enabled,
                algorithm,
                ..Default::default()
            },
            ..Default::default()
        };
        for (algorithm, name) in [
            (CompressionAlgorithm::Lz4, "\"lz4\""),
            (CompressionAlgorithm::Zstd, "\"zstd\""),
            (CompressionAlgorithm::Gzip, "\"gzip\""),
        ] {
            rejects(comp(true, algorithm), "`compression` feature");
            rejects(comp(true, algorithm), name);
            comp(false, algorithm).validate().unwrap();
        }
        comp(true, CompressionAlgorithm::None).validate().unwrap();
        ClientConfig::default().validate().unwrap();
    }

    /// The seed README's `QuicConfig` example is taken, every field of it used or checked
    /// (written with `..Default::default()`: `QuicConfig` has two fields the seed's had not).
    /// Its ALPN `b"rustmq"` is not what brokers speak, and the error says so.
    #[test]
    fn the_seed_readmes_quic_config_is_taken() {
        let seed = |alpn_protocols| QuicConfig {
            keep_alive_interval: Duration::from_secs(30),
            max_idle_timeout: Duration::from_secs(120),
            initial_max_streams_bidi: 100,
            initial_max_streams_uni: 100,
            initial_max_data: 10_000_000,
            initial_max_stream_data_bidi_local: 1_000_000,
            initial_max_stream_data_bidi_remote: 1_000_000,
            initial_max_stream_data_uni: 1_000_000,
            send_buffer_size: 1_000_000,
            recv_buffer_size: 1_000_000,
            server_name: Some("rustmq.example.com".to_string()),
            alpn_protocols,
            insecure: false,
            ..Default::default()
        };
        let config = |quic_config| ClientConfig {
            quic_config,
            ..Default::default()
        };
        rejects(
            config(seed(vec![b"rustmq".to_vec()])),
            "alpn_protocols must include \"rustmq/1\"",
        );
        config(seed(vec![rustmq_protocol::ALPN.to_vec()]))
            .validate()
            .unwrap();
        // quinn has one per-stream window: the others are 0 (the same) or equal to it.
        rejects(
            config(QuicConfig {
                initial_max_stream_data_uni: 5,
                ..Default::default()
            }),
            "quic_config.initial_max_stream_data_uni (5) differs",
        );
        rejects(
            config(QuicConfig {
                initial_max_stream_data_bidi_remote: 5,
                ..Default::default()
            }),
            "initial_max_stream_data_bidi_remote",
        );
        for bad in [vec![], vec![vec![]], vec![vec![b'x'; 256]]] {
            rejects(
                config(QuicConfig {
                    alpn_protocols: bad,
                    ..Default::default()
                }),
                "alpn_protocols",
            );
        }
        rejects(
            config(QuicConfig {
                server_name: Some("not a name!".into()),
                ..Default::default()
            }),
            "quic_config.server_name",
        );
        // Set twice, the names must agree, and `insecure` contradicts a CA as
        // `insecure_skip_verify` does.
        let both = |tls: TlsConfig, quic: QuicConfig| ClientConfig {
            tls_config: Some(tls),
            quic_config: quic,
            ..Default::default()
        };
        let named = |name: &str| QuicConfig {
            server_name: Some(name.into()),
            ..Default::default()
        };
        let tls_named = TlsConfig {
            server_name: Some("a.example".into()),
            ..Default::default()
        };
        rejects(both(tls_named.clone(), named("b.example")), "disagree");
        both(tls_named, named("a.example")).validate().unwrap();
        rejects(
            both(
                TlsConfig {
                    ca_cert: Some("ca.pem".into()),
                    ..Default::default()
                },
                QuicConfig {
                    insecure: true,
                    ..Default::default()
                },
            ),
            "contradict",
        );
    }

    #[test]
    fn quic_limits() {
        let quic = |q: QuicConfig| ClientConfig {
            quic_config: q,
            ..Default::default()
        };
        rejects(
            quic(QuicConfig {
                max_idle_timeout: Duration::ZERO,
                ..Default::default()
            }),
            "max_idle_timeout",
        );
        rejects(
            quic(QuicConfig {
                keep_alive_interval: Duration::from_secs(60),
                ..Default::default()
            }),
            "keep_alive_interval",
        );
        rejects(
            quic(QuicConfig {
                initial_max_streams_bidi: 0,
                ..Default::default()
            }),
            "initial_max_streams_bidi",
        );
        rejects(
            quic(QuicConfig {
                initial_max_data: u64::MAX,
                ..Default::default()
            }),
            "initial_max_data",
        );
        for size in [0, 1199, 6551, u16::MAX] {
            rejects(
                quic(QuicConfig {
                    max_udp_payload_size: size,
                    ..Default::default()
                }),
                "max_udp_payload_size must be between 1200 and 6550",
            );
        }
        for size in [1200, 1452, 6550] {
            quic(QuicConfig {
                max_udp_payload_size: size,
                ..Default::default()
            })
            .validate()
            .unwrap();
        }
        quic(QuicConfig {
            keep_alive_interval: Duration::ZERO,
            ..Default::default()
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn debug_redacts_secrets() {
        let auth = AuthConfig {
            method: AuthMethod::SaslPlain,
            username: Some("alice".into()),
            password: Some("hunter2".into()),
            token: Some("tok-secret".into()),
        };
        let client = ClientConfig {
            auth: Some(auth.clone()),
            ..Default::default()
        };
        for text in [
            format!("{auth:?}"),
            format!("{client:?}"),
            format!("{client:#?}"),
        ] {
            assert!(
                !text.contains("hunter2") && !text.contains("tok-secret"),
                "{text}"
            );
            assert!(
                text.contains("alice") && text.contains("<redacted>"),
                "{text}"
            );
        }
        assert!(format!("{:?}", AuthConfig::default()).contains("password: None"));
    }

    #[test]
    fn serde_round_trip_with_humantime_durations() {
        let json = r#"{"brokers":["b:1"],"request_timeout":"5s","retry_config":{"base_delay":"250ms"},"compression":{"enabled":true,"algorithm":"zstd"},"auth":{"method":"token","token":"t"}}"#;
        let c: ClientConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.retry_config.base_delay, Duration::from_millis(250));
        assert_eq!(c.retry_config.max_retries, 3);
        assert_eq!(c.compression.codec(), Compression::Zstd);
        assert_eq!(c.auth.as_ref().map(|a| a.method), Some(AuthMethod::Token));
        let again: ClientConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        assert!(serde_json::from_str::<ClientConfig>(r#"{"brokerz":[]}"#).is_err());
    }
}
