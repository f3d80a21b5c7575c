//! The raw-QUIC baseline: quinn endpoints with the broker's TLS setup (rustls with ring, TLS
//! 1.3, ALPN `rustmq/1`, a self-signed certificate made by the broker's own code) and quinn's
//! default transport settings but for the datagram size and the acknowledgement frequency,
//! which are RustMQ's (path MTU discovery up to `MAX_UDP_PAYLOAD_SIZE`, and
//! `ACK_ELICITING_THRESHOLD`, as the client and the broker do), between the same two runtimes
//! as the benchmark.
//!
//! - bulk: the client writes `bulk_bytes` on one stream in 64 KiB chunks; the server reads
//!   them and answers one byte; MB/s = bytes / (first write .. answer).
//! - round trip: the client writes a 100-byte frame on one stream and reads it echoed back,
//!   `round_trips` times; percentiles of each round trip.
//! - stream round trip: the same frame on a new stream per request, as RustMQ's requests go.
//! - CPU per stream round trip, each side (the client's: the process but the server's thread),
//!   for comparison with a workload's CPU per message.
//! - paced stream round trip: the same, one request every `1 / paced_rate` seconds (W4's
//!   pace, or `bench e2e --rate`'s), so that both threads go idle between requests as they do
//!   in W4: what waking them costs on this machine is part of this figure, as it is of W4's.
//!   Each is timed from when it counts as sent, as W4's messages are (see `pace`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustmq_broker::config::TlsSettings;
use rustmq_broker::tls::BrokerIdentity;

use super::cpu::CpuProbe;
use super::pace::Pacer;
use super::report::{round, Baseline, Latency};
use super::target::ServerThread;
use crate::error::CliError;

const FRAME: usize = 100;
const CHUNK: usize = 64 * 1024;

fn failed(what: &str) -> impl Fn(&dyn std::fmt::Display) -> CliError + '_ {
    move |e| CliError::Failed(format!("baseline: {what}: {e}"))
}

/// Measures the baseline; the server side runs on `server`.
pub(crate) async fn measure(
    server: &ServerThread,
    bulk_bytes: u64,
    round_trips: u32,
    paced_rate: u64,
) -> Result<(Baseline, Latency), CliError> {
    // Removed when this returns, or when the run is cut short (Ctrl-C drops this future).
    let dir = tempfile::Builder::new()
        .prefix("rustmq-bench-baseline-")
        .tempdir()
        .map_err(|e| CliError::io("baseline: temporary directory", e))?;
    let identity = BrokerIdentity::load_or_generate(&TlsSettings::default(), dir.path())
        .map_err(|e| failed("certificate")(&e))?;
    let server_tls = identity
        .server_config(&TlsSettings::default())
        .map_err(|e| failed("server tls")(&e))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from((*server_tls).clone()).map_err(|e| failed("server tls")(&e))?,
    ));
    server_config.transport_config(rustmq_transport());
    let endpoint = {
        let _guard = server.handle().enter();
        bind(Some(server_config))?
    };
    let addr = endpoint.local_addr().map_err(|e| failed("bind")(&e))?;
    let accept = server.handle().spawn(serve(endpoint));

    let mut roots = rustls::RootCertStore::empty();
    for cert in &identity.chain {
        roots.add(cert.clone()).map_err(|e| failed("trust")(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| failed("client tls")(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![rustmq::protocol::ALPN.to_vec()];
    let mut client = bind(None)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).map_err(|e| failed("client tls")(&e))?,
    ));
    client_config.transport_config(rustmq_transport());
    client.set_default_client_config(client_config);
    let conn = client
        .connect(addr, "localhost")
        .map_err(|e| failed("connect")(&e))?
        .await
        .map_err(|e| failed("connect")(&e))?;

    let bulk_mb_per_s = bulk(&conn, bulk_bytes).await?;
    let rtt = round_trips_of(&conn, round_trips).await?;
    let probe = CpuProbe::new(Some(server.handle().clone()));
    let cpu = probe.mark().await;
    let per_stream = round_trips_on_new_streams(&conn, round_trips, None).await?;
    let cpu = probe.since(&cpu).await;
    let per_trip =
        |d: std::time::Duration| round(d.as_secs_f64() * 1e6 / f64::from(round_trips.max(1)), 2);
    // One second of W4's pace at most.
    let paced_round_trips = round_trips.min(paced_rate.clamp(1, u64::from(u32::MAX)) as u32);
    let paced = round_trips_on_new_streams(&conn, paced_round_trips, Some(paced_rate)).await?;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    accept.abort();
    let baseline = Baseline {
        bulk_mb_per_s: (bulk_mb_per_s * 100.0).round() / 100.0,
        rtt_p50_us: rtt.quantile_us(0.5),
        rtt_p99_us: rtt.quantile_us(0.99),
        stream_rtt_p50_us: per_stream.quantile_us(0.5),
        stream_rtt_p99_us: per_stream.quantile_us(0.99),
        paced_rtt_p50_us: paced.quantile_us(0.5),
        paced_rtt_p99_us: paced.quantile_us(0.99),
        stream_client_cpu_us: cpu.map(|c| per_trip(c.client)),
        stream_server_cpu_us: cpu.and_then(|c| c.broker).map(per_trip),
    };
    Ok((baseline, rtt))
}

/// quinn's default transport settings, with RustMQ's datagram size bound and acknowledgement
/// frequency.
fn rustmq_transport() -> Arc<quinn::TransportConfig> {
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(rustmq::protocol::MAX_UDP_PAYLOAD_SIZE);
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(rustmq::protocol::ACK_ELICITING_THRESHOLD.into());
    let mut transport = quinn::TransportConfig::default();
    transport
        .mtu_discovery_config(Some(discovery))
        .ack_frequency_config(Some(acks));
    Arc::new(transport)
}

/// An endpoint on 127.0.0.1 accepting RustMQ's largest datagrams (a server if `server` is
/// given); called within a tokio runtime.
fn bind(server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint, CliError> {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(rustmq::protocol::MAX_UDP_PAYLOAD_SIZE)
        .map_err(|e| failed("endpoint")(&e))?;
    let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| failed("bind")(&e))?;
    quinn::Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| failed("bind")(&e))
}

async fn bulk(conn: &quinn::Connection, bytes: u64) -> Result<f64, CliError> {
    let chunk = bytes::Bytes::from(vec![b'x'; CHUNK]);
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| failed("bulk stream")(&e))?;
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        send.write_chunk(chunk.slice(..n))
            .await
            .map_err(|e| failed("bulk write")(&e))?;
        left -= n as u64;
    }
    send.finish().map_err(|e| failed("bulk finish")(&e))?;
    let mut done = [0u8; 1];
    recv.read_exact(&mut done)
        .await
        .map_err(|e| failed("bulk answer")(&e))?;
    Ok(bytes as f64 / started.elapsed().as_secs_f64() / 1e6)
}

async fn round_trips_of(conn: &quinn::Connection, n: u32) -> Result<Latency, CliError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| failed("echo stream")(&e))?;
    let frame = [b'r'; FRAME];
    let mut answer = [0u8; FRAME];
    let mut latency = Latency::new();
    for _ in 0..n {
        let started = Instant::now();
        send.write_all(&frame)
            .await
            .map_err(|e| failed("echo write")(&e))?;
        recv.read_exact(&mut answer)
            .await
            .map_err(|e| failed("echo read")(&e))?;
        latency.record(started.elapsed());
    }
    let _ = send.finish();
    Ok(latency)
}

/// Round trips of a 100-byte frame each on a stream of its own (open, write, finish, read to
/// the end), as RustMQ's requests go: what the protocol's stream per request costs on top of
/// the echo on one stream. Back to back, or `rate` per second, paced as W4 paces its sends.
async fn round_trips_on_new_streams(
    conn: &quinn::Connection,
    n: u32,
    rate: Option<u64>,
) -> Result<Latency, CliError> {
    let frame = [b's'; FRAME];
    let mut latency = Latency::new();
    let pacing = |e: std::io::Error| failed("pacing timer")(&e);
    let mut pacer = rate
        .map(|rate| Pacer::start(rate, u64::from(n)))
        .transpose()
        .map_err(pacing)?;
    for _ in 0..n {
        // A paced request is timed from when it counts as sent, as W4's messages are (like
        // for like: a request the sender missed counts its wait from its due time).
        let started = match &mut pacer {
            Some(pacer) => pacer
                .tick()
                .await
                .map_err(pacing)?
                .unwrap_or_else(Instant::now),
            None => Instant::now(),
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| failed("request stream")(&e))?;
        send.write_all(&frame)
            .await
            .map_err(|e| failed("request write")(&e))?;
        let _ = send.finish();
        recv.read_to_end(FRAME)
            .await
            .map_err(|e| failed("request answer")(&e))?;
        latency.record(started.elapsed());
    }
    Ok(latency)
}

/// The server: the first stream of a connection is the bulk sink, the second the echo, every
/// later one a single request answered on a task of its own (as the broker does).
async fn serve(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            // Bulk: read everything, answer one byte.
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            while let Ok(Some(_)) = recv.read_chunk(usize::MAX, true).await {}
            if send.write_all(b"k").await.is_err() {
                return;
            }
            let _ = send.finish();
            // Echo: 100-byte frames back as they come.
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            let mut frame = [0u8; FRAME];
            while recv.read_exact(&mut frame).await.is_ok() {
                if send.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    if let Ok(frame) = recv.read_to_end(FRAME).await {
                        if send.write_all(&frame).await.is_ok() {
                            let _ = send.finish();
                        }
                    }
                });
            }
        });
    }
}
