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
