//! Stream processing: read input topics as a consumer group, run a [`MessageProcessor`] on
//! each message, batch or event-time window, produce its outputs, commit — at least once, or
//! exactly once across crashes.
//!
//! ```text
//!  input topics ──► one group member (all topics) ──► fetch per partition (max_in_flight)
//!        ──► Individual: message ─┐
//!            Batch: batch_size / batch_timeout ──► processor (parallelism, processing_timeout,
//!            Windowed: watermark closes windows ┘    error_strategy: retry/skip/dead-letter/stop)
//!        ──► outputs ──► output_topic (idempotent record batches)
//!        ──► stored ──► inputs finished ──► commit (inputs, and the output positions a restart
//!            needs, in one request)
//! ```
//!
//! ```no_run
//! use std::time::Duration;
//! use rustmq::stream::{ErrorStrategy, MessageProcessor, MessageStream, StreamConfig, StreamMode};
//! use rustmq::{async_trait, ClientConfig, Message, Result, RustMqClient};
//!
//! struct Enrich;
//!
//! #[async_trait]
//! impl MessageProcessor for Enrich {
//!     async fn process(&self, message: &Message) -> Result<Option<Message>> {
//!         let out = Message::builder()
//!             .topic("enriched")
//!             .payload(message.payload.clone())
//!             .header("enriched", "yes")
//!             .build()?;
//!         Ok(Some(out))
//!     }
//! }
//!
//! # async fn demo() -> Result<()> {
//! let client = RustMqClient::new(ClientConfig::default()).await?;
//! let stream = MessageStream::new(client, StreamConfig {
//!     input_topics: vec!["raw".to_string()],
//!     output_topic: Some("enriched".to_string()),
//!     consumer_group: "enricher".to_string(),
//!     mode: StreamMode::Batch { batch_size: 100, batch_timeout: Duration::from_millis(200) },
//!     error_strategy: ErrorStrategy::DeadLetter { topic: "enrich-failed".to_string() },
//!     exactly_once: true,
//!     ..Default::default()
//! })
//! .await?
//! .with_processor(Enrich);
//! stream.start().await?;
//! // ...
//! stream.stop().await?;
//! # Ok(()) }
//! ```
//!
//! # Exactly once
//!
//! With `exactly_once: true` the output log is the source of truth. Every output carries its
//! inputs in headers (see [`SRC_GROUP`] and the other `SRC_*` constants); a unit's outputs go
//! to one partition in one record batch (stored all or nothing), written by an idempotent
//! producer named after the group, whose epoch the broker bumps on every start — fencing the
//! previous instance on every partition at once. Each commit records, next to the input
//! offsets, where in each output partition a restart must start reading (`__out.<topic>`
//! entries, in the same request). A restart reads the outputs written since, and passes over
//! the inputs they claim. See ARCHITECTURE.md, "Stream processing".

mod batcher;
mod claims;
mod config;
mod fetch;
mod group;
mod handle;
mod ledger;
mod metrics;
mod processor;
mod recovery;
mod session;
mod sink;
mod typed;
mod unit;
mod window;

use std::sync::Arc;

pub use self::claims::{SRC_GROUP, SRC_OFFSET, SRC_PARTITION, SRC_RANGES, SRC_TOPIC, SRC_WINDOW};
pub use self::config::{
    ErrorStrategy, LatePolicy, StreamConfig, StreamMode, WindowOptions,
    DEFAULT_WINDOW_IDLE_TIMEOUT, MAX_WINDOWS_PER_MESSAGE,
};
pub use self::handle::MessageStream;
pub use self::metrics::StreamMetrics;
pub use self::processor::MessageProcessor;
pub use self::typed::{TypedAdapter, TypedProcessor};
pub use self::unit::{DLQ_KIND, DLQ_UNIT, DLQ_UNIT_MEMBERS};
use crate::message::TopicName;

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Tp {
    pub(crate) topic: TopicName,
    pub(crate) partition: u32,
}

impl Tp {
    pub(crate) fn new(topic: &str, partition: u32) -> Self {
        Self {
            topic: TopicName::from(topic),
            partition,
        }
    }
}

/// Everything a session needs from its stream.
pub(crate) struct Settings {
    pub(crate) client: crate::RustMqClient,
    pub(crate) config: StreamConfig,
    pub(crate) window_options: WindowOptions,
    pub(crate) processor: Arc<dyn MessageProcessor>,
    pub(crate) metrics: Arc<StreamMetrics>,
    pub(crate) session_timeout: std::time::Duration,
    pub(crate) rebalance_timeout: std::time::Duration,
    pub(crate) commit_interval: std::time::Duration,
    pub(crate) max_in_flight_bytes: usize,
    pub(crate) default_partitions: u32,
}
