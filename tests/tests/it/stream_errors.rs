//! Error strategies in each mode: skip, retry (recovering and exhausted), dead-letter (the
//! whole unit, members listed), stop (nothing after the failure processed, written or
//! committed, also when it comes while the stream stops); a panicking processor is a failure
//! like any other.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::stream_support::*;
use rustmq::stream::{
    ErrorStrategy, MessageProcessor, MessageStream, StreamConfig, StreamMode, DLQ_UNIT_MEMBERS,
};
use rustmq::{async_trait, ClientError, Message, Result};

fn modes() -> Vec<StreamMode> {
    vec![
        StreamMode::Individual,
        StreamMode::Batch {
            batch_size: 3,
            batch_timeout: Duration::from_millis(50),
        },
        StreamMode::Windowed {
            window_size: Duration::from_millis(100),
            slide_interval: Duration::from_millis(100),
        },
    ]
}

/// Inputs on one partition: windows [0,100) = a0 bad a2, [100,200) = b0 flaky b2, and a
/// closing message at 1000. Batches of 3 line up with the windows.
fn inputs() -> Vec<(u32, String, u64)> {
    [
        ("a0", 10),
        ("bad", 20),
        ("a2", 30),
        ("b0", 110),
        ("flaky", 120),
        ("b2", 130),
        ("z", 1000),
    ]
    .iter()
    .map(|(p, ts)| (0, p.to_string(), *ts))
    .collect()
}

async fn run(
    mode: &StreamMode,
    strategy: ErrorStrategy,
    tag: &str,
) -> (
    MessageStream,
    rustmq::RustMqClient,
    rustmq::testing::TestBroker,
) {
    run_with(mode, strategy, tag, Join(Upper::new(1))).await
}

/// [`run`] with another processor.
async fn run_with(
    mode: &StreamMode,
    strategy: ErrorStrategy,
    tag: &str,
    processor: impl MessageProcessor,
) -> (
    MessageStream,
    rustmq::RustMqClient,
    rustmq::testing::TestBroker,
) {
    start_with(config(mode, strategy, tag), processor).await
}

/// The settings of [`run`]: from "in" to "out", one processor call at a time, in group
/// `g-<tag>`.
fn config(mode: &StreamMode, strategy: ErrorStrategy, tag: &str) -> StreamConfig {
    StreamConfig {
        input_topics: vec!["in".into()],
        output_topic: Some("out".into()),
        consumer_group: format!("g-{tag}"),
        parallelism: 1,
        error_strategy: strategy,
        mode: mode.clone(),
        ..Default::default()
    }
}

/// A broker with topics "in" (holding [`inputs`]) and "out", and a stream of `config` with
/// `processor`, started.
async fn start_with(
    config: StreamConfig,
    processor: impl MessageProcessor,
) -> (
    MessageStream,
    rustmq::RustMqClient,
    rustmq::testing::TestBroker,
) {
    let (broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    send(&client, "in", &inputs()).await;
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_processor(processor);
    stream.start().await.unwrap();
    (stream, client, broker)
}

/// The output payloads, sorted, without `Z` (the output of the last input, `z`, which only
/// closes the windows before it).
fn sorted_without_z(outs: Vec<Out>) -> Vec<String> {
    let mut got: Vec<String> = outs
        .into_iter()
        .map(|o| o.payload)
        .filter(|p| p != "Z")
        .collect();
    got.sort();
    got
}

fn expected_outputs(mode: &StreamMode, skip_bad: bool, flaky_ok: bool) -> Vec<String> {
    match mode {
        StreamMode::Individual => {
            let mut v = vec!["A0", "A2", "B0", "B2", "Z"];
            if !skip_bad {
                v.push("BAD");
            }
            if flaky_ok {
                v.push("FLAKY");
            }
            let mut v: Vec<String> = v.into_iter().map(String::from).collect();
            v.sort();
            v
        }
        // Batches and windows fail as a unit: [a0 bad a2] never succeeds.
        _ => {
            let mut v = vec![];
            if flaky_ok {
                v.push("B0|FLAKY|B2".to_string());
            }
            v
        }
    }
}

#[tokio::test]
async fn skip_and_retry_in_every_mode() {
    for mode in modes() {
        // Skip: the failing unit is dropped; the flaky one fails its only attempt.
        let (stream, client, _b) = run(&mode, ErrorStrategy::Skip, "skip").await;
        let want = expected_outputs(&mode, true, false);
        let metrics = stream.metrics().await;
        eventually("skip settles", Duration::from_secs(10), || {
            let m = metrics.clone();
            async move {
                m.messages_processed.load(Ordering::Relaxed)
                    + m.messages_skipped.load(Ordering::Relaxed)
                    >= 6
            }
        })
        .await;
        let got_n = want.len() + usize::from(matches!(mode, StreamMode::Batch { .. })); // batch: [z] alone
        let outs = wait_records(&client, "out", got_n).await;
        stream.stop().await.unwrap();
        let want: Vec<String> = want.into_iter().filter(|p| p != "Z").collect();
        assert_eq!(sorted_without_z(outs), want, "skip in {mode:?}");
        assert!(
            metrics.messages_skipped.load(Ordering::Relaxed) >= 2,
            "{mode:?}"
        );

        // Retry: the flaky unit succeeds on its second attempt; `bad` exhausts its attempts.
        let retry = ErrorStrategy::Retry {
            max_attempts: 3,
            backoff_ms: 10,
        };
        let (stream, client, _b) = run(&mode, retry, "retry").await;
        let want: Vec<String> = expected_outputs(&mode, true, true)
            .into_iter()
            .filter(|p| p != "Z")
            .collect();
        let metrics = stream.metrics().await;
        let n = want.len()
            + usize::from(matches!(
                mode,
                StreamMode::Individual | StreamMode::Batch { .. }
            ));
        let outs = wait_records(&client, "out", n).await;
        stream.stop().await.unwrap();
        assert_eq!(sorted_without_z(outs), want, "retry in {mode:?}");
        let units = if matches!(mode, StreamMode::Individual) {
            1
        } else {
            3
        };
        assert_eq!(
            metrics.messages_skipped.load(Ordering::Relaxed),
            units,
            "retry in {mode:?}"
        );
        // bad: 3 attempts; flaky: 1 failed attempt.
        assert_eq!(
            metrics.processing_errors.load(Ordering::Relaxed),
            4,
            "retry in {mode:?}"
        );
    }
}

#[tokio::test]
async fn dead_letters_hold_the_whole_failed_unit() {
    for mode in modes() {
        let strategy = ErrorStrategy::DeadLetter {
            topic: "dlq".into(),
        };
        let (stream, client, _b) = run(&mode, strategy, "dlq").await;
        let dead = match mode {
            StreamMode::Individual => 2,
            _ => 6,
        };
        let dlq = wait_records(&client, "dlq", dead).await;
        stream.stop().await.unwrap();
        let mut payloads: Vec<String> = dlq.iter().map(|o| o.payload.clone()).collect();
        payloads.sort();
        match mode {
            StreamMode::Individual => {
                assert_eq!(payloads, vec!["bad", "flaky"]);
                assert_eq!(dlq[0].headers[DLQ_UNIT_MEMBERS], "in:0:1-1");
            }
            _ => {
                assert_eq!(payloads, vec!["a0", "a2", "b0", "b2", "bad", "flaky"]);
                // Every record of the first unit lists its three members.
                for o in dlq
                    .iter()
                    .filter(|o| o.payload.starts_with('a') || o.payload == "bad")
                {
                    assert_eq!(o.headers[DLQ_UNIT_MEMBERS], "in:0:0-2", "{mode:?}");
                    assert!(o.headers["rustmq.dlq.error"].contains("cannot process bad"));
                }
            }
        }
    }
}

/// Outputs of the inputs after `bad` (in offset order) among `outs`: what a stream stopped by
/// the failure of `bad` must not have written.
fn outputs_after_bad(outs: &[Out]) -> Vec<String> {
    let later = ["A2", "B0", "FLAKY", "B2", "Z"];
    outs.iter()
        .filter(|o| o.payload.split('|').any(|part| later.contains(&part)))
        .map(|o| o.payload.clone())
        .collect()
}

#[tokio::test]
async fn stop_strategy_stops_before_the_failed_unit() {
    for mode in modes() {
        let (stream, client, _b) = run(&mode, ErrorStrategy::Stop, "stop").await;
        let err = tokio::time::timeout(Duration::from_secs(10), stream.wait())
            .await
            .expect("stream stops");
        assert!(
            err.unwrap_err().to_string().contains("cannot process bad"),
            "{mode:?}"
        );
        // Nothing fetched after the failed unit was processed or written, though all of it
        // was fetched before the failure (the stream has ended: every output it wrote is
        // stored).
        let outs = read_all(&client, "out").await;
        assert_eq!(outputs_after_bad(&outs), Vec::<String>::new(), "{mode:?}");
        if mode == StreamMode::Individual {
            let payloads: Vec<&str> = outs.iter().map(|o| o.payload.as_str()).collect();
            assert_eq!(
                payloads,
                ["A0"],
                "the message before the failure is written"
            );
        }
        let committed = committed(&client, "g-stop").await;
        let position = committed.get(&("in".to_string(), 0)).copied().unwrap_or(0);
        let limit = match mode {
            StreamMode::Individual => 1,
            _ => 0,
        };
        assert!(
            position <= limit,
            "{mode:?}: committed {position}, the failure is at offset 1"
        );
        assert!(!stream.is_running());
    }
}

/// Waits on `bad` until released, then fails it.
struct Gate {
    entered: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

#[async_trait]
impl MessageProcessor for Gate {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        let text = m.payload_as_string()?;
        if text == "bad" {
            self.entered.notify_one();
            let _ = self.release.acquire().await;
            return Err(ClientError::InvalidMessage("cannot process bad".into()));
        }
        Ok(Some(
            Message::builder()
                .topic("unused")
                .payload(text.to_uppercase())
                .build()?,
        ))
    }
}

/// A failure under `ErrorStrategy::Stop` while the stream stops is `stop`'s error (it must
/// not be lost to the stop's drain), and nothing after it is processed.
#[tokio::test]
async fn a_failure_while_stopping_is_returned_by_stop() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let inputs: Vec<(u32, String, u64)> = ["a0", "bad", "a2", "a3"]
        .iter()
        .map(|p| (0, p.to_string(), 10))
        .collect();
    send(&client, "in", &inputs).await;
    let gate = Arc::new(Gate {
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Semaphore::new(0),
    });
    struct Shared(Arc<Gate>);
    #[async_trait]
    impl MessageProcessor for Shared {
        async fn process(&self, m: &Message) -> Result<Option<Message>> {
            self.0.process(m).await
        }
    }
    let config = StreamConfig {
        input_topics: vec!["in".into()],
        output_topic: Some("out".into()),
        consumer_group: "g-stopping".into(),
        parallelism: 1,
        error_strategy: ErrorStrategy::Stop,
        ..Default::default()
    };
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_processor(Shared(Arc::clone(&gate)));
    stream.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), gate.entered.notified())
        .await
        .expect("bad is being processed");
    let stopping = tokio::spawn({
        let stream = stream.clone();
        async move { stream.stop().await }
    });
    // The stop's drain is under way (it waits for `bad`) when `bad` fails.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished());
    gate.release.add_permits(1);
    let stopped = tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stop returns")
        .unwrap();
    let err = stopped.expect_err("stop reports the failure that came while it drained");
    assert!(err.to_string().contains("cannot process bad"), "{err}");
    let payloads: Vec<String> = read_all(&client, "out")
        .await
        .into_iter()
        .map(|o| o.payload)
        .collect();
    assert_eq!(payloads, ["A0"]);
    let position = committed(&client, "g-stopping")
        .await
        .get(&("in".to_string(), 0))
        .copied();
    assert!(position <= Some(1), "committed {position:?}, bad is at 1");
}

/// Upper-cases payloads, panics on `bad` in `process` (so in the default `process_batch`
/// too), and panics in every `on_error`.
struct Panicky;

#[async_trait]
impl MessageProcessor for Panicky {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        let text = m.payload_as_string()?;
        if text == "bad" {
            panic!("boom on {text}");
        }
        Ok(Some(
            Message::builder()
                .topic("unused")
                .payload(text.to_uppercase())
                .build()?,
        ))
    }

    async fn on_error(&self, _: &Message, _: &ClientError) -> Result<()> {
        panic!("on_error panics too");
    }
}

/// A panic in the processor is the unit's processing error: with `Skip` the stream goes on
/// (every later message processed) and stops; with `Stop` it stops with the panic's message
/// rather than hang.
#[tokio::test]
async fn a_panicking_processor_is_a_processing_error() {
    let individual_or_batch = modes()
        .into_iter()
        .filter(|m| !matches!(m, StreamMode::Windowed { .. }));
    for mode in individual_or_batch {
        let (stream, client, _b) =
            run_with(&mode, ErrorStrategy::Skip, "panic-skip", Panicky).await;
        let want: &[&str] = match mode {
            StreamMode::Individual => &["A0", "A2", "B0", "B2", "FLAKY", "Z"],
            // [a0 bad a2] fails whole.
            _ => &["B0", "B2", "FLAKY", "Z"],
        };
        let outs = wait_records(&client, "out", want.len()).await;
        let mut got: Vec<String> = outs.into_iter().map(|o| o.payload).collect();
        got.sort();
        assert_eq!(got, want, "{mode:?}");
        tokio::time::timeout(Duration::from_secs(10), stream.stop())
            .await
            .expect("stop returns after a panic")
            .unwrap();
        let metrics = stream.metrics().await;
        assert_eq!(
            metrics.processing_errors.load(Ordering::Relaxed),
            1,
            "{mode:?}"
        );

        let (stream, _client, _b) =
            run_with(&mode, ErrorStrategy::Stop, "panic-stop", Panicky).await;
        let err = tokio::time::timeout(Duration::from_secs(10), stream.wait())
            .await
            .expect("the stream stops on the panic")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("panicked") && text.contains("boom on bad"),
            "{mode:?}: {text}"
        );
        tokio::time::timeout(Duration::from_secs(10), stream.stop())
            .await
            .expect("stop returns")
            .unwrap_err();
    }
}

/// Upper-cases payloads to the output topic's partition 0, but `bad` to partition 7, which
/// the one-partition output topic does not have, and `flaky` to a 9 MiB output, larger than
/// the broker's largest batch (8 MiB).
struct Unstorable;

#[async_trait]
impl MessageProcessor for Unstorable {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        let input = m.payload_as_string()?;
        let partition = if input == "bad" { 7 } else { 0 };
        let payload = match input.as_str() {
            "flaky" => "F".repeat(9 << 20),
            _ => input.to_uppercase(),
        };
        Ok(Some(
            Message::builder()
                .topic("out")
                .partition(partition)
                .payload(payload)
                .build()?,
        ))
    }
}

/// An output that can never be stored (a partition its topic does not have, a record larger
/// than the broker's largest batch) is the unit's failure, handled by the error strategy: skipped, or dead-lettered, and the stream goes on.
/// It used to fail the session at every start, whatever the strategy, so that the stream
/// stopped for good at that input.
#[tokio::test]
async fn an_output_that_cannot_be_stored_is_the_units_failure() {
    for (strategy, tag) in [
        (ErrorStrategy::Skip, "unstorable-skip"),
        (
            ErrorStrategy::DeadLetter {
                topic: "unstorable.dlq".into(),
            },
            "unstorable-dlq",
        ),
    ] {
        let dead_letters = matches!(strategy, ErrorStrategy::DeadLetter { .. });
        let (stream, client, _b) =
            run_with(&StreamMode::Individual, strategy, tag, Unstorable).await;
        let outs = wait_records(&client, "out", inputs().len() - 2).await;
        let mut got: Vec<String> = outs.into_iter().map(|o| o.payload).collect();
        got.sort();
        assert_eq!(
            got,
            ["A0", "A2", "B0", "B2", "Z"],
            "every other input's output ({tag})"
        );
        let metrics = stream.metrics().await;
        eventually("the failure counted", Duration::from_secs(10), || {
            let m = metrics.clone();
            async move { m.messages_failed.load(Ordering::Relaxed) == 2 }
        })
        .await;
        assert!(stream.is_running(), "{tag}");
        if dead_letters {
            let dlq = wait_records(&client, "unstorable.dlq", 2).await;
            let mut dead: Vec<String> = dlq.into_iter().map(|o| o.payload).collect();
            dead.sort();
            assert_eq!(dead, ["bad", "flaky"]);
        }
        stream.stop().await.unwrap();
    }
}

/// Joins payloads upper-cased (one output per unit), fails any unit holding `bad`, and never
/// returns from `on_error`, whose calls it counts.
struct StuckOnError {
    on_error_calls: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl MessageProcessor for StuckOnError {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        Ok(self
            .process_batch(std::slice::from_ref(m))
            .await?
            .pop()
            .flatten())
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        let inputs: Vec<String> = messages
            .iter()
            .map(|m| m.payload_as_string())
            .collect::<Result<_>>()?;
        if inputs.iter().any(|i| i == "bad") {
            return Err(ClientError::InvalidMessage("bad input".into()));
        }
        Ok(vec![Some(
            Message::builder()
                .topic("out")
                .payload(inputs.join("|").to_uppercase())
                .build()?,
        )])
    }

    async fn on_error(&self, _: &Message, _: &ClientError) -> Result<()> {
        self.on_error_calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// An `on_error` that never returns is given up after the processing timeout, as a processor
/// call is (a unit's calls together: the failed batch's other members get none): the failed
/// unit is skipped, the inputs behind it on its worker are processed, and `stop` returns. It
/// used to hold the worker, and the stop waiting for it, for ever.
#[tokio::test]
async fn an_on_error_that_never_returns_is_given_up() {
    let batches = StreamMode::Batch {
        batch_size: 3,
        batch_timeout: Duration::from_millis(50),
    };
    for (mode, want) in [
        (
            StreamMode::Individual,
            &["A0", "A2", "B0", "B2", "FLAKY", "Z"][..],
        ),
        (batches, &["B0|FLAKY|B2", "Z"][..]),
    ] {
        let config = StreamConfig {
            processing_timeout: Duration::from_millis(300),
            ..config(&mode, ErrorStrategy::Skip, "stuck-on-error")
        };
        let on_error_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let processor = StuckOnError {
            on_error_calls: Arc::clone(&on_error_calls),
        };
        let (stream, client, _broker) = start_with(config, processor).await;
        let outs = wait_records(&client, "out", want.len()).await;
        let mut got: Vec<String> = outs.into_iter().map(|o| o.payload).collect();
        got.sort();
        assert_eq!(got, want, "{mode:?}");
        assert_eq!(
            on_error_calls.load(Ordering::SeqCst),
            1,
            "one call, given up, for the failed unit ({mode:?})"
        );
        tokio::time::timeout(Duration::from_secs(10), stream.stop())
            .await
            .expect("stop returns")
            .unwrap();
    }
}

/// Exactly once, batches of 3: the batch holding `a0` makes three outputs of 3 MiB, each
/// within the broker's largest batch (8 MiB) but not together; the others join their inputs.
struct TooLargeTogether;

#[async_trait]
impl MessageProcessor for TooLargeTogether {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        Ok(Some(m.clone()))
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        let payloads: Vec<String> = messages
            .iter()
            .map(|m| m.payload_as_string())
            .collect::<Result<_>>()?;
        let output = |payload: String| {
            Message::builder()
                .topic("out")
                .payload(payload)
                .build()
                .map(Some)
        };
        if payloads.iter().any(|p| p == "a0") {
            return (0..3).map(|_| output("L".repeat(3 << 20))).collect();
        }
        Ok(vec![output(payloads.join("|").to_uppercase())?])
    }
}

/// Exactly once a unit's outputs are stored as one batch: outputs that together exceed the
/// broker's largest batch are the unit's failure (skipped here), not the session's at every
/// start.
#[tokio::test]
async fn exactly_once_outputs_too_large_together_are_the_units_failure() {
    let batches = StreamMode::Batch {
        batch_size: 3,
        batch_timeout: Duration::from_millis(50),
    };
    let config = StreamConfig {
        exactly_once: true,
        ..config(&batches, ErrorStrategy::Skip, "too-large-together")
    };
    let (stream, client, _broker) = start_with(config, TooLargeTogether).await;
    let outs = wait_records(&client, "out", 2).await;
    let got: Vec<String> = outs.into_iter().map(|o| o.payload).collect();
    assert_eq!(got, ["B0|FLAKY|B2", "Z"]);
    let metrics = stream.metrics().await;
    assert_eq!(metrics.messages_skipped.load(Ordering::Relaxed), 3);
    assert!(stream.is_running());
    stream.stop().await.unwrap();
}

/// Fails every unit.
struct AlwaysFails;

#[async_trait]
impl MessageProcessor for AlwaysFails {
    async fn process(&self, _: &Message) -> Result<Option<Message>> {
        Err(ClientError::InvalidMessage("always".into()))
    }
}

/// Exactly once a unit's dead letters go in one batch; those the broker refuses as one (a
/// batch of inputs larger together than its largest batch) go in several, the unit's claim
/// on the last, instead of stopping the stream at every start.
#[tokio::test]
async fn exactly_once_dead_letters_too_large_together_go_in_several_batches() {
    tests::init_tracing();
    let mut broker_config = rustmq::testing::BrokerConfig::default();
    broker_config.limits.max_batch_bytes = 64 * 1024;
    let broker = rustmq::testing::TestBroker::start_with(broker_config)
        .await
        .unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("dlq", 1).await.unwrap();
    let inputs: Vec<(u32, String, u64)> = (0..3)
        .map(|i| (0, format!("{i}{}", "x".repeat(30_000)), 10 + i))
        .collect();
    for input in &inputs {
        send(&client, "in", std::slice::from_ref(input)).await;
    }
    let config = StreamConfig {
        exactly_once: true,
        output_topic: None,
        ..config(
            &StreamMode::Batch {
                batch_size: 3,
                batch_timeout: Duration::from_secs(5),
            },
            ErrorStrategy::DeadLetter {
                topic: "dlq".into(),
            },
            "large-dead-letters",
        )
    };
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_processor(AlwaysFails);
    stream.start().await.unwrap();
    let dlq = wait_records(&client, "dlq", 3).await;
    let got: Vec<&str> = dlq.iter().map(|o| &o.payload[..1]).collect();
    assert_eq!(got, ["0", "1", "2"]);
    let claimed: Vec<bool> = dlq
        .iter()
        .map(|o| o.headers.contains_key(rustmq::stream::SRC_GROUP))
        .collect();
    assert_eq!(
        claimed,
        [false, false, true],
        "only the last batch claims the unit"
    );
    assert!(dlq
        .iter()
        .all(|o| o.headers[DLQ_UNIT_MEMBERS] == "in:0:0-2"));
    assert!(stream.is_running());
    let metrics = stream.metrics().await;
    assert_eq!(metrics.messages_dead_lettered.load(Ordering::Relaxed), 3);
    stream.stop().await.unwrap();
}

/// Implements `process_batch` alone, as the seed README's windowed aggregation does.
struct BatchesOnly;

#[async_trait]
impl MessageProcessor for BatchesOnly {
    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        Ok(messages.iter().map(|m| Some(m.clone())).collect())
    }
}

/// A processor of batches only, run one message at a time, stops the stream with a clear
/// error whatever the strategy, rather than skipping (or dead-lettering) every message.
#[tokio::test]
async fn a_batch_only_processor_run_one_message_at_a_time_stops_the_stream() {
    let config = config(&StreamMode::Individual, ErrorStrategy::Skip, "batches-only");
    let (stream, client, _broker) = start_with(config, BatchesOnly).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), stream.wait())
        .await
        .expect("the stream stops");
    assert!(
        matches!(&ended, Err(ClientError::InvalidConfig(why)) if why.contains("process_batch")),
        "{ended:?}"
    );
    let metrics = stream.metrics().await;
    assert_eq!(metrics.messages_skipped.load(Ordering::Relaxed), 0);
    let position = committed(&client, "g-batches-only")
        .await
        .get(&("in".to_string(), 0))
        .copied();
    assert!(
        position.unwrap_or(0) == 0,
        "committed {position:?}: inputs were passed over"
    );
}
