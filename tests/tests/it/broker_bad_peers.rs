//! Misbehaving peers get an error answer or a closed stream, and never disturb other clients.

use rustmq::testing::TestBroker;
use rustmq_protocol::frame::encode_frame;
use rustmq_protocol::*;
use tests::{
    batch, decode_one, fetch_all, produce, raw_connection, raw_exchange, raw_hello, wait_until,
    write_counting, TestRecord,
};

fn error_code(answer: &[u8]) -> Option<ErrorCode> {
    match Response::from_frame(&decode_one(answer)?) {
        Ok(Response::Error(e)) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_answered_or_closed_while_others_keep_working() {
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_frame_bytes = 64 * 1024;
    config.limits.max_batch_bytes = 32 * 1024;
    config.limits.request_read_timeout_ms = 2_000;
    let broker = TestBroker::start_with(config).await.unwrap();
    let good = broker.client().await.unwrap();
    good.create_topic("steady", 1).await.unwrap();

    // A well-behaved client produces and fetches throughout.
    let steady = {
        let good = good.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                produce(
                    &good,
                    "steady",
                    0,
                    batch(&[TestRecord::new(format!("{i}"), i)], Compression::None),
                    Acks::Leader,
                )
                .await
                .expect("the good client is never disturbed");
            }
        })
    };

    let bad = raw_connection(broker.addr(), broker.handle().unwrap().cert_pem()).await;
    // Before hello: any request is refused.
    let ping = Request::Ping(PingRequest { nonce: 1 }).to_frame(1);
    assert_eq!(
        error_code(&raw_exchange(&bad, &ping).await),
        Some(ErrorCode::NotAuthenticated)
    );
    raw_hello(&bad).await;

    // Garbage bytes: read as a header announcing a huge body -> FrameTooLarge.
    let garbage: Vec<u8> = (0..5000).map(|_| fastrand::u8(..)).collect();
    let answer = raw_exchange(&bad, &[&[0xde, 0xad, 0xbe, 0xef][..], &garbage].concat()).await;
    assert_eq!(error_code(&answer), Some(ErrorCode::FrameTooLarge));

    // An oversized frame, announced honestly.
    let big = encode_frame(2, 1, 7, |b| b.extend_from_slice(&vec![0u8; 100 * 1024]));
    assert_eq!(
        error_code(&raw_exchange(&bad, &big).await),
        Some(ErrorCode::FrameTooLarge)
    );

    // A frame cut mid-way (the stream ends early).
    let frame = Request::Ping(PingRequest { nonce: 2 }).to_frame(2);
    assert_eq!(
        error_code(&raw_exchange(&bad, &frame[..frame.len() - 3]).await),
        Some(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        error_code(&raw_exchange(&bad, &frame[..5]).await),
        Some(ErrorCode::InvalidRequest)
    );

    // An unknown request kind.
    let unknown = encode_frame(0x0777, 1, 3, |b| b.extend_from_slice(b"??"));
    assert_eq!(
        error_code(&raw_exchange(&bad, &unknown).await),
        Some(ErrorCode::UnknownRequestKind)
    );

    // A known kind with a body that does not decode.
    let junk = encode_frame(ApiKind::Produce.code(), 1, 4, |b| {
        b.extend_from_slice(&[0xff; 40])
    });
    assert_eq!(
        error_code(&raw_exchange(&bad, &junk).await),
        Some(ErrorCode::InvalidRequest)
    );

    // A batch whose CRC is wrong, and one over the batch limit.
    let mut corrupt = batch(&[TestRecord::new("x", 1)], Compression::None).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    // A batch whose header's `max_timestamp` (what the time index, timestamp lookups and
    // time-based retention go by) is not its records' largest, sealed with a right CRC.
    let mut lying = batch(&[TestRecord::new("x", 1)], Compression::None).to_vec();
    lying[31..39].copy_from_slice(&0i64.to_be_bytes());
    rustmq::protocol::batch::seal(&mut lying);
    // An idempotent batch of a producer id the broker never handed out.
    let mut made_up = RecordBatchBuilder::new().producer(999_999, 0, 0);
    made_up.push(1, None, Some(b"x"), []);
    let made_up = made_up.build().unwrap().to_vec();
    // A record stamped two hours ahead of the broker's clock (it accepts one hour).
    let ahead = rustmq::message::now_ms() as i64 + 2 * 3_600_000;
    let ahead = batch(&[TestRecord::new("x", ahead)], Compression::None).to_vec();
    for (b, want) in [
        (corrupt, ErrorCode::CorruptBatch),
        (lying, ErrorCode::CorruptBatch),
        (made_up, ErrorCode::UnknownProducer),
        (ahead, ErrorCode::InvalidTimestamp),
        (
            batch(
                &[TestRecord::new(vec![7u8; 40 * 1024], 1)],
                Compression::None,
            )
            .to_vec(),
            ErrorCode::BatchTooLarge,
        ),
    ] {
        let req = Request::Produce(ProduceRequest {
            topic: "steady".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 1000,
            batch: b.into(),
        });
        assert_eq!(
            error_code(&raw_exchange(&bad, &req.to_frame(5)).await),
            Some(want)
        );
    }

    // A stream that sends half a frame and then stalls is dropped after the read timeout.
    let (mut send, mut recv) = bad.open_bi().await.unwrap();
    send.write_all(&frame[..6]).await.unwrap();
    let stalled =
        tokio::time::timeout(std::time::Duration::from_secs(10), recv.read_to_end(1024)).await;
    assert!(stalled.is_ok(), "the broker gives up on a stalled stream");
    // So it does on one that sends a whole header and part of the body, then stalls.
    let (mut send, mut recv) = bad.open_bi().await.unwrap();
    send.write_all(&frame[..rustmq::protocol::frame::FRAME_HEADER_LEN + 2])
        .await
        .unwrap();
    let stalled =
        tokio::time::timeout(std::time::Duration::from_secs(10), recv.read_to_end(1024)).await;
    assert!(stalled.is_ok(), "the broker gives up on a stalled body");

    steady.await.unwrap();
    let (records, _) = fetch_all(&good, "steady", 0, 0).await;
    assert_eq!(
        records.len(),
        200,
        "nothing from the corrupt produce was stored"
    );
    // And the bad connection itself still works for a proper request.
    let answer = raw_exchange(&bad, &Request::Ping(PingRequest { nonce: 9 }).to_frame(9)).await;
    assert!(matches!(
        Response::from_frame(&decode_one(&answer).unwrap()),
        Ok(Response::Ping(PingResponse { nonce: 9 }))
    ));
}

const MIB: usize = 1024 * 1024;

/// Limits for the request-memory tests: 4 MiB frames, room for two 3 MiB bodies or answers
/// per connection (not three), and for two connections' worth in all.
fn small_budget() -> rustmq::testing::BrokerConfig {
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_frame_bytes = 4 * MIB as u32;
    config.limits.max_batch_bytes = 4 * MIB as u32 - 1024;
    config.limits.max_request_memory_per_connection = 7 * MIB as u32;
    config.limits.max_request_memory_bytes = 14 * MIB as u64;
    config
}

/// A batch of one record of 3 MiB of `fill`.
fn three_mib(fill: u8) -> bytes::Bytes {
    batch(
        &[TestRecord::new(vec![fill; 3 * MIB], 1)],
        Compression::None,
    )
}

/// `future`, or a failure naming `what` after 30 s (a regression fails rather than hangs).
async fn within_30s<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 30 s"))
}

/// The budget comes back to 0 once the transport has let go of every answer (the peer's
/// acknowledgements may still be on their way when the last answer is read).
async fn all_room_given_back(handle: &rustmq::testing::BrokerHandle) {
    all_room_given_back_within(handle, std::time::Duration::from_secs(10)).await;
}

/// [`all_room_given_back`], waiting up to `limit`.
async fn all_room_given_back_within(
    handle: &rustmq::testing::BrokerHandle,
    limit: std::time::Duration,
) {
    let left = wait_until(limit, || handle.request_memory_in_use(), |left| left == 0).await;
    assert_eq!(left, 0, "bytes still reserved");
}

/// A broker with `config`, a client of it with `topic` (one partition) made, and a raw peer
/// that has said hello.
async fn broker_client_and_peer(
    config: rustmq::testing::BrokerConfig,
    topic: &str,
) -> (TestBroker, rustmq::RustMqClient, quinn::Connection) {
    tests::init_tracing();
    let broker = TestBroker::start_with(config).await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic(topic, 1).await.unwrap();
    let peer = raw_connection(broker.addr(), broker.handle().unwrap().cert_pem()).await;
    raw_hello(&peer).await;
    (broker, client, peer)
}

/// A produce of `batch` to `topic`'s partition 0.
fn produce_frame(topic: &str, batch: bytes::Bytes) -> Vec<u8> {
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: Acks::Leader,
        timeout_ms: 10_000,
        batch,
    })
    .to_frame(1)
    .to_vec()
}

/// A fetch of everything from `offset` of `topic`'s partition 0.
fn fetch_frame(topic: &str, offset: u64, max_bytes: u32, max_wait_ms: u32) -> Vec<u8> {
    Request::Fetch(FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset,
        max_bytes,
        max_wait_ms,
    })
    .to_frame(1)
    .to_vec()
}

/// A peer that opens many large frames and holds them unfinished gets no more of the broker's
/// memory than its connection's share: the broker reads a body only once its length is
/// reserved, the rest wait unread, and QUIC's flow control stops the peer once a stream window
/// of each is buffered. Other clients are served meanwhile, and every held frame is handled
/// once it is complete: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holding_large_frames_gets_only_its_share_of_request_memory() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use rustmq_broker::memory::STREAM_RECEIVE_WINDOW;

    const FRAMES: usize = 8;
    let (broker, good, bad) = broker_client_and_peer(small_budget(), "flood").await;
    let handle = broker.handle().unwrap();
    let frame = produce_frame("flood", three_mib(7));
    let (head, last) = frame.split_at(frame.len() - 1);
    let (head, last) = (
        bytes::Bytes::copy_from_slice(head),
        bytes::Bytes::copy_from_slice(last),
    );
    let written = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let mut senders = Vec::new();
    for _ in 0..FRAMES {
        let (mut send, mut recv) = bad.open_bi().await.unwrap();
        let (head, last) = (head.clone(), last.clone());
        let (written, release) = (Arc::clone(&written), Arc::clone(&release));
        senders.push(tokio::spawn(async move {
            // All but the last byte, counting what flow control lets through.
            write_counting(&mut send, &head, &written)
                .await
                .expect("write");
            release.acquire().await.unwrap().forget();
            send.write_all(&last).await.expect("last byte");
            send.finish().unwrap();
            let answer = recv.read_to_end(1 << 20).await.expect("answer");
            Response::from_frame(&decode_one(&answer).expect("a frame"))
        }));
    }

    // Two bodies are reserved; the peer gets them through and a stream window of each of the
    // six others (unbounded, it would get all eight through: ~25 MB).
    let body = (frame.len() - rustmq::protocol::frame::FRAME_HEADER_LEN) as u64;
    let in_use = wait_until(
        std::time::Duration::from_secs(20),
        || handle.request_memory_in_use(),
        |in_use| in_use == 2 * body,
    )
    .await;
    assert_eq!(in_use, 2 * body, "two bodies reserved, not a third");
    let least = 2 * head.len() + (FRAMES - 2) * STREAM_RECEIVE_WINDOW as usize;
    let sent = wait_until(
        std::time::Duration::from_secs(20),
        || written.load(Ordering::Relaxed),
        |sent| sent >= least,
    )
    .await;
    assert!(
        sent >= least,
        "the peer got {sent} bytes through, {least} expected"
    );
    // And no more, given time.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let sent = written.load(Ordering::Relaxed);
    let most = least + FRAMES * 64 * 1024;
    assert!(
        sent <= most,
        "the peer got {sent} bytes through; at most {most} can pass"
    );
    assert_eq!(handle.request_memory_in_use(), 2 * body);

    // Another client is served meanwhile, with a frame as large.
    within_30s(
        "another connection's produce",
        produce(&good, "flood", 0, three_mib(1), Acks::Leader),
    )
    .await
    .expect("another connection is not held back");

    // Once complete, every held frame is handled.
    release.add_permits(FRAMES);
    for sender in senders {
        let answer = within_30s("a held frame's answer", sender).await.unwrap();
        assert!(
            matches!(answer, Ok(Response::Produce(_))),
            "a held frame is answered: {answer:?}"
        );
    }
    let (records, _) = fetch_all(&good, "flood", 0, 0).await;
    assert_eq!(records.len(), FRAMES + 1, "nothing was lost");
    all_room_given_back(handle).await;
}

/// A peer that asks for fetch answers and leaves them unread gets no more of them than its
/// connection's share: each answer's records hold their room until the transport has let go
/// of them, and a fetch finding no room waits before reading the log. Another client fetches
/// meanwhile, and once the peer reads, every answer arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_leaving_fetch_answers_unread_gets_only_its_share() {
    const FETCHES: usize = 6;
    let (broker, good, bad) = broker_client_and_peer(small_budget(), "big").await;
    let handle = broker.handle().unwrap();
    let stored = three_mib(0);
    for _ in 0..3 {
        produce(&good, "big", 0, stored.clone(), Acks::Leader)
            .await
            .unwrap();
    }
    // Each fetch asks for 3.5 MiB: one batch.
    let fetch = fetch_frame("big", 0, 3 * MIB as u32 + MIB as u32 / 2, 0);
    let mut answers = Vec::new();
    for _ in 0..FETCHES {
        let (mut send, recv) = bad.open_bi().await.unwrap();
        send.write_all(&fetch).await.unwrap();
        send.finish().unwrap();
        answers.push(recv);
    }
    let two = 2 * stored.len() as u64;
    let in_use = wait_until(
        std::time::Duration::from_secs(20),
        || handle.request_memory_in_use(),
        |in_use| in_use == two,
    )
    .await;
    assert_eq!(in_use, two, "two answers of one batch each hold room");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(handle.request_memory_in_use(), two, "and no third");
    // Only those two streams get any data: the others' fetches wait before the read.
    let mut first_bytes = Vec::new();
    for recv in &mut answers {
        let mut byte = [0u8; 1];
        let first =
            tokio::time::timeout(std::time::Duration::from_millis(300), recv.read(&mut byte));
        first_bytes.push(match first.await {
            Ok(Ok(Some(1))) => Some(byte[0]),
            _ => None,
        });
    }
    let started = first_bytes.iter().filter(|b| b.is_some()).count();
    assert_eq!(
        started, 2,
        "answers beyond the connection's share are not sent"
    );

    // Another client fetches meanwhile.
    let (records, _) =
        within_30s("another connection's fetch", fetch_all(&good, "big", 0, 0)).await;
    assert_eq!(records.len(), 3);

    // Read (all at once, as a client does: the answers waiting for room are sent only as the
    // first ones are taken), every answer arrives whole: the stored batch.
    let reads = answers
        .into_iter()
        .zip(first_bytes)
        .map(|(mut recv, first)| async move {
            let rest = recv.read_to_end(8 * MIB).await.expect("answer");
            [first.as_slice(), &rest].concat()
        });
    for answer in within_30s("the answers", futures::future::join_all(reads)).await {
        match Response::from_frame(&decode_one(&answer).expect("a whole frame")) {
            Ok(Response::Fetch(f)) => assert_eq!(f.records.len(), stored.len()),
            other => panic!("a fetch answer, got {other:?}"),
        }
    }
    all_room_given_back(handle).await;
}

/// A long poll waiting for data holds no room, and neither does its request once decoded: at
/// the edge where a connection's share is one frame, a long poll asking for all of it leaves
/// the same connection free to produce the data it waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_holds_no_room_while_it_waits() {
    let mut config = small_budget();
    config.limits.max_request_memory_per_connection = config.limits.max_frame_bytes;
    let (broker, _client, peer) = broker_client_and_peer(config, "later").await;
    let handle = broker.handle().unwrap();
    // Longer than the test waits for the produce below: a poll holding its room would fail it.
    let poll = fetch_frame("later", 0, 4 * MIB as u32 - 2048, 60_000);
    let (mut send, mut recv) = peer.open_bi().await.unwrap();
    send.write_all(&poll).await.unwrap();
    send.finish().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        handle.request_memory_in_use(),
        0,
        "a waiting long poll holds nothing"
    );

    // The same connection produces a 3 MiB batch (which its share has room for only if the
    // poll holds none); the poll then answers with it.
    let produce = produce_frame("later", three_mib(5));
    let answer = within_30s(
        "the produce on the polling connection",
        raw_exchange(&peer, &produce),
    )
    .await;
    assert!(matches!(
        Response::from_frame(&decode_one(&answer).expect("a frame")),
        Ok(Response::Produce(_))
    ));
    let answer = within_30s("the long poll", recv.read_to_end(8 * MIB))
        .await
        .unwrap();
    match Response::from_frame(&decode_one(&answer).expect("a frame")) {
        Ok(Response::Fetch(f)) => assert!(f.records.len() > 3 * MIB),
        other => panic!("a fetch answer, got {other:?}"),
    }
    all_room_given_back(handle).await;
}

/// When a connection ends, everything it held comes back: the bodies it was sending, the
/// answers it left unread, and the frames and fetches that were waiting for room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_ends_gives_back_all_its_room() {
    // One peer holds four 3 MiB frames one byte short (two reserved, two waiting); another
    // leaves three 3 MiB answers unread (two held, one waiting).
    let (broker, good, sender) = broker_client_and_peer(small_budget(), "big").await;
    let handle = broker.handle().unwrap();
    let stored = three_mib(0);
    produce(&good, "big", 0, stored.clone(), Acks::Leader)
        .await
        .unwrap();
    let frame = produce_frame("big", three_mib(9));
    let mut streams = Vec::new();
    for _ in 0..4 {
        let (mut send, recv) = sender.open_bi().await.unwrap();
        let head = bytes::Bytes::copy_from_slice(&frame[..frame.len() - 1]);
        streams.push(tokio::spawn(async move {
            let _ = send.write_all(&head).await;
            (send, recv)
        }));
    }
    let reader = raw_connection(broker.addr(), handle.cert_pem()).await;
    raw_hello(&reader).await;
    let fetch = fetch_frame("big", 0, 3 * MIB as u32 + MIB as u32 / 2, 0);
    let mut unread = Vec::new();
    for _ in 0..3 {
        let (mut send, recv) = reader.open_bi().await.unwrap();
        send.write_all(&fetch).await.unwrap();
        send.finish().unwrap();
        unread.push((send, recv));
    }
    let body = (frame.len() - rustmq::protocol::frame::FRAME_HEADER_LEN) as u64;
    let full = 2 * body + 2 * stored.len() as u64;
    let in_use = wait_until(
        std::time::Duration::from_secs(20),
        || handle.request_memory_in_use(),
        |in_use| in_use == full,
    )
    .await;
    assert_eq!(
        in_use, full,
        "two bodies and two answers held, the rest waiting"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(handle.request_memory_in_use(), full, "and no more");

    sender.close(0u32.into(), b"gone");
    reader.close(0u32.into(), b"gone");
    // At once, as a rule. A peer's CONNECTION_CLOSE is sent once and nothing makes the peer
    // send it again while the broker waits for data, so if it is lost (a loaded machine's
    // loopback drops datagrams: it happened in CI) the broker sees the end only when the held
    // frames' reads time out (`request_read_timeout_ms`, 30 s by default): the room comes back
    // then. A room that never came back (what this test was written for: a wait that kept its
    // closed connection's buffers alive) still fails.
    all_room_given_back_within(handle, std::time::Duration::from_secs(45)).await;
    // The broker goes on serving.
    let (records, _) = within_30s("a fetch after", fetch_all(&good, "big", 0, 0)).await;
    assert_eq!(records.len(), 1);
    drop((streams, unread));
}

/// An answer the peer takes nothing of is given up after the request timeout: its stream is
/// reset and its room in the budget comes back, so a peer cannot hold the broker's budget for
/// ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_never_taken_is_given_up_after_the_timeout() {
    let mut config = small_budget();
    config.limits.request_read_timeout_ms = 1_000;
    let (broker, good, bad) = broker_client_and_peer(config, "big").await;
    let handle = broker.handle().unwrap();
    produce(&good, "big", 0, three_mib(1), Acks::Leader)
        .await
        .unwrap();
    let (mut send, mut recv) = bad.open_bi().await.unwrap();
    send.write_all(&fetch_frame("big", 0, 4 * MIB as u32 - 2048, 0))
        .await
        .unwrap();
    send.finish().unwrap();
    // The answer holds its room while it waits for the peer...
    let held = wait_until(
        std::time::Duration::from_secs(10),
        || handle.request_memory_in_use(),
        |held| held > 3 * MIB as u64,
    )
    .await;
    assert!(held > 3 * MIB as u64, "the answer holds room: {held} bytes");
    // ...until the peer has taken nothing for the timeout: then the stream is reset.
    all_room_given_back(handle).await;
    let answer = recv.read_to_end(8 * MIB).await;
    assert!(
        answer.is_err(),
        "the stream was reset rather than finished: {:?}",
        answer.map(|a| a.len())
    );
}

/// A connection that does not say hello in time is closed, and its connection slot given back:
/// peers that connect and say nothing cannot take every slot (with authentication required,
/// they need no credentials to do so). A connection that said hello stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_say_no_hello_in_time_are_closed() {
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_connections = 3;
    config.limits.hello_timeout_ms = 1_000;
    let broker = TestBroker::start_with(config).await.unwrap();
    let cert = broker.handle().unwrap().cert_pem().to_owned();
    let greeted = raw_connection(broker.addr(), &cert).await;
    raw_hello(&greeted).await;
    let silent = [
        raw_connection(broker.addr(), &cert).await,
        raw_connection(broker.addr(), &cert).await,
    ];
    for conn in &silent {
        let reason = within_30s("closing a silent connection", conn.closed()).await;
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.reason.as_ref() == b"no hello in time"),
            "{reason:?}"
        );
    }
    // Their slots are free again: a client connects (3 allowed, the greeted one holds one).
    let client = within_30s("a client's connection", broker.client())
        .await
        .unwrap();
    client.create_topic("after", 1).await.unwrap();
    // The greeted connection is still served, past the deadline.
    let ping = Request::Ping(PingRequest { nonce: 7 }).to_frame(1);
    let answer = Response::from_frame(&decode_one(&raw_exchange(&greeted, &ping).await).unwrap());
    assert!(matches!(answer, Ok(Response::Ping(_))), "{answer:?}");
}

/// Before its hello is answered, a connection's frames are bounded to what takes no room in
/// the request budget: headers declaring large bodies (with no body following) are refused at
/// once with `FrameTooLarge`, instead of each holding its declared size of the budget that
/// every authenticated client shares, until the read timeout. After the hello, the same frame
/// is read as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_hello_take_no_room_in_the_request_budget() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let handle = broker.handle().unwrap();
    let peer = raw_connection(broker.addr(), handle.cert_pem()).await;
    // A header only: a hello of 8 MiB, whose body never comes.
    let mut head = Vec::new();
    rustmq::protocol::frame::FrameHeader {
        body_len: 8 << 20,
        kind: ApiKind::Hello.code(),
        version: 1,
        request_id: 1,
    }
    .write(&mut head);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let (mut send, recv) = peer.open_bi().await.unwrap();
        send.write_all(&head).await.unwrap();
        streams.push((send, recv));
    }
    for (_send, mut recv) in streams {
        let answer = within_30s("the refusal", recv.read_to_end(1 << 20))
            .await
            .unwrap_or_default();
        assert_eq!(error_code(&answer), Some(ErrorCode::FrameTooLarge));
    }
    assert_eq!(handle.request_memory_in_use(), 0);
    // Said hello, the connection may send large frames.
    raw_hello(&peer).await;
    let (mut send, mut recv) = peer.open_bi().await.unwrap();
    send.write_all(&head).await.unwrap();
    let reserved = wait_until(
        std::time::Duration::from_secs(20),
        || handle.request_memory_in_use(),
        |in_use| in_use > 0,
    )
    .await;
    assert_eq!(reserved, 8 << 20, "the body's room is taken, as it is read");
    drop(send);
    let _ = recv.stop(0u32.into());
}

/// A compressed batch is checked within a budget of bytes being decompressed at once, by the
/// size it declares: one that declares more than the whole budget is refused with a clear
/// error (a few KiB that decompress to megabytes cannot make the broker hold them), and the
/// rest are checked and stored as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_decompresses_beyond_the_budget_is_refused() {
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_decompressing_bytes = 1024 * 1024;
    let broker = TestBroker::start_with(config).await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("packed", 1).await.unwrap();
    let zeros = |n: usize| TestRecord::new(vec![0u8; n], 1);
    let bomb = batch(&[zeros(2 * 1024 * 1024)], Compression::Lz4);
    assert!(bomb.len() < 64 * 1024, "{} bytes compressed", bomb.len());
    let refused = produce(&client, "packed", 0, bomb, Acks::Leader)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, rustmq::ClientError::Broker { code: ErrorCode::BatchTooLarge, message, .. }
            if message.contains("max_decompressing_bytes")),
        "{refused:?}"
    );
    for _ in 0..4 {
        produce(
            &client,
            "packed",
            0,
            batch(&[zeros(300 * 1024), zeros(10)], Compression::Lz4),
            Acks::Leader,
        )
        .await
        .unwrap();
    }
    let (records, _) = fetch_all(&client, "packed", 0, 0).await;
    assert_eq!(records.len(), 8);
}

/// A hello being checked is waited for past the deadline, but a refused one is not: a peer
/// whose hello was refused (no credentials where they are required, or no version in common)
/// and that then says nothing is closed at the deadline like one that never said hello.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_hello_was_refused_is_closed_at_the_deadline() {
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.auth.required = true;
    config.limits.hello_timeout_ms = 1_000;
    let broker = TestBroker::start_with(config).await.unwrap();
    let cert = broker.handle().unwrap().cert_pem().to_owned();
    let hello = |min_version: u16, max_version: u16| {
        Request::Hello(HelloRequest {
            min_version,
            max_version,
            client_id: "raw".into(),
            credentials: None,
        })
        .to_frame(1)
    };
    let no_credentials = raw_connection(broker.addr(), &cert).await;
    assert_eq!(
        error_code(&raw_exchange(&no_credentials, &hello(1, 1)).await),
        Some(ErrorCode::AuthenticationFailed)
    );
    let no_version = raw_connection(broker.addr(), &cert).await;
    assert!(error_code(&raw_exchange(&no_version, &hello(9, 9)).await).is_some());
    for conn in [&no_credentials, &no_version] {
        let reason = within_30s("closing a refused connection", conn.closed()).await;
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.reason.as_ref() == b"no hello in time"),
            "{reason:?}"
        );
    }
}

/// A lookup by timestamp that decodes a large compressed batch takes its room in the budget
/// of bytes being decompressed, as a produce's check does: lookups landing on such batches at
/// once hold no more than the budget. With the budget held elsewhere it waits, and is
/// answered once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_by_time_decompresses_within_the_budget() {
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_decompressing_bytes = 1024 * 1024;
    let broker = TestBroker::start_with(config).await.unwrap();
    let handle = broker.handle().unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("timed", 1).await.unwrap();
    let stamped = |ts: i64| TestRecord::new(vec![0u8; 400 * 1024], ts);
    produce(
        &client,
        "timed",
        0,
        batch(&[stamped(1_000), stamped(2_000)], Compression::Lz4),
        Acks::Leader,
    )
    .await
    .unwrap();
    let lookup = || {
        let client = client.clone();
        tokio::spawn(async move {
            let request = Request::ListOffsets(ListOffsetsRequest {
                topic: "timed".into(),
                partition: 0,
                spec: OffsetSpec::Timestamp(1_500),
            });
            match client.raw_request(request).await {
                Ok(Response::ListOffsets(r)) => r.offset,
                other => panic!("{other:?}"),
            }
        })
    };
    assert_eq!(lookup().await.unwrap(), 1, "without contention");
    let held = handle.hold_decompression_budget().await;
    let waiting = lookup();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "decoded outside the budget");
    drop(held);
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("answered once there is room")
        .unwrap();
    assert_eq!(answered, 1);
}

/// Lists longer than any client sends are refused before anything is built from them: each
/// name a `FetchOffsets` or `Metadata` request repeats was an entry of its answer (a few bytes
/// on the wire, tens in memory, so a 16 MiB request could ask for gigabytes), and a join's
/// topics were kept for the member's whole session. Names that cannot be topics are refused
/// too, and a topic named many times is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_past_what_any_client_sends_are_refused() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("t", 2).await.unwrap();
    let cert = broker.handle().unwrap().cert_pem().to_owned();
    let peer = raw_connection(broker.addr(), &cert).await;
    raw_hello(&peer).await;
    let ask = |req: Request| {
        let peer = peer.clone();
        async move {
            Response::from_frame(&decode_one(&raw_exchange(&peer, &req.to_frame(3)).await).unwrap())
        }
    };
    let code = |answer: &Result<Response>| match answer {
        Ok(Response::Error(e)) => Some(e.code),
        _ => None,
    };
    let fetch_offsets = |topic: &str, partitions: u32| {
        Request::FetchOffsets(FetchOffsetsRequest {
            group: "g".into(),
            partitions: vec![TopicPartitions {
                topic: topic.into(),
                partitions: (0..partitions).collect(),
            }],
        })
    };
    let join = |client_id: String, topics: Vec<String>| {
        Request::JoinGroup(JoinGroupRequest {
            group: "g".into(),
            member_id: String::new(),
            client_id,
            topics,
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
        })
    };
    let metadata = |times: usize| {
        Request::Metadata(MetadataRequest {
            topics: Some(vec!["t".to_owned(); times]),
        })
    };

    let over = MAX_OFFSET_ENTRIES as u32 + 1;
    let refused = [
        (fetch_offsets("t", over), ErrorCode::InvalidRequest),
        (fetch_offsets(&"t".repeat(300), 1), ErrorCode::InvalidTopic),
        (metadata(MAX_METADATA_TOPICS + 1), ErrorCode::InvalidRequest),
        (
            join("c".into(), vec!["t".into(); MAX_SUBSCRIBED_TOPICS + 1]),
            ErrorCode::InvalidRequest,
        ),
        (
            join("c".into(), vec!["not a topic".into()]),
            ErrorCode::InvalidTopic,
        ),
        (
            join("c".repeat(MAX_CLIENT_ID_LEN + 1), vec!["t".into()]),
            ErrorCode::InvalidRequest,
        ),
    ];
    for (req, want) in refused {
        let kind = req.kind();
        let answer = ask(req).await;
        assert_eq!(code(&answer), Some(want), "{kind:?}: {answer:?}");
    }
    // A hello with a client id past the limit (it fits in a hello's frame) is refused too.
    let long_id = raw_connection(broker.addr(), &cert).await;
    let hello = Request::Hello(HelloRequest {
        min_version: 1,
        max_version: 1,
        client_id: "c".repeat(MAX_CLIENT_ID_LEN + 1),
        credentials: None,
    });
    assert_eq!(
        error_code(&raw_exchange(&long_id, &hello.to_frame(1)).await),
        Some(ErrorCode::InvalidRequest)
    );

    // Within the limits: answered, a topic named again answered once.
    match ask(fetch_offsets("t", 2)).await {
        Ok(Response::FetchOffsets(r)) => assert_eq!(r.offsets.len(), 2),
        other => panic!("{other:?}"),
    }
    match ask(metadata(MAX_METADATA_TOPICS)).await {
        Ok(Response::Metadata(r)) => {
            assert_eq!(r.topics.len(), 1);
            assert_eq!(r.topics[0].partitions.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    match ask(join(
        "c".repeat(MAX_CLIENT_ID_LEN),
        vec!["t".into(), "t".into()],
    ))
    .await
    {
        Ok(Response::JoinGroup(r)) => {
            let assigned: usize = r.assignment.iter().map(|t| t.partitions.len()).sum();
            assert_eq!(assigned, 2, "{r:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// The broker takes no QUIC datagrams (RustMQ sends none): offered, a peer could fill quinn's
/// buffer for them on every connection, outside the request budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_takes_no_datagrams() {
    let broker = TestBroker::start().await.unwrap();
    let peer = raw_connection(broker.addr(), broker.handle().unwrap().cert_pem()).await;
    assert_eq!(peer.max_datagram_size(), None);
}

/// One host that opens connections and says nothing holds at most
/// `limits.max_unauthenticated_per_address` of them, and clients from elsewhere still get in
/// (proving their address first while that many wait: a QUIC retry). Before, such a host took
/// every one of `max_connections` for as long as it kept reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_silent_host_cannot_take_every_connection() {
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_connections = 8;
    config.limits.max_unauthenticated_per_address = 3;
    config.limits.hello_timeout_ms = 60_000;
    let broker = TestBroker::start_with(config).await.unwrap();
    let cert = broker.handle().unwrap().cert_pem().to_owned();
    let silent_host = "127.0.0.2:0".parse().unwrap();
    let mut silent = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        match tests::raw_connection_from(silent_host, broker.addr(), &cert).await {
            Ok(conn) => silent.push(conn),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((silent.len(), refused), (3, 5));
    let client = within_30s("a client's connection", broker.client())
        .await
        .unwrap();
    client.create_topic("in", 1).await.unwrap();
    // Once a silent connection says hello, its place is given back to its address.
    raw_hello(&silent[0]).await;
    let more = tests::raw_connection_from(silent_host, broker.addr(), &cert).await;
    assert!(more.is_ok(), "{more:?}");
}
