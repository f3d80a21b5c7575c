//! `rustmq bench`: the load tool.
//!
//! Standard workloads (`--workload W1..W7|all`, issue 9) or custom runs (`bench produce`,
//! `bench consume`, `bench e2e`), against a broker embedded in this process (its own thread
//! and runtime) or the brokers given with `--broker`. One JSON line per result on stdout;
//! progress on stderr when it is a terminal.
//!
//! | workload | what |
//! |---|---|
//! | W1 | produce 1,000,000 x 100 B random alphanumeric, 1 partition, acks=leader, throughput settings |
//! | W2 | produce 200,000 x 1 KiB to 8 partitions, acks=leader |
//! | W3 | consume every W1 message from the earliest offset (a new group, ack each) |
//! | W4 | end to end: 10,000 x 100 B at 2,000 msgs/s, latency = receive - the time each counts as sent (its tick, or its due time if the sender missed it) |
//! | W5 | 10,000 sequential awaited `send`s of 100 B |
//! | W6 | W1 with acks=all (fdatasync before each answer) |
//! | W7 | W1 and W3 through the typed layer: `#[derive(Topic)]` JSON events (postcard with `--codec postcard`) from the typed producer, read by a `#[handler]` behind trace, timeout, retry and dead-letter layers; reported as `W7-produce` and `W7-consume` with their ratio to W1 and W3 (run too) |
//!
//! `--messages N` scales them: W1, W3, W6 and W7 send N, W2 N/5, W4 and W5 N/100 (at least
//! 100).
//!
//! Every message is checked to arrive exactly once where the run reads them (W3, W4, W7,
//! `bench consume`, `bench e2e`): a figure over lost or repeated messages fails the run instead.
//! The topics a run creates are deleted when it ends unless `--keep-topics`. Ctrl-C stops the
//! run, shuts the embedded broker down and removes the temporary directories (exit code 130);
//! a second Ctrl-C exits at once.

mod baseline;
mod check;
mod cpu;
mod pace;
mod payload;
mod report;
mod target;
mod typed;
mod workloads;

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Subcommand, ValueEnum};
use rustmq::{AckLevel, RustMqClient};

use self::cpu::CpuProbe;
use self::report::{Baseline, Report};
use self::target::{ServerThread, Target};
use self::workloads::{throughput_config, Created, ProduceSpec};
use crate::args::{parse_duration, Acks, GlobalArgs};
use crate::connect;
use crate::error::CliError;
use crate::interrupt::Interrupt;

/// The largest payload a custom run sends: the producer's default `max_message_size` (4 MiB;
/// a bench message has no key or headers). A larger one could never be sent, and a run would
/// first make a pool of them (16 of any size: 32 GB for `-s 2000000000`) before failing.
const MAX_PAYLOAD: u64 = 4 * 1024 * 1024;

/// `-s`: payload bytes, at most [`MAX_PAYLOAD`].
fn payload_size() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(0..=MAX_PAYLOAD)
}

/// `rustmq bench`: run the standard workloads, or a custom run with a subcommand.
///
/// Without --broker, a broker is started in this process (on its own thread, with a temporary
/// data directory); with --broker, the load goes there. Prints one JSON line per workload:
/// workload, messages, payload_bytes, partitions, secs, msgs_per_s, mb_per_s (10^6 bytes of
/// payload per second), p50_us/p99_us/p999_us/max_us where latency is measured, and the
/// producer or consumer settings used. With --baseline, raw QUIC is measured in the same process
/// once the broker is reached, and every line carries its ratio to it.
///
/// Runs that read their messages back (W3, W4, W7, consume, e2e) fail if one is missing or
/// comes twice. The topics a run creates are deleted when it ends, unless --keep-topics.
/// Ctrl-C stops the run and removes what it made (exit code 130); a second exits at once.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) custom: Option<BenchCommand>,

    /// Standard workload(s) to run (comma-separated or repeated).
    #[arg(
        long,
        short = 'w',
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub(crate) workload: Vec<Workload>,

    /// Scale: W1/W3/W6/W7 send N messages, W2 N/5, W4/W5 N/100 (at least 100 each)
    /// [default: 1000000].
    #[arg(long, short = 'n', value_name = "N")]
    pub(crate) messages: Option<u64>,

    /// W7's codec: the same events as JSON (the typed layer's default) or postcard (binary).
    #[arg(long, value_enum, default_value_t)]
    pub(crate) codec: typed::BenchCodec,

    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

/// Options of every bench run.
#[derive(Debug, Clone, Args)]
pub(crate) struct CommonArgs {
    /// Measure raw QUIC before the workloads, once the broker is reached (bulk MB/s over one
    /// stream, round trip of 100-byte frames, the same at the run's pace) and add each
    /// result's ratio to it.
    #[arg(long, global = true)]
    pub(crate) baseline: bool,

    /// Data directory of the embedded broker [default: a temporary directory].
    #[arg(long, value_name = "DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,

    /// Worker threads of the client runtime; 1 runs a current-thread runtime (the broker has
    /// its own thread either way).
    #[arg(long, value_name = "N", default_value_t = 1, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) client_threads: u16,

    /// Keep the topics the run created. By default they are deleted when it ends (also when
    /// it fails or Ctrl-C stops it): on --broker or an embedded broker's --data-dir, a
    /// default run leaves about 500 MB.
    #[arg(long, global = true)]
    pub(crate) keep_topics: bool,
}

/// A standard workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Workload {
    /// Produce 1M x 100 B, 1 partition, acks=leader.
    #[value(name = "W1", alias = "w1")]
    W1,
    /// Produce 200k x 1 KiB, 8 partitions.
    #[value(name = "W2", alias = "w2")]
    W2,
    /// Consume W1's messages from the earliest offset.
    #[value(name = "W3", alias = "w3")]
    W3,
    /// End to end at 2,000 msgs/s; latency from the time each message counts as sent.
    #[value(name = "W4", alias = "w4")]
    W4,
    /// Sequential awaited sends.
    #[value(name = "W5", alias = "w5")]
    W5,
    /// W1 with acks=all.
    #[value(name = "W6", alias = "w6")]
    W6,
    /// W1 and W3 through the typed producer and a layered `#[handler]` (runs W1 and W3 too).
    #[value(name = "W7", alias = "w7")]
    W7,
    /// All of the above, in order.
    #[value(name = "all")]
    All,
}

/// A custom run.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Produce random payloads as fast as the producer goes (or one awaited send at a time).
    Produce(ProduceBench),
    /// Produce a backlog (untimed), then read it back as a new group.
    Consume(ConsumeBench),
    /// Producer and consumer in this process at a fixed rate; latency = receive time - the time
    /// each message counts as sent (a sender that falls behind counts its delay).
    E2e(E2eBench),
}

/// `rustmq bench produce`
#[derive(Debug, Args)]
pub(crate) struct ProduceBench {
    /// Messages to send.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub(crate) messages: u64,
    /// Payload bytes per message, at most 4194304 (4 MiB, the largest message).
    #[arg(long, short = 's', default_value_t = 100, value_parser = payload_size())]
    pub(crate) size: usize,
    /// Partitions of the topic, at least 1.
    #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) partitions: u32,
    /// Durability to wait for.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) acks: Acks,
    /// Messages per batch, at least 1.
    #[arg(long, default_value_t = 16_384, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) batch_size: usize,
    /// Bytes per batch, at least 1024.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = RangedU64ValueParser::<usize>::new().range(1024..))]
    pub(crate) batch_bytes: usize,
    /// Longest a batch waits for more messages (e.g. 0ms, 5ms).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub(crate) linger: std::time::Duration,
    /// Await each send before the next, and report its latency.
    #[arg(long)]
    pub(crate) sequential: bool,
}

/// `rustmq bench consume`
#[derive(Debug, Args)]
pub(crate) struct ConsumeBench {
    /// Messages to produce and read back.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub(crate) messages: u64,
    /// Payload bytes per message, at most 4194304 (4 MiB, the largest message).
    #[arg(long, short = 's', default_value_t = 100, value_parser = payload_size())]
    pub(crate) size: usize,
    /// Partitions of the topic, at least 1.
    #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) partitions: u32,
}

/// `rustmq bench e2e`
#[derive(Debug, Args)]
pub(crate) struct E2eBench {
    /// Messages to send.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub(crate) messages: u64,
    /// Payload bytes per message: at least 16 are sent (the time it counts as sent and its sequence
    /// number), at most 4194304 (4 MiB, the largest message).
    #[arg(long, short = 's', default_value_t = 100, value_parser = payload_size())]
    pub(crate) size: usize,
    /// Messages per second, at least 1.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) rate: u64,
}

/// Runs the bench on runtimes of its own.
pub(crate) fn run(global: &GlobalArgs, args: BenchArgs) -> Result<(), CliError> {
    let common = args.common.clone();
    let rt = if common.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(common.client_threads))
            .enable_all()
            .build()
    }
    .map_err(|e| CliError::io("cannot start the client runtime", e))?;
    let embedded = global.brokers.is_empty();
    // The server thread runs the embedded broker and the baseline's echo server (in-process
    // against --broker too); against --broker without --baseline it would run nothing.
    let server = if embedded || common.baseline {
        Some(ServerThread::start()?)
    } else {
        None
    };
    let result = rt.block_on(async {
        // Installed before anything is made that must not be left behind: from here on a
        // Ctrl-C stops the run, and the broker, the topics and the temporary directories are
        // still shut down and removed (a second Ctrl-C exits at once).
        let interrupt = Interrupt::install()?;
        // Not cut short by Ctrl-C (a broker half started could still write into a directory
        // already removed); one pressed meanwhile stops the run right after.
        let target = match &server {
            Some(server) if embedded => Target::embedded(server, common.data_dir.clone()).await?,
            _ => Target::External(Box::new(connect::client_config(global))),
        };
        eprintln!("bench: target {}", target.describe());
        let mut session = Session {
            target,
            client: None,
            created: Created::default(),
        };
        let outcome = tokio::select! {
            outcome = run_on(&mut session, server.as_ref(), global, args) => outcome,
            () = interrupt.wait() => Err(CliError::Interrupted(
                "interrupted (Ctrl-C): the run was stopped, and what it made removed".into(),
            )),
        };
        session.end(common.keep_topics, global).await;
        outcome
    });
    drop(server);
    result
}

/// What a run made that must be undone when it ends, however it ends: kept outside the run's
/// future, which Ctrl-C drops.
struct Session {
    target: Target,
    /// Once connected.
    client: Option<RustMqClient>,
    /// The topics the run created.
    created: Created,
}

impl Session {
    /// Closes the run's client, deletes the run's topics (unless `keep_topics`, or they go
    /// with a temporary directory) and stops an embedded broker, removing its temporary
    /// directory.
    ///
    /// The run's client is closed first: a run cut short (Ctrl-C, an error) drops producers
    /// that go on delivering what they hold, and a produce the broker took after the topic's
    /// deletion would create the topic again. The deletions go through a client of their own.
    async fn end(self, keep_topics: bool, global: &GlobalArgs) {
        let topics = self.created.take();
        if let Some(client) = self.client {
            let _ = client.close().await;
            if !keep_topics && self.target.keeps_data() && !topics.is_empty() {
                match RustMqClient::new(self.target.client_config(global)).await {
                    Ok(client) => {
                        workloads::delete_topics(&client, &topics).await;
                        let _ = client.close().await;
                    }
                    Err(e) => eprintln!(
                        "bench: could not delete the run's topics ({}): {e}",
                        topics.join(", ")
                    ),
                }
            }
        }
        self.target.shutdown().await;
    }
}

async fn run_on(
    session: &mut Session,
    server: Option<&ServerThread>,
    global: &GlobalArgs,
    args: BenchArgs,
) -> Result<(), CliError> {
    let target = &session.target;
    // Connected first: a broker that cannot be reached fails the run at once, not after the
    // baseline was measured.
    let client = RustMqClient::new(target.client_config(global))
        .await
        .map_err(|e| CliError::connect(target.describe(), e))?;
    let client = session.client.insert(client);
    let scale = args.messages.unwrap_or(1_000_000);
    // The baseline's paced round trips go at the pace of the run's paced workload.
    let paced_rate = match &args.custom {
        Some(BenchCommand::E2e(e)) => e.rate,
        _ => W4_RATE,
    };
    let baseline = match server {
        Some(server) if args.common.baseline => {
            let bulk_bytes = scale.saturating_mul(100).clamp(16 << 20, 1 << 30);
            let round_trips = (scale / 100).clamp(1_000, 100_000) as u32;
            let (b, rtt) = baseline::measure(server, bulk_bytes, round_trips, paced_rate).await?;
            print_baseline(&b, &rtt, bulk_bytes, round_trips, paced_rate);
            Some(b)
        }
        _ => None,
    };
    let ctx = Ctx {
        quiet: global.quiet,
        cpu: CpuProbe::new(target.server().cloned()),
        created: session.created.clone(),
    };
    match args.custom {
        Some(custom) => custom_run(client, custom, &ctx)
            .await
            .map(|r| r.with_baseline(baseline).print()),
        None => standard(client, &args.workload, scale, args.codec, baseline, &ctx).await,
    }
}

fn print_baseline(
    b: &Baseline,
    rtt: &report::Latency,
    bulk_bytes: u64,
    round_trips: u32,
    paced_per_s: u64,
) {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        workload: &'a str,
        bulk_bytes: u64,
        bulk_mb_per_s: f64,
        round_trips: u32,
        rtt_p50_us: u64,
        rtt_p99_us: u64,
        rtt_p999_us: u64,
        rtt_max_us: u64,
        stream_rtt_p50_us: u64,
        stream_rtt_p99_us: u64,
        paced_rtt_p50_us: u64,
        paced_rtt_p99_us: u64,
        paced_per_s: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        stream_client_cpu_us: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stream_server_cpu_us: Option<f64>,
        settings: &'a str,
    }
    let settings = format!(
        "quinn defaults but datagrams up to {} bytes (path MTU discovery, as RustMQ), rustls \
         ring TLS 1.3, ALPN rustmq/1, self-signed certificate",
        rustmq::protocol::MAX_UDP_PAYLOAD_SIZE
    );
    let line = Line {
        workload: "baseline",
        bulk_bytes,
        bulk_mb_per_s: b.bulk_mb_per_s,
        round_trips,
        rtt_p50_us: b.rtt_p50_us,
        rtt_p99_us: b.rtt_p99_us,
        rtt_p999_us: rtt.quantile_us(0.999),
        rtt_max_us: rtt.quantile_us(1.0),
        stream_rtt_p50_us: b.stream_rtt_p50_us,
        stream_rtt_p99_us: b.stream_rtt_p99_us,
        paced_rtt_p50_us: b.paced_rtt_p50_us,
        paced_rtt_p99_us: b.paced_rtt_p99_us,
        paced_per_s,
        stream_client_cpu_us: b.stream_client_cpu_us,
        stream_server_cpu_us: b.stream_server_cpu_us,
        settings: &settings,
    };
    println!("{}", serde_json::to_string(&line).unwrap_or_default());
}

/// What every workload gets besides its client.
pub(crate) struct Ctx {
    /// No progress bars.
    pub(crate) quiet: bool,
    /// Reads the CPU clocks at the start and end of each workload's run.
    pub(crate) cpu: CpuProbe,
    /// The topics the run created, deleted when it ends.
    pub(crate) created: Created,
}

/// W4's pace, messages per second (and the paced baseline's, but for `bench e2e`'s).
const W4_RATE: u64 = 2_000;

fn scaled(scale: u64, divisor: u64) -> u64 {
    (scale / divisor).max(100)
}

async fn standard(
    client: &RustMqClient,
    workloads: &[Workload],
    scale: u64,
    codec: typed::BenchCodec,
    baseline: Option<Baseline>,
    ctx: &Ctx,
) -> Result<(), CliError> {
    let mut chosen: Vec<Workload> = if workloads.contains(&Workload::All) {
        vec![
            Workload::W1,
            Workload::W2,
            Workload::W3,
            Workload::W4,
            Workload::W5,
            Workload::W6,
            Workload::W7,
        ]
    } else {
        workloads.to_vec()
    };
    if chosen.contains(&Workload::W7) {
        // W7 is reported as a fraction of W1 and W3 of the same run.
        chosen.extend([Workload::W1, Workload::W3]);
    }
    chosen.sort();
    chosen.dedup();
    let n = scaled(scale, 1);
    // W3 reads what W1 wrote; run alone, it writes its backlog first (untimed).
    let mut w1_topic: Option<String> = None;
    let (mut w1, mut w3): (Option<Report>, Option<Report>) = (None, None);
    for w in chosen {
        let report = match w {
            Workload::W1 | Workload::W6 => {
                let (name, acks) = if w == Workload::W1 {
                    ("W1", AckLevel::Leader)
                } else {
                    ("W6", AckLevel::All)
                };
                let spec = produce_spec(name, n, 100, 1, throughput_config(acks));
                workloads::create_topic(client, ctx, &spec.topic, 1).await?;
                let report = workloads::produce(client, &spec, ctx).await?;
                if w == Workload::W1 {
                    w1_topic = Some(spec.topic);
                }
                report
            }
            Workload::W2 => {
                let spec = produce_spec(
                    "W2",
                    scaled(scale, 5),
                    1024,
                    8,
                    throughput_config(AckLevel::Leader),
                );
                workloads::create_topic(client, ctx, &spec.topic, 8).await?;
                workloads::produce(client, &spec, ctx).await?
            }
            Workload::W3 => {
                let topic = match w1_topic.clone() {
                    Some(t) => t,
                    None => backlog(client, "W3", n, 100, 1, ctx).await?,
                };
                workloads::consume(client, "W3", &topic, n, 1, ctx).await?
            }
            Workload::W7 => {
                let (produced, consumed) = typed::run(client, n, codec, ctx).await?;
                produced.versus(w1.as_ref()).with_baseline(baseline).print();
                consumed.versus(w3.as_ref())
            }
            Workload::W4 => {
                workloads::end_to_end(client, "W4", scaled(scale, 100), 100, W4_RATE, ctx)
                    .await?
                    .paced()
            }
            Workload::W5 => {
                let spec = ProduceSpec {
                    sequential: true,
                    ..produce_spec(
                        "W5",
                        scaled(scale, 100),
                        100,
                        1,
                        rustmq::ProducerConfig::default(),
                    )
                };
                workloads::create_topic(client, ctx, &spec.topic, 1).await?;
                workloads::produce(client, &spec, ctx).await?
            }
            Workload::All => unreachable!("expanded above"),
        };
        let report = report.with_baseline(baseline);
        report.print();
        match w {
            Workload::W1 => w1 = Some(report),
            Workload::W3 => w3 = Some(report),
            _ => {}
        }
    }
    Ok(())
}

fn produce_spec(
    name: &str,
    messages: u64,
    size: usize,
    partitions: u32,
    config: rustmq::ProducerConfig,
) -> ProduceSpec {
    ProduceSpec {
        name: name.to_owned(),
        topic: workloads::topic_name(name),
        messages,
        size,
        partitions,
        sequential: false,
        config,
    }
}

/// Writes a backlog for a consume run (untimed); returns its topic.
async fn backlog(
    client: &RustMqClient,
    name: &str,
    messages: u64,
    size: usize,
    partitions: u32,
    ctx: &Ctx,
) -> Result<String, CliError> {
    let spec = produce_spec(
        &format!("{name}-prep"),
        messages,
        size,
        partitions,
        throughput_config(AckLevel::Leader),
    );
    workloads::create_topic(client, ctx, &spec.topic, partitions).await?;
    workloads::produce(client, &spec, ctx).await?;
    Ok(spec.topic)
}

async fn custom_run(
    client: &RustMqClient,
    custom: BenchCommand,
    ctx: &Ctx,
) -> Result<Report, CliError> {
    match custom {
        BenchCommand::Produce(p) => {
            let config = rustmq::ProducerConfig {
                batch_size: p.batch_size,
                batch_max_bytes: p.batch_bytes,
                batch_timeout: p.linger,
                ..throughput_config(p.acks.into())
            };
            let spec = ProduceSpec {
                sequential: p.sequential,
                ..produce_spec("produce", p.messages, p.size, p.partitions, config)
            };
            workloads::create_topic(client, ctx, &spec.topic, p.partitions).await?;
            workloads::produce(client, &spec, ctx).await
        }
        BenchCommand::Consume(c) => {
            let topic = backlog(client, "consume", c.messages, c.size, c.partitions, ctx).await?;
            workloads::consume(client, "consume", &topic, c.messages, c.partitions, ctx).await
        }
        BenchCommand::E2e(e) => {
            workloads::end_to_end(client, "e2e", e.messages, e.size, e.rate, ctx)
                .await
                .map(Report::paced)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound on `-s` is the largest message the producer sends by default.
    #[test]
    fn the_largest_payload_is_the_largest_message() {
        assert_eq!(
            MAX_PAYLOAD,
            rustmq::ProducerConfig::default().max_message_size as u64
        );
    }
}
