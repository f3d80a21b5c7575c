//! Error codes carried by error answers, and whether a client may retry them.

use bytes::{BufMut, BytesMut};

use crate::codec::{Decode, Encode, Reader};
use crate::error::Result;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, retryable = $retry:expr; )*) => {
        /// A machine-readable reason for an error answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this side does not know (sent by a newer peer).
            Other(u16),
        }

        impl ErrorCode {
            /// The numeric code.
            pub fn code(self) -> u16 {
                match self {
                    $( ErrorCode::$name => $value, )*
                    ErrorCode::Other(v) => v,
                }
            }

            /// The code for a number.
            pub fn from_code(code: u16) -> Self {
                match code {
                    $( $value => ErrorCode::$name, )*
                    v => ErrorCode::Other(v),
                }
            }

            /// Whether the same request may succeed if sent again later.
            pub fn is_retryable(self) -> bool {
                match self {
                    $( ErrorCode::$name => $retry, )*
                    ErrorCode::Other(_) => false,
                }
            }
        }
    };
}

error_codes! {
    /// The request could not be decoded or is invalid.
    InvalidRequest = 1, retryable = false;
    /// The request kind is not known to the broker.
    UnknownRequestKind = 2, retryable = false;
    /// The request version is not supported.
    UnsupportedVersion = 3, retryable = false;
    /// A frame exceeded the broker's size limit.
    FrameTooLarge = 4, retryable = false;
    /// A record batch exceeded the broker's batch size limit.
    BatchTooLarge = 5, retryable = false;
    /// A record batch failed validation (CRC or structure); resending intact bytes helps.
    CorruptBatch = 6, retryable = true;
    /// The topic does not exist.
    UnknownTopic = 7, retryable = false;
    /// The partition does not exist.
    UnknownPartition = 8, retryable = false;
    /// The topic already exists.
    TopicAlreadyExists = 9, retryable = false;
    /// The topic name or settings are invalid.
    InvalidTopic = 10, retryable = false;
    /// The requested offset is outside the log.
    OffsetOutOfRange = 11, retryable = false;
    /// The client must say hello (and authenticate) first.
    NotAuthenticated = 12, retryable = false;
    /// Credentials were rejected.
    AuthenticationFailed = 13, retryable = false;
    /// The principal may not perform the operation.
    AuthorizationFailed = 14, retryable = false;
    /// Too many connections or requests in flight; try again later.
    Throttled = 15, retryable = true;
    /// The broker did not complete the request in time.
    Timeout = 16, retryable = true;
    /// The broker failed to read or write its storage.
    StorageError = 17, retryable = true;
    /// The broker is shutting down.
    ShuttingDown = 18, retryable = true;
    /// The idempotent batch was already written (the answer carries its offset).
    DuplicateSequence = 19, retryable = false;
    /// An idempotent batch arrived with a gap in its sequence.
    OutOfOrderSequence = 20, retryable = false;
    /// The producer epoch is older than the broker's: another instance took over.
    InvalidProducerEpoch = 21, retryable = false;
    /// The producer id is unknown to the broker.
    UnknownProducer = 22, retryable = false;
    /// The group member is not known (expired or never joined).
    UnknownMember = 23, retryable = false;
    /// The generation is stale: the group rebalanced.
    IllegalGeneration = 24, retryable = false;
    /// The group is rebalancing; rejoin.
    RebalanceInProgress = 25, retryable = true;
    /// The group does not exist.
    UnknownGroup = 26, retryable = false;
    /// An unexpected broker failure.
    Internal = 27, retryable = true;
    /// A record's timestamp is further ahead of the broker's clock than the broker accepts
    /// (its `log.message_timestamp_after_max_ms`): time-based retention goes by the largest
    /// timestamp of a segment, so one such record would keep its segment, and every later
    /// one, past their retention.
    InvalidTimestamp = 28, retryable = false;
}

impl Encode for ErrorCode {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.code());
    }
}

impl Decode for ErrorCode {
    fn decode(r: &mut Reader) -> Result<Self> {
        Ok(ErrorCode::from_code(r.u16()?))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Other(v) => write!(f, "error code {v}"),
            other => write!(f, "{other:?}"),
        }
    }
}
