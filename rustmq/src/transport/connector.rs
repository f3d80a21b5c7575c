//! Opening connections: UDP endpoints, QUIC transport parameters, TLS, and the hello exchange.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustmq_protocol::{HelloRequest, HelloResponse, Request, Response, PROTOCOL_VERSION};
use tracing::Instrument;

use super::address::is_loopback_ip;
use super::tls::TlsSetup;
use super::{check_answer, connection_error, exchange, BrokerAddress, Connection, Counters};
use crate::config::{ClientConfig, QuicConfig};
use crate::error::{ClientError, Result};

/// Opens connections for one client. Owns the client's UDP endpoints (one per address
/// family, bound on first use) and its QUIC client configurations.
pub(crate) struct Connector {
    verified: quinn::ClientConfig,
    loopback: Option<quinn::ClientConfig>,
    server_name: Option<String>,
    quic: QuicConfig,
    /// `[IPv4, IPv6]`; `None` once closed: a closed client keeps no socket, even while the
    /// application still holds it.
    endpoints: parking_lot::Mutex<Option<[Option<quinn::Endpoint>; 2]>>,
    hello: HelloRequest,
    connect_timeout: Duration,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hello carries credentials: never print it.
        f.debug_struct("Connector")
            .field("client_id", &self.hello.client_id)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// How long one connection attempt may take at most.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Reads certificate files and prepares the QUIC configuration; binds nothing yet.
    pub(crate) fn new(
        config: &ClientConfig,
        client_id: String,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        let tls = TlsSetup::new(config.tls_config.as_ref(), &config.quic_config)?;
        let transport = Arc::new(transport_config(&config.quic_config)?);
        let quic_client = |tls: Arc<rustls::ClientConfig>| -> Result<quinn::ClientConfig> {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| {
                ClientError::Tls(format!("tls configuration unusable for quic: {e}"))
            })?;
            let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
            quic.transport_config(transport.clone());
            Ok(quic)
        };
        Ok(Connector {
            verified: quic_client(tls.verified)?,
            loopback: tls.loopback.map(quic_client).transpose()?,
            server_name: tls.server_name,
            quic: config.quic_config.clone(),
            endpoints: parking_lot::Mutex::new(Some([None, None])),
            hello: HelloRequest {
                min_version: 1,
                max_version: PROTOCOL_VERSION,
                client_id,
                credentials: config.auth.as_ref().map(|a| a.credentials()),
            },
            connect_timeout: config.connect_timeout,
            counters,
        })
    }

    /// Connects to `broker` and says hello, within `connect_timeout` and before `deadline`
    /// (that of the request waiting for the connection), whichever comes first.
    ///
    /// Every resolved address is tried at once and the first to connect wins: with UDP there
    /// is no quick "connection refused" to fall back on, so trying them in turn could spend the
    /// whole timeout on an address nobody listens on. A refusal retrying cannot mend (the
    /// broker's answer to the credentials, a certificate refused) is returned as soon as it
    /// comes.
    pub(crate) async fn connect(
        &self,
        broker: &BrokerAddress,
        deadline: Option<Instant>,
    ) -> Result<Connection> {
        let span = tracing::debug_span!("connect", %broker);
        async {
            let started = Instant::now();
            let limit = deadline.map_or(self.connect_timeout, |d| {
                self.connect_timeout
                    .min(d.saturating_duration_since(started))
            });
            let attempt = async {
                let addrs = broker.resolve().await?;
                first_connected(
                    addrs
                        .into_iter()
                        .map(|addr| self.connect_addr(broker, addr)),
                )
                .await
                .unwrap_or_else(|| {
                    Err(ClientError::Connection(format!(
                        "{broker} resolved to no address"
                    )))
                })
            };
            let result = tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Connection(format!(
                        "connecting to {broker} timed out after {} ms{}",
                        limit.as_millis(),
                        if limit < self.connect_timeout {
                            " (the request's deadline)"
                        } else {
                            ""
                        }
                    )))
                });
            match &result {
                Ok(conn) => tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    limits = ?conn.limits(),
                    "connected"
                ),
                Err(error) => tracing::debug!(%error, "connect failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn connect_addr(&self, broker: &BrokerAddress, addr: SocketAddr) -> Result<Connection> {
        // Loopback development trust needs both the configured name and the resolved address
        // to be loopback, so that neither a hosts-file trick nor a typo extends it elsewhere.
        let dev_trust = broker.is_loopback_name() && is_loopback_ip(addr.ip());
        let config = match (&self.loopback, dev_trust) {
            (Some(loopback), true) => loopback.clone(),
            _ => self.verified.clone(),
        };
        let server_name = self.server_name.as_deref().unwrap_or(broker.host());
        let connecting = self
            .endpoint(addr.is_ipv6())?
            .connect_with(config, addr, server_name)
            .map_err(|e| match e {
                quinn::ConnectError::InvalidServerName(name) => ClientError::Tls(format!(
                    "{name:?} is not a valid tls server name; set tls_config.server_name"
                )),
                e => ClientError::Quic(format!("cannot connect to {addr}: {e}")),
            })?;
        let quic = connecting.await.map_err(connection_error)?;
        tracing::debug!(%addr, dev_trust, "quic handshake done");
        match self.hello(&quic).await {
            Ok(hello) => Ok(Connection::new(
                quic,
                broker.to_string(),
                hello,
                self.quic.initial_max_streams_bidi,
                self.counters.clone(),
            )),
            Err(e) => {
                quic.close(0u32.into(), b"hello failed");
                Err(e)
            }
        }
    }

    async fn hello(&self, quic: &quinn::Connection) -> Result<HelloResponse> {
        let request = Request::Hello(self.hello.clone());
        let response = exchange(quic, 1, request.to_frame_chunks(1), &self.counters).await?;
        match check_answer(request.kind(), response)? {
            Response::Hello(hello) if (1..=PROTOCOL_VERSION).contains(&hello.version) => Ok(hello),
            Response::Hello(hello) => Err(ClientError::UnexpectedResponse(format!(
                "broker chose protocol version {}, this client speaks 1 to {PROTOCOL_VERSION}",
                hello.version
            ))),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// The endpoint for an address family, bound on first use; [`ClientError::Closed`] once
    /// the client is closed.
    fn endpoint(&self, ipv6: bool) -> Result<quinn::Endpoint> {
        let mut endpoints = self.endpoints.lock();
        let endpoints = endpoints.as_mut().ok_or(ClientError::Closed)?;
        let slot = &mut endpoints[usize::from(ipv6)];
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        let endpoint = bind(ipv6, &self.quic)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// The UDP ports of the bound endpoints.
    #[cfg(test)]
    pub(crate) fn local_ports(&self) -> Vec<u16> {
        self.endpoints
            .lock()
            .iter()
            .flatten()
            .flatten()
            .map(|e| e.local_addr().expect("a bound endpoint").port())
            .collect()
    }

    /// Closes every connection and waits (briefly) for the close to reach the brokers. The
    /// endpoints are let go: their sockets close once the connections have drained (and
    /// every request still holding one has ended), not when the client is dropped.
    pub(crate) async fn close(&self) {
        let endpoints: Vec<quinn::Endpoint> = self
            .endpoints
            .lock()
            .take()
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        for endpoint in &endpoints {
            endpoint.close(0u32.into(), b"client closed");
        }
        let idle = futures::future::join_all(endpoints.iter().map(quinn::Endpoint::wait_idle));
        if tokio::time::timeout(super::CLOSE_GRACE, idle)
            .await
            .is_err()
        {
            tracing::debug!("endpoints still draining after the close grace period");
        }
    }
}

/// Binds the UDP socket ourselves to apply the configured buffer sizes.
fn bind(ipv6: bool, quic: &QuicConfig) -> Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};

    let (domain, addr) = if ipv6 {
        (Domain::IPV6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
    } else {
        (Domain::IPV4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Buffer sizes are a performance hint: an OS that refuses them still carries traffic.
    if quic.send_buffer_size > 0 {
        if let Err(error) = socket.set_send_buffer_size(quic.send_buffer_size) {
            tracing::warn!(%error, size = quic.send_buffer_size, "cannot set SO_SNDBUF");
        }
    }
    if quic.recv_buffer_size > 0 {
        if let Err(error) = socket.set_recv_buffer_size(quic.recv_buffer_size) {
            tracing::warn!(%error, size = quic.recv_buffer_size, "cannot set SO_RCVBUF");
        }
    }
    socket.bind(&addr.into())?;
    tracing::debug!(
        local = ?socket.local_addr().ok().and_then(|a| a.as_socket()),
        sndbuf = socket.send_buffer_size().ok(),
        rcvbuf = socket.recv_buffer_size().ok(),
        "udp socket bound"
    );
    let endpoint = quinn::Endpoint::new(
        endpoint_config(quic.max_udp_payload_size)?,
        None,
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok(endpoint)
}

/// Path MTU discovery up to `max_udp_payload_size` (quinn stops at 1,452 by default).
fn mtu_discovery(max_udp_payload_size: u16) -> quinn::MtuDiscoveryConfig {
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(max_udp_payload_size);
    discovery
}

/// An endpoint that accepts datagrams of up to `max_udp_payload_size` bytes (QUIC's
/// `max_udp_payload_size` transport parameter; quinn's default is 1,472).
fn endpoint_config(max_udp_payload_size: u16) -> Result<quinn::EndpointConfig> {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(max_udp_payload_size)
        .map_err(|_| {
            ClientError::InvalidConfig(format!(
                "quic_config.max_udp_payload_size {max_udp_payload_size} is out of range"
            ))
        })?;
    Ok(config)
}

/// Maps [`QuicConfig`] onto quinn's transport parameters (values validated beforehand).
fn transport_config(quic: &QuicConfig) -> Result<quinn::TransportConfig> {
    let varint = |name: &str, value: u64| {
        quinn::VarInt::from_u64(value)
            .map_err(|_| ClientError::InvalidConfig(format!("quic_config.{name} is too large")))
    };
    let idle = quinn::IdleTimeout::try_from(quic.max_idle_timeout).map_err(|_| {
        ClientError::InvalidConfig("quic_config.max_idle_timeout is too large".into())
    })?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(
            (!quic.keep_alive_interval.is_zero()).then_some(quic.keep_alive_interval),
        )
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(varint(
            "initial_max_streams_bidi",
            quic.initial_max_streams_bidi,
        )?)
        .max_concurrent_uni_streams(varint(
            "initial_max_streams_uni",
            quic.initial_max_streams_uni,
        )?)
        .receive_window(varint("initial_max_data", quic.initial_max_data)?)
        .stream_receive_window(varint(
            "initial_max_stream_data_bidi_local",
            quic.initial_max_stream_data_bidi_local,
        )?)
        .send_window(quic.initial_max_data)
        // RustMQ sends no datagrams: offered, a peer could fill quinn's buffer for them
        // (1.25 MB by default, each holding its whole packet) outside every bound the client
        // sets. Without the offer a datagram is a protocol violation.
        .datagram_receive_buffer_size(None)
        .mtu_discovery_config(Some(mtu_discovery(quic.max_udp_payload_size)));
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(quic.ack_eliciting_threshold.into());
    transport.ack_frequency_config(Some(acks));
    Ok(transport)
}

/// The first of `attempts` (run at once) to connect; a refusal retrying cannot mend
/// (credentials, a certificate) is the answer as soon as it comes, rather than waiting for an
/// address that nobody listens on (`localhost` may resolve to `::1` too) to time out; else the
/// last failure. A local failure (`Io`: no socket of that address's family on a host without
/// IPv6, say) is that address's alone: another may still connect. `None` for no attempt.
async fn first_connected<T>(
    attempts: impl IntoIterator<Item = impl std::future::Future<Output = Result<T>>>,
) -> Option<Result<T>> {
    use futures::StreamExt;
    let mut attempts: futures::stream::FuturesUnordered<_> = attempts.into_iter().collect();
    let mut last = None;
    while let Some(result) = attempts.next().await {
        match result {
            Ok(conn) => return Some(Ok(conn)),
            Err(e) if !e.is_retryable() && !matches!(e, ClientError::Io(_)) => return Some(Err(e)),
            Err(e) => last = Some(Err(e)),
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_quic_config_maps_onto_quinn() {
        transport_config(&QuicConfig::default()).unwrap();
    }

    #[tokio::test]
    async fn binds_with_buffer_sizes() {
        let endpoint = bind(false, &QuicConfig::default()).unwrap();
        assert!(endpoint.local_addr().unwrap().port() != 0);
    }

    #[test]
    fn debug_hides_credentials() {
        let config = ClientConfig {
            auth: Some(crate::config::AuthConfig {
                username: Some("u".into()),
                password: Some("secret-pw".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let connector = Connector::new(&config, "id".into(), Arc::default()).unwrap();
        assert!(!format!("{connector:?}").contains("secret-pw"));
    }

    /// Of the addresses tried at once, one that never answers (`::1` where nobody listens)
    /// does not hide another's refusal that retrying cannot mend; a retryable failure waits
    /// for the others, and the first connection wins.
    #[tokio::test]
    async fn a_refusal_is_the_answer_though_another_address_is_silent() {
        use std::future::{pending, ready};
        let silent = || -> futures::future::BoxFuture<'static, Result<u8>> { Box::pin(pending()) };
        let refused = ClientError::Authentication("bad token".into());
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            first_connected([silent(), Box::pin(ready(Err(refused)))]),
        )
        .await
        .expect("not held by the silent address");
        assert!(
            matches!(got, Some(Err(ClientError::Authentication(_)))),
            "{got:?}"
        );
        let retryable = || ClientError::Connection("lost".into());
        let got = first_connected([
            Box::pin(ready(Err(retryable()))) as futures::future::BoxFuture<'static, Result<u8>>,
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(7)
            }),
        ])
        .await;
        assert!(matches!(got, Some(Ok(7))), "{got:?}");
        // A socket this host cannot make for one address (no IPv6) leaves the other.
        let unsupported = || ClientError::Io(std::io::ErrorKind::Unsupported.into());
        let got = first_connected([
            Box::pin(ready(Err(unsupported()))) as futures::future::BoxFuture<'static, Result<u8>>,
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(7)
            }),
        ])
        .await;
        assert!(matches!(got, Some(Ok(7))), "{got:?}");
        let got =
            first_connected([Box::pin(ready(Err(unsupported())))
                as futures::future::BoxFuture<'static, Result<u8>>])
            .await;
        assert!(matches!(got, Some(Err(ClientError::Io(_)))), "{got:?}");
        let none: Vec<futures::future::BoxFuture<'static, Result<u8>>> = Vec::new();
        assert!(first_connected(none).await.is_none());
    }
}
