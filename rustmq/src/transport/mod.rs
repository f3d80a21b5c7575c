//! QUIC transport: the only module tree that names quinn.
//!
//! ```text
//! RustMqClient ──request──▶ Pool ──pick least-loaded live Connection (open one if all busy)──┐
//!                            │  ▲                                                           │
//!                            │  └── safe requests re-sent after a lost connection           ▼
//!                            │                                   Connection: permit (in-flight cap)
//!                            │                                     open_bi ─▶ frame ─▶ finish
//!                            │                                     read 12-byte header, body
//!                            │                                     Response / ClientError
//!                            └── Connector: resolve ─▶ QUIC + TLS 1.3 handshake ─▶ hello
//! ```
//!
//! Every connection starts with a hello exchange that negotiates the protocol version,
//! presents the credentials and returns the broker's limits. After that each request travels
//! on its own bidirectional stream, so a slow request (a long-poll fetch) never blocks others.

mod address;
pub(crate) mod backoff;
mod connector;
mod pool;
#[cfg(test)]
pub(crate) mod test_broker;
mod tls;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustmq_protocol::{
    ApiKind, BrokerLimits, ErrorCode, Frame, FrameHeader, HelloResponse, PingRequest, Request,
    Response, FRAME_HEADER_LEN,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ClientError, Result};

pub(crate) use address::BrokerAddress;
pub(crate) use pool::{spawn_health_task, Pool, Unanswered};

/// Largest response body the client reads: fetch answers can be much larger than the
/// broker's request limit, but a corrupt or hostile length must not make us buffer gigabytes.
pub(crate) const MAX_RESPONSE_BYTES: u32 = 256 * 1024 * 1024;

/// Client-wide counters, shared by the pool and its connections.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) total_requests: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One QUIC connection to a broker, past its hello exchange.
#[derive(Debug)]
pub(crate) struct Connection {
    quic: quinn::Connection,
    broker: String,
    hello: HelloResponse,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    next_request_id: AtomicU32,
    counters: Arc<Counters>,
    /// A background probe of this connection is running.
    probing: AtomicBool,
    /// The broker answered `ShuttingDown` on this connection: it takes no new requests.
    going_away: AtomicBool,
}

impl Connection {
    /// Wraps a connection whose hello exchange (request id 1) succeeded.
    fn new(
        quic: quinn::Connection,
        broker: String,
        hello: HelloResponse,
        stream_limit: u64,
        counters: Arc<Counters>,
    ) -> Self {
        // The broker's in-flight limit and our own stream limit both bound concurrency; a
        // broker announcing 0 still gets one request at a time rather than none. Pings go
        // outside this limit, on the one stream the broker grants beyond it, so that a
        // connection saturated with long-poll fetches still answers its ping instead of being
        // closed as dead.
        let cap = u64::from(hello.limits.max_in_flight)
            .min(stream_limit)
            .clamp(1, 1 << 16);
        let max_in_flight = usize::try_from(cap).unwrap_or(1);
        Connection {
            quic,
            broker,
            hello,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            next_request_id: AtomicU32::new(2),
            counters,
            probing: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
        }
    }

    /// The broker address this connection was opened to.
    pub(crate) fn broker(&self) -> &str {
        &self.broker
    }

    /// The broker's limits from the hello answer.
    pub(crate) fn limits(&self) -> BrokerLimits {
        self.hello.limits.clone()
    }

    /// The largest UDP payload this connection sends now (what path MTU discovery found).
    pub(crate) fn udp_payload_size(&self) -> u16 {
        self.quic.stats().path.current_mtu
    }

    /// Requests currently in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }

    /// An in-flight slot if one is free now.
    pub(crate) fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Waits for an in-flight slot.
    pub(crate) async fn reserve(&self) -> Result<OwnedSemaphorePermit> {
        // The semaphore is never closed; a closed one would mean the connection is gone.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Connection(format!("connection to {} closed", self.broker)))
    }

    /// Whether QUIC reports the connection closed (by either side, or idle), or the broker
    /// said on it that it is shutting down. Either way the pool drops it and takes no new
    /// request to it: a broker going away answers every new request `ShuttingDown` until it
    /// closes the connection, and a request re-sent there would only spend its retries.
    /// Requests in flight on it keep it open until their answers come.
    pub(crate) fn is_closed(&self) -> bool {
        self.going_away.load(Ordering::Relaxed) || self.is_lost()
    }

    /// Whether QUIC reports the connection closed (by either side, or idle).
    pub(crate) fn is_lost(&self) -> bool {
        self.quic.close_reason().is_some()
    }

    /// quinn's counters of this connection.
    #[cfg(test)]
    pub(crate) fn quic_stats(&self) -> quinn::ConnectionStats {
        self.quic.stats()
    }

    /// Closes the connection; requests in flight fail.
    pub(crate) fn close(&self, reason: &str) {
        self.quic.close(0u32.into(), reason.as_bytes());
    }

    /// Sends `request` in the slot `permit` and reads its answer; an error answer becomes the
    /// matching [`ClientError`].
    pub(crate) async fn request(
        &self,
        request: &Request,
        permit: OwnedSemaphorePermit,
    ) -> Result<Response> {
        let response = self.send(request).await;
        drop(permit);
        response
    }

    /// Writes `request` to a stream of its own and finishes the stream, without reading the
    /// answer: [`read_answer`](Self::read_answer) does, later.
    pub(crate) async fn write(&self, request: &Request) -> Result<Written> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        // A produce request's batch goes out as a chunk of its own, not copied into the frame.
        let chunks = request.to_frame_chunks(id);
        let body_len = chunks.iter().map(Bytes::len).sum::<usize>() - FRAME_HEADER_LEN;
        let max = self.hello.limits.max_frame_bytes as usize;
        if body_len > max {
            return Err(ClientError::MessageTooLarge {
                size: body_len,
                max_size: max,
            });
        }
        let recv = write_request(&self.quic, chunks, &self.counters).await?;
        Ok(Written {
            recv,
            id,
            kind: request.kind(),
        })
    }

    /// Reads the answer to a request [`write`](Self::write) wrote; an error answer becomes the
    /// matching [`ClientError`].
    pub(crate) async fn read_answer(&self, written: Written) -> Result<Response> {
        let Written { mut recv, id, kind } = written;
        let response = read_response(&mut recv, id, &self.counters).await?;
        let checked = check_answer(kind, response);
        if let Err(ClientError::Broker {
            code: ErrorCode::ShuttingDown,
            ..
        }) = &checked
        {
            self.going_away.store(true, Ordering::Relaxed);
        }
        checked
    }

    /// Pings the broker outside the in-flight limit; the round-trip time on success.
    pub(crate) async fn ping(&self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let nonce = fastrand::u64(..);
        let request = Request::Ping(PingRequest { nonce });
        match tokio::time::timeout(timeout, self.send(&request)).await {
            Err(_) => Err(ClientError::timeout(timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Response::Ping(pong))) if pong.nonce == nonce => Ok(started.elapsed()),
            Ok(Ok(_)) => Err(ClientError::UnexpectedResponse(
                "ping answered with another nonce".into(),
            )),
        }
    }

    /// Marks a probe as started; false if one is already running.
    pub(crate) fn start_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn end_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    async fn send(&self, request: &Request) -> Result<Response> {
        let written = self.write(request).await?;
        self.read_answer(written).await
    }
}

/// A request written to its stream whose answer is still to be read.
#[derive(Debug)]
pub(crate) struct Written {
    recv: quinn::RecvStream,
    id: u32,
    kind: ApiKind,
}

/// One request on a fresh bidirectional stream: write the frame, finish, read the answer.
async fn exchange(
    quic: &quinn::Connection,
    id: u32,
    frame: Vec<Bytes>,
    counters: &Counters,
) -> Result<Response> {
    let mut recv = write_request(quic, frame, counters).await?;
    read_response(&mut recv, id, counters).await
}

/// Opens a bidirectional stream, writes the frame and finishes the stream; the stream's
/// receiving side is returned for the answer.
async fn write_request(
    quic: &quinn::Connection,
    mut frame: Vec<Bytes>,
    counters: &Counters,
) -> Result<quinn::RecvStream> {
    let (mut send, recv) = quic.open_bi().await.map_err(connection_error)?;
    let frame_len = frame.iter().map(Bytes::len).sum();
    send.write_all_chunks(&mut frame)
        .await
        .map_err(write_error)?;
    // Finishing tells the broker the request is complete; an error here means the stream was
    // already reset, which reading the answer reports better.
    let _ = send.finish();
    Counters::add(&counters.bytes_sent, frame_len);
    Ok(recv)
}

/// Reads the answer to request `id` from its stream.
async fn read_response(
    recv: &mut quinn::RecvStream,
    id: u32,
    counters: &Counters,
) -> Result<Response> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut head).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(n) => ClientError::Quic(format!(
            "broker ended the response stream after {n} header bytes"
        )),
        quinn::ReadExactError::ReadError(e) => read_error(e),
    })?;
    let header = FrameHeader::parse_checked(&head, MAX_RESPONSE_BYTES)?;
    if header.request_id != id {
        return Err(ClientError::UnexpectedResponse(format!(
            "answer for request {} on the stream of request {id}",
            header.request_id
        )));
    }
    let body = read_body(recv, header.body_len as usize).await?;
    // The broker ends its side of the stream right after the answer, normally in the same
    // packet: take that end now if it is there. A stream read to its end is dropped silently;
    // one that is not makes quinn send STOP_SENDING (a frame, a wake-up of the connection
    // driver, and work for the broker) on every request.
    let _ = futures::FutureExt::now_or_never(recv.read_chunk(1, true));
    Counters::add(&counters.bytes_received, FRAME_HEADER_LEN + body.len());
    Ok(Response::from_frame(&Frame { header, body })?)
}

/// Reads exactly `len` bytes. Chunks are kept as they arrive and joined once at the end, so
/// the announced length is never trusted with an allocation before the bytes are there, and
/// a large answer is copied once rather than on every buffer growth.
async fn read_body(recv: &mut quinn::RecvStream, len: usize) -> Result<Bytes> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut got = 0;
    while got < len {
        match recv.read_chunk(len - got, true).await.map_err(read_error)? {
            Some(chunk) => {
                got += chunk.bytes.len();
                chunks.push(chunk.bytes);
            }
            None => {
                return Err(ClientError::Quic(format!(
                    "broker ended the response stream after {got} of {len} body bytes"
                )))
            }
        }
    }
    Ok(rustmq_protocol::frame::join_chunks(chunks, len))
}

/// Turns error answers into errors and rejects answers of another kind than the request's.
fn check_answer(request: ApiKind, response: Response) -> Result<Response> {
    match response {
        Response::Error(e) => Err(ClientError::from_response(e)),
        r if r.kind() == Some(request) => Ok(r),
        r => Err(ClientError::UnexpectedResponse(format!(
            "{} answer to a {request} request",
            r.kind().map_or("unknown", |k| k.name()),
        ))),
    }
}

/// TLS alerts travel as QUIC error codes 0x100-0x1ff.
fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// rustls names an unknown issuer only by its enum variant: say what to check.
fn with_hint(reason: &str) -> String {
    if reason.contains("UnknownIssuer") {
        format!(
            "{reason}: the broker's certificate does not chain to a trusted CA \
             (check tls_config.ca_cert)"
        )
    } else {
        reason.to_owned()
    }
}

/// Maps the loss of a connection to the client's error.
fn connection_error(e: quinn::ConnectionError) -> ClientError {
    use quinn::ConnectionError as E;
    match e {
        E::TransportError(t) if is_crypto(t.code) => ClientError::Tls(with_hint(&t.reason)),
        E::ConnectionClosed(c) if is_crypto(c.error_code) => ClientError::Tls(format!(
            "broker rejected the handshake: {}",
            String::from_utf8_lossy(&c.reason)
        )),
        E::ApplicationClosed(c) => ClientError::Connection(format!(
            "closed by broker: {}",
            String::from_utf8_lossy(&c.reason)
        )),
        E::TransportError(_) | E::VersionMismatch | E::CidsExhausted => {
            ClientError::Quic(e.to_string())
        }
        E::ConnectionClosed(_) | E::Reset | E::TimedOut | E::LocallyClosed => {
            ClientError::Connection(format!("connection lost: {e}"))
        }
    }
}

fn write_error(e: quinn::WriteError) -> ClientError {
    match e {
        quinn::WriteError::ConnectionLost(e) => connection_error(e),
        e => ClientError::Quic(format!("request stream: {e}")),
    }
}

fn read_error(e: quinn::ReadError) -> ClientError {
    match e {
        quinn::ReadError::ConnectionLost(e) => connection_error(e),
        e => ClientError::Quic(format!("response stream: {e}")),
    }
}

/// Requests that may be sent again after a lost connection: reading them twice changes
/// nothing on the broker. Produce, topic changes, group membership and commits are left to
/// the layers that know how to repeat them safely.
pub(crate) fn is_safe_to_repeat(request: &Request) -> bool {
    matches!(
        request,
        Request::Ping(_)
            | Request::Metadata(_)
            | Request::ListTopics(_)
            | Request::DescribeTopic(_)
            | Request::Fetch(_)
            | Request::ListOffsets(_)
            | Request::FetchOffsets(_)
            | Request::DescribeGroup(_)
            | Request::ListGroups(_)
            | Request::Hello(_)
            // Creates at most once: the topic, once it exists, is answered as it is.
            | Request::AutoCreateTopic(_)
    )
}

/// Upper bound for waiting on graceful closes.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// `start + duration`, or about thirty years after `start` when an `Instant` cannot hold that
/// (a configured `Duration::MAX` meaning "no limit"), as tokio's own timers do.
pub(crate) fn deadline_after(start: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustmq_protocol::*;

    #[test]
    fn only_reads_are_safe_to_repeat() {
        assert!(is_safe_to_repeat(&Request::Ping(PingRequest { nonce: 1 })));
        assert!(is_safe_to_repeat(&Request::ListTopics(
            ListTopicsRequest {}
        )));
        assert!(!is_safe_to_repeat(&Request::DeleteTopic(
            DeleteTopicRequest { name: "t".into() }
        )));
        assert!(!is_safe_to_repeat(&Request::InitProducer(
            InitProducerRequest { name: None }
        )));
    }

    #[test]
    fn error_answers_and_wrong_kinds() {
        let ping = Request::Ping(PingRequest { nonce: 1 });
        let err = Response::Error(ErrorResponse {
            code: ErrorCode::Throttled,
            message: "x".into(),
        });
        assert!(matches!(
            check_answer(ping.kind(), err),
            Err(ClientError::Broker {
                code: ErrorCode::Throttled,
                ..
            })
        ));
        let wrong = Response::ListGroups(ListGroupsResponse { groups: vec![] });
        assert!(matches!(
            check_answer(ping.kind(), wrong),
            Err(ClientError::UnexpectedResponse(_))
        ));
        let right = Response::Ping(PingResponse { nonce: 1 });
        assert!(check_answer(ping.kind(), right).is_ok());
    }

    #[test]
    fn deadlines_past_what_an_instant_holds_are_far_away() {
        let now = Instant::now();
        let secs = Duration::from_secs(3);
        assert_eq!(deadline_after(now, secs), now + secs);
        let never = deadline_after(now, Duration::MAX);
        assert!(never >= now + Duration::from_secs(10 * 365 * 86_400));
    }

    #[test]
    fn crypto_close_codes_are_tls_errors() {
        let close = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(42),
            frame_type: None,
            reason: Bytes::from_static(b"bad certificate"),
        });
        assert!(matches!(connection_error(close), ClientError::Tls(_)));
        assert!(matches!(
            connection_error(quinn::ConnectionError::TimedOut),
            ClientError::Connection(_)
        ));
        assert!(matches!(
            connection_error(quinn::ConnectionError::VersionMismatch),
            ClientError::Quic(_)
        ));
    }
}
