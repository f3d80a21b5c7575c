//! End-to-end tests of the client against the scripted broker in `transport::test_broker`
//! (real QUIC on 127.0.0.1; no sleeps where an event can be awaited).

use std::time::Duration;

use rustmq_protocol::{ApiKind, BrokerLimits, ErrorCode, FetchRequest, Request, Response};

use super::*;
use crate::config::{AuthConfig, AuthMethod, RetryConfig, TlsConfig};
use crate::transport::test_broker::{Script, TestBroker};

fn config_for(broker: &TestBroker) -> ClientConfig {
    ClientConfig {
        brokers: vec![broker.address()],
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        retry_config: RetryConfig {
            max_retries: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn fetch(max_wait_ms: u32) -> Request {
    Request::Fetch(FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1024,
        max_wait_ms,
    })
}

#[tokio::test]
async fn loopback_development_trust_and_admin_round_trip() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    assert_eq!(
        broker
            .state
            .hellos
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(client.broker_limits().map(|l| l.max_in_flight), Some(64));
    assert!(client.client_id().starts_with("rustmq-"));

    client.create_topic("orders", 3).await.unwrap();
    let again = client.create_topic("orders", 3).await.unwrap_err();
    assert!(matches!(
        again,
        ClientError::Broker {
            code: ErrorCode::TopicAlreadyExists,
            ..
        }
    ));
    let topics = client.list_topics().await.unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(
        (topics[0].name.as_str(), topics[0].partitions),
        ("orders", 3)
    );
    let description = client.describe_topic("orders").await.unwrap();
    assert_eq!(description.partition_count(), 3);
    assert_eq!(description.settings.retention, Some(Duration::from_secs(1)));
    assert_eq!(description.partitions[2].record_count(), 5);
    let metadata = client.metadata(Some(&["orders", "missing"])).await.unwrap();
    assert_eq!(
        metadata.topic("orders").map(|t| t.partitions.len()),
        Some(3)
    );
    assert!(metadata.topic("missing").is_none());

    client.delete_topic("orders").await.unwrap();
    let gone = client.describe_topic("orders").await.unwrap_err();
    assert!(
        matches!(&gone, ClientError::TopicNotFound(t) if t == "orders"),
        "{gone}"
    );

    client.ping().await.unwrap();
    let health = client.health_check().await.unwrap();
    assert_eq!(
        (health.healthy_connections, health.total_connections),
        (1, 1)
    );
    assert!(health.latency.is_some());

    let stats = client.connection_stats().await.unwrap();
    assert_eq!(stats.active_connections, 1);
    assert_eq!(stats.total_requests, 8);
    assert_eq!(stats.failed_requests, 2);
    assert_eq!(stats.reconnects, 0);
    assert!(stats.bytes_sent > 0 && stats.bytes_received > 0);
    client.close().await.unwrap();
}

#[tokio::test]
async fn localhost_resolves_to_the_ipv4_broker() {
    let broker = TestBroker::start(Script::default()).await;
    let config = ClientConfig {
        brokers: vec![format!("localhost:{}", broker.addr.port())],
        ..config_for(&broker)
    };
    let client = RustMqClient::new(config).await.unwrap();
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_tls_config_disables_loopback_trust() {
    let broker = TestBroker::start(Script::default()).await;
    let config = ClientConfig {
        tls_config: Some(TlsConfig::default()),
        ..config_for(&broker)
    };
    let started = std::time::Instant::now();
    let err = RustMqClient::new(config).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    assert!(!err.is_retryable());
    // A certificate failure is final: no retry rounds.
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn ca_file_is_trusted_and_names_are_checked() {
    let broker = TestBroker::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &broker.cert_pem).unwrap();
    let tls = TlsConfig {
        ca_cert: Some(ca.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let config = ClientConfig {
        tls_config: Some(tls.clone()),
        ..config_for(&broker)
    };
    RustMqClient::new(config.clone())
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();

    let wrong_name = ClientConfig {
        tls_config: Some(TlsConfig {
            server_name: Some("other.example.com".into()),
            ..tls
        }),
        ..config
    };
    let err = RustMqClient::new(wrong_name).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate() {
    let broker = TestBroker::start(Script {
        names: vec!["somewhere.else".into()],
        ..Script::default()
    })
    .await;
    let config = ClientConfig {
        tls_config: Some(TlsConfig {
            insecure_skip_verify: true,
            ..Default::default()
        }),
        ..config_for(&broker)
    };
    RustMqClient::new(config)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn credentials_travel_in_the_hello() {
    let broker = TestBroker::start(Script {
        token: Some("s3cret".into()),
        ..Script::default()
    })
    .await;
    let err = RustMqClient::new(config_for(&broker)).await.unwrap_err();
    assert!(matches!(err, ClientError::Authentication(_)), "{err}");
    let config = ClientConfig {
        auth: Some(AuthConfig {
            method: AuthMethod::Token,
            token: Some("s3cret".into()),
            ..Default::default()
        }),
        ..config_for(&broker)
    };
    RustMqClient::new(config)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn unreachable_broker_fails_with_a_connection_error() {
    // A bound UDP socket that never answers: QUIC handshakes to it time out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = ClientConfig {
        brokers: vec![silent.local_addr().unwrap().to_string()],
        connect_timeout: Duration::from_millis(200),
        retry_config: RetryConfig {
            max_retries: 1,
            base_delay: Duration::from_millis(10),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = RustMqClient::new(config).await.unwrap_err();
    match err {
        ClientError::Connection(msg) => assert!(msg.contains("after 2 attempts"), "{msg}"),
        other => panic!("expected a connection error, got {other}"),
    }
}

#[tokio::test]
async fn broker_restart_is_transparent_for_safe_requests() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    client.create_topic("t", 1).await.unwrap();
    let broker = broker.restart().await;
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    let stats = client.connection_stats().await.unwrap();
    assert_eq!((stats.reconnects, stats.failed_requests), (1, 0));
    assert_eq!(
        broker
            .state
            .hellos
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn only_safe_requests_are_resent_after_a_lost_connection() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();

    *broker.state.close_on_next.lock() = Some(ApiKind::ListTopics);
    client.list_topics().await.unwrap();
    assert_eq!(broker.state.count(ApiKind::ListTopics), 2);

    *broker.state.close_on_next.lock() = Some(ApiKind::CreateTopic);
    let err = client.create_topic("t", 1).await.unwrap_err();
    assert!(matches!(err, ClientError::Connection(_)), "{err}");
    assert!(err.is_retryable());
    assert_eq!(broker.state.count(ApiKind::CreateTopic), 1);
    // The caller's own retry goes through on a fresh connection.
    client.create_topic("t", 1).await.unwrap();
}

/// A broker that answered `ShuttingDown` on a connection gets no new request there: a request
/// safe to repeat is re-sent on a new connection (a second hello), not on the one going away,
/// where a broker would answer `ShuttingDown` again; a request in flight there still gets its
/// answer. A request not safe to repeat returns the retryable error, and the caller's retry
/// takes a new connection. A ping answered `ShuttingDown` is no healthy connection.
#[tokio::test]
async fn a_connection_whose_broker_is_shutting_down_takes_no_new_request() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    let hellos = || {
        broker
            .state
            .hellos
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    // A long poll in flight on the connection (the scripted broker answers it after 2 s).
    let polling = {
        let client = client.clone();
        tokio::spawn(async move { client.request(fetch(2_000)).await })
    };
    while broker.state.count(ApiKind::Fetch) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    *broker.state.shut_down_next.lock() = Some(ApiKind::ListTopics);
    client.list_topics().await.unwrap();
    assert_eq!(broker.state.count(ApiKind::ListTopics), 2);
    assert_eq!(hellos(), 2, "the request was re-sent on a new connection");
    assert!(
        !polling.is_finished(),
        "the long poll is still waiting for its answer"
    );
    assert!(matches!(polling.await.unwrap(), Ok(Response::Fetch(_))));
    assert_eq!(
        broker.state.count(ApiKind::Fetch),
        1,
        "answered, not re-sent"
    );

    *broker.state.shut_down_next.lock() = Some(ApiKind::CreateTopic);
    let err = client.create_topic("t", 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Broker {
                code: ErrorCode::ShuttingDown,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    client.create_topic("t", 1).await.unwrap();
    assert_eq!(hellos(), 3);
    assert_eq!(broker.state.count(ApiKind::CreateTopic), 2);

    *broker.state.shut_down_next.lock() = Some(ApiKind::Ping);
    let err = client.health_check().await.unwrap_err();
    assert!(err.to_string().contains("ShuttingDown"), "{err}");
    let health = client.health_check().await.unwrap();
    assert_eq!((health.healthy_connections, hellos()), (1, 4));
}

#[tokio::test]
async fn request_timeout_and_long_poll_allowance() {
    let broker = TestBroker::start(Script::default()).await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..config_for(&broker)
    };
    let client = RustMqClient::new(config).await.unwrap();
    let err = client.request(fetch(1_000)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { timeout_ms: 300 }),
        "{err}"
    );
    let long = client
        .request_with_timeout(fetch(1_000), Duration::from_millis(1_300))
        .await
        .unwrap();
    assert!(matches!(long, Response::Fetch(_)));
}

/// A scripted broker taking one request in flight per connection.
async fn one_slot_per_connection() -> TestBroker {
    TestBroker::start(Script {
        limits: BrokerLimits {
            max_in_flight: 1,
            ..Script::default().limits
        },
        ..Script::default()
    })
    .await
}

#[tokio::test]
async fn busy_connections_make_the_pool_grow_up_to_max_connections() {
    let broker = one_slot_per_connection().await;
    let config = ClientConfig {
        max_connections: 2,
        ..config_for(&broker)
    };
    let client = RustMqClient::new(config).await.unwrap();
    let requests = (0..3).map(|_| client.request(fetch(300)));
    for result in futures::future::join_all(requests).await {
        assert!(matches!(result, Ok(Response::Fetch(_))));
    }
    let stats = client.connection_stats().await.unwrap();
    assert_eq!(stats.active_connections, 2);
    assert_eq!(
        broker
            .state
            .hellos
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

/// With every connection busy, a request waits for a slot on any of them: one connection
/// held by a long poll does not keep it waiting while the other's request ends at once.
#[tokio::test]
async fn a_request_waits_for_a_slot_on_any_busy_connection() {
    let broker = one_slot_per_connection().await;
    let config = ClientConfig {
        max_connections: 2,
        request_timeout: Duration::from_secs(2),
        ..config_for(&broker)
    };
    let client = RustMqClient::new(config).await.unwrap();
    client.create_topic("t", 1).await.unwrap();
    let long = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request_with_timeout(fetch(20_000), Duration::from_secs(30))
                .await
        }
    });
    // The long poll is on its connection; the short one opens the other.
    while broker.state.count(ApiKind::Fetch) < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let short = tokio::spawn({
        let client = client.clone();
        async move { client.request(fetch(300)).await }
    });
    while broker.state.count(ApiKind::Fetch) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Both connections are busy: this one waits, and takes the short poll's slot.
    let topics = client.list_topics().await;
    assert!(topics.is_ok(), "{topics:?}");
    assert!(matches!(short.await.unwrap(), Ok(Response::Fetch(_))));
    long.abort();
}

/// A health check that must open a connection first does so within `health_check_timeout`
/// too: with the broker gone and its port silent, it reports a timeout of the check's own
/// length, not a connection attempt of `connect_timeout` (one per broker of the list).
#[tokio::test]
async fn a_health_check_that_reconnects_is_bounded_by_its_timeout() {
    let broker = TestBroker::start(Script::default()).await;
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(3),
        health_check_timeout: Duration::from_millis(200),
        ..config_for(&broker)
    };
    let client = RustMqClient::new(config).await.unwrap();
    client.ping().await.unwrap();
    let addr = broker.stop().await;
    // Something that never answers takes the port: QUIC handshakes to it time out.
    let mut silent = None;
    for _ in 0..200 {
        match std::net::UdpSocket::bind(addr) {
            Ok(socket) => {
                silent = Some(socket);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(silent.is_some(), "the port is free again");
    // The connection is seen closed, then the check must open another.
    let mut checked = client.health_check().await;
    for _ in 0..50 {
        if checked.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        checked = client.health_check().await;
    }
    let err = client.health_check().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { timeout_ms: 200 }),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_before_sending() {
    let broker = TestBroker::start(Script {
        limits: BrokerLimits {
            max_frame_bytes: 64,
            ..Script::default().limits
        },
        ..Script::default()
    })
    .await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    let err = client.create_topic(&"x".repeat(100), 1).await.unwrap_err();
    assert!(
        matches!(err, ClientError::MessageTooLarge { max_size: 64, .. }),
        "{err}"
    );
    assert_eq!(broker.state.count(ApiKind::CreateTopic), 0);
}

#[tokio::test]
async fn failed_health_checks_drop_connections_that_are_reopened_on_demand() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    *broker.state.close_on_next.lock() = Some(ApiKind::Ping);
    let err = client.health_check().await.unwrap_err();
    assert!(matches!(err, ClientError::Connection(_)), "{err}");
    assert_eq!(
        client.connection_stats().await.unwrap().active_connections,
        0
    );
    let health = client.health_check().await.unwrap();
    assert_eq!(health.healthy_connections, 1);
    assert_eq!(client.connection_stats().await.unwrap().reconnects, 1);
}

#[tokio::test]
async fn close_fails_later_calls() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    let clone = client.clone();
    client.close().await.unwrap();
    assert!(clone.is_closed());
    assert!(matches!(
        clone.list_topics().await,
        Err(ClientError::Closed)
    ));
    assert!(matches!(
        clone.health_check().await,
        Err(ClientError::Closed)
    ));
    assert_eq!(
        clone.connection_stats().await.unwrap().active_connections,
        0
    );
    client.close().await.unwrap();
}

/// A closed client lets its UDP socket go while the application still holds the client: the
/// port can be bound again.
#[tokio::test]
async fn close_releases_the_udp_socket() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    client.list_topics().await.unwrap();
    let ports = client.inner.pool.local_ports();
    assert_eq!(ports.len(), 1, "{ports:?}");
    let port = ports[0];
    client.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port)) {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("port {port} still bound 10 s after close: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(matches!(
        client.list_topics().await,
        Err(ClientError::Closed)
    ));
}

/// The client takes no QUIC datagrams (RustMQ sends none): a broker offered them could fill
/// quinn's datagram buffer, outside every bound the client sets.
#[tokio::test]
async fn the_client_takes_no_datagrams() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    client.list_topics().await.unwrap();
    let count = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&broker.state.hellos), 1);
    assert_eq!(count(&broker.state.datagrams_offered), 0);
}

#[tokio::test]
async fn invalid_config_is_rejected_before_connecting() {
    let err = RustMqClient::new(ClientConfig {
        enable_tls: false,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::InvalidConfig(_)));
}

/// Every answer ends its stream, and the client takes that end with the answer: a stream left
/// unread to its end makes quinn send STOP_SENDING when it is dropped, a frame (and a wake-up
/// of both connection drivers) per request.
#[tokio::test]
async fn answered_streams_are_read_to_their_end() {
    let broker = TestBroker::start(Script::default()).await;
    let client = RustMqClient::new(config_for(&broker)).await.unwrap();
    for _ in 0..20 {
        client.list_topics().await.unwrap();
    }
    let stats = client.inner.pool.quic_stats();
    assert!(!stats.is_empty());
    let stops: u64 = stats.iter().map(|s| s.frame_tx.stop_sending).sum();
    assert_eq!(stops, 0, "STOP_SENDING frames sent for answered requests");
}

/// A client of a real broker on this machine, trusting its development certificate.
fn config_for_real(broker: &rustmq_broker::BrokerHandle) -> ClientConfig {
    ClientConfig {
        brokers: vec![broker.local_addr().to_string()],
        tls_config: Some(TlsConfig {
            ca_cert: Some(broker.cert_path().display().to_string()),
            server_name: Some("localhost".into()),
            ..TlsConfig::default()
        }),
        ..ClientConfig::default()
    }
}

/// Datagrams the client received and sent per request, over `requests` sequential requests
/// to a real broker, with the given acknowledgement thresholds on each end.
async fn datagrams_per_request(client_threshold: u32, broker_threshold: u32) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rustmq_broker::BrokerConfig::default();
    config.quic.ack_eliciting_threshold = broker_threshold;
    let broker = rustmq_broker::Broker::builder()
        .config(config)
        .data_dir(dir.path())
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let mut config = config_for_real(&broker);
    config.quic_config.ack_eliciting_threshold = client_threshold;
    let client = RustMqClient::new(config).await.unwrap();
    let datagrams = |client: &RustMqClient| {
        let stats = client.inner.pool.quic_stats();
        assert_eq!(stats.len(), 1);
        (stats[0].udp_rx.datagrams, stats[0].udp_tx.datagrams)
    };
    // Both ends have sent their ACK_FREQUENCY frames, and had them acknowledged, once a few
    // round trips are over.
    for _ in 0..5 {
        client.list_topics().await.unwrap();
    }
    let stats = &client.inner.pool.quic_stats()[0];
    assert!(stats.frame_tx.ack_frequency >= 1 && stats.frame_rx.ack_frequency >= 1);
    let requests = 100;
    let before = datagrams(&client);
    for _ in 0..requests {
        client.list_topics().await.unwrap();
    }
    let after = datagrams(&client);
    broker.shutdown().await;
    (
        (after.0 - before.0) as f64 / f64::from(requests),
        (after.1 - before.1) as f64 / f64::from(requests),
    )
}

/// Each end tells the other, through QUIC's ACK frequency extension, how many of its packets
/// may go unacknowledged (`ack_eliciting_threshold`). At 0 every request draws an
/// acknowledgement packet of its own ahead of the answer (and every answer one from the
/// client); at the default of 2 the acknowledgements ride on the answers and on the next
/// requests: about one datagram each way per request.
#[tokio::test]
async fn acknowledgements_ride_on_answers_unless_asked_for_at_once() {
    let (received, sent) = datagrams_per_request(2, 2).await;
    assert!(
        received < 1.5 && sent < 1.5,
        "{received} in, {sent} out per request"
    );
    let (received, _) = datagrams_per_request(0, 2).await;
    assert!(
        received > 1.7,
        "client asks for every packet: {received} in per request"
    );
    let (_, sent) = datagrams_per_request(2, 0).await;
    assert!(
        sent > 1.7,
        "broker asks for every packet: {sent} out per request"
    );
}

/// The real broker sends its answers in datagrams up to its own bound (path MTU discovery on
/// its side of the connection): two megabytes fetched over loopback arrive in datagrams far
/// larger than quinn's default limit of 1,472 bytes.
#[tokio::test]
async fn the_broker_answers_in_large_datagrams_over_loopback() {
    use rustmq_protocol::{Acks, ProduceRequest, RecordBatchBuilder};

    let dir = tempfile::tempdir().unwrap();
    let broker = rustmq_broker::Broker::builder()
        .data_dir(dir.path())
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let client = RustMqClient::new(config_for_real(&broker)).await.unwrap();
    client.create_topic("t", 1).await.unwrap();
    for _ in 0..8 {
        let mut batch = RecordBatchBuilder::new();
        for i in 0..256 {
            let value: Vec<u8> = (0..1024).map(|_| fastrand::u8(..)).collect();
            batch.push(i, None, Some(&value), std::iter::empty());
        }
        let produce = Request::Produce(ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 10_000,
            batch: batch.build().unwrap(),
        });
        assert!(matches!(
            client.raw_request(produce).await.unwrap(),
            Response::Produce(_)
        ));
    }
    // Bytes and datagrams the client has received.
    let received = |client: &RustMqClient| {
        client
            .inner
            .pool
            .quic_stats()
            .iter()
            .fold((0, 0), |(b, d), s| {
                (b + s.udp_rx.bytes, d + s.udp_rx.datagrams)
            })
    };
    // Fetched twice: discovery on the broker's side runs during the first pass.
    let mut fetched = 0;
    let mut during_second = (0, 0);
    for pass in 0..2 {
        let before = received(&client);
        let mut offset = 0;
        while offset < 2048 {
            let fetch = Request::Fetch(FetchRequest {
                topic: "t".into(),
                partition: 0,
                offset,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
            });
            let Response::Fetch(answer) = client.raw_request(fetch).await.unwrap() else {
                panic!("not a fetch answer");
            };
            for batch in rustmq_protocol::BatchIter::new(answer.records) {
                offset = batch.unwrap().header().next_offset();
            }
            fetched += 1;
        }
        let after = received(&client);
        if pass == 1 {
            during_second = (after.0 - before.0, after.1 - before.1);
        }
    }
    let (bytes, datagrams) = during_second;
    assert!(fetched >= 4 && datagrams > 0);
    assert!(
        bytes / datagrams > 3_000,
        "{bytes} bytes in {datagrams} datagrams while fetching"
    );
    broker.shutdown().await;
}
