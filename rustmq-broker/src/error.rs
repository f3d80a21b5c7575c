//! The broker's error type: an error code a client can act on, and a message for people.

use rustmq_protocol::{ErrorCode, ErrorResponse, ProtocolError};

use crate::storage::StorageError;

/// A failed request, as it will be answered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BrokerError {
    /// The code sent to the client.
    pub code: ErrorCode,
    /// The message sent to the client.
    pub message: String,
}

impl BrokerError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A local I/O failure during `what`.
    pub fn io(what: &str, e: std::io::Error) -> Self {
        Self::new(ErrorCode::StorageError, format!("{what}: {e}"))
    }

    /// A storage failure, mapped to the code the client should see.
    pub fn storage(context: String, e: StorageError) -> Self {
        let code = match &e {
            StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StorageError::CorruptBatch(_) => ErrorCode::CorruptBatch,
            StorageError::DuplicateSequence { .. } => ErrorCode::DuplicateSequence,
            StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            StorageError::InvalidProducerEpoch { .. } | StorageError::RetiredProducer { .. } => {
                ErrorCode::InvalidProducerEpoch
            }
            StorageError::InvalidTimestamp { .. } => ErrorCode::InvalidTimestamp,
            StorageError::Retired => ErrorCode::UnknownTopic,
            _ => ErrorCode::StorageError,
        };
        Self::new(code, format!("{context}: {e}"))
    }

    /// The error answer for this error.
    pub fn to_response(&self) -> ErrorResponse {
        ErrorResponse {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

impl From<ProtocolError> for BrokerError {
    fn from(e: ProtocolError) -> Self {
        let code = match e {
            ProtocolError::UnknownKind(_) => ErrorCode::UnknownRequestKind,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtocolError::CrcMismatch { .. } | ProtocolError::CorruptBatch(_) => {
                ErrorCode::CorruptBatch
            }
            _ => ErrorCode::InvalidRequest,
        };
        Self::new(code, e.to_string())
    }
}
