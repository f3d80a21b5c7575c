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
///
/// A filter that does not parse is refused, naming where it came from, and nothing is
/// installed: a typo in it would otherwise log at some other level than asked without a word.
pub fn try_init_logging(filter: &str) -> Result<(), String> {
    let (filter, from) = match std::env::var("RUST_LOG") {
        Ok(env) => (env, "RUST_LOG"),
        Err(_) => (filter.to_owned(), "--log"),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| format!("invalid log filter {filter:?} in {from}: {e}"))?;
    install_logging(filter);
    Ok(())
}

/// [`try_init_logging`], falling back to `info` (and saying so on stderr) when the filter does
/// not parse.
pub fn init_logging(filter: &str) {
    if let Err(e) = try_init_logging(filter) {
        eprintln!("warning: {e}; logging at info");
        install_logging(tracing_subscriber::EnvFilter::new("info"));
    }
}

fn install_logging(filter: tracing_subscriber::EnvFilter) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Starts a broker with `config` on the current runtime (and the Prometheus endpoint when
/// `metrics_listen` is set), prints where it listens to stderr, and runs until Ctrl-C or
/// SIGTERM; then shuts it down cleanly.
///
/// First raises the process's open-file limit to its hard limit ([`raise_open_file_limit`]):
/// the broker keeps every segment file of every partition open.
pub async fn serve(config: BrokerConfig) -> Result<(), ServeError> {
    match raise_open_file_limit() {
        Ok((from, to)) if from != to => {
            tracing::info!(from, to, "raised the open-file limit to its hard limit");
        }
        Ok((limit, _)) => tracing::debug!(limit, "open-file limit"),
        Err(err) => tracing::warn!(%err, "could not raise the open-file limit"),
    }
    if let Some(addr) = config.metrics_listen {
        install_exporter(addr)?;
        eprintln!("rustmq-broker metrics on http://{addr}/metrics");
    }
    // Listening before the broker says where it is: a SIGTERM sent as soon as it has (by a
    // supervisor, or a test) would otherwise end the process before its logs are flushed.
    let mut signals = Signals::listen();
    let broker = Broker::builder().config(config).start().await?;
    eprintln!(
        "rustmq-broker listening on {} (certificate: {})",
        broker.local_addr(),
        broker.cert_path().display()
    );
    signals.wait().await;
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

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, and returns both
/// (before, after). The broker keeps one descriptor open per segment file, of every partition:
/// the usual soft limit of 1,024 would stop a broker holding a few hundred partitions from
/// opening its logs, or a roll from creating a file (`Too many open files`). Java raises it
/// the same way for Kafka's broker (HotSpot's `MaxFDLimit`), and Go's runtime for its
/// programs; a library does not change its process's limits, so the embedded broker leaves
/// this to its application.
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard.max(soft)))
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from when this is made: one that comes before
/// [`Signals::wait`] is polled is not lost (nor does it end the process as it would without a
/// handler).
#[derive(Debug)]
pub struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Starts listening (on the current runtime).
    pub fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| {
            signal(kind)
                .map_err(|e| tracing::error!(error = %e, "cannot listen for {name}"))
                .ok()
        };
        Self {
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Resolves on the first of them (never, when neither could be listened for).
    pub async fn wait(&mut self) {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => {}
            () = recv(&mut self.terminate) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    /// A signal sent once `Signals` listens, before anything waits for it, is kept for the
    /// wait (the broker listens before it prints where it is, and a supervisor may signal as
    /// soon as it has read that); and it does not end the process.
    #[tokio::test]
    async fn a_signal_sent_before_the_wait_is_not_lost() {
        for signal in ["-TERM", "-INT"] {
            let mut signals = super::Signals::listen();
            let sent = std::process::Command::new("kill")
                .arg(signal)
                .arg(std::process::id().to_string())
                .status()
                .unwrap();
            assert!(sent.success());
            tokio::time::timeout(std::time::Duration::from_secs(10), signals.wait())
                .await
                .unwrap_or_else(|_| panic!("{signal} was lost"));
        }
    }

    /// Set below its hard limit, the soft limit is raised to it.
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        /// Puts the process's limits back, so that the tests after this one run with them.
        struct Restore(u64, u64);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, self.0, self.1);
            }
        }
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let _restore = Restore(soft, hard);
        // Not so low that the tests running beside this one run out.
        let lowered = (hard / 2).max(4_096).min(hard.saturating_sub(1));
        if lowered < 4_096 {
            return; // A hard limit this low leaves nothing to raise here.
        }
        setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();
        assert_eq!(raise_open_file_limit().unwrap(), (lowered, hard));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
        assert_eq!(raise_open_file_limit().unwrap(), (hard, hard));
    }

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

        for interval in ["interval:0s", "interval:300000000000y"] {
            let bad = Cli::parse_from(["x", "--flush", interval]);
            let err = bad.args.to_config().unwrap_err().to_string();
            assert!(err.contains("log.flush interval must be"), "{err}");
        }
        assert!(Cli::try_parse_from(["x", "--tls-cert", "a.pem"]).is_err());
    }
}
