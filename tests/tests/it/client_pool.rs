//! The client's pool with several broker addresses: they are failover addresses, not a
//! cluster. Requests go to the first broker that answers, and to the next only once it is lost.

use std::time::Duration;

use rustmq::testing::TestBroker;
use rustmq::*;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 4;

/// Records stored in `TOPIC` on the broker `client` reaches.
async fn stored(client: &RustMqClient) -> u64 {
    client
        .describe_topic(TOPIC)
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.record_count())
        .sum()
}

fn keyed(i: usize) -> Message {
    Message::builder()
        .topic(TOPIC)
        .key(format!("key-{}", i % 16))
        .payload(format!("{i}"))
        .build()
        .unwrap()
}

#[tokio::test]
async fn several_brokers_are_failover_addresses_used_one_at_a_time() {
    fail_over(false).await;
}

/// An idempotent producer's ids were issued by the first broker, which the second never saw:
/// the second refuses them (`UnknownProducer`) and the producer sends those batches again
/// under ids of its own, so no send fails. The second broker's own idempotent producer, which
/// wrote to every partition before, goes on too: its ids are not the first broker's (each
/// broker's ids start at a random first id), so the two producers' sequences never meet.
#[tokio::test]
async fn an_idempotent_producer_takes_new_ids_from_the_broker_it_fails_over_to() {
    fail_over(true).await;
}

async fn fail_over(idempotent: bool) {
    tests::init_tracing();
    let mut a = TestBroker::start().await.unwrap();
    let b = TestBroker::start().await.unwrap();
    let only_a = a.client().await.unwrap();
    let only_b = b.client().await.unwrap();
    only_a.create_topic(TOPIC, PARTITIONS).await.unwrap();
    only_b.create_topic(TOPIC, PARTITIONS).await.unwrap();
    let idempotent_config = ProducerConfig {
        batch_size: 1,
        idempotent,
        ..ProducerConfig::default()
    };
    // The second broker's own producer, of ids it issued.
    let local = ProducerBuilder::new()
        .topic(TOPIC)
        .client(only_b.clone())
        .config(idempotent_config.clone())
        .build()
        .await
        .unwrap();
    let local_sends = if idempotent { 32 } else { 0 };
    for i in 0..local_sends {
        local.send(keyed(i)).await.unwrap();
    }

    // Without `tls_config`, both loopback brokers' own certificates are accepted.
    let client = RustMqClient::new(ClientConfig {
        brokers: vec![a.addr().to_string(), b.addr().to_string()],
        connect_timeout: Duration::from_secs(2),
        retry_config: RetryConfig {
            max_retries: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            ..RetryConfig::default()
        },
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let producer = ProducerBuilder::new()
        .topic(TOPIC)
        .client(client.clone())
        .config(idempotent_config)
        .build()
        .await
        .unwrap();
    // Many requests in flight at once, over four partitions: spread by load, some would have
    // gone to b.
    for i in 0..200 {
        producer.send_async(keyed(i), None).await.unwrap();
    }
    producer.flush().await.unwrap();
    assert_eq!(
        producer
            .metrics()
            .await
            .messages_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        stored(&only_a).await,
        200,
        "every record on the first broker"
    );
    assert_eq!(
        stored(&only_b).await,
        local_sends as u64,
        "nothing on the second but its own producer's"
    );

    // The first broker goes away: the client moves on to the next.
    only_a.close().await.unwrap();
    a.stop().await;
    for i in 200..210 {
        if let Err(e) = producer.send(keyed(i)).await {
            panic!("send {i} after the failover (idempotent: {idempotent}): {e}");
        }
    }
    assert_eq!(
        stored(&only_b).await,
        local_sends as u64 + 10,
        "the later sends went to the second broker"
    );
    for i in 0..local_sends {
        if let Err(e) = local.send(keyed(i)).await {
            panic!("the second broker's own producer, send {i}: {e}");
        }
    }
    let health = client.health_check().await.unwrap();
    assert_eq!(health.healthy_connections, health.total_connections);
}

/// The broker used is the first of the list that answers, not the first to answer: every
/// broker is tried at once, and the first broker, 100 ms farther away each way, is used although
/// the second answers long before it. The client's topic is made there, and only there.
#[tokio::test]
async fn the_first_broker_of_the_list_is_used_though_a_later_one_answers_sooner() {
    tests::init_tracing();
    let a = TestBroker::start().await.unwrap();
    let b = TestBroker::start().await.unwrap();
    let far_a = tests::UdpRelay::start(a.addr(), Duration::from_millis(100))
        .await
        .addr;
    // Without `tls_config`, both loopback brokers' own certificates are accepted.
    let client = RustMqClient::new(ClientConfig {
        brokers: vec![far_a.to_string(), b.addr().to_string()],
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    client.create_topic(TOPIC, PARTITIONS).await.unwrap();

    let only_a = a.client().await.unwrap();
    let only_b = b.client().await.unwrap();
    let made = |described: Result<TopicDescription>| {
        described
            .map(|topic| topic.partition_count())
            .map_err(|e| e.error_code())
    };
    assert_eq!(
        (
            made(only_a.describe_topic(TOPIC).await),
            made(only_b.describe_topic(TOPIC).await)
        ),
        (Ok(PARTITIONS), Err(Some(ErrorCode::UnknownTopic))),
        "the topic is made on the first broker of the list, and only there"
    );
}

/// A broker taking one request in flight per connection grants one stream more, which the
/// client keeps for pings: with the only slot held by a long poll, a health check is still
/// answered at once, and the connection is not taken for dead; so are two at once.
#[tokio::test]
async fn a_connection_whose_only_slot_holds_a_long_poll_answers_its_ping() {
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_in_flight_per_connection = 1;
    let broker = TestBroker::start_with(config).await.unwrap();
    let client = RustMqClient::new(ClientConfig {
        max_connections: 1,
        health_check_timeout: Duration::from_secs(1),
        ..broker.client_config()
    })
    .await
    .unwrap();
    client.create_topic(TOPIC, 1).await.unwrap();
    let long_poll = tokio::spawn({
        let client = client.clone();
        async move { tests::fetch(&client, TOPIC, 0, 0, 10_000).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.connection_stats().await.unwrap().in_flight_requests == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the long poll never went out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = client.health_check().await;
    assert!(health.is_ok(), "{health:?}");
    assert!(!long_poll.is_finished(), "the long poll was cut short");
    // Two checks at once (the background one and the application's, say) share that stream
    // one after the other: neither waits for the long poll's slot and times out.
    let (a, b) = tokio::join!(client.health_check(), client.health_check());
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert!(!long_poll.is_finished(), "the long poll was cut short");
    assert_eq!(
        client.connection_stats().await.unwrap().active_connections,
        1
    );
    long_poll.abort();
}
