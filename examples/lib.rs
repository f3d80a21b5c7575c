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

/// Runs an example until it ends or Ctrl-C comes. On Ctrl-C the example is dropped, and with
/// it its embedded broker and temporary directories (a broker's directory goes once its tasks
/// are done, at the latest when the runtime ends), and this answers an `Interrupted` error, so
/// that the example exits non-zero without leaving `/tmp/rustmq-test-*` behind.
pub async fn interruptible<T, E: From<rustmq::ClientError>>(
    example: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    until(example, async {
        // Without a handler, Ctrl-C ends the process as it would have anyway.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// Runs `example` until it ends or `stop` does (then answers `Interrupted`).
async fn until<T, E: From<rustmq::ClientError>>(
    example: impl std::future::Future<Output = Result<T, E>>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<T, E> {
    tokio::select! {
        done = example => done,
        () = stop => Err(rustmq::ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted",
        ))
        .into()),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An example stopped half-way leaves no data directory behind once its runtime ends.
    #[test]
    fn an_interrupted_example_leaves_no_directory_behind() {
        let made = std::sync::Mutex::new(None);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answer = runtime.block_on(until(
            async move {
                let (broker, config) = BrokerArgs {
                    broker: None,
                    ca_cert: None,
                }
                .config()
                .await?;
                let broker = broker.expect("an embedded broker");
                let client = rustmq::RustMqClient::new(config).await?;
                client.create_topic("kept-busy", 1).await?;
                tx.send(broker.data_dir().to_owned()).unwrap();
                std::future::pending::<rustmq::Result<()>>().await
            },
            async {
                // Once the example is in its endless wait (then it has made its directory).
                let dir = rx.await.expect("the example got to its wait");
                assert!(dir.exists());
                *made.lock().unwrap() = Some(dir);
            },
        ));
        let dir = made.lock().unwrap().take().unwrap();
        assert!(
            matches!(&answer, Err(rustmq::ClientError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted),
            "{answer:?}"
        );
        drop(runtime);
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
