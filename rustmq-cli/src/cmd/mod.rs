//! The commands that talk to a broker (everything but `bench`).

mod consume;
mod groups;
mod produce;
mod topics;

use std::io::Write;

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

/// Stdout, locked, for a command's results. A closed stdout (`rustmq topics list | head -1`)
/// is a normal end: what is left is not written, and the command still succeeds.
pub(crate) struct Out {
    out: std::io::StdoutLock<'static>,
    closed: bool,
}

/// `outln!(out, "...", args)`: one line to an [`Out`].
macro_rules! outln {
    ($out:expr) => {
        $out.line(format_args!(""))
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

impl Out {
    pub(crate) fn new() -> Self {
        Self {
            out: std::io::stdout().lock(),
            closed: false,
        }
    }

    /// Writes one line (stdout is line-buffered: it goes out at once).
    pub(crate) fn line(&mut self, line: std::fmt::Arguments<'_>) -> Result<(), CliError> {
        if self.closed {
            return Ok(());
        }
        let written = writeln!(self.out, "{line}");
        self.check(written)
    }

    /// Writes a table: a header row and rows, columns padded to the widest cell.
    pub(crate) fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let padded = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        outln!(self, "{}", padded(header.to_vec()))?;
        for row in rows {
            outln!(self, "{}", padded(row.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }

    /// Flushes what is left.
    pub(crate) fn finish(mut self) -> Result<(), CliError> {
        let flushed = self.out.flush();
        self.check(flushed)
    }

    fn check(&mut self, written: std::io::Result<()>) -> Result<(), CliError> {
        if self.closed {
            return Ok(());
        }
        match written {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(CliError::io("cannot write to stdout", e)),
        }
    }
}
