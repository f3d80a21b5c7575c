//! Helpers shared by the integration tests in `tests/tests/`: batches, produce and fetch over a
//! real client, and a raw QUIC peer for misbehaving-client tests.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rustmq::RustMqClient;
use rustmq_protocol::*;

/// One record to put in a test batch.
#[derive(Debug, Clone)]
pub struct TestRecord {
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Timestamp (ms).
    pub timestamp: i64,
}

impl TestRecord {
    /// A record with a value and a timestamp.
    pub fn new(value: impl Into<Vec<u8>>, timestamp: i64) -> Self {
        Self {
            key: None,
            value: value.into(),
            headers: Vec::new(),
            timestamp,
        }
    }
}

/// Encodes records as one batch.
pub fn batch(records: &[TestRecord], codec: Compression) -> Bytes {
    let mut b = RecordBatchBuilder::new().compression(codec, 3);
    for r in records {
        b.push(
            r.timestamp,
            r.key.as_deref(),
            Some(&r.value),
            r.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        );
    }
    b.build().expect("test batch encodes")
}

/// Sends one batch and returns the answer.
pub async fn produce(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    batch: Bytes,
    acks: Acks,
) -> rustmq::Result<ProduceResponse> {
    let req = Request::Produce(ProduceRequest {
        topic: topic.into(),
        partition,
        acks,
        timeout_ms: 10_000,
        batch,
    });
    match client.raw_request(req).await? {
        Response::Produce(r) => Ok(r),
        other => panic!("unexpected answer to produce: {other:?}"),
    }
}

/// One fetch.
pub async fn fetch(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    offset: u64,
    max_wait_ms: u32,
) -> rustmq::Result<FetchResponse> {
    let req = Request::Fetch(FetchRequest {
        topic: topic.into(),
        partition,
        offset,
        max_bytes: 1 << 20,
        max_wait_ms,
    });
    match client.raw_request(req).await? {
        Response::Fetch(r) => Ok(r),
        other => panic!("unexpected answer to fetch: {other:?}"),
    }
}

/// The records of partition 0 of `topic` once there are at least `n`, or all there are after
/// `wait`.
pub async fn records_when(
    client: &RustMqClient,
    topic: &str,
    n: usize,
    wait: std::time::Duration,
) -> Vec<Record> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (records, _) = fetch_all(client, topic, 0, 0).await;
        if records.len() >= n || tokio::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every record from `from` up to the high watermark, and the raw batches they came in.
pub async fn fetch_all(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    from: u64,
) -> (Vec<Record>, Vec<Bytes>) {
    let mut records = Vec::new();
    let mut raw = Vec::new();
    let mut offset = from;
    loop {
        let resp = fetch(client, topic, partition, offset, 0)
            .await
            .expect("fetch");
        if resp.records.is_empty() {
            assert_eq!(
                offset, resp.high_watermark,
                "fetch returned nothing before the high watermark"
            );
            return (records, raw);
        }
        for batch in BatchIter::new(resp.records) {
            let batch = batch.expect("stored batch is valid");
            raw.push(batch.as_bytes().clone());
            for rec in batch.records().expect("records decode") {
                let rec = rec.expect("record decodes");
                if rec.offset >= offset {
                    records.push(rec);
                }
            }
            offset = batch.header().next_offset();
        }
    }
}

/// Sends, with `producer`, a message of `byte`s as large as the broker stores (its batches
/// at most `max_batch_bytes`), with room for nothing more; returns its payload's size.
async fn send_largest(producer: &rustmq::Producer, max_batch_bytes: usize, byte: u8) -> usize {
    let mut size = max_batch_bytes - 200;
    loop {
        let message = rustmq::Message::builder()
            .topic(producer.topic())
            .payload(vec![byte; size])
            .build()
            .expect("message");
        match producer.send(message).await {
            Ok(_) => return size,
            Err(rustmq::ClientError::MessageTooLarge { .. }) => size -= 50,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A broker whose batches take at most 16 KiB, a client of it, `topic` and `<topic>.dlq` (one
/// partition each), and in `topic` a message of `byte`s as large as the broker stores; returns
/// the message's payload size too.
pub async fn largest_message_stored(
    topic: &str,
    byte: u8,
) -> (rustmq::testing::TestBroker, RustMqClient, usize) {
    const LIMIT: usize = 16 * 1024;
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_batch_bytes = LIMIT as u32;
    let broker = rustmq::testing::TestBroker::start_with(config)
        .await
        .expect("broker");
    let client = broker.client().await.expect("client");
    client.create_topic(topic, 1).await.expect("topic");
    client
        .create_topic(&format!("{topic}.dlq"), 1)
        .await
        .expect("dead-letter topic");
    let producer = client.create_producer(topic).await.expect("producer");
    let size = send_largest(&producer, LIMIT, byte).await;
    (broker, client, size)
}

/// Installs a test log subscriber once (RUST_LOG controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A bare QUIC connection to a broker, for sending arbitrary bytes.
pub async fn raw_connection(addr: SocketAddr, cert_pem: &str) -> quinn::Connection {
    raw_connection_from("127.0.0.1:0".parse().expect("addr"), addr, cert_pem)
        .await
        .expect("handshake")
}

/// [`raw_connection`] from a socket bound to `bind` (another loopback address, say); the
/// handshake's failure (a refusal) is returned.
pub async fn raw_connection_from(
    bind: SocketAddr,
    addr: SocketAddr,
    cert_pem: &str,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint = quinn::Endpoint::client(bind).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint.connect(addr, "localhost").expect("connect").await
}

/// Sends `bytes` on a new stream, finishes it, and reads whatever comes back.
pub async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    // The broker may stop the stream before everything is written; that is a valid answer.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    recv.read_to_end(64 << 20).await.unwrap_or_default()
}

/// Says hello on a raw connection.
pub async fn raw_hello(conn: &quinn::Connection) {
    let hello = Request::Hello(HelloRequest {
        min_version: 1,
        max_version: 1,
        client_id: "raw".into(),
        credentials: None,
    });
    let answer = raw_exchange(conn, &hello.to_frame(1)).await;
    let frame = decode_one(&answer).expect("hello answer");
    assert!(matches!(
        Response::from_frame(&frame),
        Ok(Response::Hello(_))
    ));
}

/// Decodes the first frame of `bytes`.
pub fn decode_one(bytes: &[u8]) -> Option<Frame> {
    let mut d = FrameDecoder::new(u32::MAX);
    d.extend(bytes);
    d.next_frame().ok().flatten()
}

/// Reads `read` every 20 ms until `done` holds for its value, for up to `within`; returns the
/// last value read (the caller asserts on it).
pub async fn wait_until<T: Copy>(
    within: std::time::Duration,
    mut read: impl FnMut() -> T,
    done: impl Fn(T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = read();
        if done(value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Writes all of `bytes` to `send`, adding what the transport accepts to `written` as it goes
/// (a peer counting how much flow control lets through); stops at the first error.
pub async fn write_counting(
    send: &mut quinn::SendStream,
    bytes: &[u8],
    written: &std::sync::atomic::AtomicUsize,
) -> Result<(), quinn::WriteError> {
    let mut at = 0;
    while at < bytes.len() {
        let n = send.write(&bytes[at..]).await?;
        at += n;
        written.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Restarts the broker on its port (which the old endpoint may hold for a moment).
pub async fn restart_broker(broker: &mut rustmq::testing::TestBroker) {
    for attempt in 0.. {
        match broker.restart().await {
            Ok(()) => return,
            Err(e) if attempt < 50 => {
                tracing::debug!(error = %e, "broker restart: retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("broker restart: {e}"),
        }
    }
}

/// A UDP relay on 127.0.0.1 between one client and a broker: each datagram forwarded `delay`
/// late (at once for zero: the same broker, farther away), and none, either way, while it is
/// [`cut`](Self::cut) (a network partition of that client alone: QUIC sees a silent path).
pub struct UdpRelay {
    /// The address for the client to dial.
    pub addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl UdpRelay {
    /// Starts relaying to `broker`.
    pub async fn start(broker: SocketAddr, delay: std::time::Duration) -> UdpRelay {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::net::UdpSocket;
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(broker).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let client = Arc::new(parking_lot::Mutex::new(None));
        // Sends `datagram` to `to` (the broker for `None`), `delay` late.
        let forward = move |socket: Arc<UdpSocket>, datagram: &[u8], to: Option<SocketAddr>| {
            let datagram = datagram.to_vec();
            let send = async move {
                let _ = match to {
                    Some(to) => socket.send_to(&datagram, to).await,
                    None => socket.send(&datagram).await,
                };
            };
            if delay.is_zero() {
                futures::future::Either::Left(send)
            } else {
                futures::future::Either::Right(async move {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        send.await;
                    });
                })
            }
        };
        tokio::spawn({
            let (front, back, cut, client) =
                (front.clone(), back.clone(), cut.clone(), client.clone());
            async move {
                let mut datagram = vec![0u8; 65_536];
                loop {
                    let Ok((n, from)) = front.recv_from(&mut datagram).await else {
                        continue;
                    };
                    *client.lock() = Some(from);
                    if !cut.load(Ordering::SeqCst) {
                        forward(back.clone(), &datagram[..n], None).await;
                    }
                }
            }
        });
        tokio::spawn({
            let cut = cut.clone();
            async move {
                let mut datagram = vec![0u8; 65_536];
                loop {
                    // A connected socket may report the ICMP of an earlier send: not a datagram.
                    let Ok(n) = back.recv(&mut datagram).await else {
                        continue;
                    };
                    let to = *client.lock();
                    if let Some(to) = to.filter(|_| !cut.load(Ordering::SeqCst)) {
                        forward(front.clone(), &datagram[..n], Some(to)).await;
                    }
                }
            }
        });
        UdpRelay { addr, cut }
    }

    /// Cuts the path (`true`) or heals it.
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}
