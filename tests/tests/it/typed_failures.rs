//! The typed service when things go wrong: a handler that panics, a poison message under
//! `PoisonPolicy::Stop`, messages a shutdown does not get to, and what handlers sent when the
//! service shuts down.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustmq::prelude::*;
use rustmq::testing::TestBroker;
use rustmq::{handler, ConsumerConfig, Producer, Topic};

const WAIT: Duration = Duration::from_secs(20);

/// Consumer settings that give up on a failed message quickly: `retries` retries, 10 ms apart.
fn quick_retries(retries: u32) -> ConsumerConfig {
    ConsumerConfig {
        max_retry_attempts: retries,
        retry_backoff: Duration::from_millis(10),
        max_retry_backoff: Duration::from_millis(10),
        ..ConsumerConfig::default()
    }
}

/// Waits until `done` says yes to the jobs `seen` holds (failing, with `what`, after [`WAIT`]).
async fn wait_until(seen: &Mutex<Vec<u32>>, what: &str, done: impl Fn(&[u32]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&seen.lock()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: handled {:?}",
            seen.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "panicky", partitions = 1)]
struct Panicky {
    n: u32,
}

/// The jobs a handler was called with, in order.
#[derive(Debug, Clone, Default)]
struct Calls(Arc<Mutex<Vec<u32>>>);

#[handler(group = "panicky-workers")]
async fn panics_on_two(job: Panicky, State(calls): State<Calls>) {
    calls.0.lock().push(job.n);
    assert_ne!(job.n, 2, "a handler's bug");
}

/// A handler's panic is its message's failure (retried, then dead-lettered with the panic's
/// message as its error), as a tower server answers a handler's panic with an error: the
/// handler goes on with the next messages, and the service does not stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_message_and_goes_on() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("panicky.dlq", 1).await.unwrap();
    let calls = Calls::default();
    let running = Service::with_state(client.clone(), calls.clone())
        .consumer_config(quick_retries(1))
        .handler(panics_on_two)
        .start()
        .await
        .unwrap();
    let producer = client.producer::<Panicky>();
    for n in 1..=3 {
        producer.send(&Panicky { n }).await.unwrap();
    }
    wait_until(&calls.0, "the job after the panic is handled", |seen| {
        seen.contains(&3)
    })
    .await;
    let dead = tests::records_when(&client, "panicky.dlq", 1, WAIT).await;
    assert_eq!(dead.len(), 1, "the panicking job is dead-lettered");
    let error = dead[0]
        .headers
        .iter()
        .find(|h| h.key == "rustmq.dlq.error")
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        .unwrap_or_default();
    assert!(
        error.contains("panicked") && error.contains("a handler's bug"),
        "{error}"
    );
    assert_eq!(
        calls.0.lock().iter().filter(|&&n| n == 2).count(),
        2,
        "one delivery and one retry"
    );
    assert!(!running.is_stopped());
    running.shutdown().await.unwrap();
}

/// A `Recorder` sees a handler's panic as the failure the service settles it as: a test can
/// wait for the panicking attempts as for any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_sees_a_handlers_panics() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("panicky.dlq", 1).await.unwrap();
    let recorder = rustmq::testing::Recorder::new();
    let running = Service::with_state(client.clone(), Calls::default())
        .consumer_config(quick_retries(1))
        .layer(recorder.layer())
        .handler(panics_on_two)
        .start()
        .await
        .unwrap();
    client
        .producer::<Panicky>()
        .send(&Panicky { n: 2 })
        .await
        .unwrap();
    let settled = recorder.wait_for(2, WAIT).await;
    assert_eq!(settled.len(), 2, "the delivery and its retry: {settled:?}");
    for s in &settled {
        let error = s.settlement.as_ref().unwrap_err();
        assert!(
            error.contains("panicked") && error.contains("a handler's bug"),
            "{error}"
        );
    }
    assert!(!running.is_stopped());
    running.shutdown().await.unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "strict", partitions = 1)]
struct Strict {
    n: u32,
}

#[handler(group = "strict-readers", concurrency = 2)]
async fn strict(_: Strict) {}

/// `PoisonPolicy::Stop` holds with a dead-letter layer in the stack (the layer leaves poison
/// messages to the service's policy), and the service stopping on its own is an error of
/// `run_until`, not a clean exit: a supervisor restarting on failure must see it. The poison
/// message and those queued behind it are left unsettled, not failed: with no retries allowed,
/// a failure would dead-letter them and commit past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_under_the_stop_policy_stops_the_service_with_an_error() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("strict.dlq", 1).await.unwrap();
    let service = Service::new(client.clone())
        .consumer_config(quick_retries(0))
        .layer(DeadLetterLayer::default())
        .on_poison(PoisonPolicy::Stop)
        .handler(strict);
    client
        .producer::<Strict>()
        .send(&Strict { n: 1 })
        .await
        .unwrap();
    let raw = client.create_producer("strict").await.unwrap();
    raw.send(
        Message::builder()
            .topic("strict")
            .payload("{not json")
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for n in 2..10 {
        client
            .producer::<Strict>()
            .send(&Strict { n })
            .await
            .unwrap();
    }
    // Started once everything is stored: the messages after the poison one are fetched with
    // it, and wait in the worker's queue when the handler stops.
    let run = tokio::spawn(service.run_until(std::future::pending::<()>()));
    let ended = tokio::time::timeout(WAIT, run)
        .await
        .expect("the service stops on the poison message")
        .unwrap();
    match ended {
        Err(ClientError::Deserialization(reason)) => {
            assert!(
                reason.contains("poison") && reason.contains("strict"),
                "{reason}"
            )
        }
        other => panic!("expected the poison message's error, got {other:?}"),
    }
    let committed = client
        .describe_group("strict-readers")
        .await
        .unwrap()
        .committed("strict", 0);
    assert!(
        committed.unwrap_or(0) <= 1,
        "nothing is committed past the poison message (offset 1): {committed:?}"
    );
    // A dead-lettering would be under way in the background: give it time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (dead, _) = tests::fetch_all(&client, "strict.dlq", 0, 0).await;
    assert!(dead.is_empty(), "nothing is dead-lettered: {dead:?}");
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "queued", partitions = 1)]
struct Queued {
    n: u32,
}

/// Every job is noted in `seen`; with `hold`, job 0 never finishes.
#[derive(Debug, Clone, Default)]
struct Gate {
    seen: Arc<Mutex<Vec<u32>>>,
    hold: bool,
}

#[handler(group = "queued-workers", concurrency = 2)]
async fn held_first(job: Queued, State(gate): State<Gate>) {
    gate.seen.lock().push(job.n);
    if job.n == 0 && gate.hold {
        std::future::pending::<()>().await;
    }
}

/// Messages queued for a worker when the service shuts down, and the one it gives up on at the
/// shutdown timeout, are abandoned, not failed: with no retries allowed, a failed message
/// would be dead-lettered (and committed) without ever being handled. They are delivered
/// again by the next start, and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_shutdown_did_not_get_to_come_back_and_are_not_dead_lettered() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("queued.dlq", 1).await.unwrap();
    let producer = client.producer::<Queued>();
    for n in 0..10 {
        producer.send(&Queued { n }).await.unwrap();
    }
    let start = |gate: Gate| {
        Service::with_state(client.clone(), gate)
            .consumer_config(quick_retries(0))
            .shutdown_timeout(Duration::from_millis(300))
            .handler(held_first)
            .start()
    };
    let gate = Gate {
        hold: true,
        ..Gate::default()
    };
    let running = start(gate.clone()).await.unwrap();
    wait_until(&gate.seen, "the first job starts", |seen| !seen.is_empty()).await;
    // Unkeyed messages of one partition all go to one worker: the others wait in its queue
    // behind the held one, which the shutdown gives up on after its timeout.
    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .expect("the shutdown ends")
        .unwrap();
    assert_eq!(*gate.seen.lock(), [0], "the queued jobs were not started");

    let again = Gate::default();
    let running = start(again.clone()).await.unwrap();
    wait_until(&again.seen, "every job comes back", |seen| {
        (0..10).all(|n| seen.contains(&n))
    })
    .await;
    running.shutdown().await.unwrap();
    let (dead, _) = tests::fetch_all(&client, "queued.dlq", 0, 0).await;
    assert!(dead.is_empty(), "nothing is dead-lettered: {dead:?}");
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "inputs", partitions = 1)]
struct Input {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "outputs", partitions = 1)]
struct Output {
    n: u32,
}

/// The handler's producer of outputs, as the handler got it.
#[derive(Debug, Clone, Default)]
struct Kept(Arc<Mutex<Option<Producer>>>);

#[handler(group = "forwarders")]
async fn forward(input: Input, out: TypedProducer<Output>, State(kept): State<Kept>) {
    out.send_async(&Output { n: input.n }).await.unwrap();
    if kept.0.lock().is_none() {
        let producer = out.inner().await.unwrap();
        kept.0.lock().get_or_insert(producer);
    }
}

/// A shutdown closes the producers its handlers sent with, once what they hold is sent,
/// before it commits the inputs: a fire-and-forget output of a committed input is not left in
/// a buffer that the end of the process drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_sends_what_handlers_sent_before_it_commits() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let kept = Kept::default();
    let running = Service::with_state(client.clone(), kept.clone())
        .handler(forward)
        .start()
        .await
        .unwrap();
    let producer = client.producer::<Input>();
    for n in 0..20 {
        producer.send(&Input { n }).await.unwrap();
    }
    let group = "forwarders";
    let deadline = tokio::time::Instant::now() + WAIT;
    while kept.0.lock().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "nothing handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await.unwrap();
    let handlers_producer = kept.0.lock().take().unwrap();
    let refused = handlers_producer
        .send(
            Message::builder()
                .topic("outputs")
                .payload("late")
                .build()
                .unwrap(),
        )
        .await;
    assert!(
        matches!(refused, Err(ClientError::Closed)),
        "the handler's producer is closed by the shutdown: {refused:?}"
    );
    // Every input committed has its output stored.
    let committed = client
        .describe_group(group)
        .await
        .unwrap()
        .committed("inputs", 0)
        .unwrap_or(0);
    let (outputs, _) = tests::fetch_all(&client, "outputs", 0, 0).await;
    assert!(
        outputs.len() as u64 >= committed,
        "{committed} inputs committed, {} outputs stored",
        outputs.len()
    );
}

/// Released one at a time by the test: the handler waits for a permit before it sends.
#[derive(Debug, Clone)]
struct Turnstile(Arc<tokio::sync::Semaphore>);

#[handler(group = "gated-forwarders")]
async fn gated_forward(input: Input, out: TypedProducer<Output>, State(gate): State<Turnstile>) {
    gate.0.acquire().await.unwrap().forget();
    out.send_async(&Output { n: input.n }).await.unwrap();
}

/// An auto-commit waits for what the handlers sent (fire and forget) to be answered: while
/// an output's answers are lost and its producer retries, the input whose handling sent it is
/// not committed; once the output is stored, it is. Before, the input was committed at the
/// next auto-commit, and a crash then lost the output for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_commit_waits_for_what_handlers_sent() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let mut config = broker.client_config();
    config.retry_config = rustmq::RetryConfig {
        max_retries: 200,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(40),
        ..rustmq::RetryConfig::default()
    };
    let client = rustmq::RustMqClient::new(config).await.unwrap();
    let gate = Turnstile(Arc::new(tokio::sync::Semaphore::new(0)));
    let running = Service::with_state(client.clone(), gate.clone())
        .consumer_config(rustmq::ConsumerConfig {
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_millis(50),
            ..Default::default()
        })
        .handler(gated_forward)
        .start()
        .await
        .unwrap();
    let committed = || {
        let client = client.clone();
        async move {
            client
                .describe_group("gated-forwarders")
                .await
                .ok()
                .and_then(|g| g.committed("inputs", 0))
        }
    };
    // One input handled as usual: its output stored, then it is committed.
    client
        .producer::<Input>()
        .send(&Input { n: 0 })
        .await
        .unwrap();
    gate.0.add_permits(1);
    let deadline = tokio::time::Instant::now() + WAIT;
    while committed().await != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first input committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next one's output: its answers lost for a while.
    client
        .producer::<Input>()
        .send(&Input { n: 1 })
        .await
        .unwrap();
    let handle = broker.handle().unwrap();
    handle.drop_next_produce_answers(u32::MAX);
    gate.0.add_permits(1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        committed().await,
        Some(1),
        "committed before its output was answered"
    );
    handle.drop_next_produce_answers(0);
    while committed().await != Some(2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second input committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (outputs, _) = tests::fetch_all(&client, "outputs", 0, 0).await;
    assert!(outputs.len() >= 2, "{outputs:?}");
    running.shutdown().await.unwrap();
}

#[handler(group = "swallowers")]
async fn swallow(_: Input) {}

/// A poison message too large to be dead-lettered whole (near the broker's batch limit, the
/// copy's headers take it past) is dead-lettered by the typed layer without its content, with
/// its kind: it used to be nacked ("dead-lettering failed"), handled again, and end in the
/// consumer's copy without the typed layer's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_too_large_to_copy_is_dead_lettered_without_its_content() {
    tests::init_tracing();
    let (_broker, client, _) = tests::largest_message_stored("inputs", b'{').await;
    let running = Service::new(client.clone())
        .consumer_config(ConsumerConfig {
            max_retry_attempts: 0,
            ..Default::default()
        })
        .handler(swallow)
        .start()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        let (dead, _) = tests::fetch_all(&client, "inputs.dlq", 0, 0).await;
        if !dead.is_empty() {
            break dead;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.shutdown().await.unwrap();
    let header = |name: &str| {
        dead[0]
            .headers
            .iter()
            .find(|h| h.key == name)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    assert_eq!(
        header(rustmq::typed::layers::DLQ_HEADER_KIND).as_deref(),
        Some("poison")
    );
    assert!(header(rustmq::consumer::DLQ_CONTENT_DROPPED).is_some());
    assert!(dead[0].value.as_deref().unwrap_or_default().is_empty());
}
