//! The client's error type: what failed, and whether trying again can help.
//!
//! Every fallible call in this crate returns [`ClientError`]. Transport failures (a lost
//! connection, a timeout) are [retryable](ClientError::is_retryable); a broker's error answer
//! becomes a specific variant where one exists ([`ClientError::TopicNotFound`],
//! [`ClientError::Authentication`], ...) and [`ClientError::Broker`] otherwise, keeping the
//! broker's [`ErrorCode`] so that the retry decision follows the broker's.

use rustmq_protocol::{ErrorCode, ErrorResponse, ProtocolError, Response};

/// Result alias used throughout the crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Everything that can go wrong in the RustMQ client.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// A broker could not be reached, or the connection to it was lost.
    #[error("connection error: {0}")]
    Connection(String),

    /// An operation did not complete in time.
    #[error("operation timed out after {timeout_ms} ms")]
    Timeout {
        /// The timeout that expired, in milliseconds.
        timeout_ms: u64,
    },

    /// A message or request is larger than the broker accepts.
    #[error("message of {size} bytes exceeds the maximum of {max_size} bytes")]
    MessageTooLarge {
        /// Size of the rejected message or request, in bytes.
        size: usize,
        /// The limit in force, in bytes.
        max_size: usize,
    },

    /// TLS could not be set up (certificate files, keys), or a TLS handshake failed
    /// (for example an untrusted broker certificate).
    #[error("tls error: {0}")]
    Tls(String),

    /// A QUIC-level failure other than a plain loss of the connection (a transport error
    /// reported by either side, a stream reset by the broker).
    #[error("quic error: {0}")]
    Quic(String),

    /// Bytes from the broker could not be decoded.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),

    /// The broker answered with a well-formed response that does not fit the request
    /// (another kind, another request id).
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),

    /// The broker answered with an error that has no more specific variant.
    #[error("broker error {code}: {message}")]
    Broker {
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },

    /// The topic does not exist.
    #[error("topic not found: {0}")]
    TopicNotFound(String),

    /// A fetch or seek asked for an offset outside the partition's log.
    #[error("offset out of range: {0}")]
    OffsetOutOfRange(String),

    /// The configuration is invalid; the message names the field.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A message could not be built or is invalid.
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// A value could not be serialized into a payload.
    #[error("serialization error: {0}")]
    Serialization(String),

    /// A payload could not be deserialized into a value (a poison message, not a transient
    /// failure: retrying does not help).
    #[error("deserialization error: {0}")]
    Deserialization(String),

    /// Compressing or decompressing a batch failed.
    #[error("compression error: {0}")]
    Compression(String),

    /// The broker rejected the credentials, or none were presented where they are required.
    #[error("authentication failed: {0}")]
    Authentication(String),

    /// The authenticated principal may not perform the operation.
    #[error("authorization failed: {0}")]
    Authorization(String),

    /// A producer's buffer of unacknowledged messages is full and it was configured not to
    /// wait for room.
    #[error("producer buffer full ({limit} bytes)")]
    BufferFull {
        /// The buffer limit, in bytes.
        limit: usize,
    },

    /// The consumer was asked about a partition that is not assigned to it.
    #[error("partition {partition} of topic {topic} is not assigned to this consumer")]
    PartitionNotAssigned {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
    },

    /// The consumer group has no committed offset for the partition.
    #[error("group {group} has no committed offset for partition {partition} of topic {topic}")]
    NoCommittedOffset {
        /// Group name.
        group: String,
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
    },

    /// No connection is usable and none may be opened before the operation's deadline
    /// (every broker is backing off after failed attempts).
    #[error("no connections available")]
    NoConnectionsAvailable,

    /// The client, producer or consumer was closed.
    #[error("client closed")]
    Closed,

    /// A local I/O operation failed (binding the UDP socket, reading a file).
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// For `?` on `serde_json` calls in processors and handlers (as the seed README's examples
/// do): I/O failures while writing are [`ClientError::Serialization`], everything else (bad
/// syntax, wrong shape, early end) is [`ClientError::Deserialization`].
impl From<serde_json::Error> for ClientError {
    fn from(e: serde_json::Error) -> Self {
        if e.is_io() {
            ClientError::Serialization(e.to_string())
        } else {
            ClientError::Deserialization(e.to_string())
        }
    }
}

impl ClientError {
    /// Whether the same operation may succeed if tried again later.
    ///
    /// True for lost connections, timeouts, QUIC transport failures, an empty pool, a full
    /// producer buffer (it drains as the broker acknowledges), and broker answers whose
    /// [`ErrorCode::is_retryable`] says so (throttling, shutdown, storage errors, a rebalance
    /// in progress). Configuration, authentication, decoding and "not found" errors are not
    /// retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connection(_)
            | ClientError::Timeout { .. }
            | ClientError::Quic(_)
            | ClientError::NoConnectionsAvailable
            | ClientError::BufferFull { .. } => true,
            ClientError::Broker { code, .. } => code.is_retryable(),
            _ => false,
        }
    }

    /// The broker error code behind this error, if it came from a broker's error answer.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::TopicNotFound(_) => Some(ErrorCode::UnknownTopic),
            ClientError::OffsetOutOfRange(_) => Some(ErrorCode::OffsetOutOfRange),
            // Authentication and Authorization may also be raised locally; they carry no code.
            _ => None,
        }
    }

    /// Maps a broker's error answer to the most specific variant.
    pub fn from_response(response: ErrorResponse) -> Self {
        let ErrorResponse { code, message } = response;
        match code {
            ErrorCode::UnknownTopic => ClientError::TopicNotFound(message),
            ErrorCode::OffsetOutOfRange => ClientError::OffsetOutOfRange(message),
            ErrorCode::NotAuthenticated | ErrorCode::AuthenticationFailed => {
                ClientError::Authentication(message)
            }
            ErrorCode::AuthorizationFailed => ClientError::Authorization(message),
            code => ClientError::Broker { code, message },
        }
    }

    /// An equal error, for reporting one failure to several waiters (a failed batch to each of
    /// its messages). `ClientError` is not `Clone` because [`std::io::Error`] is not; an I/O
    /// error is copied as its kind and message.
    pub fn duplicate(&self) -> ClientError {
        use ClientError as E;
        match self {
            E::Connection(m) => E::Connection(m.clone()),
            E::Timeout { timeout_ms } => E::Timeout {
                timeout_ms: *timeout_ms,
            },
            E::MessageTooLarge { size, max_size } => E::MessageTooLarge {
                size: *size,
                max_size: *max_size,
            },
            E::Tls(m) => E::Tls(m.clone()),
            E::Quic(m) => E::Quic(m.clone()),
            E::Protocol(e) => E::Protocol(e.clone()),
            E::UnexpectedResponse(m) => E::UnexpectedResponse(m.clone()),
            E::Broker { code, message } => E::Broker {
                code: *code,
                message: message.clone(),
            },
            E::TopicNotFound(t) => E::TopicNotFound(t.clone()),
            E::OffsetOutOfRange(m) => E::OffsetOutOfRange(m.clone()),
            E::InvalidConfig(m) => E::InvalidConfig(m.clone()),
            E::InvalidMessage(m) => E::InvalidMessage(m.clone()),
            E::Serialization(m) => E::Serialization(m.clone()),
            E::Deserialization(m) => E::Deserialization(m.clone()),
            E::Compression(m) => E::Compression(m.clone()),
            E::Authentication(m) => E::Authentication(m.clone()),
            E::Authorization(m) => E::Authorization(m.clone()),
            E::BufferFull { limit } => E::BufferFull { limit: *limit },
            E::PartitionNotAssigned { topic, partition } => E::PartitionNotAssigned {
                topic: topic.clone(),
                partition: *partition,
            },
            E::NoCommittedOffset {
                group,
                topic,
                partition,
            } => E::NoCommittedOffset {
                group: group.clone(),
                topic: topic.clone(),
                partition: *partition,
            },
            E::NoConnectionsAvailable => E::NoConnectionsAvailable,
            E::Closed => E::Closed,
            E::Io(e) => E::Io(std::io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Names the topic in a [`ClientError::TopicNotFound`], whose text otherwise is the
    /// broker's message; other errors are returned unchanged.
    pub(crate) fn for_topic(self, topic: &str) -> Self {
        match self {
            ClientError::TopicNotFound(_) => ClientError::TopicNotFound(topic.to_owned()),
            other => other,
        }
    }

    /// The error for a response of the wrong kind (the transport already checks kinds, so
    /// callers use this for the arm of a `match` that cannot happen with a conforming broker).
    pub(crate) fn unexpected_response(response: &Response) -> Self {
        let kind = response
            .kind()
            .map_or_else(|| "error".to_owned(), |k| k.name().to_owned());
        ClientError::UnexpectedResponse(format!("{kind} response"))
    }

    /// The error for an operation bounded by `timeout`.
    pub(crate) fn timeout(timeout: std::time::Duration) -> Self {
        ClientError::Timeout {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A lost connection, a QUIC failure, an empty pool, or a broker going down: the request
    /// never took effect or the broker cannot say, and another connection may succeed.
    pub(crate) fn is_transport_loss(&self) -> bool {
        matches!(
            self,
            ClientError::Connection(_)
                | ClientError::Quic(_)
                | ClientError::NoConnectionsAvailable
                | ClientError::Broker {
                    code: ErrorCode::ShuttingDown,
                    ..
                }
        )
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic payload that is not a string".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(code: ErrorCode, message: &str) -> ErrorResponse {
        ErrorResponse {
            code,
            message: message.into(),
        }
    }

    #[test]
    fn error_answers_map_to_specific_variants() {
        assert!(matches!(
            ClientError::from_response(answer(ErrorCode::UnknownTopic, "no topic x")),
            ClientError::TopicNotFound(m) if m == "no topic x"
        ));
        assert!(matches!(
            ClientError::from_response(answer(ErrorCode::AuthenticationFailed, "bad password")),
            ClientError::Authentication(_)
        ));
        assert!(matches!(
            ClientError::from_response(answer(ErrorCode::NotAuthenticated, "say hello")),
            ClientError::Authentication(_)
        ));
        assert!(matches!(
            ClientError::from_response(answer(ErrorCode::AuthorizationFailed, "no")),
            ClientError::Authorization(_)
        ));
        assert!(matches!(
            ClientError::from_response(answer(ErrorCode::OffsetOutOfRange, "offset 9")),
            ClientError::OffsetOutOfRange(_)
        ));
        assert!(matches!(
            ClientError::from_response(answer(ErrorCode::TopicAlreadyExists, "exists")),
            ClientError::Broker {
                code: ErrorCode::TopicAlreadyExists,
                ..
            }
        ));
    }

    #[test]
    fn retryable_follows_transport_and_broker_codes() {
        assert!(ClientError::Connection("lost".into()).is_retryable());
        assert!(ClientError::timeout(Duration::from_secs(1)).is_retryable());
        assert!(ClientError::Quic("reset".into()).is_retryable());
        assert!(ClientError::NoConnectionsAvailable.is_retryable());
        assert!(ClientError::BufferFull { limit: 1 }.is_retryable());
        assert!(!ClientError::PartitionNotAssigned {
            topic: "t".into(),
            partition: 0
        }
        .is_retryable());
        assert!(
            ClientError::from_response(answer(ErrorCode::Throttled, "slow down")).is_retryable()
        );
        assert!(ClientError::from_response(answer(ErrorCode::ShuttingDown, "bye")).is_retryable());
        assert!(!ClientError::from_response(answer(ErrorCode::UnknownTopic, "x")).is_retryable());
        assert!(!ClientError::from_response(answer(ErrorCode::InvalidRequest, "x")).is_retryable());
        assert!(!ClientError::InvalidConfig("x".into()).is_retryable());
        assert!(!ClientError::Tls("untrusted".into()).is_retryable());
        assert!(!ClientError::Closed.is_retryable());
        assert!(!ClientError::Deserialization("poison".into()).is_retryable());
    }

    #[test]
    fn messages_are_lowercase_and_carry_context() {
        assert_eq!(
            ClientError::timeout(Duration::from_millis(1500)).to_string(),
            "operation timed out after 1500 ms"
        );
        assert_eq!(
            ClientError::MessageTooLarge {
                size: 10,
                max_size: 5
            }
            .to_string(),
            "message of 10 bytes exceeds the maximum of 5 bytes"
        );
        let e = ClientError::from_response(answer(ErrorCode::Throttled, "busy"));
        assert_eq!(e.to_string(), "broker error Throttled: busy");
        assert_eq!(e.error_code(), Some(ErrorCode::Throttled));
    }

    #[test]
    fn duplicates_keep_variant_and_text() {
        let errors = [
            ClientError::from_response(answer(ErrorCode::Throttled, "busy")),
            ClientError::Io(std::io::Error::new(std::io::ErrorKind::NotFound, "gone")),
            ClientError::NoCommittedOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 2,
            },
            ClientError::timeout(Duration::from_millis(7)),
        ];
        for e in errors {
            let d = e.duplicate();
            assert_eq!(d.to_string(), e.to_string());
            assert_eq!(d.is_retryable(), e.is_retryable());
            assert_eq!(std::mem::discriminant(&d), std::mem::discriminant(&e));
        }
    }

    #[test]
    fn topic_name_replaces_broker_text() {
        let e = ClientError::from_response(answer(ErrorCode::UnknownTopic, "unknown topic"));
        assert!(matches!(e.for_topic("orders"), ClientError::TopicNotFound(t) if t == "orders"));
        assert!(matches!(
            ClientError::Closed.for_topic("orders"),
            ClientError::Closed
        ));
    }

    #[test]
    fn transport_loss_is_what_safe_requests_retry_on() {
        assert!(ClientError::Connection("x".into()).is_transport_loss());
        assert!(
            ClientError::from_response(answer(ErrorCode::ShuttingDown, "bye")).is_transport_loss()
        );
        // A timeout already used the caller's whole budget.
        assert!(!ClientError::timeout(Duration::from_secs(1)).is_transport_loss());
        assert!(!ClientError::from_response(answer(ErrorCode::Throttled, "x")).is_transport_loss());
    }
}
