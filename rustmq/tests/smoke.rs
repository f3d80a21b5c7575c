//! Smoke test of the client against the real embedded broker: the default configuration's
//! loopback development trust, CA-file trust, topic admin, and a broker restart on the same
//! port. The full suites live in the workspace's `tests/` crate.

use std::time::Duration;

use rustmq::{ClientConfig, ClientError, RustMqClient, TlsConfig};

async fn start(dir: &std::path::Path, listen: std::net::SocketAddr) -> rustmq_broker::BrokerHandle {
    rustmq_broker::Broker::builder()
        .data_dir(dir)
        .listen(listen)
        .start()
        .await
        .expect("broker starts")
}

#[tokio::test]
async fn client_round_trips_against_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = broker.local_addr();

    // ClientConfig::default() plus the broker's address: loopback development trust.
    let client = RustMqClient::new(ClientConfig {
        brokers: vec![addr.to_string()],
        ..Default::default()
    })
    .await
    .unwrap();
    client.ping().await.unwrap();
    assert!(client.broker_limits().is_some_and(|l| l.max_in_flight > 0));

    client.create_topic("smoke", 2).await.unwrap();
    let topics = client.list_topics().await.unwrap();
    assert!(
        topics
            .iter()
            .any(|t| t.name == "smoke" && t.partitions == 2),
        "{topics:?}"
    );
    assert_eq!(
        client
            .describe_topic("smoke")
            .await
            .unwrap()
            .partition_count(),
        2
    );
    let missing = client.describe_topic("nope").await.unwrap_err();
    assert!(
        matches!(&missing, ClientError::TopicNotFound(t) if t == "nope"),
        "{missing}"
    );
    let health = client.health_check().await.unwrap();
    assert_eq!(health.healthy_connections, health.total_connections);

    // Trusting exactly the broker's certificate works too.
    let pinned = RustMqClient::new(ClientConfig {
        brokers: vec![addr.to_string()],
        tls_config: Some(TlsConfig {
            ca_cert: Some(broker.cert_path().display().to_string()),
            server_name: Some("localhost".into()),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    pinned.ping().await.unwrap();
    pinned.close().await.unwrap();

    // Restart on the same port: the existing client's next requests succeed.
    broker.shutdown().await;
    let broker = start(dir.path(), addr).await;
    let topics = tokio::time::timeout(Duration::from_secs(20), client.list_topics())
        .await
        .expect("no hang")
        .unwrap();
    assert!(topics.iter().any(|t| t.name == "smoke"));
    assert_eq!(client.connection_stats().await.unwrap().reconnects, 1);

    client.close().await.unwrap();
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
    broker.shutdown().await;
}
