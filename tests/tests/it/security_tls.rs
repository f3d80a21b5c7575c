//! Verified TLS and mutual TLS against a real broker with a CA made by rcgen: the client
//! refuses a broker it cannot verify, the broker refuses a client without a certificate when
//! it requires one, and a client certificate's CN or SAN becomes the principal.

use crate::security_support::*;
use rustmq::config::TlsConfig;
use rustmq::testing::TestBroker;
use rustmq::{ClientError, RustMqClient};
use rustmq_broker::tls::{ClientAuth, PrincipalFrom};

fn tls_message(result: Result<RustMqClient, ClientError>) -> String {
    match result {
        Err(ClientError::Tls(message)) => message,
        Err(other) => panic!("expected a tls error, got {other:?}"),
        Ok(_) => panic!("expected a tls error, the client connected"),
    }
}

#[tokio::test]
async fn a_client_trusting_the_ca_connects_and_refuses_a_wrong_ca() {
    tests::init_tracing();
    let pki = Pki::new("good CA");
    let broker = TestBroker::start_with(broker_config(&pki)).await.unwrap();
    let client = RustMqClient::new(client_config(&broker, &pki.ca()))
        .await
        .unwrap();
    client.create_topic("t", 1).await.unwrap();

    let other = Pki::new("another CA");
    let message = tls_message(RustMqClient::new(client_config(&broker, &other.ca())).await);
    assert!(
        message.contains("UnknownIssuer") && message.contains("tls_config.ca_cert"),
        "{message}"
    );
}

#[tokio::test]
async fn a_wrong_server_name_is_refused() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let broker = TestBroker::start_with(broker_config(&pki)).await.unwrap();
    let mut config = client_config(&broker, &pki.ca());
    config.tls_config.as_mut().unwrap().server_name = Some("broker.elsewhere.example".into());
    let message = tls_message(RustMqClient::new(config).await);
    assert!(
        message.contains("not valid for name \"broker.elsewhere.example\""),
        "{message}"
    );
}

#[tokio::test]
async fn an_expired_broker_certificate_is_refused() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let (cert, key) = pki.issue("old-broker", "old broker", &["localhost"], true, true);
    let mut config = rustmq::testing::BrokerConfig::default();
    config.tls.cert = Some(cert.into());
    config.tls.key = Some(key.into());
    let broker = TestBroker::start_with(config).await.unwrap();
    let message = tls_message(RustMqClient::new(client_config(&broker, &pki.ca())).await);
    assert!(message.contains("certificate expired"), "{message}");
}

#[tokio::test]
async fn insecure_skip_verify_connects_to_a_broker_it_cannot_verify() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let broker = TestBroker::start_with(broker_config(&pki)).await.unwrap();
    let mut config = broker.client_config();
    config.tls_config = Some(TlsConfig {
        insecure_skip_verify: true,
        ..TlsConfig::default()
    });
    let client = RustMqClient::new(config).await.unwrap();
    client.ping().await.unwrap();
}

/// The seed SDK's places for the same settings: `quic_config.server_name` names the broker
/// (a wrong one is refused, the right one connects), and `quic_config.insecure` connects to a
/// broker the client cannot verify.
#[tokio::test]
async fn the_quic_configs_server_name_and_insecure_are_used() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let broker = TestBroker::start_with(broker_config(&pki)).await.unwrap();
    let named = |name: &str| {
        let mut config = client_config(&broker, &pki.ca());
        config.tls_config.as_mut().unwrap().server_name = None;
        config.quic_config.server_name = Some(name.into());
        config
    };
    let message = tls_message(RustMqClient::new(named("broker.elsewhere.example")).await);
    assert!(
        message.contains("not valid for name \"broker.elsewhere.example\""),
        "{message}"
    );
    let client = RustMqClient::new(named("localhost")).await.unwrap();
    client.ping().await.unwrap();

    let mut config = broker.client_config();
    config.tls_config = Some(TlsConfig::default());
    let message = tls_message(RustMqClient::new(config.clone()).await);
    assert!(message.contains("UnknownIssuer"), "{message}");
    config.quic_config.insecure = true;
    let client = RustMqClient::new(config).await.unwrap();
    client.ping().await.unwrap();
}

fn mtls_broker_config(
    pki: &Pki,
    mode: ClientAuth,
    from: PrincipalFrom,
) -> rustmq::testing::BrokerConfig {
    let mut config = broker_config(pki);
    config.tls.client_auth = mode;
    config.tls.client_ca = Some(pki.ca_path.clone());
    config.tls.principal_from = from;
    config
}

fn with_client_cert(
    mut config: rustmq::ClientConfig,
    cert: (String, String),
) -> rustmq::ClientConfig {
    let tls = config.tls_config.as_mut().unwrap();
    tls.client_cert = Some(cert.0);
    tls.client_key = Some(cert.1);
    config
}

#[tokio::test]
async fn required_client_auth_refuses_a_client_without_certificate_and_names_one_with_it() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let broker = TestBroker::start_with(mtls_broker_config(
        &pki,
        ClientAuth::Required,
        PrincipalFrom::Cn,
    ))
    .await
    .unwrap();

    let refused = RustMqClient::new(client_config(&broker, &pki.ca())).await;
    let error = refused.expect_err("a client without a certificate must be refused");
    assert!(
        matches!(&error, ClientError::Tls(m) if m.contains("peer sent no certificates")),
        "{error:?}"
    );

    let alice = pki.issue("alice", "alice", &["alice.clients.example"], false, false);
    let client = RustMqClient::new(with_client_cert(client_config(&broker, &pki.ca()), alice))
        .await
        .unwrap();
    assert_eq!(principal(&client).await, "alice");

    // A certificate from another CA is refused as well.
    let other = Pki::new("other CA");
    let mallory = other.issue("mallory", "alice", &[], false, false);
    let refused =
        RustMqClient::new(with_client_cert(client_config(&broker, &pki.ca()), mallory)).await;
    assert!(
        refused.is_err(),
        "a certificate of an unknown CA must be refused"
    );
}

#[tokio::test]
async fn optional_client_auth_accepts_both_and_can_take_the_principal_from_the_san() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let broker = TestBroker::start_with(mtls_broker_config(
        &pki,
        ClientAuth::Optional,
        PrincipalFrom::San,
    ))
    .await
    .unwrap();
    let anonymous = RustMqClient::new(client_config(&broker, &pki.ca()))
        .await
        .unwrap();
    assert_eq!(principal(&anonymous).await, "anonymous");

    let svc = pki.issue(
        "svc",
        "service CN",
        &["billing.clients.example"],
        false,
        false,
    );
    let client = RustMqClient::new(with_client_cert(client_config(&broker, &pki.ca()), svc))
        .await
        .unwrap();
    assert_eq!(principal(&client).await, "billing.clients.example");
}

#[tokio::test]
async fn client_auth_without_a_client_ca_is_a_configuration_error() {
    let mut config = rustmq::testing::BrokerConfig::default();
    config.tls.client_auth = ClientAuth::Required;
    let error = TestBroker::start_with(config).await.unwrap_err();
    assert!(error.to_string().contains("client_ca"), "{error}");
}
