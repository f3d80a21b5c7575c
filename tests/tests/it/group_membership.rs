//! Consumer groups against a real broker: partitions split across members, a killed member's
//! partitions move after the session timeout, a closing member's at once; nothing acked and
//! committed is delivered again, nothing is lost.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::consumer_support::*;
use rustmq::consumer::{Consumer, ConsumerConfig};
use rustmq::protocol::{DescribeGroupRequest, JoinGroupRequest, Request, Response};
use rustmq::testing::TestBroker;
use rustmq::{ClientError, RustMqClient};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 6;

type Log = Arc<Mutex<Vec<(usize, u32, u64, Instant)>>>;

async fn describe(client: &RustMqClient, group: &str) -> (String, usize) {
    let req = Request::DescribeGroup(DescribeGroupRequest {
        group: group.into(),
    });
    match client.raw_request(req).await.unwrap() {
        Response::DescribeGroup(d) => (d.state, d.members.len()),
        other => panic!("{other:?}"),
    }
}

/// Receives, records and acks until the consumer closes (auto-commit stores the acks).
fn spawn_worker(id: usize, consumer: Consumer, log: Log) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(m) = consumer.receive().await.expect("receive") {
            log.lock()
                .unwrap()
                .push((id, m.message.partition, m.message.offset, Instant::now()));
            assert_eq!(
                m.message.payload_as_string().unwrap(),
                value(m.message.partition, m.message.offset)
            );
            m.ack().await.unwrap();
        }
    })
}

/// Whether every record `0..per_partition` of every partition was delivered to a survivor or
/// acked and committed by the killed member.
fn covered(log: &Log, by_killed: &BTreeSet<(u32, u64)>, per_partition: u64) -> bool {
    let mut seen: BTreeSet<(u32, u64)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|&(_, p, o, _)| (p, o))
        .collect();
    seen.extend(by_killed.iter().copied());
    seen.len() as u64 == u64::from(PARTITIONS) * per_partition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_split_partitions_and_a_killed_members_move_after_the_session_timeout() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let admin = broker.client().await.unwrap();
    admin.create_topic(TOPIC, PARTITIONS).await.unwrap();
    for p in 0..PARTITIONS {
        produce_n(&admin, TOPIC, p, 0, 100).await;
    }

    let mut consumers = Vec::new();
    for _ in 0..3 {
        let client = broker.client().await.unwrap();
        let auto_commit = ConsumerConfig {
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_millis(100),
            ..config("billing")
        };
        let consumer = within(
            "join",
            client.create_consumer_with_config(TOPIC, "billing", auto_commit),
        )
        .await
        .unwrap();
        consumers.push(consumer);
    }
    // Members apply a rebalance when their own join returns: wait until all three did.
    eventually("an even split", || {
        let cs = consumers.clone();
        async move {
            let mut n = Vec::new();
            for c in &cs {
                n.push(c.assigned_partitions().await.len());
            }
            n == [2, 2, 2]
        }
    })
    .await;
    let mut all = BTreeSet::new();
    for c in &consumers {
        let assignment = c.partition_assignment().await.expect("assigned");
        assert_eq!(assignment.partitions, c.assigned_partitions().await);
        assert!(assignment
            .assignment_id
            .ends_with(&format!("@{}", assignment.generation)));
        for p in assignment.partitions {
            assert!(all.insert(p), "partition {p} assigned twice");
        }
    }
    assert_eq!(all, (0..PARTITIONS).collect());
    assert_eq!(describe(&admin, "billing").await, ("stable".to_string(), 3));

    // Phase 1: every record delivered once, each by the owner of its partition.
    let killed = consumers.pop().unwrap();
    let killed_partitions = killed.assigned_partitions().await;
    let log: Log = Arc::default();
    let workers: Vec<_> = consumers
        .iter()
        .enumerate()
        .map(|(i, c)| spawn_worker(i, c.clone(), Arc::clone(&log)))
        .collect();
    let mut committed_by_killed = BTreeSet::new();
    for _ in 0..200 {
        let m = recv(&killed).await;
        committed_by_killed.insert((m.message.partition, m.message.offset));
        m.ack().await.unwrap();
    }
    killed.commit().await.unwrap();
    eventually("phase 1 delivered", || async {
        log.lock().unwrap().len() == 400
    })
    .await;
    {
        let log = log.lock().unwrap();
        for &(id, p, _, _) in log.iter() {
            assert!(
                !killed_partitions.contains(&p),
                "partition {p} delivered to member {id}"
            );
        }
    }
    for &p in &killed_partitions {
        assert_eq!(killed.committed_offset(p).await.unwrap(), 100);
    }

    // Phase 2: 50 more per partition. The member to be killed acks 10 of each of its
    // partitions and commits them, takes 10 more of each without acking, and dies without
    // leaving.
    for p in 0..PARTITIONS {
        produce_n(&admin, TOPIC, p, 100, 50).await;
    }
    let mut taken = HashMap::<u32, u32>::new();
    let mut in_flight = Vec::new();
    while killed_partitions
        .iter()
        .any(|p| taken.get(p).copied().unwrap_or(0) < 20)
    {
        let m = recv(&killed).await;
        let n = taken.entry(m.message.partition).or_default();
        if *n < 10 {
            committed_by_killed.insert((m.message.partition, m.message.offset));
            m.ack().await.unwrap();
        } else {
            in_flight.push(m);
        }
        *n += 1;
    }
    killed.commit().await.unwrap();
    for &p in &killed_partitions {
        assert_eq!(
            killed.committed_offset(p).await.unwrap(),
            110,
            "the contiguous acked prefix"
        );
    }
    let killed_at = Instant::now();
    drop(killed);
    drop(in_flight);

    // Its partitions move to the survivors only after the session timeout (1 s), and
    // everything reaches them.
    eventually("all records delivered", || async {
        covered(&log, &committed_by_killed, 150)
    })
    .await;
    let moved_after = log
        .lock()
        .unwrap()
        .iter()
        .filter(|&&(_, p, _, _)| killed_partitions.contains(&p))
        .map(|&(_, _, _, at)| at.saturating_duration_since(killed_at))
        .min()
        .expect("the killed member's partitions were delivered to survivors");
    assert!(
        moved_after >= Duration::from_millis(800),
        "partitions moved {moved_after:?} after the kill, before the 1 s session timeout"
    );
    let mut owned = BTreeSet::new();
    for c in &consumers {
        owned.extend(c.assigned_partitions().await);
    }
    assert_eq!(owned, (0..PARTITIONS).collect());
    assert_eq!(describe(&admin, "billing").await, ("stable".to_string(), 2));

    // Nothing the killed member acked and committed was delivered again; what it held
    // without committing was (at least once).
    let log = log.lock().unwrap().clone();
    let mut counts = HashMap::<(u32, u64), usize>::new();
    for &(_, p, o, _) in &log {
        *counts.entry((p, o)).or_default() += 1;
        assert!(
            !committed_by_killed.contains(&(p, o)),
            "{p}/{o} was committed by the killed member and redelivered"
        );
    }
    for &p in &killed_partitions {
        for o in 110..150 {
            assert!(counts.contains_key(&(p, o)), "{p}/{o} lost");
        }
    }
    for c in &consumers {
        c.close().await.unwrap();
    }
    for w in workers {
        within("worker end", w).await.unwrap();
    }
    for p in 0..PARTITIONS {
        assert_eq!(
            admin_committed(&admin, p).await,
            Some(150),
            "partition {p} fully committed"
        );
    }
}

async fn admin_committed(client: &RustMqClient, partition: u32) -> Option<u64> {
    let req = Request::FetchOffsets(rustmq::protocol::FetchOffsetsRequest {
        group: "billing".into(),
        partitions: vec![rustmq::protocol::TopicPartitions {
            topic: TOPIC.into(),
            partitions: vec![partition],
        }],
    });
    match client.raw_request(req).await.unwrap() {
        Response::FetchOffsets(r) => r.offsets[0].offset,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_member_leaves_at_once_and_its_partitions_resume_from_its_commits() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("jobs", 4).await.unwrap();
    for p in 0..4 {
        produce_n(&client, "jobs", p, 0, 10).await;
    }
    // A long session timeout: only a clean leave can move partitions within the test.
    let slow = |g: &str| rustmq::consumer::ConsumerConfig {
        session_timeout: Duration::from_secs(60),
        rebalance_timeout: Duration::from_secs(60),
        ..config(g)
    };
    let a = client
        .create_consumer_with_config("jobs", "workers", slow("workers"))
        .await
        .unwrap();
    assert_eq!(a.assigned_partitions().await, vec![0, 1, 2, 3]);
    let first = a.partition_assignment().await.unwrap();
    let b = within(
        "second join",
        client.create_consumer_with_config("jobs", "workers", slow("workers")),
    )
    .await
    .unwrap();
    eventually("a split", || async {
        a.assigned_partitions().await.len() == 2
    })
    .await;
    let b_partitions = b.assigned_partitions().await;
    assert_eq!(b_partitions.len(), 2);

    // Commits are fenced by generation: the rebalance moved the group on, so a commit
    // carrying a's first generation is refused, while a's own commits carry the new one.
    let second = a.partition_assignment().await.unwrap();
    assert!(second.generation > first.generation);
    assert_ne!(second.assignment_id, first.assignment_id);
    let stale = Request::CommitOffsets(rustmq::protocol::CommitOffsetsRequest {
        group: "workers".into(),
        member_id: first.member_id.clone(),
        generation: first.generation,
        offsets: vec![rustmq::protocol::PartitionOffset {
            topic: "jobs".into(),
            partition: second.partitions[0],
            offset: 7,
        }],
    });
    let refused = client.raw_request(stale).await.unwrap_err();
    assert_eq!(
        refused.error_code(),
        Some(rustmq::ErrorCode::IllegalGeneration)
    );
    // A commit without a member id would move the members' partitions: refused while the
    // group has members.
    let anonymous = Request::CommitOffsets(rustmq::protocol::CommitOffsetsRequest {
        group: "workers".into(),
        member_id: String::new(),
        generation: 0,
        offsets: vec![rustmq::protocol::PartitionOffset {
            topic: "jobs".into(),
            partition: second.partitions[0],
            offset: 7,
        }],
    });
    let refused = client.raw_request(anonymous).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(rustmq::ErrorCode::UnknownMember));
    recv_ack(&a, 1).await;
    a.commit().await.unwrap();

    // b consumes and acks its 20 records; close() commits them and leaves.
    let got = recv_ack(&b, 20).await;
    assert!(got.iter().all(|(p, _)| b_partitions.contains(p)));
    b.close().await.unwrap();
    assert!(
        b.receive().await.unwrap().is_none(),
        "a closed consumer delivers nothing"
    );

    eventually("a takes over", || async {
        a.assigned_partitions().await.len() == 4
    })
    .await;
    // a consumes its own 20 and then only new records of b's partitions: b's were committed.
    for p in &b_partitions {
        produce_n(&client, "jobs", *p, 10, 1).await;
    }
    let got = recv_ack(&a, 21).await;
    let from_b: Vec<(u32, u64)> = got
        .iter()
        .copied()
        .filter(|(p, _)| b_partitions.contains(p))
        .collect();
    assert_eq!(
        from_b.len(),
        2,
        "only the new records of the left member's partitions: {from_b:?}"
    );
    assert!(from_b.iter().all(|&(_, o)| o == 10));
    let m = a.metrics().await;
    assert!(m.rebalances.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    a.close().await.unwrap();
}

/// A consumer of `TOPIC` in `group` whose client gives requests up after `request_timeout`
/// and whose group waits 300 ms for its members to rejoin: each join is given up after their
/// sum and sent again.
async fn impatient_newcomer(
    broker: &TestBroker,
    group: &str,
    request_timeout: Duration,
) -> rustmq::Result<Consumer> {
    let mut impatient = broker.client_config();
    impatient.request_timeout = request_timeout;
    let newcomer = RustMqClient::new(impatient).await?;
    let quick = ConsumerConfig {
        rebalance_timeout: Duration::from_millis(300),
        ..config(group)
    };
    newcomer
        .create_consumer_with_config(TOPIC, group, quick)
        .await
}

/// A newcomer whose joins time out while the rebalance waits for a slow member sends its join
/// again under the same member id: the group ends with two members, not one more per
/// attempt, each of which would hold partitions until its session expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_sent_again_leave_no_phantom_members() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let admin = broker.client().await.unwrap();
    admin.create_topic(TOPIC, PARTITIONS).await.unwrap();
    // The first member notices a rebalance only at its next heartbeat, two seconds on.
    let slow = ConsumerConfig {
        heartbeat_interval: Duration::from_secs(2),
        session_timeout: Duration::from_secs(10),
        ..config("phantoms")
    };
    let first = broker.client().await.unwrap();
    let first = first
        .create_consumer_with_config(TOPIC, "phantoms", slow)
        .await
        .unwrap();
    // The newcomer gives each join up after 600 ms (request timeout + rebalance timeout) and
    // sends it again.
    let second = within(
        "the newcomer's join",
        impatient_newcomer(&broker, "phantoms", Duration::from_millis(300)),
    )
    .await
    .unwrap();
    assert_eq!(describe(&admin, "phantoms").await.1, 2);
    eventually("an even split", || {
        let (first, second) = (first.clone(), second.clone());
        async move {
            first.assigned_partitions().await.len() == 3
                && second.assigned_partitions().await.len() == 3
        }
    })
    .await;
}

/// A newcomer whose every join is given up (the rebalance waits for a member that never
/// rejoins) fails to build, and leaves: the broker took its join, and would otherwise hold it
/// in the group, with partitions, until its session expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_fails_to_join_leaves_no_member_behind() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let admin = broker.client().await.unwrap();
    admin.create_topic(TOPIC, PARTITIONS).await.unwrap();
    // A member that never heartbeats nor rejoins: a rebalance waits a minute for it.
    let stuck = Request::JoinGroup(JoinGroupRequest {
        group: "left-behind".into(),
        member_id: "stuck".into(),
        client_id: "stuck".into(),
        topics: vec![TOPIC.into()],
        session_timeout_ms: 600_000,
        rebalance_timeout_ms: 60_000,
    });
    assert!(matches!(
        admin.raw_request(stuck).await.unwrap(),
        Response::JoinGroup(_)
    ));
    // Each join is given up after 1.3 s (request timeout + rebalance timeout); the leave has
    // the request timeout, room enough on a loaded machine.
    let built = within(
        "the newcomer's joins",
        impatient_newcomer(&broker, "left-behind", Duration::from_secs(1)),
    )
    .await;
    assert!(built.is_err(), "no rebalance could complete");
    assert_eq!(
        describe(&admin, "left-behind").await.1,
        1,
        "only the stuck member is left"
    );
}

/// The next message of `consumer`, past the `TopicNotFound` that tells it `topic` was deleted.
async fn recv_past_the_deletion(
    consumer: &Consumer,
    topic: &str,
) -> rustmq::consumer::ConsumerMessage {
    within("a message of the topic made again", async {
        loop {
            match consumer.receive().await {
                Err(ClientError::TopicNotFound(deleted)) => assert_eq!(deleted, topic),
                other => break other.expect("receive").expect("consumer open"),
            }
        }
    })
    .await
}

/// A topic deleted and made again while its group is alive: the rebalance after the deletion
/// leaves the member nothing (only existing topics are assigned), and making the topic again
/// rebalances the group, so that its partitions get their owner back and their records are
/// consumed. Before, nothing brought them back until a member came or went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_made_again_is_assigned_to_its_group() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let admin = broker.client().await.unwrap();
    admin.create_topic("remade", 2).await.unwrap();
    let client = broker.client().await.unwrap();
    let a = client
        .create_consumer_with_config("remade", "remakers", config("remakers"))
        .await
        .unwrap();
    assert_eq!(a.assigned_partitions().await, [0, 1]);
    admin.delete_topic("remade").await.unwrap();
    // A member coming and going rebalances the group while the topic does not exist.
    let visitor = Request::JoinGroup(JoinGroupRequest {
        group: "remakers".into(),
        member_id: "visitor".into(),
        client_id: "visitor".into(),
        topics: vec!["remade".into()],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 5_000,
    });
    within("the visitor's join", admin.raw_request(visitor))
        .await
        .unwrap();
    let leave = Request::LeaveGroup(rustmq::protocol::LeaveGroupRequest {
        group: "remakers".into(),
        member_id: "visitor".into(),
    });
    admin.raw_request(leave).await.unwrap();
    eventually("the member alone, holding nothing", || {
        let (a, admin) = (a.clone(), admin.clone());
        async move {
            describe(&admin, "remakers").await == ("stable".to_owned(), 1)
                && a.assigned_partitions().await.is_empty()
        }
    })
    .await;
    admin.create_topic("remade", 2).await.unwrap();
    eventually("the topic's partitions assigned again", || {
        let a = a.clone();
        async move { a.assigned_partitions().await == [0, 1] }
    })
    .await;
    produce_n(&admin, "remade", 1, 0, 1).await;
    // The deletion may have reached the member's fetches first: it is told once.
    let m = recv_past_the_deletion(&a, "remade").await;
    assert_eq!((m.message.partition, m.message.offset), (1, 0));
    a.close().await.unwrap();
}

/// A live member whose topic is deleted and made again reads the new topic from its start
/// position (earliest), not from where it was in the deleted one: the deletion moves its
/// group to a new generation, so the member starts its partitions over and its commits of
/// the old positions are refused. Before, it fetched the new topic at its old position and
/// skipped (or committed over) the records below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_made_again_is_read_from_its_start_by_a_live_member() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let admin = broker.client().await.unwrap();
    admin.create_topic("redone", 1).await.unwrap();
    let client = broker.client().await.unwrap();
    let a = client
        .create_consumer_with_config("redone", "redoers", config("redoers"))
        .await
        .unwrap();
    produce_n(&admin, "redone", 0, 0, 10).await;
    assert_eq!(recv_ack(&a, 10).await.last(), Some(&(0, 9)));
    a.commit().await.unwrap();
    admin.delete_topic("redone").await.unwrap();
    // The deletion's rebalance gives the member nothing (the topic does not exist); before,
    // there was none, and the member held the partition at its old position throughout.
    eventually("the member rejoined, holding nothing", || {
        let a = a.clone();
        async move { a.assigned_partitions().await.is_empty() }
    })
    .await;
    admin.create_topic("redone", 1).await.unwrap();
    produce_n(&admin, "redone", 0, 0, 12).await;
    let m = recv_past_the_deletion(&a, "redone").await;
    assert_eq!((m.message.partition, m.message.offset), (0, 0));
    m.ack().await.unwrap();
    // What it commits now is the new topic's position, not the deleted one's.
    a.commit().await.unwrap();
    assert_eq!(a.committed_offset(0).await.unwrap(), 1);
    a.close().await.unwrap();
}

/// An auto-commit that waits longer than the session timeout (the broker's disk slow) does
/// not silence the member's heartbeats: it stays in the group, keeps its partitions, and the
/// commit lands once the broker gets to it. Heartbeats used to wait for the commit, and the
/// broker dropped the member while it still delivered, its partitions then read by another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_auto_commit_does_not_stop_the_heartbeats() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let admin = broker.client().await.unwrap();
    admin.create_topic("slow", 1).await.unwrap();
    produce_n(&admin, "slow", 0, 0, 3).await;
    let client = broker.client().await.unwrap();
    let member = ConsumerConfig {
        enable_auto_commit: true,
        auto_commit_interval: Duration::from_millis(100),
        session_timeout: Duration::from_millis(1_500),
        ..config("slow-committers")
    };
    let a = client
        .create_consumer_with_config("slow", "slow-committers", member)
        .await
        .unwrap();
    let generation =
        |a: Consumer| async move { a.partition_assignment().await.map(|p| p.generation) };
    let before = generation(a.clone()).await;
    let held = broker
        .handle()
        .unwrap()
        .hold_group_commits("slow-committers")
        .await
        .unwrap();
    for _ in 0..3 {
        recv(&a).await.ack().await.unwrap();
    }
    // Two session timeouts and more with every commit held.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(
        describe(&admin, "slow-committers").await,
        ("stable".to_owned(), 1)
    );
    assert_eq!(
        generation(a.clone()).await,
        before,
        "no rebalance: the member stayed"
    );
    drop(held);
    eventually("the held commit landed", || {
        let a = a.clone();
        async move { a.committed_offset(0).await.ok() == Some(3) }
    })
    .await;
    a.close().await.unwrap();
}

/// A member whose rejoin missed a generation starts its partitions over from the group's
/// committed offsets. `a` hears of a rebalance (it commits before rejoining) and is then cut
/// off from the broker: the group goes on without it, and `b` takes its partition, consumes
/// from `a`'s commit and commits further. Once the path heals, the rejoin `a` kept trying gets
/// it into the group again, as a new member, generations after the one it knew and with the
/// same partition: `a` has dropped what it held of it (records buffered, its position) and
/// resumes from `b`'s commit, delivering nothing `b` consumed and committing nothing over
/// `b`'s progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_that_missed_a_generation_starts_its_partitions_over() {
    tests::init_tracing();
    const GROUP: &str = "rejoiners";
    let broker = TestBroker::start().await.unwrap();
    let admin = broker.client().await.unwrap();
    admin.create_topic("jobs", 1).await.unwrap();
    produce_n(&admin, "jobs", 0, 0, 10).await;
    let group = || async { admin.describe_group(GROUP).await.unwrap() };
    // Members are named so that `a` sorts first: the broker gives the partition to the first
    // member in id order. The group waits up to 3 s for its members to rejoin: the time the
    // test has to cut `a` off once it heard of the rebalance, on a loaded machine too.
    let member = |id: &str| ConsumerConfig {
        consumer_id: Some(id.into()),
        rebalance_timeout: Duration::from_secs(3),
        ..config(GROUP)
    };

    // `a` reaches the broker through the relay, with a client that gives up requests lost in
    // the partition after 500 ms (a join after 600 ms) and tries them again.
    let partition = tests::UdpRelay::start(broker.addr(), Duration::ZERO).await;
    let mut through = broker.client_config();
    through.brokers = vec![partition.addr.to_string()];
    through.request_timeout = Duration::from_millis(500);
    through.connect_timeout = Duration::from_millis(500);
    through.retry_config = rustmq::RetryConfig {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ..rustmq::RetryConfig::default()
    };
    let a_client = RustMqClient::new(through).await.unwrap();
    let a = a_client
        .create_consumer_with_config(
            "jobs",
            GROUP,
            ConsumerConfig {
                rebalance_timeout: Duration::from_millis(100),
                session_timeout: Duration::from_millis(500),
                heartbeat_interval: Duration::from_millis(50),
                ..member("a")
            },
        )
        .await
        .unwrap();
    assert_eq!(a.assigned_partitions().await, [0]);

    // `c` joins (`a` keeps the partition) and dies without leaving; with its long session it
    // stays a member, so the next rebalance waits for it until the rebalance timeout.
    let c_client = broker.client().await.unwrap();
    let c = within(
        "c's join",
        c_client.create_consumer_with_config(
            "jobs",
            GROUP,
            ConsumerConfig {
                session_timeout: Duration::from_secs(60),
                ..member("c")
            },
        ),
    )
    .await
    .unwrap();
    assert!(c.assigned_partitions().await.is_empty());
    drop(c);
    let with_c = group().await;
    assert_eq!(with_c.state, "stable");
    let generation = with_c.generation;
    let before = with_c.committed("jobs", 0);
    assert!(before.is_none_or(|offset| offset < 3), "{before:?}");

    // `a` takes three records (buffering the rest) and acks them, without committing.
    assert_eq!(recv_ack(&a, 3).await, [(0, 0), (0, 1), (0, 2)]);

    // `b` joins. `a` hears of the rebalance at its next heartbeat and commits what it acked
    // before it rejoins: once that commit is in, it is cut off.
    let b_client = broker.client().await.unwrap();
    let b_join = tokio::spawn(async move {
        b_client
            .create_consumer_with_config("jobs", GROUP, member("b"))
            .await
    });
    eventually("a's commit before its rejoin", || async {
        group().await.committed("jobs", 0) == Some(3)
    })
    .await;
    partition.cut(true);
    let during = group().await;
    assert_eq!(
        (during.state.as_str(), during.generation),
        ("rebalancing", generation),
        "a is cut off before the rebalance ends"
    );

    // The group goes on without `a` (removed as it did not rejoin in time, or once its session
    // expired): `b` gets the partition, consumes from `a`'s commit and commits further.
    let b = within("b's join", b_join).await.unwrap().unwrap();
    eventually("b owns the partition", || async {
        b.assigned_partitions().await == [0]
    })
    .await;
    let consumed: Vec<(u32, u64)> = (3..10).map(|offset| (0, offset)).collect();
    assert_eq!(recv_ack(&b, 7).await, consumed);
    b.commit().await.unwrap();
    assert_eq!(group().await.committed("jobs", 0), Some(10));
    produce_n(&admin, "jobs", 0, 10, 1).await;

    // The partition heals: `a`'s rejoin goes through, as a new member's, and `a` gets the
    // partition back (first in id order) generations after the one it knew.
    partition.cut(false);
    let m = recv(&a).await;
    assert_eq!(
        (m.message.partition, m.message.offset),
        (0, 10),
        "a resumes from b's commit, not from what it had buffered before the partition"
    );
    let assignment = a.partition_assignment().await.unwrap();
    assert_eq!(assignment.partitions, [0]);
    assert!(
        assignment.generation > generation + 1,
        "a missed a generation: {} after {generation}",
        assignment.generation
    );
    m.ack().await.unwrap();
    a.commit().await.unwrap();
    assert_eq!(group().await.committed("jobs", 0), Some(11));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A join parked in a rebalance (it waits for a member that never rejoins, for ten minutes)
/// is answered when the broker stops, stopped or dropped, and holds neither the broker's
/// port nor its client: the port can be bound again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_broker_answers_a_join_parked_in_a_rebalance() {
    tests::init_tracing();
    for dropped in [false, true] {
        let mut broker = TestBroker::start().await.unwrap();
        let addr = broker.addr();
        let admin = broker.client().await.unwrap();
        admin.create_topic(TOPIC, PARTITIONS).await.unwrap();
        let join = |member: &str| {
            Request::JoinGroup(JoinGroupRequest {
                group: "parked".into(),
                member_id: member.into(),
                client_id: member.into(),
                topics: vec![TOPIC.into()],
                session_timeout_ms: 600_000,
                rebalance_timeout_ms: 600_000,
            })
        };
        assert!(matches!(
            admin.raw_request(join("stuck")).await.unwrap(),
            Response::JoinGroup(_)
        ));
        // Its request given up after 5 s, should the stopping broker's close of its connection
        // be lost (UDP on a loaded machine): the client would not learn of the stop until then.
        let newcomer = rustmq::RustMqClient::new(rustmq::ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..broker.client_config()
        })
        .await
        .unwrap();
        let second = join("second");
        let parked = tokio::spawn(async move { newcomer.raw_request(second).await });
        // The newcomer's join is parked once the group is rebalancing for it.
        within("the rebalance to start", async {
            while describe(&admin, "parked").await.1 < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(!parked.is_finished());
        if dropped {
            drop(broker);
        } else {
            broker.stop().await;
        }
        // The broker holds the join no more: its port is free within a few seconds (it takes
        // ~0.1 s), not when the rebalance would have ended.
        tokio::time::timeout(Duration::from_secs(5), async {
            while std::net::UdpSocket::bind(addr).is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the port is free once the broker has stopped");
        // The join ends with an error: answered `ShuttingDown`, or its connection closed by the
        // stopping broker first (the stop closes connections as it answers what waits), or, if
        // that close was lost, given up at the request's timeout.
        let answer = within("the parked join's answer", parked).await.unwrap();
        assert!(
            matches!(
                &answer,
                Err(ClientError::Broker {
                    code: rustmq::ErrorCode::ShuttingDown,
                    ..
                }) | Err(ClientError::Connection(_))
                    | Err(ClientError::Timeout { .. })
            ),
            "{answer:?}"
        );
    }
}
