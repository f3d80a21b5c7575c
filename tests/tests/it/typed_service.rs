//! The typed layer end to end: derive(Topic), handlers, layers and settlements on the real broker.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustmq::prelude::*;
use rustmq::testing::{Recorder, TestBroker};
use rustmq::typed::layers::{
    DLQ_HEADER_ATTEMPTS, DLQ_HEADER_ERROR, DLQ_HEADER_KIND, DLQ_HEADER_OFFSET, DLQ_HEADER_TOPIC,
};
use rustmq::{handler, Topic};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "orders-json", key = "id", partitions = 2)]
struct JsonOrder {
    id: String,
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "orders-bincode", key = "id", codec = "bincode")]
struct BincodeOrder {
    id: String,
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "orders-postcard", key = "id", codec = "postcard")]
struct PostcardOrder {
    id: u64,
    cents: u64,
}

async fn json_handler(order: JsonOrder, meta: Metadata) {
    assert_eq!(&*meta.topic, "orders-json");
    assert_eq!(meta.key.as_deref(), Some(order.id.as_bytes()));
}
async fn bincode_handler(_: BincodeOrder) {}
async fn postcard_handler(_: PostcardOrder) {}

fn decoded<T: Topic>(settled: &[rustmq::testing::Settled]) -> Vec<T> {
    settled
        .iter()
        .filter(|s| s.message.topic == T::NAME)
        .map(|s| <T::Codec as rustmq::codec::Codec>::decode(&s.message.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_round_trip_for_each_codec() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let recorder = Recorder::new();
    let running = Service::new(client.clone())
        .layer(recorder.layer())
        .handler(json_handler)
        .handler(bincode_handler)
        .handler(postcard_handler)
        .start()
        .await
        .unwrap();
    let json: Vec<_> = (0..5)
        .map(|i| JsonOrder {
            id: format!("j{i}"),
            cents: i,
        })
        .collect();
    let bin: Vec<_> = (0..5)
        .map(|i| BincodeOrder {
            id: format!("b{i}"),
            cents: i * 10,
        })
        .collect();
    let post: Vec<_> = (0..5)
        .map(|i| PostcardOrder {
            id: i,
            cents: i * 100,
        })
        .collect();
    for o in &json {
        client.producer::<JsonOrder>().send(o).await.unwrap();
    }
    let (pb, pp) = (
        client.producer::<BincodeOrder>(),
        client.producer::<PostcardOrder>(),
    );
    for (b, p) in bin.iter().zip(&post) {
        pb.send(b).await.unwrap();
        pp.send(p).await.unwrap();
    }
    let settled = recorder.wait_for(15, WAIT).await;
    assert!(
        settled.iter().all(|s| s.settlement == Ok(Settlement::Ack)),
        "{settled:#?}"
    );
    let mut got_json = decoded::<JsonOrder>(&settled);
    got_json.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got_json, json);
    assert_eq!(decoded::<BincodeOrder>(&settled), bin);
    assert_eq!(decoded::<PostcardOrder>(&settled), post);
    // The topic was created with the declared partition count.
    assert_eq!(
        client
            .describe_topic("orders-json")
            .await
            .unwrap()
            .partitions
            .len(),
        2
    );
    running.shutdown().await.unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "payments", dead_letter = "payments-dead")]
struct Payment {
    amount: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("payment gateway down")]
struct GatewayDown;

static PAYMENT_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler(group = "payments-service")]
async fn charge(payment: Payment, attempt: Attempt) -> Result<(), GatewayDown> {
    PAYMENT_CALLS.fetch_add(1, Ordering::SeqCst);
    assert!(attempt.0 >= 1);
    if payment.amount == 13 {
        Err(GatewayDown)
    } else {
        Ok(())
    }
}

fn header(r: &rustmq_protocol::Record, name: &str) -> String {
    r.headers
        .iter()
        .find(|h| h.key == name)
        .map(|h| String::from_utf8(h.value.to_vec()).unwrap())
        .unwrap_or_else(|| panic!("header {name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_retry_with_backoff_then_dead_letter_and_poison_skips_retries() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("payments-dead", 1).await.unwrap();
    let recorder = Recorder::new();
    let running = Service::new(client.clone())
        .layer(TraceLayer::new())
        .layer(RetryLayer::exponential(3, Duration::from_millis(10)))
        .layer(DeadLetterLayer::default())
        .layer(recorder.layer())
        .handler(charge)
        .start()
        .await
        .unwrap();
    let producer = client.producer::<Payment>();
    producer.send(&Payment { amount: 5 }).await.unwrap();
    producer.send(&Payment { amount: 13 }).await.unwrap();
    // A payload that is not a Payment at all.
    let raw = client.create_producer("payments").await.unwrap();
    raw.send(
        rustmq::Message::builder()
            .topic("payments")
            .payload("{not json")
            .build()
            .unwrap(),
    )
    .await
    .unwrap();

    let settled = recorder.wait_for(3, WAIT).await;
    assert_eq!(settled[0].settlement, Ok(Settlement::Ack));
    match &settled[1].settlement {
        Ok(Settlement::DeadLettered { topic, reason }) => {
            assert_eq!(topic, "payments-dead");
            assert!(reason.contains("gateway down"), "{reason}");
        }
        other => panic!("failed payment: {other:?}"),
    }
    assert!(
        matches!(&settled[2].settlement, Ok(Settlement::DeadLettered { .. })),
        "{:?}",
        settled[2]
    );
    // 1 call for the good one, 1 + 3 retries for the failing one, none for the poison one
    // (its payload never reached the handler).
    assert_eq!(PAYMENT_CALLS.load(Ordering::SeqCst), 5);

    let dlq = tests::records_when(&client, "payments-dead", 2, WAIT).await;
    assert_eq!(dlq.len(), 2);
    assert_eq!(header(&dlq[0], DLQ_HEADER_TOPIC), "payments");
    assert_eq!(header(&dlq[0], DLQ_HEADER_OFFSET), "1");
    assert_eq!(
        header(&dlq[0], DLQ_HEADER_ATTEMPTS),
        "4",
        "1 delivery + 3 retries"
    );
    assert_eq!(header(&dlq[0], DLQ_HEADER_KIND), "failed");
    assert!(header(&dlq[0], DLQ_HEADER_ERROR).contains("gateway down"));
    assert_eq!(header(&dlq[1], DLQ_HEADER_KIND), "poison");
    assert_eq!(
        header(&dlq[1], DLQ_HEADER_ATTEMPTS),
        "1",
        "poison messages are not retried"
    );
    assert_eq!(
        dlq[1].value.as_deref(),
        Some(&b"{not json"[..]),
        "the original payload is kept"
    );
    running.shutdown().await.unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "slow")]
struct SlowJob {
    id: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_cancels_a_slow_handler_and_the_message_is_retried() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let recorder = Recorder::new();
    let handler_calls = Arc::clone(&calls);
    let slow = move |_job: SlowJob, attempt: Attempt| {
        let calls = Arc::clone(&handler_calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            if attempt.0 == 1 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    };
    let running = Service::new(client.clone())
        .layer(TimeoutLayer::new(Duration::from_millis(200)))
        .layer(RetryLayer::exponential(2, Duration::from_millis(10)))
        .layer(recorder.layer())
        .handler(slow)
        .start()
        .await
        .unwrap();
    client
        .producer::<SlowJob>()
        .send(&SlowJob { id: 1 })
        .await
        .unwrap();
    let settled = recorder.wait_for(1, WAIT).await;
    assert_eq!(
        settled[0].settlement,
        Ok(Settlement::Ack),
        "the second attempt succeeded"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the first attempt was cancelled by the timeout"
    );
    running.shutdown().await.unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "events", key = "user", partitions = 1)]
struct Event {
    user: String,
    seq: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_with_concurrency() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<(String, u32)>::new()));
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_in_flight = Arc::new(AtomicU32::new(0));

    type Seen = Arc<parking_lot::Mutex<Vec<(String, u32)>>>;

    #[handler(concurrency = 4)]
    async fn record(event: Event, state: State<(Seen, Arc<AtomicU32>, Arc<AtomicU32>)>) {
        let (seen, in_flight, max) = state.0;
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        // Later events of a key must wait for this one.
        tokio::time::sleep(Duration::from_millis(u64::from(fastrand::u8(..4)))).await;
        seen.lock().push((event.user.clone(), event.seq));
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    let recorder = Recorder::new();
    let running = Service::with_state(
        client.clone(),
        (
            Arc::clone(&seen),
            Arc::clone(&in_flight),
            Arc::clone(&max_in_flight),
        ),
    )
    .layer(recorder.layer())
    .handler(record)
    .start()
    .await
    .unwrap();
    let producer = client.producer::<Event>();
    for seq in 0..50 {
        for user in ["ann", "bob", "cid", "dee", "eve", "fay", "gus", "hal"] {
            producer
                .send_async(&Event {
                    user: user.into(),
                    seq,
                })
                .await
                .unwrap();
        }
    }
    producer.flush().await.unwrap();
    recorder.wait_for(400, WAIT).await;
    let seen = seen.lock().clone();
    for user in ["ann", "bob", "cid", "dee", "eve", "fay", "gus", "hal"] {
        let seqs: Vec<u32> = seen
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(seqs, (0..50).collect::<Vec<_>>(), "order of {user}");
    }
    assert!(
        max_in_flight.load(Ordering::SeqCst) > 1,
        "keys were processed concurrently"
    );
    running.shutdown().await.unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "ledger", key = "n", partitions = 3)]
struct Entry {
    n: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_stream_loses_nothing_and_redelivers_nothing_acked() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let producer = client.producer::<Entry>();
    for n in 0..300 {
        producer.send_async(&Entry { n }).await.unwrap();
    }
    producer.flush().await.unwrap();

    let handled = Arc::new(parking_lot::Mutex::new(Vec::<u32>::new()));
    let make = |handled: Arc<parking_lot::Mutex<Vec<u32>>>| {
        move |entry: Entry| {
            let handled = Arc::clone(&handled);
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                handled.lock().push(entry.n);
            }
        }
    };
    let recorder = Recorder::new();
    let first = Service::new(client.clone())
        .layer(recorder.layer())
        .handler(make(Arc::clone(&handled)))
        .start()
        .await
        .unwrap();
    recorder.wait_for(100, WAIT).await;
    first.shutdown().await.unwrap();
    let first_run: Vec<u32> = handled.lock().clone();
    assert!(
        first_run.len() < 300,
        "stopped mid-stream ({} handled)",
        first_run.len()
    );

    // Same handler (same group) again: it picks up where the first run committed.
    let second_handled = Arc::new(parking_lot::Mutex::new(Vec::<u32>::new()));
    let recorder2 = Recorder::new();
    let second = Service::new(client.clone())
        .layer(recorder2.layer())
        .handler(make(Arc::clone(&second_handled)))
        .start()
        .await
        .unwrap();
    recorder2.wait_for(300 - first_run.len(), WAIT).await;
    // Give a redelivery of already-acked messages the chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.shutdown().await.unwrap();
    let second_run = second_handled.lock().clone();
    let mut all: Vec<u32> = first_run.iter().chain(&second_run).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..300).collect::<Vec<_>>(),
        "every entry handled exactly once across the restart"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "stuck-jobs", partitions = 1)]
struct StuckJob {
    n: u32,
}

/// Started handlers, counted; the first call never finishes.
#[derive(Debug, Clone, Default)]
struct Stuck {
    started: Arc<AtomicU32>,
    started_changed: Arc<tokio::sync::Notify>,
}

#[handler(group = "stuck-workers")]
async fn stuck(job: StuckJob, State(state): State<Stuck>) {
    let n = state.started.fetch_add(1, Ordering::SeqCst) + 1;
    state.started_changed.notify_waiters();
    if n == 1 {
        assert_eq!(job.n, 7);
        std::future::pending::<()>().await;
    }
}

/// A shutdown waits for the in-flight message only up to the shutdown timeout; the abandoned
/// message is not acknowledged, so the group gets it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_abandons_a_stuck_message_after_the_timeout_and_it_comes_back() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client
        .producer::<StuckJob>()
        .send(&StuckJob { n: 7 })
        .await
        .unwrap();
    let state = Stuck::default();
    let start = |state: Stuck| {
        Service::with_state(client.clone(), state)
            .shutdown_timeout(Duration::from_millis(300))
            .handler(stuck)
            .start()
    };
    let wait_started = |state: Stuck, n: u32| async move {
        tokio::time::timeout(WAIT, async {
            while state.started.load(Ordering::SeqCst) < n {
                let changed = state.started_changed.notified();
                if state.started.load(Ordering::SeqCst) >= n {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
            }
        })
        .await
        .expect("the handler did not start in time");
    };

    let running = start(state.clone()).await.unwrap();
    wait_started(state.clone(), 1).await;
    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .expect("shutdown must not wait for the stuck handler past its timeout")
        .unwrap();

    // The same group again: the abandoned message is delivered again (and now finishes).
    let running = start(state.clone()).await.unwrap();
    wait_started(state.clone(), 2).await;
    running.shutdown().await.unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "tallies", partitions = 1)]
struct Tally {
    n: u64,
}

/// A layer's service that counts its calls in a plain field (state kept in the service, as
/// tower's concurrency limit keeps its permit) and keeps a clone of every other delivery beyond
/// the call.
#[derive(Clone)]
struct Keep<S> {
    inner: S,
    calls: u32,
    kept: Arc<parking_lot::Mutex<Vec<(u32, rustmq::Delivery)>>>,
}

impl<S: tower::Service<rustmq::Delivery>> tower::Service<rustmq::Delivery> for Keep<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, delivery: rustmq::Delivery) -> S::Future {
        self.calls += 1;
        if self.calls % 2 == 1 {
            self.kept.lock().push((self.calls, delivery.clone()));
        }
        self.inner.call(delivery)
    }
}

/// The runner drives one service for all of a handler's messages, so state a layer keeps in its
/// service holds from one message to the next; and it reuses a delivery's allocation for the
/// next message only when nothing kept a clone: a delivery a layer kept still holds its own
/// message after later ones were handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_state_holds_across_messages_and_kept_deliveries_keep_their_message() {
    async fn tally(_: Tally) {}

    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let kept = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let keep = {
        let kept = Arc::clone(&kept);
        tower::layer::layer_fn(move |inner| Keep {
            inner,
            calls: 0,
            kept: Arc::clone(&kept),
        })
    };
    let recorder = Recorder::new();
    let running = Service::new(client.clone())
        .layer(keep)
        .layer(recorder.layer())
        .handler(tally)
        .start()
        .await
        .unwrap();
    let producer = client.producer::<Tally>();
    for n in 0..20 {
        producer.send_async(&Tally { n }).await.unwrap();
    }
    producer.flush().await.unwrap();
    let settled = recorder.wait_for(20, WAIT).await;
    assert!(settled.iter().all(|s| s.settlement == Ok(Settlement::Ack)));

    let kept = std::mem::take(&mut *kept.lock());
    // Calls 1, 3, 5, ... 19: the count went on across messages instead of starting again.
    let calls: Vec<u32> = kept.iter().map(|(call, _)| *call).collect();
    assert_eq!(calls, (1..=19).step_by(2).collect::<Vec<_>>());
    for (call, delivery) in kept.iter() {
        let n = u64::from(call - 1);
        let message = delivery.message();
        assert_eq!(message.offset, n, "call {call}");
        let tally: Tally = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(tally.n, n, "call {call}");
    }
    drop(kept);
    running.shutdown().await.unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "flaky-readiness", partitions = 1)]
struct Job {
    n: u64,
}

/// A layer's service that, once its `poll_ready` failed, fails for good (as a service whose
/// worker died does); the third readiness check made through any clone is the one that fails.
#[derive(Clone)]
struct DiesOnce<S> {
    inner: S,
    polls: Arc<AtomicU32>,
    dead: bool,
}

impl<S> tower::Service<rustmq::Delivery> for DiesOnce<S>
where
    S: tower::Service<rustmq::Delivery, Error = rustmq::BoxError>,
{
    type Response = S::Response;
    type Error = rustmq::BoxError;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), rustmq::BoxError>> {
        if !self.dead && self.polls.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
            self.dead = true;
        }
        if self.dead {
            return std::task::Poll::Ready(Err("the service died".into()));
        }
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, delivery: rustmq::Delivery) -> S::Future {
        self.inner.call(delivery)
    }
}

/// A service whose readiness fails is not used again: the message it failed on is redelivered
/// (it was never handled), and the messages after it are handled by a fresh copy of the
/// layered service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_fails_readiness_is_replaced_and_every_message_is_handled() {
    async fn job(_: Job) {}

    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let polls = Arc::new(AtomicU32::new(0));
    let dies_once = tower::layer::layer_fn(move |inner| DiesOnce {
        inner,
        polls: Arc::clone(&polls),
        dead: false,
    });
    let recorder = Recorder::new();
    let running = Service::new(client.clone())
        .layer(dies_once)
        .layer(recorder.layer())
        .handler(job)
        .start()
        .await
        .unwrap();
    let producer = client.producer::<Job>();
    for n in 0..10 {
        producer.send_async(&Job { n }).await.unwrap();
    }
    producer.flush().await.unwrap();
    let settled = recorder.wait_for(10, WAIT).await;
    let mut handled: Vec<u64> = decoded::<Job>(&settled).iter().map(|j| j.n).collect();
    handled.sort_unstable();
    handled.dedup();
    assert_eq!(handled, (0..10).collect::<Vec<_>>());
    assert!(settled.iter().all(|s| s.settlement == Ok(Settlement::Ack)));
    running.shutdown().await.unwrap();
}

/// Consumer settings that dead-letter a message to `topic` at its first failure (no
/// redelivery).
fn dead_letters_at_once(topic: &str) -> rustmq::ConsumerConfig {
    rustmq::ConsumerConfig {
        max_retry_attempts: 0,
        dead_letter_queue: Some(topic.into()),
        ..Default::default()
    }
}

/// Records stored in `topic`, 0 if it does not exist.
async fn records_in(client: &rustmq::RustMqClient, topic: &str) -> u64 {
    match client.describe_topic(topic).await {
        Ok(topic) => topic.partitions.iter().map(|p| p.record_count()).sum(),
        Err(ClientError::TopicNotFound(_)) => 0,
        Err(e) => panic!("{e:?}"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "hung-jobs", key = "key", partitions = 1)]
struct HungJob {
    key: String,
    n: u32,
}

/// With several workers, a hung handler fills its worker's queue and the dispatcher waits for
/// room there: a shutdown still ends after its timeout. The message the dispatcher held is
/// abandoned like the queued ones, not nacked: with no retries left, a nack would have
/// dead-lettered a message never handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_while_a_hung_workers_queue_is_full() {
    tests::init_tracing();

    #[handler(concurrency = 2)]
    async fn hangs(job: HungJob, State(state): State<Stuck>) {
        state.started.fetch_add(1, Ordering::SeqCst);
        state.started_changed.notify_waiters();
        if job.key == "k" {
            std::future::pending::<()>().await;
        }
    }

    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let producer = client.producer::<HungJob>();
    for n in 0..80 {
        producer
            .send_async(&HungJob { key: "k".into(), n })
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let state = Stuck::default();
    let running = Service::with_state(client.clone(), state.clone())
        .shutdown_timeout(Duration::from_millis(100))
        .consumer_config(dead_letters_at_once("hung-jobs.failed"))
        .handler(hangs)
        .start()
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while state.started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the handler started");
    // Time for the dispatcher to fill the hung worker's queue and wait for room.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown must end after its timeout, whatever the hung worker's queue holds")
        .unwrap();
    assert_eq!(state.started.load(Ordering::SeqCst), 1, "one message hung");
    let dead_lettered = records_in(&client, "hung-jobs.failed").await;
    assert_eq!(
        dead_lettered, 0,
        "a message never handled was dead-lettered"
    );
}

/// A shutdown timeout of `Duration::MAX` ("wait for the handlers for ever") is a valid one:
/// the shutdown commits and leaves as with any other.
#[tokio::test]
async fn a_shutdown_without_a_time_limit_ends_cleanly() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let running = Service::new(client.clone())
        .shutdown_timeout(Duration::MAX)
        .handler(vanishing)
        .start()
        .await
        .unwrap();
    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .expect("the shutdown ends")
        .unwrap();
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "vanishing", partitions = 1)]
struct Vanishing {
    text: String,
}

async fn vanishing(_: Vanishing) {}

/// A receive error the consumer does not call retryable (its topic deleted) does not stop
/// the handler for good: once the topic is back, the handler goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_goes_on_after_its_topic_was_deleted_and_created_again() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let recorder = Recorder::new();
    let running = Service::new(client.clone())
        .layer(recorder.layer())
        .handler(vanishing)
        .start()
        .await
        .unwrap();
    let producer = client.producer::<Vanishing>();
    producer
        .send(&Vanishing {
            text: "before".into(),
        })
        .await
        .unwrap();
    recorder.wait_for(1, WAIT).await;
    client.delete_topic("vanishing").await.unwrap();
    // The consumer's fetches fail meanwhile (unknown topic), and it says so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.create_topic("vanishing", 1).await.unwrap();
    let after = tokio::time::timeout(WAIT, async {
        loop {
            let _ = producer
                .send(&Vanishing {
                    text: "after".into(),
                })
                .await;
            let seen = recorder.settled().iter().any(|s| {
                decoded::<Vanishing>(std::slice::from_ref(s))
                    .first()
                    .is_some_and(|v| v.text == "after")
            });
            if seen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(after.is_ok(), "the handler stopped after the receive error");
    assert!(!running.is_stopped());
    running.shutdown().await.unwrap();
}

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "visits")]
struct Visit {
    page: String,
}

mod billing {
    use super::*;
    pub(super) async fn on_visit(_: Visit) {}
}

mod audit {
    use super::*;
    pub(super) async fn on_visit(_: Visit) {}
}

/// Two handlers of one topic that would share a consumer group (same function name in two
/// modules, no `group`) are refused before anything starts: each would get only part of the
/// topic's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_would_share_a_topics_group_are_refused() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let e = Service::new(client.clone())
        .handler(billing::on_visit)
        .handler(audit::on_visit)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, rustmq::ClientError::InvalidConfig(_)), "{e}");
    assert!(e.to_string().contains("visits.on_visit"), "{e}");
    assert!(
        client.describe_topic("visits").await.is_err(),
        "nothing started, not even the topic"
    );
}

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(
    name = "a-topic-whose-name-is-long-enough-that-its-handlers-default-group-name-runs-over-the-limit-of-120-bytes-that-the-broker-sets"
)]
struct LongNamed {
    n: u32,
}

async fn on_long_named(_: LongNamed) {}

/// A default group name (`<topic>.<function>`) too long for the broker is refused at start,
/// with the handler named, before any handler starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_group_name_too_long_for_the_broker_is_refused_at_start() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let e = Service::new(client)
        .handler(json_handler)
        .handler(on_long_named)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, rustmq::ClientError::InvalidConfig(_)), "{e}");
    assert!(e.to_string().contains("on_long_named"), "{e}");
    assert!(
        e.to_string().contains("#[handler(group"),
        "says what to do: {e}"
    );
}

#[handler(concurrency = 1024)]
async fn widest(_: Visit) {}

/// The macro's bound is the service's: the most workers the attribute takes, a service starts
/// with (the two constants cannot drift apart unnoticed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_workers_the_attribute_takes_start() {
    assert_eq!(rustmq::typed::MAX_CONCURRENCY, 1024);
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let running = Service::new(client).handler(widest).start().await.unwrap();
    running.shutdown().await.unwrap();
}

/// A handler implemented by hand, whose options ask for more workers than a handler may have.
#[derive(Clone)]
struct TooWide;

impl rustmq::typed::Handler<(Visit,), ()> for TooWide {
    fn call(&self, delivery: rustmq::typed::Delivery, state: ()) -> rustmq::typed::HandlerFuture {
        rustmq::typed::call_handler(billing::on_visit, delivery, state)
    }
    fn options(&self) -> rustmq::typed::HandlerOptions {
        rustmq::typed::HandlerOptions::new("too_wide")
            .concurrency(rustmq::typed::MAX_CONCURRENCY + 1)
    }
}

/// `#[handler(concurrency = ..)]` is bounded at compile time; a handler whose options get
/// past that (written by hand) is refused at start, before any worker is made, instead of
/// making as many tasks as it asks for (or aborting on the allocation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_asking_for_too_many_workers_is_refused_at_start() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let e = Service::new(client.clone())
        .handler(TooWide)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, rustmq::ClientError::InvalidConfig(_)), "{e}");
    assert!(
        e.to_string().contains("too_wide") && e.to_string().contains("1025"),
        "{e}"
    );
    assert!(
        client.describe_topic("visits").await.is_err(),
        "nothing started, not even the topic"
    );
}

async fn two_payloads(_: Visit, _: JsonOrder) {}

/// A plain `async fn` with two payloads (which `#[handler]` refuses at compile time) is refused
/// when it is added: it would consume the first payload's topic and decode every message as
/// the second payload too.
#[tokio::test]
#[should_panic(expected = "2 payload arguments")]
async fn a_handler_with_two_payloads_is_refused_when_added() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let _ = Service::new(client).handler(two_payloads);
}

/// A topic without declared partitions is created by a service with the broker's default
/// partition count, as the producer side's auto-creation creates it, not with one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_creates_an_undeclared_topic_with_the_brokers_default_partitions() {
    let config = rustmq::testing::BrokerConfig {
        default_partitions: 4,
        ..Default::default()
    };
    let broker = TestBroker::start_with(config).await.unwrap();
    let client = broker.client().await.unwrap();
    let running = Service::new(client.clone())
        .handler(billing::on_visit)
        .start()
        .await
        .unwrap();
    let described = client.describe_topic("visits").await.unwrap();
    assert_eq!(described.partition_count(), 4);
    running.shutdown().await.unwrap();
}

/// A topic the broker cannot make in the test below: a file stands where its directory goes.
#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "unmakeable", partitions = 1)]
struct Unmakeable {
    n: u32,
}

async fn on_unmakeable(_: Unmakeable) {}

static VISITS_HANDLED: AtomicU32 = AtomicU32::new(0);

async fn count_visit(_: Visit) {
    VISITS_HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// A service whose second handler cannot start (its topic cannot be made) returns the error
/// without having handled anything with the first: every consumer joins before any handler
/// starts, and those that joined leave again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_start_every_handler_handles_nothing() {
    let broker = TestBroker::start().await.unwrap();
    std::fs::write(broker.data_dir().join("topics/unmakeable"), b"in the way").unwrap();
    let client = broker.client().await.unwrap();
    let visits = client.producer::<Visit>();
    for i in 0..20 {
        visits
            .send(&Visit {
                page: format!("p{i}"),
            })
            .await
            .unwrap();
    }
    let e = Service::new(client.clone())
        .handler(count_visit)
        .handler(on_unmakeable)
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some(rustmq::ErrorCode::StorageError), "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(VISITS_HANDLED.load(Ordering::SeqCst), 0);
    let group = client.describe_group("visits.count_visit").await.unwrap();
    assert!(group.members.is_empty(), "{group:?}");
}

/// When the client is closed under a running service, its handlers cannot go on: the service
/// says it stopped (`is_stopped`), and shutting it down answers the consumers' error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_client_is_closed_says_it_stopped() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let running = Service::new(client.clone())
        .handler(billing::on_visit)
        .start()
        .await
        .unwrap();
    assert!(!running.is_stopped());
    client.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !running.is_stopped() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service says it stopped once its client is closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running.shutdown().await.is_err());
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "refunds", partitions = 1)]
struct Refund {
    amount: u64,
}

async fn refuse(refund: Refund) -> Result<(), GatewayDown> {
    if refund.amount == 13 {
        Err(GatewayDown)
    } else {
        Ok(())
    }
}

/// A `dead_letter_queue` set in the service's consumer settings takes all of a handler's dead
/// letters: the message whose redeliveries ran out (the consumer's path) and the poison one
/// (the typed path) land in the same topic, not one of them in the topic's `refunds.dlq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_wide_dead_letter_queue_takes_every_dead_letter() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("all-failed", 1).await.unwrap();
    let running = Service::new(client.clone())
        .consumer_config(dead_letters_at_once("all-failed"))
        .handler(refuse)
        .start()
        .await
        .unwrap();
    client
        .producer::<Refund>()
        .send(&Refund { amount: 13 })
        .await
        .unwrap();
    let raw = client.create_producer("refunds").await.unwrap();
    raw.send(
        rustmq::Message::builder()
            .topic("refunds")
            .payload("{not json")
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let dead = tests::records_when(&client, "all-failed", 2, WAIT).await;
    let payloads: Vec<&[u8]> = dead.iter().map(|r| r.value.as_deref().unwrap()).collect();
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    assert!(payloads.contains(&&b"{not json"[..]), "{payloads:?}");
    assert_eq!(records_in(&client, "refunds.dlq").await, 0);
    running.shutdown().await.unwrap();
}
