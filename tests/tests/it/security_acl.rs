//! ACL rules from the broker config, enforced on every request of a real broker: each
//! operation allowed and denied, prefix rules, deny overriding allow, filtered lists, and a
//! denied request that changes nothing.

use crate::security_support::*;
use rustmq::testing::TestBroker;
use rustmq::{ClientError, Message, RustMqClient};
use rustmq_broker::security::{AclRule, Operation, PatternType, Permission, ResourceType};
use rustmq_protocol::*;
use tests::{batch, fetch, produce, TestRecord};

fn rule(
    principal: &str,
    resource: ResourceType,
    name: &str,
    pattern: PatternType,
    ops: &[Operation],
    permission: Permission,
) -> AclRule {
    AclRule {
        principal: principal.into(),
        resource,
        name: name.into(),
        pattern,
        operations: ops.to_vec(),
        permission,
    }
}

struct Setup {
    _pki: Pki,
    _broker: TestBroker,
    admin: RustMqClient,
    alice: RustMqClient,
    bob: RustMqClient,
}

/// A broker config of `pki` that requires authentication, with `users` (name, password).
fn with_users(pki: &Pki, users: &[(&str, &str)]) -> rustmq::testing::BrokerConfig {
    let mut config = broker_config(pki);
    config.auth.required = true;
    config.auth.users_file = Some(users_file(pki.dir.path(), users));
    config
}

/// admin: everything; alice: write `orders.*`; bob: read `orders.*`, read+commit group
/// `billing`; nobody may read `orders.secret`.
async fn setup() -> Setup {
    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;
    tests::init_tracing();
    let pki = Pki::new("CA");
    let mut config = with_users(
        &pki,
        &[("admin", "a-pw"), ("alice", "al-pw"), ("bob", "b-pw")],
    );
    config.acl = vec![
        rule(
            "admin",
            Topic,
            "*",
            Literal,
            &[Create, Delete, Describe, Read, Write],
            Allow,
        ),
        rule(
            "admin",
            Group,
            "*",
            Literal,
            &[Read, Commit, Describe],
            Allow,
        ),
        rule("alice", Topic, "orders.", Prefix, &[Write], Allow),
        rule("alice", Producer, "alice.", Prefix, &[Write], Allow),
        rule("bob", Topic, "orders.", Prefix, &[Read], Allow),
        rule("bob", Group, "billing", Literal, &[Read, Commit], Allow),
        rule("*", Topic, "orders.secret", Literal, &[Read], Deny),
    ];
    let broker = TestBroker::start_with(config).await.unwrap();
    let base = client_config(&broker, &pki.ca());
    let connect = |user: &str, pw: &str| RustMqClient::new(with_password(base.clone(), user, pw));
    let admin = connect("admin", "a-pw").await.unwrap();
    let alice = connect("alice", "al-pw").await.unwrap();
    let bob = connect("bob", "b-pw").await.unwrap();
    for topic in ["orders.eu", "orders.secret", "payroll"] {
        admin.create_topic(topic, 1).await.unwrap();
    }
    Setup {
        _pki: pki,
        _broker: broker,
        admin,
        alice,
        bob,
    }
}

#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: rustmq::Result<T>, expected: &str) {
    match result {
        Err(ClientError::Authorization(message)) => assert_eq!(message, expected),
        other => panic!("expected an authorization error ({expected}), got {other:?}"),
    }
}

fn one(value: &str) -> bytes::Bytes {
    batch(&[TestRecord::new(value, 1)], Compression::None)
}

async fn log_end(client: &RustMqClient, topic: &str) -> u64 {
    let req = Request::ListOffsets(ListOffsetsRequest {
        topic: topic.into(),
        partition: 0,
        spec: OffsetSpec::Latest,
    });
    match client.raw_request(req).await.unwrap() {
        Response::ListOffsets(r) => r.offset,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn produce_and_fetch_follow_the_rules_and_a_denied_produce_changes_nothing() {
    let s = setup().await;
    produce(&s.alice, "orders.eu", 0, one("a"), Acks::All)
        .await
        .unwrap();
    assert_denied(
        produce(&s.alice, "payroll", 0, one("x"), Acks::All).await,
        "principal \"alice\" is not authorized to write topic \"payroll\"",
    );
    assert_denied(
        produce(&s.bob, "orders.eu", 0, one("x"), Acks::All).await,
        "principal \"bob\" is not authorized to write topic \"orders.eu\"",
    );
    // Nothing was appended by the denied produces.
    assert_eq!(log_end(&s.admin, "orders.eu").await, 1);
    assert_eq!(log_end(&s.admin, "payroll").await, 0);

    assert_eq!(
        fetch(&s.bob, "orders.eu", 0, 0, 0)
            .await
            .unwrap()
            .high_watermark,
        1
    );
    assert_denied(
        fetch(&s.alice, "orders.eu", 0, 0, 0).await,
        "principal \"alice\" is not authorized to read topic \"orders.eu\"",
    );
    // Deny wins over bob's prefix allow and over admin's wildcard allow.
    assert_denied(
        fetch(&s.bob, "orders.secret", 0, 0, 0).await,
        "principal \"bob\" is not authorized to read topic \"orders.secret\"",
    );
    assert_denied(
        fetch(&s.admin, "orders.secret", 0, 0, 0).await,
        "principal \"admin\" is not authorized to read topic \"orders.secret\"",
    );
    assert!(fetch(&s.admin, "payroll", 0, 0, 0).await.is_ok());
}

/// A named producer's id writes only for whoever may write its name: admin may write every
/// topic, but not alice's producer `alice.pay`, so admin can neither fence it there (a batch
/// of a higher epoch) nor take its sequence numbers; alice's own batch goes in.
#[tokio::test]
async fn a_named_producers_id_writes_only_for_who_may_write_its_name() {
    let s = setup().await;
    let init = Request::InitProducer(InitProducerRequest {
        name: Some("alice.pay".into()),
    });
    let (id, epoch) = match s.alice.raw_request(init).await.unwrap() {
        Response::InitProducer(r) => (r.producer_id, r.epoch),
        other => panic!("unexpected answer {other:?}"),
    };
    let idempotent = |epoch: i16| {
        let mut b = RecordBatchBuilder::new().producer(id, epoch, 0);
        b.push(1, None, Some(b"x"), []);
        b.build().unwrap()
    };
    for epoch in [i16::MAX, epoch] {
        assert_denied(
            produce(&s.admin, "orders.eu", 0, idempotent(epoch), Acks::All).await,
            "principal \"admin\" is not authorized to write producer \"alice.pay\"",
        );
    }
    assert_eq!(log_end(&s.admin, "orders.eu").await, 0);
    produce(&s.alice, "orders.eu", 0, idempotent(epoch), Acks::All)
        .await
        .unwrap();
    assert_eq!(log_end(&s.admin, "orders.eu").await, 1);
}

/// A stream processor's entry about a topic (`__seen.<topic>`) is fetched only by whoever may
/// describe that topic, as `DescribeGroup` shows it: bob, who may read group `billing` and
/// topics `orders.*`, gets the entry about `orders.eu` but not the one about `payroll`.
#[tokio::test]
async fn fetching_an_entry_about_a_topic_needs_the_topics_describe() {
    let s = setup().await;
    let entry = |topic: &str| PartitionOffset {
        topic: format!("__seen.{topic}"),
        partition: 0,
        offset: 5,
    };
    let commit = Request::CommitOffsets(CommitOffsetsRequest {
        group: "billing".into(),
        member_id: String::new(),
        generation: 0,
        offsets: vec![entry("orders.eu"), entry("payroll")],
    });
    assert!(matches!(
        s.admin.raw_request(commit).await.unwrap(),
        Response::CommitOffsets(_)
    ));
    let fetch = |topic: &str| {
        Request::FetchOffsets(FetchOffsetsRequest {
            group: "billing".into(),
            partitions: vec![TopicPartitions {
                topic: format!("__seen.{topic}"),
                partitions: vec![0],
            }],
        })
    };
    assert!(matches!(
        s.bob.raw_request(fetch("orders.eu")).await.unwrap(),
        Response::FetchOffsets(_)
    ));
    assert_denied(
        s.bob.raw_request(fetch("payroll")).await,
        "principal \"bob\" is not authorized to describe topic \"payroll\"",
    );
}

#[tokio::test]
async fn an_auto_created_topic_needs_create_too() {
    let s = setup().await;
    assert_denied(
        produce(&s.alice, "orders.new", 0, one("x"), Acks::All).await,
        "principal \"alice\" is not authorized to create topic \"orders.new\"",
    );
    // A producer of it is built (its partition count asked for without creating the topic),
    // and its sends are refused for the same reason.
    let producer = s.alice.create_producer("orders.new").await.unwrap();
    let message = Message::builder()
        .topic("orders.new")
        .payload("x")
        .build()
        .unwrap();
    assert_denied(
        producer.send(message).await,
        "principal \"alice\" is not authorized to create topic \"orders.new\"",
    );
    let names: Vec<String> = s
        .admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(!names.contains(&"orders.new".to_owned()), "{names:?}");
}

#[tokio::test]
async fn create_delete_and_describe_topics() {
    let s = setup().await;
    assert_denied(
        s.alice.create_topic("orders.us", 1).await,
        "principal \"alice\" is not authorized to create topic \"orders.us\"",
    );
    assert_denied(
        s.bob.delete_topic("orders.eu").await,
        "principal \"bob\" is not authorized to delete topic \"orders.eu\"",
    );
    s.admin
        .describe_topic("orders.eu")
        .await
        .expect("the denied delete changed nothing");
    s.admin.delete_topic("payroll").await.unwrap();

    // Write and read imply describe on the same topics, nothing else.
    s.alice.describe_topic("orders.eu").await.unwrap();
    s.bob.describe_topic("orders.secret").await.unwrap();
    s.admin.create_topic("hr", 1).await.unwrap();
    assert_denied(
        s.alice.describe_topic("hr").await,
        "principal \"alice\" is not authorized to describe topic \"hr\"",
    );
    assert_denied(
        s.alice.metadata(Some(&["hr"])).await,
        "principal \"alice\" is not authorized to describe topic \"hr\"",
    );

    // Lists show only what the principal may describe.
    let mut seen: Vec<String> = s
        .alice
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    seen.sort();
    assert_eq!(seen, ["orders.eu", "orders.secret"]);
    let meta = s.alice.metadata(None).await.unwrap();
    assert!(meta.topic("hr").is_none() && meta.topic("orders.eu").is_some());
    assert_eq!(s.admin.list_topics().await.unwrap().len(), 3);
}

#[tokio::test]
async fn join_and_commit_need_group_and_topic_rights() {
    let s = setup().await;
    let join = |group: &str, topic: &str| {
        Request::JoinGroup(JoinGroupRequest {
            group: group.into(),
            member_id: String::new(),
            client_id: "t".into(),
            topics: vec![topic.into()],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 1_000,
        })
    };
    let commit = |group: &str, topic: &str| {
        Request::CommitOffsets(CommitOffsetsRequest {
            group: group.into(),
            member_id: String::new(),
            generation: 0,
            offsets: vec![PartitionOffset {
                topic: topic.into(),
                partition: 0,
                offset: 0,
            }],
        })
    };
    let joined = s
        .bob
        .raw_request(join("billing", "orders.eu"))
        .await
        .unwrap();
    let Response::JoinGroup(member) = joined else {
        panic!("{joined:?}");
    };
    // The group now has a member: a commit carries its id and generation (one without is
    // refused while the group has members).
    s.bob
        .raw_request(Request::CommitOffsets(CommitOffsetsRequest {
            group: "billing".into(),
            member_id: member.member_id.clone(),
            generation: member.generation,
            offsets: vec![PartitionOffset {
                topic: "orders.eu".into(),
                partition: 0,
                offset: 0,
            }],
        }))
        .await
        .unwrap();

    assert_denied(
        s.alice.raw_request(join("billing", "orders.eu")).await,
        "principal \"alice\" is not authorized to read group \"billing\"",
    );
    assert_denied(
        s.bob.raw_request(join("audit", "orders.eu")).await,
        "principal \"bob\" is not authorized to read group \"audit\"",
    );
    assert_denied(
        s.bob.raw_request(join("billing", "payroll")).await,
        "principal \"bob\" is not authorized to read topic \"payroll\"",
    );
    assert_denied(
        s.alice.raw_request(commit("billing", "orders.eu")).await,
        "principal \"alice\" is not authorized to commit group \"billing\"",
    );
    assert_denied(
        s.bob.raw_request(commit("billing", "orders.secret")).await,
        "principal \"bob\" is not authorized to read topic \"orders.secret\"",
    );

    // Groups are listed only to who may describe them (read implies describe).
    assert!(s.alice.list_groups().await.unwrap().is_empty());
    assert_eq!(s.bob.list_groups().await.unwrap(), ["billing"]);
    assert_eq!(s.admin.list_groups().await.unwrap(), ["billing"]);
    s.bob.describe_group("billing").await.unwrap();
    assert_denied(
        s.alice.describe_group("billing").await,
        "principal \"alice\" is not authorized to describe group \"billing\"",
    );

    // A group's committed offsets are shown only for the topics the caller may describe.
    s.bob
        .raw_request(Request::LeaveGroup(LeaveGroupRequest {
            group: "billing".into(),
            member_id: member.member_id,
        }))
        .await
        .unwrap();
    for topic in ["orders.eu", "payroll", "__seen.orders.eu", "__seen.payroll"] {
        s.admin.raw_request(commit("billing", topic)).await.unwrap();
    }
    let topics = |d: rustmq::GroupDescription| {
        let mut t: Vec<String> = d.offsets.into_iter().map(|o| o.topic).collect();
        t.sort();
        t
    };
    assert_eq!(
        topics(s.admin.describe_group("billing").await.unwrap()),
        ["__seen.orders.eu", "__seen.payroll", "orders.eu", "payroll"]
    );
    assert_eq!(
        topics(s.bob.describe_group("billing").await.unwrap()),
        ["__seen.orders.eu", "orders.eu"]
    );
}

#[tokio::test]
async fn a_broker_without_rules_stays_open() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("anything", 1).await.unwrap();
    produce(&client, "anything", 0, one("x"), Acks::All)
        .await
        .unwrap();
    client.delete_topic("anything").await.unwrap();
}

/// A stream whose commits the broker refuses for good (its principal may read the group, not
/// commit to it) ends with that refusal, as a consumer's auto-commit reports it: it used to
/// run on, logging each failed commit at debug level, while nothing it processed was ever
/// committed.
#[tokio::test]
async fn a_stream_that_may_not_commit_ends_with_the_refusal() {
    use rustmq::stream::{MessageProcessor, MessageStream, StreamConfig};
    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;
    struct Nothing;
    #[rustmq::async_trait]
    impl MessageProcessor for Nothing {
        async fn process(&self, _: &Message) -> rustmq::Result<Option<Message>> {
            Ok(None)
        }
    }
    tests::init_tracing();
    let pki = Pki::new("CA");
    let mut config = with_users(&pki, &[("admin", "a-pw"), ("carol", "c-pw")]);
    config.acl = vec![
        rule(
            "admin",
            Topic,
            "*",
            Literal,
            &[Create, Describe, Write],
            Allow,
        ),
        rule(
            "carol",
            Topic,
            "audit.in",
            Literal,
            &[Read, Describe],
            Allow,
        ),
        rule(
            "carol",
            Group,
            "auditors",
            Literal,
            &[Read, Describe],
            Allow,
        ),
        // A stream starts an idempotent producer, which needs a topic it may write.
        rule("carol", Topic, "audit.out", Literal, &[Write], Allow),
    ];
    let broker = TestBroker::start_with(config).await.unwrap();
    let base = client_config(&broker, &pki.ca());
    let admin = RustMqClient::new(with_password(base.clone(), "admin", "a-pw"))
        .await
        .unwrap();
    let carol = RustMqClient::new(with_password(base, "carol", "c-pw"))
        .await
        .unwrap();
    admin.create_topic("audit.in", 1).await.unwrap();
    let stream = MessageStream::new(
        carol,
        StreamConfig {
            input_topics: vec!["audit.in".into()],
            consumer_group: "auditors".into(),
            parallelism: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .with_processor(Nothing)
    .with_commit_interval(std::time::Duration::from_millis(100));
    stream.start().await.unwrap();
    crate::stream_support::send(&admin, "audit.in", &[(0, "x".into(), 10)]).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), stream.wait())
        .await
        .expect("the stream ends");
    assert!(
        matches!(ended, Err(ClientError::Authorization(_))),
        "{ended:?}"
    );
}
