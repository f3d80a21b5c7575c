//! The QUIC server: the only module of the broker that names quinn.
//!
//! One task per connection accepts bi-streams; one task per stream reads request frames,
//! answers each in order, and ends when the client finishes its side. Sizes are checked from
//! the frame header before a body byte is buffered, bodies are buffered only as fast as they
//! arrive, and a stream that stalls mid-frame is dropped after the read timeout. A bad frame
//! costs its sender an error answer or a closed stream; other streams and connections never
//! notice.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use rustmq_protocol::{
    ErrorCode, ErrorResponse, Frame, FrameHeader, Request, Response, FRAME_HEADER_LEN,
};
use tokio::sync::{oneshot, watch};

use crate::error::BrokerError;
use crate::handler::{ConnState, Core};
use crate::memory::{ConnectionMemory, Refused, Reservation};
use crate::tls::{BrokerIdentity, TlsError};

/// Errors starting the QUIC endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The certificate could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A QUIC setting quinn refused.
    #[error("invalid QUIC setting: {0}")]
    Config(String),
}

/// A bound QUIC endpoint.
pub(crate) struct Server {
    endpoint: quinn::Endpoint,
    /// Ends once the endpoint's UDP socket is closed: see [`TrackedSocket`].
    socket_closed: oneshot::Receiver<()>,
}

/// The endpoint's UDP socket, which tells when it is closed. quinn's endpoint driver, every
/// connection's driver and every stream still held share the socket, so the port stays bound
/// until the last of them lets it go, which may be after [`quinn::Endpoint::wait_idle`]
/// returned and the endpoint is gone (a stream task still ending, a driver task not yet
/// polled). A broker restarted on the same port waits for this instead of guessing.
#[derive(Debug)]
struct TrackedSocket {
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    /// Dropped after `socket`: its receiver then ends.
    _closed: oneshot::Sender<()>,
}

impl TrackedSocket {
    fn new(socket: Arc<dyn quinn::AsyncUdpSocket>) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (closed, socket_closed) = oneshot::channel();
        let tracked = Arc::new(TrackedSocket {
            socket,
            _closed: closed,
        });
        (tracked, socket_closed)
    }
}

impl quinn::AsyncUdpSocket for TrackedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        // The poller holds the socket (the inner one holds the inner socket): it is closed
        // only once every poller is gone too.
        Box::pin(TrackedPoller {
            poller: Arc::clone(&self.socket).create_io_poller(),
            _socket: self,
        })
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.socket.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        self.socket.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.socket.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.socket.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.socket.may_fragment()
    }
}

/// A [`TrackedSocket`]'s poller: the inner socket's, holding the tracked socket.
#[derive(Debug)]
struct TrackedPoller {
    /// Dropped before `_socket`.
    poller: Pin<Box<dyn quinn::UdpPoller>>,
    _socket: Arc<TrackedSocket>,
}

impl quinn::UdpPoller for TrackedPoller {
    fn poll_writable(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context,
    ) -> Poll<std::io::Result<()>> {
        self.get_mut().poller.as_mut().poll_writable(cx)
    }
}

impl Server {
    pub(crate) fn bind(
        addr: SocketAddr,
        identity: &BrokerIdentity,
        tls: &crate::config::TlsSettings,
        core_limits: &crate::config::Limits,
        quic: &crate::config::QuicSettings,
    ) -> Result<Self, ServerError> {
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config(tls)?)
                .map_err(|e| TlsError::Generate(format!("unusable rustls config: {e}")))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            // One stream more than the requests announced in the hello: clients keep it for
            // pings (see `Limits::max_in_flight_per_connection`).
            .max_concurrent_bidi_streams(
                (u64::from(core_limits.max_in_flight_per_connection) + 1)
                    .try_into()
                    .expect("a u32 plus one is a valid varint"),
            )
            .max_concurrent_uni_streams(0u32.into())
            // What the transport buffers for a stream the broker does not read (a frame waiting
            // for room in the request budget): see `memory`. The connection's own window stays
            // unlimited: were it smaller than the waiting streams' windows together, their
            // unread bytes could take all of it, and a frame holding room could never finish.
            .stream_receive_window(crate::memory::STREAM_RECEIVE_WINDOW.into())
            // RustMQ takes no datagrams: offered, a peer could fill quinn's buffer for them
            // (1.25 MB a connection by default, each holding its whole packet) outside the
            // request budget. Without the offer a datagram is a protocol violation.
            .datagram_receive_buffer_size(None)
            .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
                120_000,
            ))));
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(quic.max_udp_payload_size);
        transport.mtu_discovery_config(Some(discovery));
        let mut acks = quinn::AckFrequencyConfig::default();
        acks.ack_eliciting_threshold(quic.ack_eliciting_threshold.into());
        transport.ack_frequency_config(Some(acks));
        config.transport_config(Arc::new(transport));
        // `Endpoint::server`, with the datagram size of `quic` (validated with the config).
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(quic.max_udp_payload_size)
            .map_err(|_| {
                ServerError::Config(format!(
                    "quic.max_udp_payload_size {} is out of range",
                    quic.max_udp_payload_size
                ))
            })?;
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let bind_error = |source| ServerError::Bind { addr, source };
        let (socket, socket_closed) = TrackedSocket::new(
            quinn::Runtime::wrap_udp_socket(&*runtime, socket).map_err(bind_error)?,
        );
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(config),
            socket,
            runtime,
        )
        .map_err(bind_error)?;
        Ok(Self {
            endpoint,
            socket_closed,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts connections until `shutdown` turns true.
    pub(crate) async fn run(self, core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
        let connections = Arc::new(AtomicU32::new(0));
        let waiting = Arc::new(WaitingForHello::default());
        let limits = &core.config.limits;
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let Some(incoming) = incoming else { break };
            if connections.load(Ordering::Relaxed) >= limits.max_connections {
                tracing::warn!(remote = %incoming.remote_address(), "connection refused: too many connections");
                incoming.refuse();
                continue;
            }
            if must_prove_address(
                incoming.remote_address_validated(),
                waiting.total(),
                limits.max_connections,
            ) {
                // Many connections wait for their hello: this one shows first that it can
                // receive at its address (a made-up source address never answers).
                let _ = incoming.retry();
                continue;
            }
            let address = host_of(incoming.remote_address().ip());
            let Some(unauthenticated) =
                waiting.admit(address, limits.max_unauthenticated_per_address)
            else {
                // Not a warning each: a host at its bound may try a hundred times a second.
                tracing::debug!(remote = %incoming.remote_address(), "connection refused: too many from its address waiting for their hello");
                incoming.refuse();
                continue;
            };
            let slot = ConnectionSlot::take(&connections);
            let core = Arc::clone(&core);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // Given back however the task ends, a panic included.
                let _slot = slot;
                let remote = incoming.remote_address();
                // A handshake that does not finish in time gives its connection slot back
                // (a peer may start handshakes it never ends, to take every slot).
                let limit = hello_limit(&core);
                match tokio::time::timeout(limit, incoming).await {
                    Ok(Ok(conn)) => serve_connection(conn, core, shutdown, unauthenticated).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "handshake failed"),
                    Err(_) => tracing::debug!(%remote, "handshake not finished in time"),
                }
            });
        }
        // New handshakes are dropped rather than refused while the connections close: a client
        // reconnecting during a restart keeps retransmitting its first packet and completes
        // its handshake with the next broker on this port, instead of counting a refusal
        // against its retries.
        let Server {
            endpoint,
            socket_closed,
        } = self;
        endpoint.set_server_config(None);
        // A connection still in its handshake has no RTT sample and uses the initial 333 ms
        // estimate, so its closing period is ~3 s, which a 2 s bound here cut short now and
        // then ("address in use" on a restart).
        close_and_wait(endpoint, socket_closed, Duration::from_secs(5)).await;
    }
}

/// Closes `endpoint`'s connections, then waits, within `bound` in all, for their closing
/// periods (three probe timeouts on quinn's timers; the peer need not answer) and for the
/// endpoint's socket to be closed (see [`TrackedSocket`]), so that the port is free when it
/// returns.
async fn close_and_wait(
    endpoint: quinn::Endpoint,
    socket_closed: oneshot::Receiver<()>,
    bound: Duration,
) {
    endpoint.close(0u32.into(), b"broker shutting down");
    let until = tokio::time::Instant::now() + bound;
    let _ = tokio::time::timeout_at(until, endpoint.wait_idle()).await;
    drop(endpoint);
    if tokio::time::timeout_at(until, socket_closed).await.is_err() {
        tracing::warn!(
            bound_ms = bound.as_millis() as u64,
            "the QUIC socket is still open after the shutdown's bound: its port stays bound"
        );
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    core: Arc<Core>,
    shutdown: watch::Receiver<bool>,
    unauthenticated: Unauthenticated,
) {
    let remote = conn.remote_address();
    let span = tracing::debug_span!("connection", %remote);
    tracing::debug!(parent: &span, "connected");
    let state = Arc::new(ConnState {
        memory: Some(core.request_memory.connection()),
        unauthenticated: parking_lot::Mutex::new(Some(unauthenticated)),
        ..ConnState::default()
    });
    if let Some(principal) = certificate_principal(&conn, core.config.tls.principal_from) {
        tracing::debug!(parent: &span, %principal, "client certificate verified");
        let _ = state.peer_principal.set(principal);
    }
    let close = Arc::new(tokio::sync::Notify::new());
    // A connection must say hello in time: one that never does would hold a connection slot
    // for as long as it keeps the connection alive (with authentication required, a peer
    // without credentials could take every slot).
    let mut awaiting_hello = true;
    let mut hello_due = std::pin::pin!(tokio::time::sleep(hello_limit(&core)));
    // A hello being checked holds the deadline off, but not past this: password checks
    // queue (at most one per core at once), and peers whose bad passwords wait in that queue
    // would otherwise hold their connection slots for as long as it takes.
    let hello_cutoff = tokio::time::Instant::now() + hello_limit(&core) * MAX_HELLO_LIMITS;
    // Made once and polled again for every stream, rather than made, registered with their
    // signals and dropped per stream.
    let mut stop = shutdown.clone();
    let mut stopping = std::pin::pin!(stop.wait_for(|stop| *stop));
    let mut closing = std::pin::pin!(close.notified());
    loop {
        let stream = tokio::select! {
            s = conn.accept_bi() => s,
            _ = &mut stopping => break,
            () = &mut closing => {
                tracing::info!(parent: &span, "closing the connection after repeated authentication failures");
                conn.close(3u32.into(), b"too many failed authentication attempts");
                break;
            }
            () = &mut hello_due, if awaiting_hello => {
                if state.principal.get().is_some() {
                    awaiting_hello = false;
                    continue;
                }
                let now = tokio::time::Instant::now();
                if state.hellos_checking.load(Ordering::Acquire) > 0 && now < hello_cutoff {
                    // A hello being checked (password checks may queue) is not cut short, up
                    // to the cutoff; one refused is no reason to wait longer.
                    hello_due.as_mut().reset((now + hello_limit(&core)).min(hello_cutoff));
                    continue;
                }
                tracing::info!(parent: &span, "closing a connection that did not say hello in time");
                conn.close(4u32.into(), b"no hello in time");
                break;
            }
        };
        match stream {
            Ok((send, recv)) => {
                let core = Arc::clone(&core);
                let state = Arc::clone(&state);
                let close = Arc::clone(&close);
                let shutdown = shutdown.clone();
                // Boxed: the stream's future is a few KB (every kind of request is handled
                // inline), which spawning would copy several times over into the task.
                tokio::spawn(Box::pin(async move {
                    serve_stream(send, recv, &core, &state, shutdown).await;
                    if state.close_requested.load(Ordering::Relaxed) {
                        close.notify_one();
                    }
                }));
            }
            Err(e) => {
                tracing::debug!(parent: &span, reason = %e, "connection closed");
                break;
            }
        }
    }
    // Streams still waiting for room end now, rather than wait for room their own connection's
    // buffers may hold for as long as they exist; so do hellos waiting for their check.
    if let Some(memory) = &state.memory {
        memory.close();
    }
    state.ended.end();
    // Its place among its address's connections waiting for their hello, now, rather than
    // once its last stream lets the state go.
    state.unauthenticated.lock().take();
}

/// A place among the broker's `max_connections`, counted in the connections gauge too; given
/// back when dropped, however the connection's task ends.
struct ConnectionSlot(Arc<AtomicU32>);

impl ConnectionSlot {
    fn take(connections: &Arc<AtomicU32>) -> Self {
        connections.fetch_add(1, Ordering::Relaxed);
        crate::metrics::connection_opened();
        Self(Arc::clone(connections))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::connection_closed();
    }
}

/// The connections waiting for their hello to be answered (in their handshake, or not yet
/// authenticated), by address and in all.
#[derive(Debug, Default)]
struct WaitingForHello {
    by_address: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    total: AtomicU32,
}

impl WaitingForHello {
    /// A place for a connection from `address`, unless `most` of its connections wait.
    fn admit(self: &Arc<Self>, address: std::net::IpAddr, most: u32) -> Option<Unauthenticated> {
        let mut by_address = self.by_address.lock();
        let waiting = by_address.entry(address).or_insert(0);
        if *waiting >= most {
            return None;
        }
        *waiting += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Unauthenticated {
            waiting: Arc::clone(self),
            address,
        })
    }

    fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }
}

/// A connection's place among those waiting for their hello: given back when its hello is
/// answered, or when it ends.
#[derive(Debug)]
pub(crate) struct Unauthenticated {
    waiting: Arc<WaitingForHello>,
    address: std::net::IpAddr,
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut by_address = self.waiting.by_address.lock();
        if let std::collections::hash_map::Entry::Occupied(mut waiting) =
            by_address.entry(self.address)
        {
            *waiting.get_mut() -= 1;
            if *waiting.get() == 0 {
                waiting.remove();
            }
        }
        self.waiting.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The address connections waiting for their hello are counted by: an IPv4 address (also one
/// mapped into IPv6), or an IPv6 address's /64 prefix, which one host usually has whole (it
/// could use another source address for every connection).
fn host_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// Whether a new connection must first prove its address (a QUIC retry): when an eighth of
/// `max_connections` are waiting for their hello, and it has not proved it already.
fn must_prove_address(validated: bool, waiting: u32, max_connections: u32) -> bool {
    !validated && waiting >= (max_connections / 8).max(1)
}

/// How many times `limits.hello_timeout_ms` a connection may take, from its handshake, to be
/// answered a hello: one being checked holds the deadline off up to this.
const MAX_HELLO_LIMITS: u32 = 3;

/// How long a connection has for its handshake, and then for its hello to reach the broker
/// (`limits.hello_timeout_ms`).
fn hello_limit(core: &Core) -> Duration {
    Duration::from_millis(core.config.limits.hello_timeout_ms)
}

/// The principal of the connection's verified client certificate (rustls has checked its
/// chain against `tls.client_ca` during the handshake), if it presented one.
fn certificate_principal(
    conn: &quinn::Connection,
    from: crate::tls::PrincipalFrom,
) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    crate::security::principal_from_certificate(chain.first()?, from)
}

enum ReadOutcome {
    /// A whole frame, and the bytes its body holds in the request budget.
    Frame(Frame, Reservation),
    /// The client finished its side cleanly between frames.
    End,
    /// The stream cannot continue; answer with this error (if any) and stop.
    Fail(Option<BrokerError>, u32),
}

/// `future`, failing with `Elapsed` once `deadline` passes; the deadline is set (`timeout` from
/// now) only when `future` has to wait. Most reads find their bytes already received: a
/// timer made and dropped for each of them cost a clock read and the timer's setup, 668
/// instructions of the ~12,000 a small produce request took on the broker (callgrind).
async fn within<F: Future>(
    deadline: &mut Option<tokio::time::Instant>,
    timeout: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = poll_once(future.as_mut()).await {
        return Ok(output);
    }
    let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
    tokio::time::timeout_at(deadline, future).await
}

/// `future`'s output, or `None` if the broker is shutting down or shuts down first. The
/// shutdown signal is waited for only when `future` has to wait: a request answered at once
/// never registers with it.
async fn unless_shutdown<F: Future>(
    future: F,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<F::Output> {
    if *shutdown.borrow() {
        return None;
    }
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = poll_once(future.as_mut()).await {
        return Some(output);
    }
    tokio::select! {
        output = future => Some(output),
        _ = shutdown.wait_for(|stop| *stop) => None,
    }
}

/// Polls `future` once: its output, or `Pending` (it is then registered to wake the task).
async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// The largest frame body a connection may send before its hello is answered
/// ([`rustmq_protocol::MAX_HELLO_BYTES`]): frames of at most this take no room in the request
/// budget ([`crate::memory::UNCOUNTED_BYTES`]).
pub(crate) const MAX_FRAME_BYTES_BEFORE_HELLO: u32 = rustmq_protocol::MAX_HELLO_BYTES;
const _: () = assert!(MAX_FRAME_BYTES_BEFORE_HELLO <= crate::memory::UNCOUNTED_BYTES);

/// Reads one frame: its header within `timeout` of waiting for it, then its body within
/// `timeout` of first waiting for body bytes.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    max_body: u32,
    timeout: Duration,
    memory: Option<&ConnectionMemory>,
) -> ReadOutcome {
    let mut head = [0u8; FRAME_HEADER_LEN];
    match within(&mut None, timeout, recv.read_exact(&mut head)).await {
        Ok(Ok(())) => {}
        Ok(Err(quinn::ReadExactError::FinishedEarly(0))) => return ReadOutcome::End,
        Ok(Err(quinn::ReadExactError::FinishedEarly(n))) => {
            return ReadOutcome::Fail(
                Some(BrokerError::new(
                    ErrorCode::InvalidRequest,
                    format!("frame header cut after {n} bytes"),
                )),
                0,
            )
        }
        Ok(Err(quinn::ReadExactError::ReadError(_))) => return ReadOutcome::Fail(None, 0),
        Err(_) => return ReadOutcome::Fail(None, 0),
    }
    let header = FrameHeader::parse(&head);
    let too_large = |limit: &str| {
        let e = BrokerError::new(
            ErrorCode::FrameTooLarge,
            format!("frame body of {} bytes exceeds {limit}", header.body_len),
        );
        ReadOutcome::Fail(Some(e), header.request_id)
    };
    if header.body_len > max_body {
        return too_large(&format!("the limit of {max_body} bytes"));
    }
    // Room for the whole body before any of it is read; waiting for it is not the peer's doing,
    // so it does not count against the read timeout (QUIC flow control holds the peer back).
    // The wait ends with the connection.
    // Nearly every frame finds room at once, without the waiting future being made.
    let reservation = match memory {
        None => Reservation::default(),
        Some(memory) => match memory.try_reserve(header.body_len) {
            Some(reservation) => reservation,
            None => match memory.reserve(header.body_len).await {
                Ok(reservation) => reservation,
                Err(Refused::TooLarge) => return too_large("the broker's request memory"),
                Err(Refused::Closed) => return ReadOutcome::Fail(None, header.request_id),
            },
        },
    };
    let want = header.body_len as usize;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut got = 0usize;
    let mut deadline = None;
    while got < want {
        match within(&mut deadline, timeout, recv.read_chunk(want - got, true)).await {
            Ok(Ok(Some(chunk))) => {
                got += chunk.bytes.len();
                chunks.push(chunk.bytes);
            }
            Ok(Ok(None)) => {
                let e = BrokerError::new(
                    ErrorCode::InvalidRequest,
                    format!("frame body cut after {got} of {want} bytes"),
                );
                return ReadOutcome::Fail(Some(e), header.request_id);
            }
            Ok(Err(_)) | Err(_) => return ReadOutcome::Fail(None, header.request_id),
        }
    }
    let body = rustmq_protocol::frame::join_chunks(chunks, want);
    ReadOutcome::Frame(Frame { header, body }, reservation)
}

enum Stalled {
    /// The stream failed (the peer stopped it, the connection ended).
    Failed,
    /// The peer took nothing of the answer for the whole timeout.
    TimedOut,
}

/// Writes `chunks`, failing if the peer takes nothing of them for `timeout`: a slow reader on a
/// slow link keeps its stream as long as it makes progress; one that stops reading does not
/// hold the answer (and its room in the budget) for ever.
async fn write_answer(
    send: &mut quinn::SendStream,
    chunks: &mut [Bytes],
    timeout: Duration,
) -> Result<(), Stalled> {
    let mut from = 0;
    while from < chunks.len() {
        match within(&mut None, timeout, send.write_chunks(&mut chunks[from..])).await {
            Ok(Ok(written)) => from += written.chunks,
            Ok(Err(_)) => return Err(Stalled::Failed),
            Err(_) => return Err(Stalled::TimedOut),
        }
    }
    Ok(())
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    core: &Arc<Core>,
    conn: &ConnState,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = &core.config.limits;
    let timeout = Duration::from_millis(limits.request_read_timeout_ms);
    loop {
        // Before its hello is answered a connection sends nothing large (a hello is a few
        // hundred bytes, and anything else is refused until then): its frames are bounded so
        // that they take no room in the request budget, which a peer that never says who it
        // is could otherwise hold.
        let max_body = if conn.principal.get().is_some() {
            limits.max_frame_bytes
        } else {
            limits.max_frame_bytes.min(MAX_FRAME_BYTES_BEFORE_HELLO)
        };
        match read_frame(&mut recv, max_body, timeout, conn.memory.as_ref()).await {
            ReadOutcome::Frame(frame, reservation) => {
                let (request_id, kind) = (frame.header.request_id, frame.header.kind);
                let decoded = Request::from_frame(&frame);
                // The body and its room in the budget: kept while a produce is handled (its
                // batch is part of the body), let go at once otherwise, before the request
                // waits for anything (a fetch for its answer's room, a long poll). Other
                // requests own what they decoded.
                let body =
                    matches!(decoded, Ok(Request::Produce(_))).then_some((frame, reservation));
                let response = match decoded {
                    Ok(req) => {
                        // A long poll or a pending group join must not outlive the broker: the
                        // stream keeps the endpoint, and so its port, open while it waits.
                        let response = unless_shutdown(core.handle(conn, req), &mut shutdown)
                            .await
                            .unwrap_or_else(|| {
                                Response::Error(ErrorResponse {
                                    code: ErrorCode::ShuttingDown,
                                    message: "broker is shutting down".into(),
                                })
                            });
                        if matches!(response, Response::Produce(_)) && core.take_dropped_answer() {
                            tracing::warn!("fault injection: dropping a produce answer");
                            let _ = send.reset(2u32.into());
                            return;
                        }
                        response
                    }
                    Err(e) => {
                        tracing::debug!(kind, error = %e, "undecodable request");
                        Response::Error(BrokerError::from(e).to_response())
                    }
                };
                // Handled: a produce's body is let go, and its room in the budget with it, before
                // the answer waits for the peer to take it.
                drop(body);
                // A fetch answer's records go out as a chunk of their own, not copied. A peer
                // that takes nothing of its answer for the timeout loses the stream, and the
                // answer's room in the budget is given back (quinn drops what it buffered).
                let mut chunks = response.to_frame_chunks(request_id);
                match write_answer(&mut send, &mut chunks, timeout).await {
                    Ok(()) => {}
                    Err(Stalled::Failed) => return,
                    Err(Stalled::TimedOut) => {
                        tracing::debug!("answer not taken in time: stream reset");
                        let _ = send.reset(3u32.into());
                        return;
                    }
                }
                if conn.close_requested.load(Ordering::Relaxed) {
                    // Let the refusal reach the client before the connection goes away.
                    let _ = send.finish();
                    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                    return;
                }
            }
            ReadOutcome::End => break,
            ReadOutcome::Fail(error, request_id) => {
                if let Some(e) = error {
                    tracing::debug!(code = %e.code, message = %e.message, "bad frame");
                    let answer = Response::Error(e.to_response());
                    let _ =
                        write_answer(&mut send, &mut [answer.to_frame(request_id)], timeout).await;
                }
                // Tell the peer to stop sending the rest of whatever it was sending.
                let _ = recv.stop(1u32.into());
                break;
            }
        }
    }
    let _ = send.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, QuicSettings, TlsSettings};

    /// A connection proves its address first once an eighth of `max_connections` (at least
    /// one) wait for their hello, unless it proved it already; places per address are
    /// counted, and given back.
    #[test]
    fn waiting_for_hello_is_bounded_per_address() {
        assert!(!must_prove_address(false, 127, 1024));
        assert!(must_prove_address(false, 128, 1024));
        assert!(!must_prove_address(true, 1000, 1024));
        assert!(must_prove_address(false, 1, 3));
        assert!(!must_prove_address(false, 0, 3));
        let waiting = Arc::new(WaitingForHello::default());
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
        let first = waiting.admit(a, 2).unwrap();
        let second = waiting.admit(a, 2).unwrap();
        assert!(waiting.admit(a, 2).is_none());
        let other = waiting.admit(b, 2).unwrap();
        assert_eq!(waiting.total(), 3);
        drop(first);
        let again = waiting.admit(a, 2).unwrap();
        drop((second, other, again));
        assert_eq!(waiting.total(), 0);
        assert!(waiting.by_address.lock().is_empty());
        // IPv6 addresses count by their /64; IPv4 ones, mapped or not, by themselves.
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(host_of(ip("2001:db8::1")), host_of(ip("2001:db8::ffff:2")));
        assert_ne!(host_of(ip("2001:db8::1")), host_of(ip("2001:db8:0:1::1")));
        assert_eq!(host_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_ne!(host_of(ip("10.0.0.1")), host_of(ip("10.0.0.2")));
    }

    /// A client endpoint trusting `identity`, connected to `addr`.
    async fn client(addr: SocketAddr, identity: &BrokerIdentity) -> quinn::Connection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.chain[0].clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![rustmq_protocol::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        endpoint.connect(addr, "localhost").unwrap().await.unwrap()
    }

    /// Closing waits until the endpoint's socket is closed, which is only once its last holder
    /// lets it go: here a connection handle kept past the endpoint's close and `wait_idle`, as
    /// a stream task still ending keeps it. The port is bound until then, and free at once
    /// when closing returns.
    #[tokio::test]
    async fn closing_waits_for_the_last_holder_of_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let identity =
            BrokerIdentity::load_or_generate(&TlsSettings::default(), dir.path()).unwrap();
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            &TlsSettings::default(),
            &Limits::default(),
            &QuicSettings::default(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let Server {
            endpoint,
            socket_closed,
        } = server;
        let (_client, held) = tokio::join!(client(addr, &identity), async {
            endpoint.accept().await.unwrap().await.unwrap()
        });
        let closing = tokio::spawn(close_and_wait(
            endpoint,
            socket_closed,
            Duration::from_secs(30),
        ));
        // Long enough for the closing period (three probe timeouts of a loopback RTT).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !closing.is_finished(),
            "closing waits while a connection handle holds the socket"
        );
        assert_eq!(
            std::net::UdpSocket::bind(addr).unwrap_err().kind(),
            std::io::ErrorKind::AddrInUse,
            "the port stays bound while a connection handle holds the socket"
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .expect("closing ends once the last holder is gone")
            .unwrap();
        std::net::UdpSocket::bind(addr).expect("the port is free once closing returns");
    }
}
