//! `rustmq-broker`: run a RustMQ broker.

use std::process::ExitCode;

use clap::Parser;
use rustmq_broker::cli::{self, BrokerArgs};

/// Runs a RustMQ broker: a durable, segmented log served over QUIC (TLS 1.3).
///
/// Settings come from the defaults, then the --config file, then the flags given here.
/// Without a configured certificate, a self-signed development certificate is generated
/// once and kept in <DATA_DIR>/tls/cert.pem; clients on the same machine trust it by default,
/// clients elsewhere need it as their CA file.
#[derive(Debug, Parser)]
#[command(name = "rustmq-broker", version, about, long_about)]
struct Args {
    #[command(flatten)]
    broker: BrokerArgs,

    /// Log filter, in tracing-subscriber EnvFilter syntax (also read from RUST_LOG).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(&args.log);
    let config = match args.broker.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
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
    match runtime.block_on(cli::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
