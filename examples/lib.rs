//! What the examples share: where to find a broker, and log output.
//!
//! Every example runs against an embedded broker unless `--broker HOST:PORT` names a running
//! one; `--ca-cert` trusts that broker's CA (a broker on this machine is trusted as a local
//! development broker without it).

use rustmq::testing::TestBroker;
use rustmq::{ClientConfig, TlsConfig};

/// The `--broker` / `--ca-cert` options of every example.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// A running broker; without it an embedded one is started.
    #[arg(long)]
    pub broker: Option<String>,
    /// CA certificate of the broker (PEM).
    #[arg(long)]
    pub ca_cert: Option<String>,
}

impl BrokerArgs {
    /// The client configuration to use, and the embedded broker if one was started (keep it
    /// alive as long as the client).
    pub async fn config(&self) -> rustmq::Result<(Option<TestBroker>, ClientConfig)> {
        match &self.broker {
            Some(broker) => Ok((
                None,
                ClientConfig {
                    brokers: vec![broker.clone()],
                    tls_config: self.ca_cert.clone().map(|ca| TlsConfig {
                        ca_cert: Some(ca),
                        ..TlsConfig::default()
                    }),
                    ..ClientConfig::default()
                },
            )),
            None => {
                let broker = TestBroker::start().await?;
                let config = broker.client_config();
                Ok((Some(broker), config))
            }
        }
    }
}

/// The error of an example that did not get to see what it shows (within its time limit), so
/// that it exits non-zero rather than print a partial result as if it were the whole.
pub fn incomplete(what: impl Into<String>) -> rustmq::ClientError {
    rustmq::ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        what.into(),
    ))
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
}
