//! What a consumer does when the ground goes from under it, against a real broker: its
//! client closed, and a rejoin the broker refuses for good.

use std::time::Duration;

use crate::consumer_support::*;
use crate::security_support::*;
use rustmq::testing::{BrokerConfig, TestBroker};
use rustmq::{ClientError, RustMqClient};
use rustmq_broker::security::{AclRule, Operation, PatternType, Permission, ResourceType};

#[tokio::test]
async fn closing_the_client_ends_its_consumers() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("orphans", 2).await.unwrap();
    produce_n(&client, "orphans", 0, 0, 3).await;
    let consumer = client
        .create_consumer_with_config("orphans", "orphans", config("orphans"))
        .await
        .unwrap();
    recv_ack(&consumer, 3).await;
    // One receive already waiting when the client closes, one started after.
    let waiting = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.receive().await.map(|m| m.is_some()) }
    });

    client.close().await.unwrap();
    let after = tokio::time::timeout(Duration::from_secs(5), consumer.receive())
        .await
        .expect("a receive returns once the client is closed");
    assert!(matches!(after, Ok(None)), "{after:?}");
    let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a waiting receive returns once the client is closed")
        .unwrap();
    assert!(matches!(waited, Ok(false)), "{waited:?}");
    assert!(consumer.assigned_partitions().await.len() <= 2);
    // The consumer can neither commit its acks nor leave through a closed client.
    assert!(matches!(consumer.close().await, Err(ClientError::Closed)));
    assert!(matches!(consumer.receive().await, Ok(None)));
}

fn rule(principal: &str, resource: ResourceType, name: &str, ops: &[Operation]) -> AclRule {
    AclRule {
        principal: principal.into(),
        resource,
        name: name.into(),
        pattern: PatternType::Literal,
        operations: ops.to_vec(),
        permission: Permission::Allow,
    }
}

/// Rules where `admin` may do everything and `bob` may use group "workers", and read topic
/// "jobs" if `bob_reads`.
fn rules(bob_reads: bool) -> Vec<AclRule> {
    rules_with(bob_reads, true)
}

/// [`rules`], with `bob` allowed to commit the group's offsets if `bob_commits`.
fn rules_with(bob_reads: bool, bob_commits: bool) -> Vec<AclRule> {
    use Operation::*;
    use ResourceType::*;
    let bob_group: &[Operation] = if bob_commits {
        &[Read, Commit]
    } else {
        &[Read]
    };
    let mut rules = vec![
        rule("admin", Topic, "*", &[Create, Describe, Read, Write]),
        rule("admin", Group, "*", &[Read, Commit, Describe]),
        rule("bob", Group, "workers", bob_group),
    ];
    if bob_reads {
        rules.push(rule("bob", Topic, "jobs", &[Read, Describe]));
    }
    rules
}

/// The next `receive` of `consumer` (within the test's timeout, `what` naming the wait) is
/// the refusal of bob's right to read topic "jobs".
async fn refused_to_read_jobs(consumer: &rustmq::Consumer, what: &str) {
    match within(what, consumer.receive()).await {
        Err(ClientError::Authorization(message)) => assert!(
            message.contains("not authorized to read topic \"jobs\""),
            "{message}"
        ),
        other => panic!("expected {what}, got {other:?}"),
    }
}

/// Starts a broker with `config` again on its port (`start_in` waits for the old endpoint to
/// let it go).
async fn start_again(config: &BrokerConfig) -> TestBroker {
    within(
        "the broker to start again",
        TestBroker::start_in(config.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("restart failed: {e}"))
}

/// A broker with passwords and [`rules`]: its settings (its port filled in), its `admin` and
/// `bob` clients, and what must live as long as it does (bind `_pki` and `_dir`: `..` would
/// drop them, and the broker's certificate with them).
struct Secured {
    broker: TestBroker,
    settings: BrokerConfig,
    admin: RustMqClient,
    bob: RustMqClient,
    _pki: Pki,
    _dir: tempfile::TempDir,
}

async fn secured() -> Secured {
    let pki = Pki::new("CA");
    let dir = tempfile::tempdir().unwrap();
    let mut settings = broker_config(&pki);
    settings.data_dir = dir.path().to_owned();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.auth.required = true;
    settings.auth.users_file = Some(users_file(
        pki.dir.path(),
        &[("admin", "a-pw"), ("bob", "b-pw")],
    ));
    settings.acl = rules(true);
    let broker = TestBroker::start_in(settings.clone()).await.unwrap();
    settings.listen = broker.addr();
    let base = client_config(&broker, &pki.ca());
    let admin = RustMqClient::new(with_password(base.clone(), "admin", "a-pw"))
        .await
        .unwrap();
    admin.create_topic("jobs", 1).await.unwrap();
    let bob = RustMqClient::new(with_password(base, "bob", "b-pw"))
        .await
        .unwrap();
    Secured {
        broker,
        settings,
        admin,
        bob,
        _pki: pki,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_the_broker_refuses_for_good_reaches_receive_once() {
    tests::init_tracing();
    let Secured {
        mut broker,
        mut settings,
        bob,
        _pki,
        _dir,
        ..
    } = secured().await;
    let consumer = bob
        .create_consumer_with_config("jobs", "workers", config("workers"))
        .await
        .unwrap();
    // Paused, its fetch task asks nothing: only the group task meets the refusal.
    consumer.pause_partitions(vec![0]).await.unwrap();

    // The broker comes back without bob's right to read the topic, and without the group's
    // members: the consumer must join again, and that join is refused.
    broker.stop().await;
    settings.acl = rules(false);
    let _restarted = start_again(&settings).await;
    refused_to_read_jobs(&consumer, "the refusal").await;

    // Reported once: the rejoins that keep failing the same way meanwhile are not.
    nothing_within(&consumer, Duration::from_millis(500)).await;
    consumer.close().await.unwrap();
}

/// The same refusal met by two of the consumer's tasks (its fetch, re-sent to the restarted
/// broker, and its rejoin) reaches `receive` once: the application hears of the cause, not of
/// every request that met it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_met_by_the_fetch_and_the_rejoin_reaches_receive_once() {
    tests::init_tracing();
    let Secured {
        mut broker,
        mut settings,
        bob,
        _pki,
        _dir,
        ..
    } = secured().await;
    let consumer = bob
        .create_consumer_with_config("jobs", "workers", config("workers"))
        .await
        .unwrap();
    // A long-poll fetch is in flight: the transport sends it again once the broker is back.
    broker.stop().await;
    settings.acl = rules(false);
    let _restarted = start_again(&settings).await;
    refused_to_read_jobs(&consumer, "the refusal").await;
    // Both the fetch and the rejoin have met it by now (heartbeats every 100 ms find the
    // member unknown to the restarted broker, and the rejoin backs off as `retry_config` says:
    // at most its `max_delay`).
    nothing_within(&consumer, Duration::from_millis(1500)).await;

    // Lifted (the right granted again, the consumer back in its group), then withdrawn again:
    // told again.
    let mut restarted = _restarted;
    for bob_reads in [true, false] {
        restarted.stop().await;
        settings.acl = rules(bob_reads);
        restarted = start_again(&settings).await;
        if bob_reads {
            within("the consumer to rejoin", async {
                while consumer.assigned_partitions().await.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
    }
    refused_to_read_jobs(&consumer, "the refusal again").await;
    // Its close may be refused too (committing what it holds needs the right to read).
    let _ = consumer.close().await;
}

/// Auto-commits the broker refuses for good (the group's commit right withdrawn) reach
/// `receive` once, instead of the consumer going on with nothing committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_commit_the_broker_refuses_for_good_reaches_receive() {
    tests::init_tracing();
    let Secured {
        mut broker,
        mut settings,
        admin,
        bob,
        _pki,
        _dir,
    } = secured().await;
    produce_n(&admin, "jobs", 0, 0, 5).await;
    let auto_commit = rustmq::consumer::ConsumerConfig {
        enable_auto_commit: true,
        auto_commit_interval: Duration::from_millis(100),
        ..config("workers")
    };
    let consumer = bob
        .create_consumer_with_config("jobs", "workers", auto_commit)
        .await
        .unwrap();
    broker.stop().await;
    settings.acl = rules_with(true, false);
    let _restarted = start_again(&settings).await;
    // The consumer rejoins (it may still read) and gets the records again; acking them gives
    // its auto-commits something to send, which the broker refuses.
    let refusal = within("the refused commit", async {
        loop {
            match consumer.receive().await {
                Ok(Some(m)) => m.ack().await.unwrap(),
                Ok(None) => panic!("the consumer closed"),
                Err(e) => return e,
            }
        }
    })
    .await;
    match refusal {
        ClientError::Authorization(message) => {
            assert!(message.contains("commit group \"workers\""), "{message}")
        }
        other => panic!("expected the refused commit, got {other:?}"),
    }
    // Reported once: the consumer goes on (its records may come again, as it rejoins the
    // restarted broker's group), and the commits it keeps sending are refused silently.
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(received) = tokio::time::timeout_at(quiet_until, consumer.receive()).await {
        match received {
            Ok(Some(m)) => m.ack().await.unwrap(),
            other => panic!("expected records or nothing, got {other:?}"),
        }
    }
}

/// A deleted topic is reported by its name, as `describe_topic` and the producer report it
/// (not by the broker's text): to the consumer's `receive`, and to a send.
#[tokio::test]
async fn a_deleted_topic_is_reported_by_its_name() {
    tests::init_tracing();
    let config = BrokerConfig {
        auto_create_topics: false,
        ..BrokerConfig::default()
    };
    let broker = TestBroker::start_with(config).await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("doomed", 1).await.unwrap();
    produce_n(&client, "doomed", 0, 0, 1).await;
    let consumer = client
        .create_consumer_with_config(
            "doomed",
            "doomed",
            crate::consumer_support::config("doomed"),
        )
        .await
        .unwrap();
    recv_ack(&consumer, 1).await;
    let producer = client.create_producer("doomed").await.unwrap();
    client.delete_topic("doomed").await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(20), consumer.receive())
        .await
        .expect("the failure is reported");
    assert!(
        matches!(&received, Err(ClientError::TopicNotFound(t)) if t == "doomed"),
        "{received:?}"
    );
    let message = rustmq::Message::builder()
        .topic("doomed")
        .payload("late")
        .build()
        .unwrap();
    let sent = producer.send(message).await;
    assert!(
        matches!(&sent, Err(ClientError::TopicNotFound(t)) if t == "doomed"),
        "{sent:?}"
    );
}
