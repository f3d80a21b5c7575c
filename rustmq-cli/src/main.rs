//! `rustmq`: the RustMQ command line.
//!
//! ```text
//! rustmq topics create orders --partitions 3
//! printf 'a\nb\nc\n' | rustmq produce orders --key user-1 --header source=cli
//! rustmq consume orders --group billing --from-beginning --max-messages 3 --format json
//! rustmq groups describe billing
//! rustmq bench --workload all
//! rustmq broker --data-dir ./data --metrics-listen 127.0.0.1:9100
//! ```
//!
//! Every command prints its results on stdout and its errors on stderr, and exits with 0 on
//! success, 1 on a failure, 2 on bad arguments, 130 when Ctrl-C cut `produce`'s input short
//! or stopped a `bench` run, or a second Ctrl-C ended a command at once.

mod args;
mod bench;
mod cmd;
mod connect;
mod error;
mod interrupt;
mod progress;
mod reader;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Broker(_) => "info",
        _ => "warn",
    };
    // A filter that does not parse (`--log`, `RUST_LOG`) is a bad argument, not a silent `info`.
    if let Err(e) =
        rustmq_broker::cli::try_init_logging(cli.global.log.as_deref().unwrap_or(default_log))
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Bench(args) => bench::run(&cli.global, args),
        command => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let result = rt.block_on(cmd::run(&cli.global, command));
                // Not waiting for blocking tasks: a read of stdin that Ctrl-C cut short stays
                // blocked until the input ends, which may be never.
                rt.shutdown_background();
                result
            }
            Err(e) => Err(CliError::io("cannot start the runtime", e)),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
