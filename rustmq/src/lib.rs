//! RustMQ: typed, async messaging over QUIC.
//!
//! [`RustMqClient`] connects to one or more brokers over QUIC (TLS 1.3 always) and keeps a
//! pool of connections: it reconnects with exponential backoff and jitter, bounds every request
//! by a timeout, limits requests in flight per connection, and checks the connections' health
//! in the background. Producers and consumers are created from a client.
//!
//! ```no_run
//! use std::time::Duration;
//! use rustmq::{ClientConfig, ClientError, RustMqClient};
//!
//! #[tokio::main]
//! async fn main() -> rustmq::Result<()> {
//!     let client = RustMqClient::new(ClientConfig {
//!         brokers: vec!["localhost:9092".to_string()],
//!         client_id: Some("quick-start".to_string()),
//!         request_timeout: Duration::from_secs(5),
//!         ..Default::default()
//!     })
//!     .await?;
//!
//!     match client.create_topic("orders", 3).await {
//!         Ok(()) => println!("created orders"),
//!         Err(e) if e.is_retryable() => println!("broker busy, try again: {e}"),
//!         Err(ClientError::Broker { code, message }) => println!("refused ({code}): {message}"),
//!         Err(e) => return Err(e),
//!     }
//!     let topic = client.describe_topic("orders").await?;
//!     println!("orders has {} partitions", topic.partition_count());
//!
//!     let stats = client.connection_stats().await?;
//!     println!("{} connections, {} requests", stats.active_connections, stats.total_requests);
//!     client.close().await
//! }
//! ```
//!
//! With `ClientConfig::default()` the client connects to `localhost:9092` and accepts the
//! self-signed certificate of a local development broker (loopback addresses only; see
//! [`ClientConfig::tls_config`]). Against any other address certificates are verified, against
//! the Mozilla roots or the CA set in [`TlsConfig::ca_cert`].
//!
//! Errors are [`ClientError`]s; [`ClientError::is_retryable`] says whether trying again can
//! help. Debug logs go through `tracing` (target `rustmq`): connects, requests and health
//! checks are logged at `debug` level.

pub mod admin;
mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod message;
pub mod producer;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub(crate) mod transport;
pub mod typed;
// Consumer and stream modules are declared below by their authors.

pub use admin::{
    BrokerInfo, ClusterMetadata, CommittedOffset, GroupDescription, GroupMember, PartitionInfo,
    PartitionMetadata, TopicDescription, TopicMetadata, TopicSettings, TopicSummary,
};
pub use client::{ConnectionStats, HealthStatus, RustMqClient};
pub use config::{
    AuthConfig, AuthMethod, ClientConfig, CompressionAlgorithm, CompressionConfig, QuicConfig,
    RetryConfig, TlsConfig,
};
pub use error::{ClientError, Result};
pub use message::{IntoPayload, Message, MessageBuilder, MessageId, TopicName};
pub use producer::{
    AckLevel, Producer, ProducerBuilder, ProducerConfig, ProducerMetrics, SendResult,
};
/// The wire protocol crate, for [`RustMqClient::raw_request`]'s requests and responses.
pub use rustmq_protocol as protocol;
pub use rustmq_protocol::{BrokerLimits, ErrorCode};
/// Re-exported for the configs' durations: the seed README's programs use `Duration` with
/// `use rustmq_client::*;` alone (an import of `std::time::Duration` of their own takes
/// precedence over this one).
pub use std::time::Duration;
#[cfg(feature = "metrics")]
pub use typed::layers::MetricsLayer;
pub use typed::layers::{
    ConcurrencyLimitLayer, DeadLetterLayer, RetryLayer, TimeoutLayer, TraceLayer,
};
pub use typed::{
    Attempt, BoxError, Delivery, Handler, HandlerOptions, Headers, Metadata, PoisonPolicy,
    RunningService, Service, Settlement, State, Topic, TypedProducer,
};

pub mod consumer;

pub use consumer::{
    Consumer, ConsumerBuilder, ConsumerConfig, ConsumerMessage, ConsumerMetrics, ConsumerStream,
    PartitionAssignment, StartPosition,
};

/// Everything a typed service needs, in one import.
pub mod prelude {
    pub use crate::codec::{Bincode, Codec, Json, Postcard};
    #[cfg(feature = "metrics")]
    pub use crate::typed::layers::MetricsLayer;
    pub use crate::typed::layers::{
        ConcurrencyLimitLayer, DeadLetterLayer, RetryLayer, TimeoutLayer, TraceLayer,
    };
    pub use crate::typed::{
        Attempt, Delivery, Headers, Metadata, PoisonPolicy, Service, Settlement, State, Topic,
        TypedProducer,
    };
    pub use crate::{ClientConfig, ClientError, Message, RustMqClient};
    pub use serde::{Deserialize, Serialize};
}

/// Support for the code `rustmq-macros` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::typed::Delivery;
    pub use crate::typed::{
        call_handler, decode_payload, ExtractorKind, FromDelivery, Handler, HandlerFuture,
        HandlerOptions, IntoSettlement, Rejection, TopicInfo, TopicKey,
    };
    pub use bytes::Bytes;
    pub use rustmq_protocol::MAX_GROUP_NAME_LEN;
}
pub use rustmq_macros::{handler, Topic};

pub mod stream;
/// The `#[async_trait]` attribute, for implementing [`MessageProcessor`] as the seed README does.
pub use async_trait::async_trait;
pub use stream::{
    ErrorStrategy, MessageProcessor, MessageStream, StreamConfig, StreamMetrics, StreamMode,
};
