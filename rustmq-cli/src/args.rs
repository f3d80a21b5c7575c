//! The command line: every command, subcommand and option.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rustmq_broker::cli::BrokerArgs;

use crate::bench::BenchArgs;

/// The RustMQ command line: manage topics and groups, produce and consume, measure, and run a
/// broker.
///
/// Connects to --broker (default localhost:9092) over QUIC with TLS. A broker on this machine
/// with its generated development certificate is trusted as is; elsewhere pass the broker's
/// certificate with --ca-cert (and --server-name when the address is not in it).
#[derive(Debug, Parser)]
#[command(name = "rustmq", version, about, long_about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// Broker address (HOST:PORT); repeat for several brokers.
    #[arg(
        long = "broker",
        short = 'b',
        value_name = "HOST:PORT",
        global = true,
        env = "RUSTMQ_BROKERS",
        value_delimiter = ','
    )]
    pub(crate) brokers: Vec<String>,

    /// PEM file with the CA certificate(s) the broker's certificate must chain to
    /// (for a development broker: <DATA_DIR>/tls/cert.pem).
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "insecure")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// Name to check the broker's certificate against, instead of the address's host.
    #[arg(long, value_name = "NAME", global = true)]
    pub(crate) server_name: Option<String>,

    /// Accept any broker certificate (development only: the connection can be intercepted).
    #[arg(long, global = true)]
    pub(crate) insecure: bool,

    /// Client id sent to the broker [default: rustmq-cli-<random>].
    #[arg(long, value_name = "ID", global = true, value_parser = parse_non_empty)]
    pub(crate) client_id: Option<String>,

    /// Time allowed for each request (and for connecting), e.g. 10s, 500ms; more than zero.
    /// A fetch is also given the time the broker may hold it waiting for messages.
    #[arg(long, value_name = "DURATION", global = true, default_value = "10s", value_parser = parse_timeout)]
    pub(crate) timeout: Duration,

    /// Log filter in tracing-subscriber EnvFilter syntax (RUST_LOG wins when set)
    /// [default: warn, info for `broker`].
    #[arg(long, value_name = "FILTER", global = true)]
    pub(crate) log: Option<String>,

    /// No progress bars (they are also hidden when stderr is not a terminal).
    #[arg(long, short = 'q', global = true)]
    pub(crate) quiet: bool,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Send lines of stdin or a file as messages, one message per line.
    ///
    /// A line is bytes: its "\n" (or "\r\n") is left out, and it need not be UTF-8. A line
    /// longer than the largest message (4 MiB) ends the input with an error naming it. The
    /// producer is idempotent: with --acks leader or all, a batch sent again after a lost
    /// answer is stored once.
    ///
    /// Exits 0 once every message is acknowledged; 1 if a line could not be read or sent, or
    /// the broker refused a message (also with --acks none, whose answers are still read before
    /// the command exits); the lines before a bad one are sent first. Ctrl-C stops reading,
    /// sends and waits for what was read, prints the summary and exits 130; a second Ctrl-C
    /// exits at once.
    Produce(ProduceArgs),
    /// Print messages of a topic, from a consumer group or from chosen offsets.
    ///
    /// Runs until --max-messages, --idle-timeout or Ctrl-C, then exits 0. With --group, the
    /// messages printed are committed and the group is left when it stops (also on a Ctrl-C
    /// pressed while joining the group); a second Ctrl-C exits at once with 130, without
    /// committing. Without a group, a partition whose next offset was deleted by retention
    /// continues at its first stored offset, and one whose log now ends below it at its end,
    /// with a warning on stderr.
    Consume(ConsumeArgs),
    /// List consumer groups and show their members, assignment, offsets and lag.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// The load tool: standard workloads (W1-W7) or custom runs; one JSON line per result.
    Bench(BenchArgs),
    /// Run a broker in this process until Ctrl-C (the same options as `rustmq-broker`).
    Broker(BrokerArgs),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Format {
    /// For people: payloads, or aligned tables.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `rustmq topics ...`
#[derive(Debug, Subcommand)]
pub(crate) enum TopicsCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// Delete segments older than this (e.g. 7d, 12h) [default: the broker's].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        retention: Option<Duration>,
        /// Keep at most about this many bytes per partition [default: the broker's].
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
        /// Roll segment files at this size [default: the broker's].
        #[arg(long, value_name = "BYTES")]
        segment_bytes: Option<u64>,
    },
    /// List topics with their partition counts.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a topic's settings and partitions (offsets, size, segments).
    Describe {
        /// Topic name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a topic and all its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// `rustmq groups ...`
#[derive(Debug, Subcommand)]
pub(crate) enum GroupsCommand {
    /// List consumer groups.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a group's state, members, assignment, committed offsets and lag per partition.
    Describe {
        /// Group name.
        group: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// Durability a produce waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Acks {
    /// Do not wait for answers.
    None,
    /// The broker appended the batch.
    #[default]
    Leader,
    /// The batch is on the broker's disk (fdatasync).
    All,
}

impl From<Acks> for rustmq::AckLevel {
    fn from(a: Acks) -> Self {
        match a {
            Acks::None => rustmq::AckLevel::None,
            Acks::Leader => rustmq::AckLevel::Leader,
            Acks::All => rustmq::AckLevel::All,
        }
    }
}

/// `rustmq produce`
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// Topic to send to (created on first produce if the broker auto-creates topics).
    pub(crate) topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Key of every message (messages with one key go to one partition).
    #[arg(
        long,
        short = 'k',
        value_name = "KEY",
        conflicts_with = "key_separator"
    )]
    pub(crate) key: Option<String>,
    /// Split each line at the first SEP into key and payload (e.g. --key-separator :); a line
    /// without SEP has no key. Not empty.
    #[arg(long, value_name = "SEP", value_parser = parse_non_empty)]
    pub(crate) key_separator: Option<String>,
    /// Header on every message, as NAME=VALUE; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// Send every message to this partition instead of partitioning by key.
    #[arg(long, short = 'p', value_name = "N")]
    pub(crate) partition: Option<u32>,
    /// Durability to wait for (with any, the answers are read before the command exits).
    #[arg(long, value_enum, default_value_t)]
    pub(crate) acks: Acks,
}

/// `rustmq consume`
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Topic to read.
    pub(crate) topic: String,
    /// Consume as a member of this group: partitions are assigned by the broker, and acknowledged
    /// messages are committed (a later run of the group continues after them).
    #[arg(long, short = 'g', value_name = "GROUP")]
    pub(crate) group: Option<String>,
    /// Start at the first stored offset. With --group, only in partitions the group has no
    /// committed offset for: the others continue after the commits (--offset 0 reads them
    /// again). Default: only new messages, or the group's committed offsets.
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    pub(crate) from_beginning: bool,
    /// Start at this offset (moved into the stored range) in every partition read. With
    /// --group it overrides the commits in each partition this run is assigned (also one
    /// assigned later, when another member leaves); after a rebalance, a partition this run
    /// printed from continues after the last message it printed.
    #[arg(long, value_name = "OFFSET", conflicts_with = "timestamp")]
    pub(crate) offset: Option<u64>,
    /// Start at the first message at or after this time: milliseconds since the epoch
    /// (numbers below 10^11 are seconds, as the consumer API reads them), or RFC 3339
    /// (2024-05-01T12:00:00Z; from March 1973 on). With --group it overrides the commits as
    /// --offset does.
    #[arg(long, value_name = "TIME", value_parser = parse_timestamp)]
    pub(crate) timestamp: Option<u64>,
    /// Read only this partition (without --group).
    #[arg(long, short = 'p', value_name = "N", conflicts_with = "group")]
    pub(crate) partition: Option<u32>,
    /// Exit after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    pub(crate) max_messages: Option<u64>,
    /// Exit when no message arrived for this long (e.g. 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) idle_timeout: Option<Duration>,
    /// Print payloads (text) or whole records (json, one object per line).
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
}

/// Parses durations like `10s`, `250ms`, `1h 30m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s)
        .map_err(|e| format!("{e} (try 10s, 250ms, 1h)"))
}

/// A `--timeout`: a duration greater than zero.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
    }
}

/// A value that must not be empty (`--client-id`, `--key-separator`).
fn parse_non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// A `--timestamp`, as the consumer API takes it: a number as given (below 10^11 seconds,
/// else milliseconds: see `rustmq::consumer::timestamp_ms`), an RFC 3339 time in
/// milliseconds. A time before 10^11 ms (March 1973) is refused: as a number it would be read
/// as seconds.
pub(crate) fn parse_timestamp(s: &str) -> Result<u64, String> {
    if let Ok(ts) = s.parse::<u64>() {
        return Ok(ts);
    }
    let t = humantime_serde::re::humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?} is neither milliseconds since the epoch nor an RFC 3339 time: {e}")
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|_| format!("{s:?} is before 1970"))?;
    if ms < 100_000_000_000 {
        return Err(format!(
            "{s:?} is before March 1973 (10^11 ms): such times cannot be given"
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn headers_and_timestamps_parse() {
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_header("=x").is_err());
        assert!(parse_header("novalue").is_err());
        assert_eq!(parse_timestamp("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_timestamp("1714564800"), Ok(1_714_564_800));
        assert_eq!(
            parse_timestamp("2024-05-01T12:00:00Z"),
            Ok(1_714_564_800_000)
        );
        assert!(parse_timestamp("1970-01-01T00:00:01Z").is_err());
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn timeouts_and_separators_are_not_empty() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0ms").is_err());
        assert_eq!(parse_non_empty(":"), Ok(":".to_owned()));
        assert!(parse_non_empty("").is_err());
    }

    #[test]
    fn insecure_and_a_ca_certificate_conflict() {
        let err = Cli::try_parse_from(["rustmq", "--insecure", "--ca-cert", "x", "topics", "list"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(Cli::try_parse_from(["rustmq", "--insecure", "topics", "list"]).is_ok());
    }
}
