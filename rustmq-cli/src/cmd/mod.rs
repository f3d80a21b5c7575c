//! The commands that talk to a broker (everything but `bench`).

mod consume;
mod groups;
mod produce;
mod topics;

use crate::args::{Command, GlobalArgs};
use crate::connect::connect;
use crate::error::CliError;

/// Runs one command on the current runtime.
pub(crate) async fn run(global: &GlobalArgs, command: Command) -> Result<(), CliError> {
    match command {
        Command::Broker(args) => {
            let config = args
                .to_config()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            rustmq_broker::cli::serve(config)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))
        }
        Command::Bench(_) => unreachable!("bench builds its own runtimes"),
        command => {
            let client = connect(global).await?;
            let result = match command {
                Command::Topics(c) => topics::run(&client, c).await,
                Command::Produce(a) => produce::run(&client, global, a).await,
                Command::Consume(a) => consume::run(&client, global, a).await,
                Command::Groups(c) => groups::run(&client, c).await,
                Command::Broker(_) | Command::Bench(_) => unreachable!("handled above"),
            };
            let _ = client.close().await;
            result
        }
    }
}

/// Prints a table: a header row and rows, columns padded to the widest cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
