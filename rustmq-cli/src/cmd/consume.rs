//! `rustmq consume`: print messages from a group, or from chosen offsets without one.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::ProgressBar;
use rustmq::consumer::{Consumer, ConsumerConfig, StartPosition};
use rustmq::{ClientError, Message, RustMqClient};

use crate::args::{ConsumeArgs, Format, GlobalArgs};
use crate::error::CliError;
use crate::interrupt::Interrupt;
use crate::progress;
use crate::reader::{self, Event, Start};

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

    /// A warning on stderr, around the progress bar.
    fn warn(&self, warning: &str) {
        self.bar.suspend(|| eprintln!("warning: {warning}"));
    }
}

enum Next<T> {
    Item(T),
    Stop,
}

/// Waits for `next`, unless Ctrl-C (pressed now or earlier) or the idle timeout comes first.
async fn next_or_stop<T, F>(
    next: F,
    idle: Option<Duration>,
    interrupt: &Interrupt,
) -> Result<Next<T>, CliError>
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
        biased;
        () = interrupt.wait() => Ok(Next::Stop),
        item = next => Ok(item?.map_or(Next::Stop, Next::Item)),
        () = idle => Ok(Next::Stop),
    }
}

pub(crate) async fn run(
    client: &RustMqClient,
    global: &GlobalArgs,
    args: ConsumeArgs,
) -> Result<(), CliError> {
    // Before joining a group: a Ctrl-C from now on stops the command, which leaves the group.
    let interrupt = Interrupt::install()?;
    let mut sink = Sink::new(&args, global);
    let result = match &args.group {
        Some(group) => consume_group(client, &args, group, &mut sink, &interrupt).await,
        None => consume_partitions(client, &args, &mut sink, &interrupt).await,
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
    interrupt: &Interrupt,
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
    // Not cut short by Ctrl-C: a join given up midway would leave a member the group waits
    // for. Once joined, the consumer leaves at once (see below).
    let consumer = client
        .create_consumer_with_config(&args.topic, group, config)
        .await?;
    let result = print_group(&consumer, args, sink, interrupt).await;
    // Commits what was printed (acknowledged) and leaves the group, even after an error or
    // Ctrl-C (a second one exits at once).
    let closed = consumer.close().await;
    result?;
    Ok(closed?)
}

/// How often a group member with `--offset` or `--timestamp` looks for newly assigned
/// partitions while no message arrives (the consumer has no assignment callback): one whose
/// commits are at its end delivers nothing that would show it.
const ASSIGNMENT_CHECK: Duration = Duration::from_millis(100);

/// Where `--offset` or `--timestamp` starts each partition of a group member, whatever the
/// group committed: every partition this run is assigned, at the start or later (another
/// member leaves). After every rebalance (a new assignment id) each partition is positioned
/// again: one this run printed from continues after the last message it printed, so a
/// rebalance that starts partitions over from the group's commits (a member the group fenced
/// commits nothing first) neither skips nor repeats what this run printed; one it did not print
/// from starts at `--offset`/`--timestamp` again.
struct Positions {
    start: Option<Start>,
    /// The assignment the partitions in `positioned` were positioned for.
    assignment: Option<String>,
    positioned: HashSet<u32>,
    /// Per partition, the offset after the last message printed.
    printed: HashMap<u32, u64>,
}

impl Positions {
    fn new(args: &ConsumeArgs) -> Self {
        let start = match (args.offset, args.timestamp) {
            (Some(o), _) => Some(Start::Offset(o)),
            (_, Some(t)) => Some(Start::Timestamp(t)),
            _ => None,
        };
        Self {
            start,
            assignment: None,
            positioned: HashSet::new(),
            printed: HashMap::new(),
        }
    }

    /// Whether partitions are positioned at all.
    fn active(&self) -> bool {
        self.start.is_some()
    }

    /// Positions the partitions not yet positioned for the current assignment; answers those
    /// it positioned now.
    async fn position_new(&mut self, consumer: &Consumer) -> Result<HashSet<u32>, CliError> {
        let mut now = HashSet::new();
        if self.start.is_none() {
            return Ok(now);
        }
        let Some(assignment) = consumer.partition_assignment().await else {
            return Ok(now);
        };
        if self.assignment.as_ref() != Some(&assignment.assignment_id) {
            self.assignment = Some(assignment.assignment_id);
            self.positioned.clear();
        }
        for partition in assignment.partitions {
            if !self.positioned.contains(&partition) && self.position(consumer, partition).await? {
                now.insert(partition);
            }
        }
        Ok(now)
    }

    /// Whether `message` may be printed: not if it was fetched before its partition was
    /// positioned for the current assignment, which it is now (the message comes again from
    /// there).
    async fn admit(&mut self, consumer: &Consumer, message: &Message) -> Result<bool, CliError> {
        if self.start.is_none() {
            return Ok(true);
        }
        let positioned_now = self.position_new(consumer).await?;
        Ok(!positioned_now.contains(&message.partition)
            && self.positioned.contains(&message.partition))
    }

    /// Notes that `message` was printed.
    fn printed(&mut self, message: &Message) {
        if self.start.is_some() {
            self.printed
                .insert(message.partition, message.offset.saturating_add(1));
        }
    }

    /// Seeks `partition`; whether it is positioned (not if it was revoked meanwhile).
    async fn position(&mut self, consumer: &Consumer, partition: u32) -> Result<bool, CliError> {
        // The messages of the partition fetched before are dropped by the seek.
        let sought = match (self.printed.get(&partition), self.start) {
            (Some(&next), _) => consumer.seek(partition, next).await,
            (None, Some(Start::Offset(o))) => consumer.seek(partition, o).await,
            (None, Some(Start::Timestamp(t))) => {
                consumer.seek_to_timestamp(partition, t).await.map(drop)
            }
            (None, _) => Ok(()),
        };
        match sought {
            Ok(()) => {
                self.positioned.insert(partition);
                Ok(true)
            }
            // Revoked meanwhile: positioned if it is assigned again.
            Err(ClientError::PartitionNotAssigned { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

async fn print_group(
    consumer: &Consumer,
    args: &ConsumeArgs,
    sink: &mut Sink,
    interrupt: &Interrupt,
) -> Result<(), CliError> {
    let mut positions = Positions::new(args);
    while !sink.done() && !interrupt.is_set() {
        positions.position_new(consumer).await?;
        let next = async {
            let receive = consumer.receive();
            tokio::pin!(receive);
            loop {
                tokio::select! {
                    delivery = &mut receive => return delivery.map_err(CliError::from),
                    () = tokio::time::sleep(ASSIGNMENT_CHECK), if positions.active() => {
                        positions.position_new(consumer).await?;
                    }
                }
            }
        };
        match next_or_stop(next, args.idle_timeout, interrupt).await? {
            Next::Item(delivery) => {
                if !positions.admit(consumer, &delivery.message).await? {
                    continue;
                }
                if !sink.print(&delivery.message)? {
                    break;
                }
                positions.printed(&delivery.message);
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
    interrupt: &Interrupt,
) -> Result<(), CliError> {
    let start = match (args.from_beginning, args.offset, args.timestamp) {
        (true, _, _) => Start::Earliest,
        (_, Some(o), _) => Start::Offset(o),
        (_, _, Some(t)) => Start::Timestamp(t),
        _ => Start::Latest,
    };
    let started = async {
        let partitions = match args.partition {
            Some(p) => vec![p],
            None => {
                let topic = client.describe_topic(&args.topic).await?;
                topic.partitions.iter().map(|p| p.partition).collect()
            }
        };
        reader::start(client, &args.topic, &partitions, start).await
    };
    // Nothing to clean up yet: Ctrl-C ends the command at once.
    let (mut rx, _tasks) = tokio::select! {
        biased;
        () = interrupt.wait() => return Ok(()),
        started = started => started?,
    };
    while !sink.done() {
        let next = async { rx.recv().await.transpose().map_err(CliError::from) };
        match next_or_stop(next, args.idle_timeout, interrupt).await? {
            Next::Item(Event::Message(m)) => {
                if !sink.print(&m)? {
                    break;
                }
            }
            Next::Item(Event::Skipped {
                partition,
                from,
                to,
            }) if to > from => sink.warn(&format!(
                "{}/{partition}: offset {from} is no longer stored (retention deleted it); \
                 continuing at the first stored offset, {to}",
                args.topic
            )),
            Next::Item(Event::Skipped {
                partition,
                from,
                to,
            }) => sink.warn(&format!(
                "{}/{partition}: offset {from} is past the end of the log (the topic was made \
                 again, or the broker lost records); continuing at its end, {to}",
                args.topic
            )),
            Next::Stop => break,
        }
    }
    Ok(())
}
