//! `rustmq-broker`: run a RustMQ broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rustmq_broker::config::FlushSetting;
use rustmq_broker::{Broker, BrokerConfig};

/// Runs a RustMQ broker: a durable, segmented log served over QUIC (TLS 1.3).
///
/// Settings come from the defaults, then the --config file, then the flags given here.
/// Without a configured certificate, a self-signed development certificate is generated
/// once and kept in <DATA_DIR>/tls/cert.pem; clients on the same machine trust it by default,
/// clients elsewhere need it as their CA file.
#[derive(Debug, Parser)]
#[command(name = "rustmq-broker", version, about, long_about)]
struct Args {
    /// TOML configuration file (see the broker's config documentation for every key).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// Directory holding topics, consumer-group offsets and the generated certificate
    /// [default: ./rustmq-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// UDP address to listen on [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// PEM certificate chain (together with --tls-key); omit for a generated development certificate.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// When appended data is forced to disk: "always", "os" or "interval:<duration>" (e.g. interval:100ms).
    /// Produce requests with acks=all always wait for their data to be on disk.
    #[arg(long, value_name = "POLICY")]
    flush: Option<FlushSetting>,

    /// Create topics on first produce (true/false).
    #[arg(long, value_name = "BOOL")]
    auto_create_topics: Option<bool>,

    /// Log filter, in tracing-subscriber EnvFilter syntax (also read from RUST_LOG).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut config = match &args.config {
        Some(path) => match BrokerConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => BrokerConfig::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
    }
    if let Some(f) = args.flush {
        config.log.flush = f;
    }
    if let Some(a) = args.auto_create_topics {
        config.auto_create_topics = a;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let broker = match Broker::builder().config(config).start().await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "rustmq-broker listening on {} (certificate: {})",
            broker.local_addr(),
            broker.cert_path().display()
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        broker.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
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
