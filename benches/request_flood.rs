//! The broker's memory under a flood of large request frames that are never finished: what
//! its request budget (`limits.max_request_memory_*`, `rustmq_broker::memory`) bounds.
//!
//! ```text
//! cargo build --release -p benches --example request_flood
//! target/release/examples/request_flood bounded [CONNECTIONS] [STREAMS]
//! target/release/examples/request_flood unbounded [CONNECTIONS] [STREAMS]
//! ```
//!
//! Starts a broker in this process (default limits, or `unbounded`: budgets too large to
//! bind, as the broker was before it had them), opens CONNECTIONS raw connections (default 2)
//! with STREAMS streams each (default 64), and sends on every stream a produce frame with a
//! 7 MiB batch, all but its last byte. Once nothing more gets through, it prints one JSON line:
//! the bytes the peers got through and the process's resident memory (`VmRSS`, `VmHWM`)
//! before and after. Run each mode in its own process: the high-water mark is the process's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustmq::testing::{BrokerConfig, TestBroker};
use rustmq_protocol::{Acks, Compression, ProduceRequest, Request};
use tests::{batch, raw_connection, raw_hello, TestRecord};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "bounded".into());
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
        let frame = Request::Produce(ProduceRequest {
            topic: "flood".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 10_000,
            batch: batch(&[TestRecord::new(vec![7u8; 7 << 20], 1)], Compression::None),
        })
        .to_frame(1);
        let head = bytes::Bytes::copy_from_slice(&frame[..frame.len() - 1]);
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
                    let mut at = 0;
                    while at < head.len() {
                        match send.write(&head[at..]).await {
                            Ok(n) => {
                                at += n;
                                sent.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(_) => return,
                        }
                    }
                    // Held unfinished until the process ends.
                    std::future::pending::<()>().await;
                });
            }
            peers.push(conn);
        }
        let mut last = usize::MAX;
        while sent.load(Ordering::Relaxed) != last {
            last = sent.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let after = memory();
        println!(
            "{{\"mode\":\"{mode}\",\"connections\":{connections},\"streams\":{streams},\
             \"frame_bytes\":{},\"offered_bytes\":{},\"sent_bytes\":{last},\
             \"broker_request_memory_bytes\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\
             \"hwm_kib\":{}}}",
            frame.len(),
            frame.len() * connections * streams,
            handle.request_memory_in_use(),
            before.0,
            after.0,
            after.1,
        );
        // No orderly shutdown: the held streams would wait out their read timeouts.
        std::process::exit(0);
    });
}

/// The process's `VmRSS` and `VmHWM`, in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
