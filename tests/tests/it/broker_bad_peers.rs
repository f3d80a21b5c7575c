//! Misbehaving peers get an error answer or a closed stream, and never disturb other clients.

use rustmq::testing::TestBroker;
use rustmq_protocol::frame::encode_frame;
use rustmq_protocol::*;
use tests::{
    batch, decode_one, fetch_all, produce, raw_connection, raw_exchange, raw_hello, TestRecord,
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
    for (b, want) in [
        (corrupt, ErrorCode::CorruptBatch),
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

    const MIB: usize = 1024 * 1024;
    const FRAMES: usize = 8;
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_frame_bytes = 4 * MIB as u32;
    config.limits.max_batch_bytes = 4 * MIB as u32 - 1024;
    // Room for two of the peer's 3 MiB bodies, not three; the broker's total leaves room for
    // another connection's.
    config.limits.max_request_memory_per_connection = 7 * MIB as u32;
    config.limits.max_request_memory_bytes = 14 * MIB as u64;
    let broker = TestBroker::start_with(config).await.unwrap();
    let handle = broker.handle().unwrap();
    let good = broker.client().await.unwrap();
    good.create_topic("flood", 1).await.unwrap();
    let big_batch = |fill| {
        batch(
            &[TestRecord::new(vec![fill; 3 * MIB], 1)],
            Compression::None,
        )
    };

    let bad = raw_connection(broker.addr(), handle.cert_pem()).await;
    raw_hello(&bad).await;
    let frame = Request::Produce(ProduceRequest {
        topic: "flood".into(),
        partition: 0,
        acks: Acks::Leader,
        timeout_ms: 10_000,
        batch: big_batch(7),
    })
    .to_frame(1);
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
            let mut sent = 0;
            while sent < head.len() {
                let n = send.write(&head[sent..]).await.expect("write");
                sent += n;
                written.fetch_add(n, Ordering::Relaxed);
            }
            release.acquire().await.unwrap().forget();
            send.write_all(&last).await.expect("last byte");
            send.finish().unwrap();
            let answer = recv.read_to_end(1 << 20).await.expect("answer");
            Response::from_frame(&decode_one(&answer).expect("a frame"))
        }));
    }

    // Let the peer push all it can.
    let mut before = usize::MAX;
    while written.load(Ordering::Relaxed) != before {
        before = written.load(Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let body = frame.len() - rustmq::protocol::frame::FRAME_HEADER_LEN;
    assert_eq!(
        handle.request_memory_in_use(),
        2 * body as u64,
        "two bodies reserved: the connection's share has no room for a third"
    );
    // Two bodies read, and a stream window of each of the six others (unbounded, the peer
    // would have sent all eight: ~25 MB).
    let sent = written.load(Ordering::Relaxed);
    let bound = 2 * frame.len() + (FRAMES - 2) * (STREAM_RECEIVE_WINDOW as usize + 64 * 1024);
    assert!(
        sent <= bound && sent < FRAMES * head.len() * 6 / 10,
        "the peer sent {sent} bytes; at most {bound} can be let through"
    );

    // Another client is served meanwhile, with a frame as large.
    produce(&good, "flood", 0, big_batch(1), Acks::Leader)
        .await
        .expect("another connection is not held back");

    // Once complete, every held frame is handled.
    release.add_permits(FRAMES);
    for sender in senders {
        let answer = sender.await.unwrap();
        assert!(
            matches!(answer, Ok(Response::Produce(_))),
            "a held frame is answered: {answer:?}"
        );
    }
    let (records, _) = fetch_all(&good, "flood", 0, 0).await;
    assert_eq!(records.len(), FRAMES + 1, "nothing was lost");
    all_room_given_back(handle).await;
}

/// The budget comes back to 0 once the transport has let go of every answer (the peer's
/// acknowledgements may still be on their way when the last answer is read).
async fn all_room_given_back(handle: &rustmq::testing::BrokerHandle) {
    for _ in 0..100 {
        if handle.request_memory_in_use() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{} bytes still reserved", handle.request_memory_in_use());
}

/// A peer that asks for fetch answers and leaves them unread gets no more of them than its
/// connection's share: each answer's records hold their room until the transport has let go
/// of them, and a fetch finding no room waits before reading the log. Another client fetches
/// meanwhile, and once the peer reads, every answer arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_leaving_fetch_answers_unread_gets_only_its_share() {
    const MIB: usize = 1024 * 1024;
    const FETCHES: usize = 6;
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_frame_bytes = 4 * MIB as u32;
    config.limits.max_batch_bytes = 4 * MIB as u32 - 1024;
    // Room for two of the 3 MiB answers (and the 3.5 MiB asked for), not three.
    config.limits.max_request_memory_per_connection = 7 * MIB as u32;
    config.limits.max_request_memory_bytes = 14 * MIB as u64;
    let broker = TestBroker::start_with(config).await.unwrap();
    let handle = broker.handle().unwrap();
    let good = broker.client().await.unwrap();
    good.create_topic("big", 1).await.unwrap();
    for fill in 0..3u8 {
        let records = [TestRecord::new(vec![fill; 3 * MIB], 1)];
        produce(
            &good,
            "big",
            0,
            batch(&records, Compression::None),
            Acks::Leader,
        )
        .await
        .unwrap();
    }

    let bad = raw_connection(broker.addr(), handle.cert_pem()).await;
    raw_hello(&bad).await;
    let fetch = Request::Fetch(FetchRequest {
        topic: "big".into(),
        partition: 0,
        offset: 0,
        max_bytes: 3 * MIB as u32 + MIB as u32 / 2,
        max_wait_ms: 0,
    })
    .to_frame(1);
    let mut answers = Vec::new();
    for _ in 0..FETCHES {
        let (mut send, recv) = bad.open_bi().await.unwrap();
        send.write_all(&fetch).await.unwrap();
        send.finish().unwrap();
        answers.push(recv);
    }
    // Let the broker answer what it will.
    let mut before = u64::MAX;
    while handle.request_memory_in_use() != before {
        before = handle.request_memory_in_use();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // (The waiting fetches' own request frames, a few bytes each, hold room too.)
    let in_use = handle.request_memory_in_use() as usize;
    assert!(
        (6 * MIB..6 * MIB + 8192).contains(&in_use),
        "two answers of one 3 MiB batch each hold room, got {in_use} bytes"
    );
    // Only those two streams get any data: the others' fetches wait before the read.
    let mut started = 0;
    for recv in &mut answers {
        let mut byte = [0u8; 1];
        let first =
            tokio::time::timeout(std::time::Duration::from_millis(300), recv.read(&mut byte));
        if matches!(first.await, Ok(Ok(Some(1)))) {
            started += 1;
        }
    }
    assert_eq!(
        started, 2,
        "answers beyond the connection's share are not sent"
    );

    // Another client fetches meanwhile.
    let (records, _) = fetch_all(&good, "big", 0, 0).await;
    assert_eq!(records.len(), 3);

    // Read (all at once, as a client does: the answers waiting for room are sent only as the
    // first ones are taken), every answer arrives whole, the first two less the byte read above.
    let reads = answers
        .into_iter()
        .map(|mut recv| async move { recv.read_to_end(8 * MIB).await.expect("answer") });
    for rest in futures::future::join_all(reads).await {
        assert!(rest.len() > 3 * MIB, "a whole answer: {} bytes", rest.len());
    }
    all_room_given_back(handle).await;
}
