//! Authentication in the hello exchange against a real broker: argon2 users file, SHA-256
//! token digests, `required`, the per-connection failure limit, and no secret in the logs.

use std::sync::{Arc, Mutex};

use crate::security_support::*;
use rustmq::testing::{BrokerConfig, TestBroker};
use rustmq::{ClientError, RustMqClient};
use rustmq_broker::security::{hash_token, TokenEntry};
use rustmq_protocol::{Credentials, ErrorCode, Response};

async fn auth_broker(pki: &Pki, required: bool) -> TestBroker {
    let mut config: BrokerConfig = broker_config(pki);
    config.auth.required = required;
    config.auth.users_file = Some(users_file(
        pki.dir.path(),
        &[("alice", "correct horse"), ("bob", "battery staple")],
    ));
    config.auth.tokens = vec![TokenEntry {
        principal: "ci-bot".into(),
        sha256: hash_token("tok-3f9a"),
    }];
    TestBroker::start_with(config).await.unwrap()
}

fn auth_message(result: Result<RustMqClient, ClientError>) -> String {
    match result {
        Err(ClientError::Authentication(message)) => message,
        Err(other) => panic!("expected an authentication error, got {other:?}"),
        Ok(_) => panic!("expected an authentication error, the client connected"),
    }
}

#[tokio::test]
async fn passwords_users_and_tokens_are_checked() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let broker = auth_broker(&pki, true).await;
    let base = client_config(&broker, &pki.ca());

    let alice = RustMqClient::new(with_password(base.clone(), "alice", "correct horse"))
        .await
        .unwrap();
    assert_eq!(principal(&alice).await, "alice");
    alice.create_topic("t", 1).await.unwrap();

    let wrong = auth_message(
        RustMqClient::new(with_password(base.clone(), "alice", "incorrect horse")).await,
    );
    assert!(
        wrong.contains("authentication failed for user \"alice\""),
        "{wrong}"
    );
    let unknown = auth_message(
        RustMqClient::new(with_password(base.clone(), "carol", "correct horse")).await,
    );
    assert!(unknown.contains("\"carol\""), "{unknown}");
    // An unknown user and a wrong password read the same to the client.
    assert_eq!(wrong.replace("alice", "carol"), unknown);

    let bot = RustMqClient::new(with_token(base.clone(), "tok-3f9a"))
        .await
        .unwrap();
    assert_eq!(principal(&bot).await, "ci-bot");
    let bad = auth_message(RustMqClient::new(with_token(base.clone(), "tok-0000")).await);
    assert!(bad.contains("unknown token"), "{bad}");

    let none = auth_message(RustMqClient::new(base).await);
    assert!(none.contains("authentication required"), "{none}");
}

#[tokio::test]
async fn without_required_anonymous_clients_connect_but_given_credentials_are_still_checked() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let broker = auth_broker(&pki, false).await;
    let base = client_config(&broker, &pki.ca());
    let anonymous = RustMqClient::new(base.clone()).await.unwrap();
    assert_eq!(principal(&anonymous).await, "anonymous");
    auth_message(RustMqClient::new(with_password(base, "alice", "guess")).await);
}

#[tokio::test]
async fn repeated_failures_close_the_connection() {
    tests::init_tracing();
    let pki = Pki::new("CA");
    let broker = auth_broker(&pki, true).await;
    let pem = std::fs::read_to_string(pki.ca()).unwrap();
    let conn = tests::raw_connection(broker.addr(), &pem).await;
    let bad = || {
        Some(Credentials::Plain {
            username: "alice".into(),
            password: "nope".into(),
        })
    };
    for attempt in 1..=3 {
        match raw_hello_with(&conn, bad()).await {
            Some(Response::Error(e)) => {
                assert_eq!(e.code, ErrorCode::AuthenticationFailed);
                assert_eq!(
                    e.message.contains("closing the connection"),
                    attempt == 3,
                    "{}",
                    e.message
                );
            }
            other => panic!("attempt {attempt}: unexpected answer {other:?}"),
        }
    }
    // The broker closes the connection: even the right password gets no answer on it.
    let reason = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed())
        .await
        .expect("closed");
    assert!(
        reason
            .to_string()
            .contains("too many failed authentication attempts"),
        "{reason}"
    );
    let good = Some(Credentials::Plain {
        username: "alice".into(),
        password: "correct horse".into(),
    });
    assert!(raw_hello_with(&conn, good.clone()).await.is_none());

    // A new connection starts afresh.
    let conn = tests::raw_connection(broker.addr(), &pem).await;
    assert!(
        matches!(raw_hello_with(&conn, good).await, Some(Response::Hello(h)) if h.principal == "alice")
    );
}

/// Hellos sent at once on parallel streams get no more password checks between them than
/// the connection's allowance (3): each attempt counts before its (slow) check runs.
#[tokio::test(flavor = "current_thread")]
async fn parallel_hellos_get_no_more_guesses_than_the_allowance() {
    let (captured, _guard) = Captured::install(tracing::Level::WARN);
    let pki = Pki::new("CA");
    let broker = auth_broker(&pki, true).await;
    let pem = std::fs::read_to_string(pki.ca()).unwrap();
    let conn = tests::raw_connection(broker.addr(), &pem).await;
    let hellos = (0..12).map(|_| {
        raw_hello_with(
            &conn,
            Some(Credentials::Plain {
                username: "alice".into(),
                password: "nope".into(),
            }),
        )
    });
    let answers = futures::future::join_all(hellos).await;
    // Failed, or told to come back while the checks admitted run (or cut by the close).
    assert!(answers.iter().all(|a| match a {
        Some(Response::Error(e)) => {
            matches!(
                e.code,
                ErrorCode::AuthenticationFailed | ErrorCode::Throttled
            )
        }
        other => other.is_none(),
    }));
    // Checks still running when the connection closed finish and log too: give them time.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let logs = captured.text();
    let checked = logs.matches("authentication failed").count();
    assert!(
        (1..=3).contains(&checked),
        "{checked} passwords checked:\n{logs}"
    );
}

/// Collects every log line written while it is the default subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Made the default subscriber of this thread (logging up to `level`) until the guard
    /// is dropped.
    fn install(level: tracing::Level) -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// What was logged so far.
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn failures_are_logged_without_the_secret() {
    let (captured, _guard) = Captured::install(tracing::Level::TRACE);

    let pki = Pki::new("CA");
    let broker = auth_broker(&pki, true).await;
    let base = client_config(&broker, &pki.ca());
    auth_message(RustMqClient::new(with_password(base.clone(), "alice", "SECRET-pw-1")).await);
    auth_message(RustMqClient::new(with_token(base.clone(), "SECRET-tok-2")).await);
    RustMqClient::new(with_password(base, "alice", "correct horse"))
        .await
        .unwrap();

    let logs = captured.text();
    assert!(
        logs.contains("authentication failed") && logs.contains("wrong password"),
        "{logs}"
    );
    for secret in ["SECRET-pw-1", "SECRET-tok-2", "correct horse"] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

/// A hello waiting for its password check holds the hello deadline off, but only up to three
/// deadlines from the handshake: peers whose bad passwords queue behind the argon2 checks
/// (here every turn is taken) do not keep their connection slots for as long as the queue
/// takes, and their checks leave the queue with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_queued_for_its_password_check_is_given_up_at_the_cutoff() {
    tests::init_tracing();
    let pki = Pki::new("cutoff");
    let mut config: BrokerConfig = broker_config(&pki);
    config.auth.required = true;
    config.auth.users_file = Some(users_file(pki.dir.path(), &[("alice", "correct horse")]));
    config.limits.hello_timeout_ms = 1_000;
    let broker = TestBroker::start_with(config).await.unwrap();
    let turns = broker.handle().unwrap().hold_password_checks().await;
    let pem = std::fs::read_to_string(pki.ca()).unwrap();
    let conn = tests::raw_connection(broker.addr(), &pem).await;
    let hello = tokio::spawn({
        let conn = conn.clone();
        async move {
            raw_hello_with(
                &conn,
                Some(Credentials::Plain {
                    username: "alice".into(),
                    password: "wrong".into(),
                }),
            )
            .await
        }
    });
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), conn.closed())
        .await
        .expect("closed while its check still waits");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.reason.as_ref() == b"no hello in time"),
        "{closed:?}"
    );
    assert!(
        hello.await.unwrap().is_none(),
        "the hello was never answered"
    );
    // The check it queued for is given up with the connection: none runs once there is room.
    drop(turns);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(broker.handle().unwrap().password_checks_run(), 0);
}
