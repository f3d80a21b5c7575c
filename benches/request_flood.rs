//! The broker's memory under a flood of large request frames that are never finished, or of
//! fetch answers that are never read: what its request budget (`limits.max_request_memory_*`,
//! `rustmq_broker::memory`) bounds.
//!
//! ```text
//! cargo build --release -p benches --example request_flood
//! target/release/examples/request_flood bounded|unbounded [frames|answers] [CONNECTIONS] [STREAMS]
//! ```
//!
//! Starts a broker in this process (default limits, or `unbounded`: budgets too large to
//! bind, as the broker was before it had them) and opens CONNECTIONS raw connections (default
//! 2) with STREAMS streams each (default 64). `frames` (the default) sends on every stream a
//! produce frame with a 7 MiB batch, all but its last byte; `answers` first produces two 7 MiB
//! batches, then sends on every stream a fetch of both from the start and never reads the
//! answer. Once nothing changes any more, it prints one JSON line: the bytes the peers got
//! through, the budget in use, and the process's resident memory (`VmRSS`, `VmHWM`) before and
//! after. Run each case in its own process: the high-water mark is the process's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use benches::memory;
use rustmq::testing::{BrokerConfig, TestBroker};
use rustmq_protocol::{Acks, Compression, FetchRequest, ProduceRequest, Request};
use tests::{batch, produce, raw_connection, raw_hello, write_counting, TestRecord};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "bounded".into());
    let kind = args.next().unwrap_or_else(|| "frames".into());
    if kind != "frames" && kind != "answers" {
        eprintln!("unknown kind {kind}: frames or answers");
        std::process::exit(2);
    }
    let connections: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let streams: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let mut config = BrokerConfig::default();
    match mode.as_str() {
        "bounded" => {}
        "unbounded" => {
            config.limits.max_request_memory_per_connection = u32::MAX;
            config.limits.max_request_memory_bytes = u64::MAX;
        }
        other => {
            eprintln!("unknown mode {other}: bounded or unbounded");
            std::process::exit(2);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let broker = TestBroker::start_with(config).await.expect("broker");
        let handle = broker.handle().expect("embedded");
        let client = broker.client().await.expect("client");
        client.create_topic("flood", 1).await.expect("topic");
        let seven_mib = || batch(&[TestRecord::new(vec![7u8; 7 << 20], 1)], Compression::None);
        let frame = if kind == "frames" {
            Request::Produce(ProduceRequest {
                topic: "flood".into(),
                partition: 0,
                acks: Acks::Leader,
                timeout_ms: 10_000,
                batch: seven_mib(),
            })
            .to_frame(1)
        } else {
            for _ in 0..2 {
                produce(&client, "flood", 0, seven_mib(), Acks::Leader)
                    .await
                    .expect("produce");
            }
            Request::Fetch(FetchRequest {
                topic: "flood".into(),
                partition: 0,
                offset: 0,
                max_bytes: 15 << 20,
                max_wait_ms: 0,
            })
            .to_frame(1)
        };
        // A produce frame is held one byte short; a fetch is sent whole and left unanswered.
        let cut = usize::from(kind == "frames");
        let head = bytes::Bytes::copy_from_slice(&frame[..frame.len() - cut]);
        let before = memory();
        let sent = Arc::new(AtomicUsize::new(0));
        let mut peers = Vec::new();
        for _ in 0..connections {
            let conn = raw_connection(broker.addr(), handle.cert_pem()).await;
            raw_hello(&conn).await;
            for _ in 0..streams {
                let (mut send, recv) = conn.open_bi().await.expect("stream");
                let (head, sent) = (head.clone(), Arc::clone(&sent));
                tokio::spawn(async move {
                    let _recv = recv;
                    if write_counting(&mut send, &head, &sent).await.is_err() {
                        return;
                    }
                    if cut == 0 {
                        let _ = send.finish();
                    }
                    // Held (unfinished, or its answer unread) until the process ends.
                    std::future::pending::<()>().await;
                });
            }
            peers.push(conn);
        }
        let state = || (sent.load(Ordering::Relaxed), handle.request_memory_in_use());
        let mut last = (usize::MAX, 0);
        while state() != last {
            last = state();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let last = last.0;
        let after = memory();
        println!(
            "{{\"mode\":\"{mode}\",\"kind\":\"{kind}\",\"connections\":{connections},\"streams\":{streams},\
             \"frame_bytes\":{},\"sent_bytes\":{last},\
             \"broker_request_memory_bytes\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\
             \"hwm_kib\":{}}}",
            frame.len(),
            handle.request_memory_in_use(),
            before.0,
            after.0,
            after.1,
        );
        // No orderly shutdown: the held streams would wait out their read timeouts.
        std::process::exit(0);
    });
}
