//! The RustMQ wire protocol, sans-IO.
//!
//! This crate encodes and decodes everything RustMQ peers exchange: frames, the requests and
//! responses inside them, and record batches with their compression and CRC-32C. It performs
//! no I/O and knows nothing of tokio or QUIC; `rustmq` (the client) and `rustmq-broker` drive it
//! over quinn streams.
//!
//! ```
//! use rustmq_protocol::{FrameDecoder, PingRequest, Request};
//!
//! let bytes = Request::Ping(PingRequest { nonce: 42 }).to_frame(1);
//! let mut decoder = FrameDecoder::new(1024);
//! decoder.extend(&bytes);
//! let frame = decoder.next_frame()?.expect("a whole frame");
//! assert_eq!(Request::from_frame(&frame)?, Request::Ping(PingRequest { nonce: 42 }));
//! # Ok::<(), rustmq_protocol::ProtocolError>(())
//! ```
//!
//! Every decoder checks sizes before allocating and returns a [`ProtocolError`] on any input;
//! property tests and fuzz targets hold it to that.

pub mod api;
pub mod batch;
pub mod codec;
pub mod compression;
pub mod error;
pub mod error_code;
pub mod frame;
pub mod messages;

pub use api::{ApiKind, Request, Response};
pub use batch::{BatchHeader, BatchIter, Record, RecordBatch, RecordBatchBuilder, RecordHeader};
pub use compression::Compression;
pub use error::{ProtocolError, Result};
pub use error_code::ErrorCode;
pub use frame::{Frame, FrameDecoder, FrameHeader, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_LEN};
pub use messages::*;
