//! Settlements: what becomes of a message after its handler ran.

/// Errors of handlers and layers, as tower uses them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a message is settled. A handler's return value becomes one through [`IntoSettlement`];
/// an `Err` from a service means a transient failure (retried by `RetryLayer`, dead-lettered by
/// `DeadLetterLayer`, otherwise nacked for the consumer's own redelivery).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// Processed: acknowledge (and so commit).
    Ack,
    /// Deliberately ignored: acknowledge without processing.
    Skip,
    /// Failed transiently: try again (`RetryLayer`).
    Retry(String),
    /// Failed for good: publish to the dead-letter topic, then acknowledge.
    DeadLetter(String),
    /// The payload did not decode: never retried; dead-lettered, skipped or stopping the
    /// service per its poison policy.
    Poison(String),
    /// Published to the dead-letter topic `topic` (by `DeadLetterLayer` or the poison
    /// policy), then acknowledged.
    DeadLettered {
        /// The dead-letter topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

impl Settlement {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Settlement::Ack => "ack",
            Settlement::Skip => "skip",
            Settlement::Retry(_) => "retry",
            Settlement::DeadLetter(_) => "dead_letter",
            Settlement::Poison(_) => "poison",
            Settlement::DeadLettered { .. } => "dead_lettered",
        }
    }
}

/// Handler return types: `()` acks, `Result<T, E>` acks (as `T` says) or fails with `E`, and a
/// [`Settlement`] says exactly what to do.
#[diagnostic::on_unimplemented(
    message = "a handler cannot return `{Self}`",
    label = "not a settlement",
    note = "return `()`, a `Settlement`, or a `Result<_, E>` of those with `E: std::error::Error + Send + Sync`"
)]
pub trait IntoSettlement {
    /// The settlement, or a transient failure.
    fn into_settlement(self) -> Result<Settlement, BoxError>;
}

impl IntoSettlement for () {
    fn into_settlement(self) -> Result<Settlement, BoxError> {
        Ok(Settlement::Ack)
    }
}

impl IntoSettlement for Settlement {
    fn into_settlement(self) -> Result<Settlement, BoxError> {
        Ok(self)
    }
}

impl<T: IntoSettlement, E: Into<BoxError>> IntoSettlement for Result<T, E> {
    fn into_settlement(self) -> Result<Settlement, BoxError> {
        match self {
            Ok(v) => v.into_settlement(),
            Err(e) => Err(e.into()),
        }
    }
}
