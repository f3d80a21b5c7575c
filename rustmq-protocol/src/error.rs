//! Errors raised while encoding or decoding wire data.

/// A failure to decode (or, rarely, encode) protocol data.
///
/// Every decoder in this crate returns one of these on bad input; none panics and none
/// allocates more than the input can justify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The input ended before a complete value was read.
    #[error("truncated input: needed {needed} more bytes, {remaining} remaining")]
    Truncated {
        /// Bytes needed to continue.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A frame announced a body larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced body size.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The frame kind is not one this side understands.
    #[error("unknown frame kind {0:#06x}")]
    UnknownKind(u16),
    /// The frame kind is known but the version is not supported.
    #[error("unsupported version {version} of frame kind {kind:#06x}")]
    UnsupportedVersion {
        /// The frame kind.
        kind: u16,
        /// The version that was received.
        version: u16,
    },
    /// A body had bytes left over after the message was decoded.
    #[error("{0} trailing bytes after message body")]
    TrailingBytes(usize),
    /// A string was not valid UTF-8.
    #[error("invalid utf-8 in string field")]
    InvalidUtf8,
    /// A varint was longer than 10 bytes or overflowed.
    #[error("malformed varint")]
    BadVarint,
    /// An enum tag had no meaning.
    #[error("invalid value {value} for {field}")]
    InvalidValue {
        /// The field being decoded.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A record batch failed its CRC-32C check.
    #[error("record batch crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC stored in the batch.
        stored: u32,
        /// The CRC computed over the received bytes.
        computed: u32,
    },
    /// A record batch is structurally invalid.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(&'static str),
    /// A compressed payload could not be decompressed.
    #[error("{codec} decompression failed: {reason}")]
    Decompression {
        /// The codec in use.
        codec: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A compressed payload would expand beyond the allowed size.
    #[error("uncompressed size {size} exceeds the limit of {max} bytes")]
    TooLargeUncompressed {
        /// Announced uncompressed size.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// Compression failed (only reported by the encoder).
    #[error("{codec} compression failed: {reason}")]
    Compression {
        /// The codec in use.
        codec: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A batch is to be compressed, or is compressed, with a codec this build does not have:
    /// `rustmq-protocol` was built without its `compression` feature (`rustmq`'s `compression`
    /// feature turns it on). Only uncompressed batches can be encoded and decoded then.
    #[error("{codec} compression is not available: built without the `compression` feature")]
    CompressionUnavailable {
        /// The codec asked for (`gzip`, `lz4` or `zstd`).
        codec: &'static str,
    },
}

/// Result alias for this crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
