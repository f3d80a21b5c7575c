//! The RustMQ broker, as a library and as the `rustmq-broker` binary.
//!
//! Embedded in a test or a quick start:
//!
//! ```no_run
//! # async fn run() -> Result<(), rustmq_broker::StartError> {
//! let dir = std::env::temp_dir().join("rustmq-doc");
//! let broker = rustmq_broker::Broker::builder()
//!     .data_dir(&dir)
//!     .listen("127.0.0.1:0".parse().unwrap())
//!     .start()
//!     .await?;
//! let addr = broker.local_addr();        // connect clients here
//! let ca = broker.cert_path();           // and trust this certificate
//! # let _ = (addr, ca);
//! broker.shutdown().await;               // flushes and closes every partition
//! # Ok(()) }
//! ```
//!
//! Data flow of a produce: `server` reads a frame from a QUIC stream -> `handler` validates
//! the record batch (CRC, every record) -> `storage::PartitionLog::append` assigns offsets and
//! writes the segment -> with acks=All, `sync_up_to` waits for a shared fdatasync -> answer.
//! A fetch reads whole stored batches with `pread` and long-polls on the partition's high
//! watermark when nothing is new.

pub mod broker;
pub mod cli;
pub mod config;
pub mod error;
pub mod groups;
pub mod handler;
pub mod memory;
pub mod metrics;
pub mod producers;
pub mod security;
mod server;
pub mod storage;
pub mod tls;
pub mod topics;

pub use broker::{Broker, BrokerBuilder, BrokerHandle, StartError};
pub use config::{BrokerConfig, ConfigError, Limits, LogSettings, QuicSettings, TlsSettings};
pub use error::BrokerError;
pub use server::ServerError;
