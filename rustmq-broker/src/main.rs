//! `rustmq-broker`: run a RustMQ broker.

use std::process::ExitCode;

use clap::Parser;
use rustmq_broker::cli::{self, BrokerArgs};

/// Runs a RustMQ broker: a durable, segmented log served over QUIC (TLS 1.3).
///
/// Settings come from the defaults, then the --config file, then the flags given here.
/// Without a configured certificate, a self-signed development certificate is generated
/// once and kept in DATA_DIR/tls/cert.pem; clients on the same machine trust it by default,
/// clients elsewhere need it as their CA file.
#[derive(Debug, Parser)]
#[command(
    name = "rustmq-broker",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    broker: BrokerArgs,

    /// Log filter, in tracing-subscriber EnvFilter syntax (also read from RUST_LOG).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,
}

/// Helpers for the security configuration; without one, the broker runs.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Reads a password from standard input (one line) and prints its argon2id hash for the
    /// users file: `alice = "<hash>"` under `[users]`.
    HashPassword,
    /// Reads a token from standard input (one line) and prints its SHA-256 for
    /// `[[auth.tokens]] sha256 = "<hex>"`.
    HashToken,
}

/// Reads one line from stdin without its line ending; the secret is never echoed back.
fn read_secret(what: &str) -> Result<String, String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("{what} (the input is visible; pipe it in to avoid that):");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the {what}: {e}"))?;
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(format!("empty {what}"));
    }
    Ok(secret)
}

fn hash_command(command: &Command) -> ExitCode {
    let result = match command {
        Command::HashPassword => read_secret("password")
            .and_then(|p| rustmq_broker::security::hash_password(&p).map_err(|e| e.to_string())),
        Command::HashToken => read_secret("token").map(|t| rustmq_broker::security::hash_token(&t)),
    };
    match result {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(command) = &args.command {
        return hash_command(command);
    }
    if let Err(e) = cli::try_init_logging(&args.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
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
