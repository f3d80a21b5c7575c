//! The command line shared by the `rustmq-broker` binary and `rustmq broker`: the flags, how
//! they combine with the config file, and running a broker until Ctrl-C or SIGTERM.
//!
//! Settings come from the defaults, then the `--config` file, then the flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{BrokerConfig, ConfigError, FlushSetting};
use crate::{Broker, StartError};

/// Runs a RustMQ broker: a durable, segmented log served over QUIC (TLS 1.3).
///
/// Settings come from the defaults, then the --config file, then the flags given here.
/// Without a configured certificate, a self-signed development certificate is generated
/// once and kept in DATA_DIR/tls/cert.pem; clients on the same machine trust it by default,
/// clients elsewhere need it as their CA file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BrokerArgs {
    /// TOML configuration file (see the broker's config documentation for every key).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding topics, consumer-group offsets and the generated certificate
    /// [default: ./rustmq-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// UDP address to listen on [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// PEM certificate chain (together with --tls-key); omit for a generated development certificate.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// When appended data is forced to disk: "always", "os" or "interval:DURATION" (e.g. interval:100ms).
    /// Produce requests with acks=all always wait for their data to be on disk.
    #[arg(long, value_name = "POLICY")]
    pub flush: Option<FlushSetting>,

    /// Create topics on first produce (true/false).
    #[arg(long, value_name = "BOOL")]
    pub auto_create_topics: Option<bool>,

    /// Serve Prometheus metrics over HTTP on this TCP address (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl BrokerArgs {
    /// The configuration: defaults, then the `--config` file, then the flags; validated.
    pub fn to_config(&self) -> Result<BrokerConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => BrokerConfig::from_file(path)?,
            None => BrokerConfig::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls.cert = Some(cert.clone());
            config.tls.key = Some(key.clone());
        }
        if let Some(f) = &self.flush {
            config.log.flush = f.clone();
        }
        if let Some(a) = self.auto_create_topics {
            config.auto_create_topics = a;
        }
        if let Some(m) = self.metrics_listen {
            config.metrics_listen = Some(m);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The broker could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The metrics endpoint could not start.
    #[cfg(feature = "prometheus")]
    #[error(transparent)]
    Metrics(#[from] crate::metrics::PrometheusError),
    /// `metrics_listen` is set but this build has no Prometheus exporter.
    #[error("metrics_listen is set but rustmq-broker was built without the `prometheus` feature")]
    NoExporter,
}

/// Installs a `tracing` subscriber writing to stderr with `filter` (EnvFilter syntax), unless
/// `RUST_LOG` is set, which wins. For binaries only: a library never installs one.
pub fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Starts a broker with `config` on the current runtime (and the Prometheus endpoint when
/// `metrics_listen` is set), prints where it listens to stderr, and runs until Ctrl-C or
/// SIGTERM; then shuts it down cleanly.
pub async fn serve(config: BrokerConfig) -> Result<(), ServeError> {
    if let Some(addr) = config.metrics_listen {
        install_exporter(addr)?;
        eprintln!("rustmq-broker metrics on http://{addr}/metrics");
    }
    let broker = Broker::builder().config(config).start().await?;
    eprintln!(
        "rustmq-broker listening on {} (certificate: {})",
        broker.local_addr(),
        broker.cert_path().display()
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    broker.shutdown().await;
    Ok(())
}

#[cfg(feature = "prometheus")]
fn install_exporter(addr: SocketAddr) -> Result<(), ServeError> {
    Ok(crate::metrics::install_prometheus(addr)?)
}

#[cfg(not(feature = "prometheus"))]
fn install_exporter(_addr: SocketAddr) -> Result<(), ServeError> {
    Err(ServeError::NoExporter)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the broker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BrokerArgs,
    }

    #[test]
    fn flags_override_the_file_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1111\"\nauto_create_topics = true\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--auto-create-topics",
            "false",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--flush",
            "interval:50ms",
        ]);
        let config = cli.args.to_config().unwrap();
        assert_eq!(config.listen.port(), 1111);
        assert!(!config.auto_create_topics);
        assert_eq!(config.metrics_listen.map(|a| a.port()), Some(9100));
        assert_eq!(config.log.flush.to_string(), "interval:50ms");

        let bad = Cli::parse_from(["x", "--flush", "interval:0s"]);
        assert!(bad.args.to_config().is_err());
        assert!(Cli::try_parse_from(["x", "--tls-cert", "a.pem"]).is_err());
    }
}
