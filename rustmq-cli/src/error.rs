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
    /// A line of `produce`'s input is longer than any message may be.
    #[error("line {line} is longer than the largest message ({max} bytes)")]
    LineTooLong {
        /// Its number, from 1.
        line: u64,
        /// The largest message the producer sends, in bytes.
        max: usize,
    },
    /// A line of `produce`'s input could not be made into a message or sent.
    #[error("line {line}: {source}")]
    Line {
        /// Its number, from 1.
        line: u64,
        /// Why.
        source: ClientError,
    },
    /// The arguments do not make sense together (checked after parsing).
    #[error("{0}")]
    Usage(String),
    /// The command ran but did not succeed.
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C stopped the command before it was done (what it had started was finished).
    #[error("{0}")]
    Interrupted(String),
}

impl CliError {
    /// 2 for usage errors (as clap uses), 130 for an interruption (128 + SIGINT, as a shell
    /// reports a command that Ctrl-C ended), 1 for every other failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Interrupted(_) => 130,
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

    /// A client that could not be made for `brokers`: options that make no valid client
    /// configuration are a usage error (with the configuration's own message), anything else
    /// a failure to connect.
    pub(crate) fn connect(brokers: String, source: ClientError) -> Self {
        match source {
            ClientError::InvalidConfig(_) => CliError::Usage(source.to_string()),
            source => CliError::Connect { brokers, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_configuration_is_a_usage_error() {
        let e = CliError::connect(
            "b:1".into(),
            ClientError::InvalidConfig("client_id must not be empty".into()),
        );
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "invalid configuration: client_id must not be empty"
        );
        let e = CliError::connect("b:1".into(), ClientError::Closed);
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().starts_with("cannot connect to b:1: "), "{e}");
    }
}
