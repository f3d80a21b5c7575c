//! A scripted in-process QUIC broker for the client's own tests: it speaks the wire protocol
//! (hello first, one request per stream) with a toy topic table, and can be told to misbehave.
//! Tests of the real broker live in the `tests/` crate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustmq_protocol::*;

/// How the scripted broker behaves.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) limits: BrokerLimits,
    /// Hello must carry this token.
    pub(crate) token: Option<String>,
    /// Certificate names (DNS names or IP literals).
    pub(crate) names: Vec<String>,
    /// Produce requests are answered with this base offset (and left unscripted without).
    pub(crate) produce_base_offset: Option<u64>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            limits: BrokerLimits {
                max_frame_bytes: 1 << 20,
                max_batch_bytes: 1 << 20,
                max_in_flight: 64,
            },
            token: None,
            names: vec!["localhost".into(), "127.0.0.1".into()],
            produce_base_offset: None,
        }
    }
}

/// Observable and steerable state, shared across restarts.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) hellos: AtomicUsize,
    /// Requests received, by kind name.
    pub(crate) received: parking_lot::Mutex<BTreeMap<&'static str, usize>>,
    /// The next request of this kind closes its connection instead of being answered.
    pub(crate) close_on_next: parking_lot::Mutex<Option<ApiKind>>,
    /// Requests of this kind are read (and counted) but never answered.
    pub(crate) hold: parking_lot::Mutex<Option<ApiKind>>,
    /// The next request of this kind is answered `ShuttingDown`, its connection left open.
    pub(crate) shut_down_next: parking_lot::Mutex<Option<ApiKind>>,
    /// The topic and acks of every produce request received.
    pub(crate) produced: parking_lot::Mutex<Vec<(String, Acks)>>,
    /// Connections whose client offered to take QUIC datagrams.
    pub(crate) datagrams_offered: AtomicUsize,
    topics: parking_lot::Mutex<BTreeMap<String, u32>>,
}

impl State {
    pub(crate) fn count(&self, kind: ApiKind) -> usize {
        self.received.lock().get(kind.name()).copied().unwrap_or(0)
    }
}

/// A running scripted broker.
pub(crate) struct TestBroker {
    pub(crate) addr: SocketAddr,
    pub(crate) cert_pem: String,
    pub(crate) state: Arc<State>,
    endpoint: quinn::Endpoint,
    script: Script,
    cert: rcgen::CertifiedKey,
}

impl TestBroker {
    pub(crate) async fn start(script: Script) -> TestBroker {
        let cert = rcgen::generate_simple_self_signed(script.names.clone()).expect("certificate");
        Self::start_at(
            "127.0.0.1:0".parse().expect("addr"),
            script,
            cert,
            Arc::default(),
        )
        .unwrap_or_else(|(e, ..)| panic!("bind test broker: {e}"))
    }

    #[allow(clippy::result_large_err)]
    fn start_at(
        addr: SocketAddr,
        script: Script,
        cert: rcgen::CertifiedKey,
        state: Arc<State>,
    ) -> Result<TestBroker, (std::io::Error, Script, rcgen::CertifiedKey, Arc<State>)> {
        let chain = vec![cert.cert.der().clone()];
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
        let endpoint =
            match quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), addr)
            {
                Ok(endpoint) => endpoint,
                Err(e) => return Err((e, script, cert, state)),
            };
        let addr = endpoint.local_addr().expect("local addr");
        let broker = TestBroker {
            addr,
            cert_pem: cert.cert.pem(),
            state,
            endpoint: endpoint.clone(),
            script: script.clone(),
            cert,
        };
        let state = broker.state.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let (script, state) = (script.clone(), state.clone());
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        serve(conn, script, state).await;
                    }
                });
            }
        });
        Ok(broker)
    }

    /// Stops gracefully (clients see their connections closed) for good; the address it
    /// had, whose port is free once quinn's driver lets the socket go.
    pub(crate) async fn stop(self) -> SocketAddr {
        self.endpoint.close(0u32.into(), b"stop");
        self.endpoint.wait_idle().await;
        self.addr
    }

    /// Stops gracefully (clients see their connections closed), then starts again on the
    /// same port with the same certificate and topics.
    pub(crate) async fn restart(self) -> TestBroker {
        self.endpoint.close(0u32.into(), b"restart");
        self.endpoint.wait_idle().await;
        let TestBroker {
            addr,
            script,
            cert,
            state,
            endpoint,
            ..
        } = self;
        drop(endpoint);
        // The old socket is released once quinn's driver task notices the last handle is
        // gone; there is no event to await for that, so retry the bind briefly.
        let (mut script, mut cert, mut state) = (script, cert, state);
        for _ in 0..200 {
            match Self::start_at(addr, script, cert, state) {
                Ok(broker) => return broker,
                Err((_, s, c, st)) => (script, cert, state) = (s, c, st),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("cannot rebind test broker on {addr}");
    }

    pub(crate) fn address(&self) -> String {
        self.addr.to_string()
    }
}

async fn serve(conn: quinn::Connection, script: Script, state: Arc<State>) {
    if conn.max_datagram_size().is_some() {
        state.datagrams_offered.fetch_add(1, Ordering::Relaxed);
    }
    let said_hello = Arc::new(std::sync::atomic::AtomicBool::new(false));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let (conn, script, state, said_hello) = (
            conn.clone(),
            script.clone(),
            state.clone(),
            said_hello.clone(),
        );
        // Each stream on its own task, as in a real broker: a long poll must not block others.
        tokio::spawn(
            async move { serve_stream(conn, send, recv, &script, &state, &said_hello).await },
        );
    }
}

async fn serve_stream(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    script: &Script,
    state: &State,
    said_hello: &std::sync::atomic::AtomicBool,
) {
    let Ok(bytes) = recv.read_to_end(16 << 20).await else {
        return;
    };
    let mut decoder = FrameDecoder::new(16 << 20);
    decoder.extend(&bytes);
    let Ok(Some(frame)) = decoder.next_frame() else {
        return;
    };
    let Ok(request) = Request::from_frame(&frame) else {
        return;
    };
    *state
        .received
        .lock()
        .entry(request.kind().name())
        .or_default() += 1;
    if let Request::Produce(p) = &request {
        state.produced.lock().push((p.topic.clone(), p.acks));
    }
    if state
        .close_on_next
        .lock()
        .take_if(|k| *k == request.kind())
        .is_some()
    {
        conn.close(7u32.into(), b"scripted failure");
        return;
    }
    if *state.hold.lock() == Some(request.kind()) {
        conn.closed().await;
        return;
    }
    let shut_down = state
        .shut_down_next
        .lock()
        .take_if(|k| *k == request.kind())
        .is_some();
    let response = if shut_down {
        error(ErrorCode::ShuttingDown, "scripted shutdown")
    } else if let Request::Fetch(f) = &request {
        // A long poll that never finds data.
        tokio::time::sleep(Duration::from_millis(f.max_wait_ms.into())).await;
        Response::Fetch(FetchResponse {
            high_watermark: 0,
            log_start_offset: 0,
            records: Default::default(),
        })
    } else if said_hello.load(Ordering::Acquire) || matches!(request, Request::Hello(_)) {
        answer(&request, script, state, said_hello)
    } else {
        error(ErrorCode::NotAuthenticated, "hello first")
    };
    let _ = send
        .write_all(&response.to_frame(frame.header.request_id))
        .await;
    let _ = send.finish();
    let _ = send.stopped().await;
}

fn error(code: ErrorCode, message: &str) -> Response {
    Response::Error(ErrorResponse {
        code,
        message: message.into(),
    })
}

fn answer(
    request: &Request,
    script: &Script,
    state: &State,
    said_hello: &std::sync::atomic::AtomicBool,
) -> Response {
    let mut topics = state.topics.lock();
    match request {
        Request::Hello(hello) => {
            if let Some(token) = &script.token {
                if hello.credentials != Some(Credentials::Token(token.clone())) {
                    return error(ErrorCode::AuthenticationFailed, "bad token");
                }
            }
            said_hello.store(true, Ordering::Release);
            state.hellos.fetch_add(1, Ordering::Relaxed);
            Response::Hello(HelloResponse {
                version: 1,
                broker_id: 1,
                limits: script.limits.clone(),
                principal: "anonymous".into(),
            })
        }
        Request::Ping(p) => Response::Ping(PingResponse { nonce: p.nonce }),
        Request::CreateTopic(c) if topics.contains_key(&c.name) => {
            error(ErrorCode::TopicAlreadyExists, "exists")
        }
        Request::CreateTopic(c) => {
            topics.insert(c.name.clone(), c.partitions);
            Response::CreateTopic(CreateTopicResponse {
                name: c.name.clone(),
                partitions: c.partitions,
            })
        }
        Request::DeleteTopic(d) => match topics.remove(&d.name) {
            Some(_) => Response::DeleteTopic(DeleteTopicResponse {
                name: d.name.clone(),
            }),
            None => error(ErrorCode::UnknownTopic, "unknown topic"),
        },
        Request::ListTopics(_) => Response::ListTopics(ListTopicsResponse {
            topics: topics
                .iter()
                .map(|(name, partitions)| TopicSummary {
                    name: name.clone(),
                    partitions: *partitions,
                })
                .collect(),
        }),
        Request::DescribeTopic(d) => match topics.get(&d.name) {
            Some(n) => Response::DescribeTopic(DescribeTopicResponse {
                name: d.name.clone(),
                settings: TopicSettings {
                    retention_ms: Some(1000),
                    retention_bytes: None,
                    segment_bytes: None,
                },
                partitions: (0..*n)
                    .map(|partition| PartitionDescription {
                        partition,
                        log_start_offset: 0,
                        high_watermark: 5,
                        size_bytes: 100,
                        segments: 1,
                    })
                    .collect(),
            }),
            None => error(ErrorCode::UnknownTopic, "unknown topic"),
        },
        Request::Metadata(m) => Response::Metadata(MetadataResponse {
            broker_id: 1,
            brokers: vec![BrokerInfo {
                id: 1,
                host: "127.0.0.1".into(),
                port: 1,
            }],
            topics: topics
                .iter()
                .filter(|(name, _)| m.topics.as_ref().is_none_or(|t| t.contains(name)))
                .map(|(name, n)| TopicMetadata {
                    name: name.clone(),
                    partitions: (0..*n)
                        .map(|partition| PartitionMetadata {
                            partition,
                            leader: 1,
                        })
                        .collect(),
                })
                .collect(),
        }),
        Request::Produce(_) if script.produce_base_offset.is_some() => {
            Response::Produce(ProduceResponse {
                base_offset: script.produce_base_offset.unwrap_or_default(),
                log_append_time: 0,
                log_start_offset: 0,
                duplicate: false,
            })
        }
        // As brokers that predate the request answer it.
        Request::AutoCreateTopic(_) => error(ErrorCode::UnknownRequestKind, "unknown kind 19"),
        _ => error(ErrorCode::InvalidRequest, "not scripted"),
    }
}
