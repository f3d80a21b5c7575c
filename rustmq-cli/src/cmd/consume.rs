//! `rustmq consume`: print messages from a group, or from chosen offsets without one.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::ProgressBar;
use rustmq::consumer::{ConsumerConfig, StartPosition};
use rustmq::{Message, RustMqClient};

use crate::args::{ConsumeArgs, Format, GlobalArgs};
use crate::error::CliError;
use crate::progress;
use crate::reader::{self, Start};

/// Where printed messages go, and how many so far.
struct Sink {
    format: Format,
    max: Option<u64>,
    printed: u64,
    bar: ProgressBar,
    out: std::io::StdoutLock<'static>,
}

impl Sink {
    fn new(args: &ConsumeArgs, global: &GlobalArgs) -> Self {
        // The printed messages are the progress when they go to the terminal; the bar is for
        // long runs whose output is redirected.
        let quiet = global.quiet || args.max_messages.is_none() || std::io::stdout().is_terminal();
        Self {
            format: args.format,
            max: args.max_messages,
            printed: 0,
            bar: progress::bar(quiet, args.max_messages, "consuming"),
            out: std::io::stdout().lock(),
        }
    }

    fn done(&self) -> bool {
        self.max.is_some_and(|m| self.printed >= m)
    }

    /// Prints one message; `Ok(false)` when stdout is closed (`| head`).
    fn print(&mut self, m: &Message) -> Result<bool, CliError> {
        let written = match self.format {
            Format::Text => self
                .out
                .write_all(&m.payload)
                .and_then(|()| self.out.write_all(b"\n")),
            Format::Json => writeln!(self.out, "{}", m.to_json()?),
        };
        match written.and_then(|()| self.out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(CliError::io("cannot write to stdout", e)),
        }
        self.printed += 1;
        self.bar.inc(1);
        Ok(true)
    }
}

enum Next<T> {
    Item(T),
    Stop,
}

/// Waits for `next`, unless Ctrl-C or the idle timeout comes first.
async fn next_or_stop<T, F>(next: F, idle: Option<Duration>) -> Result<Next<T>, CliError>
where
    F: std::future::Future<Output = Result<Option<T>, CliError>>,
{
    let idle = async {
        match idle {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        item = next => Ok(item?.map_or(Next::Stop, Next::Item)),
        _ = tokio::signal::ctrl_c() => Ok(Next::Stop),
        _ = idle => Ok(Next::Stop),
    }
}

pub(crate) async fn run(
    client: &RustMqClient,
    global: &GlobalArgs,
    args: ConsumeArgs,
) -> Result<(), CliError> {
    let mut sink = Sink::new(&args, global);
    let result = match &args.group {
        Some(group) => consume_group(client, &args, group, &mut sink).await,
        None => consume_partitions(client, &args, &mut sink).await,
    };
    sink.bar.finish_and_clear();
    result?;
    if let Some(max) = args.max_messages {
        if sink.printed < max {
            eprintln!("stopped after {} of {max} message(s)", sink.printed);
        }
    }
    Ok(())
}

async fn consume_group(
    client: &RustMqClient,
    args: &ConsumeArgs,
    group: &str,
    sink: &mut Sink,
) -> Result<(), CliError> {
    let start_position = match (args.from_beginning, args.offset, args.timestamp) {
        (true, _, _) => StartPosition::Earliest,
        (_, Some(o), _) => StartPosition::Offset(o),
        (_, _, Some(t)) => StartPosition::Timestamp(t),
        _ => StartPosition::Latest,
    };
    let config = ConsumerConfig {
        start_position,
        fetch_timeout: Duration::from_millis(500),
        ..ConsumerConfig::default()
    };
    let consumer = client
        .create_consumer_with_config(&args.topic, group, config)
        .await?;
    // Explicit positions win over what the group committed.
    if let Some(o) = args.offset {
        consumer.seek_all(o).await?;
    } else if let Some(t) = args.timestamp {
        consumer.seek_all_to_timestamp(t).await?;
    }
    let result = print_group(&consumer, args, sink).await;
    // Commits what was printed (acknowledged) and leaves the group, even after an error.
    let closed = consumer.close().await;
    result?;
    Ok(closed?)
}

async fn print_group(
    consumer: &rustmq::Consumer,
    args: &ConsumeArgs,
    sink: &mut Sink,
) -> Result<(), CliError> {
    while !sink.done() {
        let next = async { consumer.receive().await.map_err(CliError::from) };
        match next_or_stop(next, args.idle_timeout).await? {
            Next::Item(delivery) => {
                if !sink.print(&delivery.message)? {
                    break;
                }
                delivery.ack().await?;
            }
            Next::Stop => break,
        }
    }
    Ok(())
}

async fn consume_partitions(
    client: &RustMqClient,
    args: &ConsumeArgs,
    sink: &mut Sink,
) -> Result<(), CliError> {
    let partitions = match args.partition {
        Some(p) => vec![p],
        None => {
            let topic = client.describe_topic(&args.topic).await?;
            topic.partitions.iter().map(|p| p.partition).collect()
        }
    };
    let start = match (args.from_beginning, args.offset, args.timestamp) {
        (true, _, _) => Start::Earliest,
        (_, Some(o), _) => Start::Offset(o),
        (_, _, Some(t)) => Start::Timestamp(t),
        _ => Start::Latest,
    };
    let (mut rx, _tasks) = reader::start(client, &args.topic, &partitions, start).await?;
    while !sink.done() {
        let next = async { rx.recv().await.transpose().map_err(CliError::from) };
        match next_or_stop(next, args.idle_timeout).await? {
            Next::Item(m) => {
                if !sink.print(&m)? {
                    break;
                }
            }
            Next::Stop => break,
        }
    }
    Ok(())
}
