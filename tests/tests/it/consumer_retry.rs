//! Failed messages against a real broker: nack redelivers with exponential backoff without
//! holding up anything else, then the message lands in the dead-letter topic with its
//! headers and counts as processed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::consumer_support::*;
use rustmq::consumer::{Consumer, ConsumerMessage};
use rustmq::consumer::{
    ConsumerConfig, DLQ_ATTEMPTS, DLQ_ERROR, DLQ_ORIGINAL_OFFSET, DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
};
use rustmq::testing::TestBroker;
use rustmq::RustMqClient;

const POISON: u64 = 3;

/// A broker, `topic` with one partition holding `messages` messages, and a consumer of it in
/// `group` that retries a nacked message up to `retries` times, `backoff` apart (doubling).
async fn retrying(
    topic: &str,
    group: &str,
    messages: u64,
    retries: u32,
    backoff: Duration,
) -> (TestBroker, RustMqClient, Consumer) {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic(topic, 1).await.unwrap();
    produce_n(&client, topic, 0, 0, messages).await;
    let config = ConsumerConfig {
        max_retry_attempts: retries,
        retry_backoff: backoff,
        ..config(group)
    };
    let consumer = client
        .create_consumer_with_config(topic, group, config)
        .await
        .unwrap();
    (broker, client, consumer)
}

/// The next message, received by a task of its own (started now), and when it arrived.
fn receive_on_a_task(consumer: &Consumer) -> tokio::task::JoinHandle<(Instant, ConsumerMessage)> {
    let consumer = consumer.clone();
    tokio::spawn(async move {
        let m = recv(&consumer).await;
        (Instant::now(), m)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_until_retries_run_out_then_dead_lettered_with_headers() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("payments", 2).await.unwrap();
    client.create_topic("payments.dlq", 1).await.unwrap();
    for p in 0..2 {
        produce_n(&client, "payments", p, 0, 10).await;
    }
    let backoff = Duration::from_millis(200);
    let config = ConsumerConfig {
        max_retry_attempts: 2,
        retry_backoff: backoff,
        dead_letter_queue: Some("payments.dlq".into()),
        ..config("payers")
    };
    let consumer = client
        .create_consumer_with_config("payments", "payers", config)
        .await
        .unwrap();

    // Partition 0 offset 3 always fails; everything else succeeds.
    let mut poison_deliveries = Vec::new();
    let mut good = 0;
    let mut good_when_first_retried = None;
    while poison_deliveries.len() < 3 || good < 19 {
        let m = recv(&consumer).await;
        if (m.message.partition, m.message.offset) == (0, POISON) {
            poison_deliveries.push((Instant::now(), m.delivery_attempt()));
            if poison_deliveries.len() == 2 {
                good_when_first_retried = Some(good);
            }
            m.nack_with_error("card declined").await.unwrap();
        } else {
            assert_eq!(
                m.delivery_attempt(),
                1,
                "only the failing message is redelivered"
            );
            good += 1;
            m.ack().await.unwrap();
        }
    }
    // The retry did not hold anything up: every other record (including the later ones of
    // the same partition) was processed before the first redelivery.
    assert_eq!(good_when_first_retried, Some(19));
    let attempts: Vec<u32> = poison_deliveries.iter().map(|&(_, a)| a).collect();
    assert_eq!(attempts, [1, 2, 3]);
    // Backoff doubles: at least 200 ms, then at least 400 ms.
    assert!(poison_deliveries[1].0 - poison_deliveries[0].0 >= backoff);
    assert!(poison_deliveries[2].0 - poison_deliveries[1].0 >= backoff * 2);

    // The third failure exhausted the 2 retries: the message is in the dead-letter topic.
    let (records, _) = tests::fetch_all(&client, "payments.dlq", 0, 0).await;
    assert_eq!(records.len(), 1);
    let dead = &records[0];
    assert_eq!(dead.value.as_deref(), Some(value(0, POISON).as_bytes()));
    let header = |name: &str| {
        let h = dead
            .headers
            .iter()
            .find(|h| h.key == name)
            .unwrap_or_else(|| panic!("header {name}"));
        String::from_utf8(h.value.to_vec()).unwrap()
    };
    assert_eq!(header(DLQ_ORIGINAL_TOPIC), "payments");
    assert_eq!(header(DLQ_ORIGINAL_PARTITION), "0");
    assert_eq!(header(DLQ_ORIGINAL_OFFSET), POISON.to_string());
    assert_eq!(header(DLQ_ATTEMPTS), "3");
    assert_eq!(header(DLQ_ERROR), "card declined");
    // Written with acks=all: on the broker's disk before the message counted as processed
    // (its commit is synced too), where the broker's flush policy would not have synced it.
    let dead_letters = broker.handle().unwrap().topics().require("payments.dlq");
    let synced = dead_letters.unwrap().partition(0).unwrap().sync_count();
    assert!(synced >= 1, "the dead letter was synced ({synced} syncs)");

    // Dead-lettered counts as processed: the whole partition is committable.
    consumer.commit().await.unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 10);
    let metrics = consumer.metrics().await;
    assert_eq!(metrics.messages_failed.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.messages_retried.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.messages_dead_lettered.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.messages_processed.load(Ordering::Relaxed), 19);
    assert_eq!(metrics.messages_received.load(Ordering::Relaxed), 20);
    nothing_within(&consumer, Duration::from_millis(300)).await;
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn a_pending_retry_holds_the_commit_and_without_a_dead_letter_queue_the_message_is_dropped() {
    let (_broker, client, consumer) =
        retrying("jobs", "runners", 5, 1, Duration::from_millis(100)).await;
    let first = recv(&consumer).await;
    assert_eq!(first.message.offset, 0);
    first.nack().await.unwrap();
    recv_ack(&consumer, 4).await;
    // Offset 0 awaits its retry: nothing can be committed past it.
    consumer.commit().await.unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 0);

    let retried = recv(&consumer).await;
    assert_eq!((retried.message.offset, retried.delivery_attempt()), (0, 2));
    retried.nack().await.unwrap();
    consumer.commit().await.unwrap();
    assert_eq!(
        consumer.committed_offset(0).await.unwrap(),
        5,
        "dropped counts as resolved"
    );
    let metrics = consumer.metrics().await;
    assert_eq!(metrics.messages_dropped.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.messages_dead_lettered.load(Ordering::Relaxed), 0);

    // A message dropped without ack or nack is redelivered rather than blocking commits.
    produce_n(&client, "jobs", 0, 5, 1).await;
    drop(recv(&consumer).await);
    let again = recv(&consumer).await;
    assert_eq!((again.message.offset, again.delivery_attempt()), (5, 2));
    again.ack().await.unwrap();
    consumer.close().await.unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 6);
}

/// A nack given up while it dead-letters (dropped after its first poll, as a timeout around
/// it would) still writes the message to the dead-letter topic and resolves its offset: the
/// partition's commits go past it.
#[tokio::test]
async fn a_nack_given_up_while_it_dead_letters_still_settles_the_message() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("orders", 1).await.unwrap();
    client.create_topic("orders.dlq", 1).await.unwrap();
    produce_n(&client, "orders", 0, 0, 3).await;
    let config = ConsumerConfig {
        max_retry_attempts: 0,
        dead_letter_queue: Some("orders.dlq".into()),
        ..config("dropped-nacks")
    };
    let consumer = client
        .create_consumer_with_config("orders", "dropped-nacks", config)
        .await
        .unwrap();
    let first = recv(&consumer).await;
    assert_eq!(first.message.offset, 0);
    {
        // Polled once: the dead-lettering starts (it has to wait for the producer it makes),
        // then the caller gives up on it.
        let nack = first.nack();
        tokio::pin!(nack);
        assert!(futures::poll!(nack.as_mut()).is_pending());
    }
    recv_ack(&consumer, 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        consumer.commit().await.unwrap();
        if consumer.committed_offset(0).await.unwrap() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "offset 0 never resolved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = consumer.metrics().await;
    assert_eq!(metrics.messages_dead_lettered.load(Ordering::Relaxed), 1);
    consumer.close().await.unwrap();
}

/// One `receive` waits both for new data and for a retry falling due: a message that arrives
/// first is handed out at once (the armed retry timer does not hold it up), the retry comes
/// when it is due, and a `receive` dropped after its message arrived, before it was polled
/// again, takes nothing with it.
#[tokio::test]
async fn a_waiting_receive_takes_new_data_before_a_later_retry_and_dropping_it_loses_nothing() {
    let backoff = Duration::from_millis(2000);
    let (_broker, client, consumer) = retrying("tasks", "workers", 1, 1, backoff).await;
    let first = recv(&consumer).await;
    let nacked_at = Instant::now();
    first.nack().await.unwrap();

    // A receive that waits (the retry is not due, nothing is buffered): its message arrives
    // and wakes it, but it is dropped before it is polled again.
    let mut dropped = Box::pin(consumer.receive());
    assert!(futures::poll!(dropped.as_mut()).is_pending());
    produce_n(&client, "tasks", 0, 1, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(dropped);
    let kept = recv(&consumer).await;
    assert_eq!(
        (kept.message.offset, kept.delivery_attempt()),
        (1, 1),
        "the message the dropped receive was woken for"
    );
    kept.ack().await.unwrap();

    // New data wakes the next waiting receive long before the retry is due.
    let waiting = receive_on_a_task(&consumer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    produce_n(&client, "tasks", 0, 2, 1).await;
    let (at, m) = waiting.await.unwrap();
    assert_eq!(
        (m.message.offset, m.delivery_attempt()),
        (2, 1),
        "the new message, not the retry"
    );
    assert!(
        at - nacked_at < backoff,
        "handed out before the retry fell due"
    );
    m.ack().await.unwrap();

    // Then the retry, once due.
    let retried = recv(&consumer).await;
    assert_eq!((retried.message.offset, retried.delivery_attempt()), (0, 2));
    assert!(nacked_at.elapsed() >= backoff);
    retried.ack().await.unwrap();
    consumer.commit().await.unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 3);
    consumer.close().await.unwrap();
}

/// A waiting receive whose timer is armed for one retry re-arms it when an earlier retry is
/// scheduled: the earlier one is handed out when it falls due, not when the later one does.
#[tokio::test]
async fn a_waiting_receive_rearms_its_timer_for_an_earlier_retry() {
    let backoff = Duration::from_millis(600);
    let (_broker, _client, consumer) = retrying("jobs.rearm", "rearmers", 2, 3, backoff).await;
    // Offset 0 fails twice: its second retry is due 2 x backoff after the second failure.
    let a = recv(&consumer).await;
    assert_eq!(a.message.offset, 0);
    a.nack().await.unwrap();
    let b = recv(&consumer).await;
    assert_eq!(b.message.offset, 1);
    let a = recv(&consumer).await;
    assert_eq!((a.message.offset, a.delivery_attempt()), (0, 2));
    // Both due times are taken before the nack that sets them: no later than the real ones.
    let a_due = Instant::now() + backoff * 2;
    a.nack().await.unwrap();

    // A receive now waits with its timer armed for offset 0's retry. Offset 1 then fails for
    // the first time: its retry, due one backoff later, comes before offset 0's.
    let waiting = receive_on_a_task(&consumer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b_due = Instant::now() + backoff;
    b.nack().await.unwrap();
    let (at, m) = waiting.await.unwrap();
    assert_eq!(
        (m.message.offset, m.delivery_attempt()),
        (1, 2),
        "the earlier retry first"
    );
    assert!(at >= b_due, "not before it fell due");
    assert!(
        at < a_due,
        "handed out when it fell due, not at the timer armed before it was scheduled"
    );
    m.ack().await.unwrap();
    let a = recv(&consumer).await;
    assert_eq!((a.message.offset, a.delivery_attempt()), (0, 3));
    a.ack().await.unwrap();
    consumer.close().await.unwrap();
}

/// A message whose dead-letter copy is too large for the broker (near its batch limit, the
/// copy's headers take it past) is dead-lettered without its content: the headers name where
/// it is, and say how much was left out. It used to be rescheduled after every failed write,
/// and handled again and again, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_to_dead_letter_goes_without_its_content() {
    tests::init_tracing();
    let (_broker, client, size) = tests::largest_message_stored("big", b'x').await;
    let config = ConsumerConfig {
        max_retry_attempts: 0,
        retry_backoff: Duration::from_millis(20),
        max_retry_backoff: Duration::from_millis(40),
        dead_letter_queue: Some("big.dlq".into()),
        ..config("bigs")
    };
    let consumer = client
        .create_consumer_with_config("big", "bigs", config)
        .await
        .unwrap();
    let m = recv(&consumer).await;
    m.nack().await.unwrap();
    nothing_within(&consumer, Duration::from_millis(300)).await;
    consumer.commit().await.unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 1);
    let dead = client
        .create_consumer_with_config("big.dlq", "dead", self::config("dead"))
        .await
        .unwrap();
    let received = recv(&dead).await;
    let d = &received.message;
    assert!(d.payload.is_empty());
    assert_eq!(d.headers[DLQ_ORIGINAL_TOPIC], "big");
    assert_eq!(d.headers[DLQ_ORIGINAL_OFFSET], "0");
    let dropped: usize = d.headers[rustmq::consumer::DLQ_CONTENT_DROPPED]
        .parse()
        .unwrap();
    assert!(dropped >= size, "{dropped} < {size}");
}

/// A message larger than a default producer takes (4 MiB), stored by a producer set for it, is
/// dead-lettered: the dead-letter producer takes messages as large as the broker stores. It
/// used to refuse the copy with `MessageTooLarge`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_the_default_size_is_dead_lettered() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("large", 1).await.unwrap();
    client.create_topic("large.dlq", 1).await.unwrap();
    let producer = rustmq::ProducerBuilder::new()
        .topic("large")
        .client(client.clone())
        .config(rustmq::ProducerConfig {
            max_message_size: 6 << 20,
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    let payload = vec![b'x'; 5 << 20];
    let message = rustmq::Message::builder()
        .topic("large")
        .payload(payload)
        .build()
        .unwrap();
    producer.send(message).await.unwrap();
    let config = ConsumerConfig {
        max_retry_attempts: 0,
        dead_letter_queue: Some("large.dlq".into()),
        ..config("larges")
    };
    let consumer = client
        .create_consumer_with_config("large", "larges", config)
        .await
        .unwrap();
    let m = recv(&consumer).await;
    m.nack().await.unwrap();
    let dead = client
        .create_consumer_with_config("large.dlq", "dead", self::config("dead"))
        .await
        .unwrap();
    assert_eq!(recv(&dead).await.message.payload.len(), 5 << 20);
}
