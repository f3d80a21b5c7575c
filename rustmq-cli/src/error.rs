//! What can go wrong, and the exit code each failure gets.

use rustmq::ClientError;

/// A failed command. `main` prints it as `error: ...` and exits with [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// No broker could be reached or the handshake failed.
    #[error("cannot connect to {brokers}: {source}")]
    Connect {
        /// The brokers tried.
        brokers: String,
        /// Why.
        source: ClientError,
    },
    /// A request failed or the broker refused it.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A file or stream could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The arguments do not make sense together (checked after parsing).
    #[error("{0}")]
    Usage(String),
    /// The command ran but did not succeed.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// 2 for usage errors (as clap uses), 1 for every other failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// An I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            what: what.into(),
            source,
        }
    }
}
