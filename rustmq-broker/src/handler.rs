//! Request handling: one function per request kind, independent of the transport.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustmq_protocol::batch::DEFAULT_MAX_UNCOMPRESSED;
use rustmq_protocol::*;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::groups::GroupCoordinator;
use crate::producers::ProducerIds;
use crate::security::{AuthFailure, Denied, Operation, ResourceType, Security};
use crate::storage::{now_ms, PartitionLog, StorageError};
use crate::topics::{Topic, TopicManager};

/// What the broker knows about one client connection.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Set by a successful hello: the authenticated principal.
    pub principal: OnceLock<String>,
    /// The client's id from its hello.
    pub client_id: OnceLock<String>,
    /// Principal of the verified client certificate, set by the server before any request.
    pub peer_principal: OnceLock<String>,
    /// Failed authentication attempts on this connection.
    pub auth_failures: AtomicU32,
    /// Authentication attempts on this connection that failed or are being checked: what
    /// admits another check (the failures alone decide when to close).
    pub auth_attempts: AtomicU32,
    /// Hellos being checked now (a password check may queue): the connection's hello
    /// deadline waits for them, and only for them.
    pub hellos_checking: AtomicU32,
    /// Set when the connection must be closed once the current answer is sent.
    pub close_requested: AtomicBool,
    /// The connection's share of the broker's request memory (`None`: unbounded, for a state
    /// made outside the server).
    pub(crate) memory: Option<crate::memory::ConnectionMemory>,
    /// Set when the connection has ended: what its requests still wait for (a password
    /// check's turn) is given up.
    pub(crate) ended: Ending,
    /// The connection's place among its address's connections waiting for their hello, given
    /// up when a hello is answered (`limits.max_unauthenticated_per_address`).
    pub(crate) unauthenticated: parking_lot::Mutex<Option<crate::server::Unauthenticated>>,
}

/// A connection's end, waited for by what it would otherwise leave queued.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    ended: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Ending {
    /// The connection has ended: every [`wait`](Self::wait) returns.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Returns once the connection has ended.
    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the check: an end from now on wakes it.
        notified.as_mut().enable();
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// Everything a request handler needs; shared by all connections.
#[derive(Debug)]
pub struct Core {
    /// The configuration the broker started with.
    pub config: BrokerConfig,
    /// Topics and their logs.
    pub topics: TopicManager,
    /// Producer id allocation.
    pub producer_ids: ProducerIds,
    /// Consumer groups.
    pub groups: GroupCoordinator,
    /// Port actually bound (for metadata).
    pub port: u16,
    /// Set when shutting down: new work is refused.
    pub shutting_down: AtomicBool,
    /// Produce answers still to be dropped (fault injection for tests).
    pub drop_produce_answers: AtomicU32,
    /// Authentication and ACLs.
    pub security: Security,
    /// The budget of request and answer bytes held at once.
    pub request_memory: crate::memory::RequestMemory,
    /// The budget of produced batches' bytes being decompressed at once, in KiB
    /// (`limits.max_decompressing_bytes`).
    pub decompressing: Arc<tokio::sync::Semaphore>,
    /// The data directory's lock ([`crate::broker::LOCK_FILE`]): let go at the end of
    /// [`crate::BrokerHandle::shutdown`], or with the last task that holds the core (a handle
    /// dropped without a shutdown leaves its tasks to finish what they were writing).
    pub(crate) dir_lock: parking_lot::Mutex<Option<nix::fcntl::Flock<std::fs::File>>>,
}

fn denied(d: Denied) -> BrokerError {
    tracing::info!(principal = %d.principal, operation = %d.operation, resource = %d.resource, name = %d.name, "request denied");
    BrokerError::new(ErrorCode::AuthorizationFailed, d.to_string())
}

type Answer = Result<Response, BrokerError>;

/// The span a request is handled in: `produce` and `fetch` (targets `rustmq_broker::produce`
/// and `rustmq_broker::fetch`) carry the partition, the others only their kind (target
/// `rustmq_broker::request`).
fn request_span(req: &Request) -> tracing::Span {
    match req {
        Request::Produce(r) => tracing::debug_span!(
            target: "rustmq_broker::produce",
            "produce",
            topic = %r.topic,
            partition = r.partition,
            acks = ?r.acks,
            bytes = r.batch.len(),
            base_offset = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        ),
        Request::Fetch(r) => tracing::debug_span!(
            target: "rustmq_broker::fetch",
            "fetch",
            topic = %r.topic,
            partition = r.partition,
            offset = r.offset,
            bytes = tracing::field::Empty,
        ),
        other => {
            tracing::debug_span!(target: "rustmq_broker::request", "request", kind = other.kind().name())
        }
    }
}

/// Checks every record of `batch` as a consumer will decode them (decompressing if needed),
/// noting the first trace id in `span` if anyone records it.
fn check_records(batch: &RecordBatch, span: &tracing::Span) -> Result<(), BrokerError> {
    if span.is_disabled() {
        // Nobody records the trace id: check the records without building them.
        batch.validate_produced(DEFAULT_MAX_UNCOMPRESSED)?;
    } else {
        let mut traced = false;
        let mut max_timestamp = None;
        for record in batch.records_with_limit(DEFAULT_MAX_UNCOMPRESSED)? {
            let record = record?;
            max_timestamp =
                Some(max_timestamp.map_or(record.timestamp, |m: i64| m.max(record.timestamp)));
            if !traced {
                traced = record_trace_id(span, &record);
            }
        }
        batch.check_max_timestamp(max_timestamp)?;
    }
    Ok(())
}

/// A compressed batch that declares at most this many bytes uncompressed, and is itself no
/// larger, is checked where it is received: decompressing it takes microseconds, less than
/// handing it to another thread. (The work follows the compressed bytes too: a batch of
/// megabytes of empty deflate blocks declares a few bytes and takes seconds.)
const INLINE_DECOMPRESSED: usize = 64 * 1024;

/// The permits of [`Core::decompressing`] for `bytes` (one per KiB, rounded up).
pub(crate) fn decompressing_permits(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(1024))
        .unwrap_or(usize::MAX)
        .min(tokio::sync::Semaphore::MAX_PERMITS)
}

/// Puts the trace id of a record's W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`)
/// on the produce span, so that broker logs join the producer's trace. Returns whether the
/// record had one.
fn record_trace_id(span: &tracing::Span, record: &Record) -> bool {
    let Some(header) = record.headers.iter().find(|h| h.key == "traceparent") else {
        return false;
    };
    let trace_id = std::str::from_utf8(&header.value)
        .ok()
        .and_then(|v| v.split('-').nth(1))
        .filter(|id| id.len() == 32);
    if let Some(id) = trace_id {
        span.record("trace_id", id);
    }
    trace_id.is_some()
}

/// Fences each named producer `(id, epoch)` in each of `logs`, and retires each of the
/// `retired` ids there (see `PartitionLog::fence_producer` and `retire_producer`).
pub(crate) fn fence_all(logs: &[Arc<PartitionLog>], named: &[(i64, i16)], retired: &[i64]) {
    for log in logs {
        for &(producer_id, epoch) in named {
            log.fence_producer(producer_id, epoch);
        }
        for &producer_id in retired {
            log.retire_producer(producer_id);
        }
    }
}

/// Refuses a request whose lists or ids are longer than any client sends, before its
/// principal's rights are checked name by name: what the broker builds from them (an answer
/// entry per name, a member's subscription kept for its session) costs many times their bytes
/// on the wire.
fn check_bounds(req: &Request) -> Result<(), BrokerError> {
    use rustmq_protocol::{
        MAX_CLIENT_ID_LEN, MAX_METADATA_TOPICS, MAX_OFFSET_ENTRIES, MAX_SUBSCRIBED_TOPICS,
    };
    let over = |what: &str, count: usize, limit: usize| {
        Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!("{what}: {count}, over the limit of {limit}"),
        ))
    };
    match req {
        Request::Hello(r) if r.client_id.len() > MAX_CLIENT_ID_LEN => {
            over("bytes of client id", r.client_id.len(), MAX_CLIENT_ID_LEN)
        }
        Request::JoinGroup(r) if r.client_id.len() > MAX_CLIENT_ID_LEN => {
            over("bytes of client id", r.client_id.len(), MAX_CLIENT_ID_LEN)
        }
        Request::JoinGroup(r) if r.topics.len() > MAX_SUBSCRIBED_TOPICS => over(
            "topics subscribed to",
            r.topics.len(),
            MAX_SUBSCRIBED_TOPICS,
        ),
        Request::Metadata(r) => match &r.topics {
            Some(names) if names.len() > MAX_METADATA_TOPICS => {
                over("topics named", names.len(), MAX_METADATA_TOPICS)
            }
            _ => Ok(()),
        },
        Request::CommitOffsets(r) if r.offsets.len() > MAX_OFFSET_ENTRIES => over(
            "offsets committed at once",
            r.offsets.len(),
            MAX_OFFSET_ENTRIES,
        ),
        Request::FetchOffsets(r) => {
            let entries = r
                .partitions
                .iter()
                .fold(0usize, |n, t| n.saturating_add(t.partitions.len().max(1)));
            if entries > MAX_OFFSET_ENTRIES {
                over("offsets asked for at once", entries, MAX_OFFSET_ENTRIES)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

impl Core {
    /// Answers one request.
    pub async fn handle(self: &Arc<Self>, conn: &ConnState, req: Request) -> Response {
        let kind = req.kind();
        let started = std::time::Instant::now();
        let span = request_span(&req);
        let result = self
            .authorize_and_dispatch(conn, req)
            .instrument(span)
            .await;
        crate::metrics::record_request(
            kind,
            started.elapsed(),
            result.as_ref().err().map(|e| e.code),
        );
        result.unwrap_or_else(|e| {
            tracing::debug!(kind = kind.name(), code = %e.code, message = %e.message, "request failed");
            Response::Error(e.to_response())
        })
    }

    async fn authorize_and_dispatch(self: &Arc<Self>, conn: &ConnState, req: Request) -> Answer {
        check_bounds(&req)?;
        let kind = req.kind();
        if conn.principal.get().is_none() && kind != ApiKind::Hello {
            Err(BrokerError::new(
                ErrorCode::NotAuthenticated,
                "send hello before any other request",
            ))
        } else if self.shutting_down.load(Ordering::Relaxed) && kind != ApiKind::Hello {
            Err(BrokerError::new(
                ErrorCode::ShuttingDown,
                "broker is shutting down",
            ))
        } else if kind == ApiKind::Hello {
            // Counted out when the check ends, or when the request is dropped during it.
            struct Checking<'a>(&'a AtomicU32);
            impl Drop for Checking<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::AcqRel);
                }
            }
            conn.hellos_checking.fetch_add(1, Ordering::AcqRel);
            let _checking = Checking(&conn.hellos_checking);
            // A check still queued when the connection ends (closed at the hello cutoff, say)
            // is given up: nobody is left to answer, and the queue is every hello's.
            // The end first: once the connection has ended, a turn handed to the queued check
            // meanwhile (a semaphore gives permits to its waiters before they are polled)
            // is given back unused.
            tokio::select! {
                biased;
                () = conn.ended.wait() => Err(BrokerError::new(
                    ErrorCode::AuthenticationFailed,
                    "the connection ended before its hello was checked",
                )),
                answer = self.dispatch(conn, req) => answer,
            }
        } else {
            let principal = conn.principal.get().map(String::as_str).unwrap_or_default();
            let acl = &self.security.acl;
            acl.authorize(principal, &req, |t| self.topics.get(t).is_some())
                .map_err(denied)?;
            // A produce or an auto-create that creates its topic is checked for `Create` where
            // it creates it (`topic_to_produce_to`), not here: a topic that existed here could
            // be deleted before the request creates it again.
            let answer = self.dispatch(conn, req).await?;
            Ok(self
                .security
                .filter_describable(principal, answer, |t| self.topics.get(t).is_some()))
        }
    }

    async fn dispatch(self: &Arc<Self>, conn: &ConnState, req: Request) -> Answer {
        match req {
            Request::Hello(r) => self.hello(conn, r).await,
            Request::Ping(r) => Ok(Response::Ping(PingResponse { nonce: r.nonce })),
            Request::Metadata(r) => self.metadata(r),
            Request::CreateTopic(r) => {
                let t = self
                    .on_blocking_thread(move |core| {
                        // 0 asks for the broker's default, as an auto-created topic gets.
                        let partitions = match r.partitions {
                            0 => core.config.default_partitions,
                            n => n,
                        };
                        core.create_topic(|topics, prepare| {
                            topics.create_with(&r.name, partitions, r.settings, prepare)
                        })
                    })
                    .await?;
                Ok(Response::CreateTopic(CreateTopicResponse {
                    name: t.name.clone(),
                    partitions: t.partitions.len() as u32,
                }))
            }
            Request::AutoCreateTopic(r) => {
                let t = self.topic_to_produce_to(conn, &r.name).await?;
                Ok(Response::AutoCreateTopic(CreateTopicResponse {
                    name: t.name.clone(),
                    partitions: t.partitions.len() as u32,
                }))
            }
            Request::DeleteTopic(r) => {
                // In a task of its own, so that a request given up midway (the broker stops)
                // does not leave the name reserved or the groups' offsets of the topic behind
                // (a start drops those too, should the broker stop first). The groups forget
                // the topic while its name is reserved: nothing of a new topic of that name
                // is there to forget with it.
                let core = Arc::clone(self);
                let name = r.name.clone();
                tokio::spawn(async move {
                    let tomb = core
                        .on_blocking_thread({
                            let name = name.clone();
                            move |core| core.topics.begin_delete(&name)
                        })
                        .await?;
                    core.groups.topic_deleted(&name);
                    if !core.groups.forget_topic(&name, &core.topics).await {
                        // The data and the name stay until a start forgets the topic.
                        core.topics.reserve_until_restart(&name);
                        return Err(BrokerError::new(
                            ErrorCode::StorageError,
                            format!(
                                "topic {name:?} is deleted, but the groups' committed offsets of \
                                 it could not be rewritten; the broker drops them when it next \
                                 starts, and the name is free then"
                            ),
                        ));
                    }
                    core.on_blocking_thread(move |core| {
                        core.topics.finish_delete(&name, &tomb);
                        Ok(())
                    })
                    .await
                })
                .await
                .map_err(|e| {
                    BrokerError::new(ErrorCode::Internal, format!("delete failed: {e}"))
                })??;
                Ok(Response::DeleteTopic(DeleteTopicResponse { name: r.name }))
            }
            Request::ListTopics(_) => Ok(Response::ListTopics(ListTopicsResponse {
                topics: self
                    .topics
                    .list()
                    .iter()
                    .map(|t| TopicSummary {
                        name: t.name.clone(),
                        partitions: t.partitions.len() as u32,
                    })
                    .collect(),
            })),
            Request::DescribeTopic(r) => {
                let t = self.topics.require(&r.name)?;
                Ok(Response::DescribeTopic(DescribeTopicResponse {
                    name: t.name.clone(),
                    settings: self.topics.effective_settings(&t),
                    partitions: t.describe(),
                }))
            }
            Request::Produce(r) => self.produce(conn, r).await,
            Request::Fetch(r) => self.fetch(conn, r).await,
            // A lookup by timestamp reads index files and may decompress a stored batch: on a
            // blocking thread (see `list_offsets_by_time`). The others read memory.
            Request::ListOffsets(r) => self.list_offsets(r).await,
            Request::InitProducer(r) => {
                // A named producer's epoch is on disk before it is answered (an fsync; an
                // unnamed one's id only when it starts a block of ids), and fencing
                // takes every partition's append lock, which a roll may hold.
                self.on_blocking_thread(move |core| {
                    let init = core.producer_ids.init(r.name.as_deref())?;
                    if r.name.is_some() {
                        // Fence the previous instance everywhere now: a batch of the old epoch
                        // (or of the old id, when the name used every epoch) still in flight is
                        // refused even where the new instance has not written.
                        fence_all(
                            &core.topics.all_logs(),
                            &[(init.producer_id, init.epoch)],
                            init.retired.as_slice(),
                        );
                    }
                    Ok(Response::InitProducer(InitProducerResponse {
                        producer_id: init.producer_id,
                        epoch: init.epoch,
                    }))
                })
                .await
            }
            Request::JoinGroup(r) => Ok(Response::JoinGroup(
                self.groups.join(r, &self.topics).await?,
            )),
            Request::Heartbeat(r) => Ok(Response::Heartbeat(self.groups.heartbeat(r)?)),
            Request::LeaveGroup(r) => {
                self.groups.leave(r)?;
                Ok(Response::LeaveGroup(LeaveGroupResponse {}))
            }
            Request::CommitOffsets(r) => {
                self.groups.commit(r, &self.topics).await?;
                Ok(Response::CommitOffsets(CommitOffsetsResponse {}))
            }
            Request::FetchOffsets(r) => Ok(Response::FetchOffsets(self.groups.fetch_offsets(r)?)),
            Request::DescribeGroup(r) => {
                Ok(Response::DescribeGroup(self.groups.describe(&r.group)?))
            }
            Request::ListGroups(_) => Ok(Response::ListGroups(ListGroupsResponse {
                groups: self.groups.list(),
            })),
            other => Err(BrokerError::new(
                ErrorCode::UnknownRequestKind,
                format!(
                    "request kind {} is not handled by this broker",
                    other.kind()
                ),
            )),
        }
    }

    fn limits(&self) -> BrokerLimits {
        let l = &self.config.limits;
        BrokerLimits {
            max_frame_bytes: l.max_frame_bytes,
            max_batch_bytes: l.max_batch_bytes,
            max_in_flight: l.max_in_flight_per_connection,
        }
    }

    async fn hello(&self, conn: &ConnState, r: HelloRequest) -> Answer {
        if r.min_version > PROTOCOL_VERSION
            || r.max_version < PROTOCOL_VERSION
            || r.min_version > r.max_version
        {
            return Err(BrokerError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "client speaks protocol versions {}..={}, broker speaks {PROTOCOL_VERSION}",
                    r.min_version, r.max_version
                ),
            ));
        }
        let principal = match conn.principal.get() {
            Some(p) => p.clone(),
            None => self.authenticate(conn, &r).await?,
        };
        let principal = conn.principal.get_or_init(|| principal).clone();
        conn.unauthenticated.lock().take();
        let _ = conn.client_id.set(r.client_id.clone());
        tracing::debug!(client_id = ?r.client_id, %principal, "hello");
        Ok(Response::Hello(HelloResponse {
            version: PROTOCOL_VERSION,
            broker_id: self.config.broker_id,
            limits: self.limits(),
            principal,
        }))
    }

    /// The principal of a hello, or `AuthenticationFailed`. Credentials are verified whenever
    /// the broker has users, tokens, ACL rules or requires authentication; a fully open broker
    /// takes the name the client gives, as before.
    async fn authenticate(
        &self,
        conn: &ConnState,
        r: &HelloRequest,
    ) -> Result<String, BrokerError> {
        let auth = &self.security.authenticator;
        let max = auth.max_failures.max(1);
        // Counted before the check, which waits (a password's argon2 runs on a blocking
        // thread): hellos sent at once on parallel streams must not each get a guess past the
        // limit. An attempt that succeeds is given back.
        if conn.auth_attempts.fetch_add(1, Ordering::AcqRel) >= max {
            if conn.auth_failures.load(Ordering::Acquire) >= max {
                conn.close_requested.store(true, Ordering::Relaxed);
                return Err(BrokerError::new(
                    ErrorCode::AuthenticationFailed,
                    "too many failed authentication attempts on this connection",
                ));
            }
            // Checks still running hold the allowance: this hello may come back once they end.
            conn.auth_attempts.fetch_sub(1, Ordering::AcqRel);
            return Err(BrokerError::new(
                ErrorCode::Throttled,
                "authentication attempts in progress on this connection; try again",
            ));
        }
        let verify = auth.required || auth.has_credentials() || !self.security.acl.is_open();
        let result = match &r.credentials {
            Some(Credentials::Plain { username, password }) if verify => {
                auth.verify_password(username, password).await
            }
            Some(Credentials::Token(token)) if verify => auth.check_token(token),
            Some(Credentials::Plain { username, .. }) => Ok(username.clone()),
            Some(Credentials::Token(_)) => Ok("token".to_owned()),
            None => match conn.peer_principal.get() {
                Some(p) => Ok(p.clone()),
                None if auth.required => Err(AuthFailure::Missing),
                None => Ok("anonymous".to_owned()),
            },
        };
        if result.is_ok() {
            conn.auth_attempts.fetch_sub(1, Ordering::AcqRel);
        }
        result.map_err(|failure| {
            let failures = conn.auth_failures.fetch_add(1, Ordering::AcqRel) + 1;
            let user = match &r.credentials {
                Some(Credentials::Plain { username, .. }) => Some(username.as_str()),
                _ => None,
            };
            // The reason and the user name only: never the password or token.
            tracing::warn!(client_id = ?r.client_id, user, reason = failure.reason(), failures, "authentication failed");
            let mut message = failure.to_string();
            if failures >= max {
                conn.close_requested.store(true, Ordering::Relaxed);
                message.push_str("; too many failed attempts, closing the connection");
            }
            BrokerError::new(ErrorCode::AuthenticationFailed, message)
        })
    }

    fn metadata(&self, r: MetadataRequest) -> Answer {
        let host = self
            .config
            .advertised_host
            .clone()
            .unwrap_or_else(|| self.config.listen.ip().to_string());
        let topics = match r.topics {
            None => self.topics.list(),
            // Each topic once, however often it is named.
            Some(names) => names
                .iter()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter_map(|n| self.topics.get(n))
                .collect(),
        };
        Ok(Response::Metadata(MetadataResponse {
            broker_id: self.config.broker_id,
            brokers: vec![BrokerInfo {
                id: self.config.broker_id,
                host,
                port: self.port,
            }],
            topics: topics
                .iter()
                .map(|t| TopicMetadata {
                    name: t.name.clone(),
                    partitions: (0..t.partitions.len() as u32)
                        .map(|partition| PartitionMetadata {
                            partition,
                            leader: self.config.broker_id,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    /// [`check_records`] for a compressed batch. One that declares more than
    /// [`INLINE_DECOMPRESSED`] uncompressed bytes, or is larger than that itself, is checked
    /// on a blocking thread, so that a batch that decompresses to a lot (or slowly) does not
    /// hold up a thread serving connections,
    /// and within the budget of bytes being decompressed (`limits.max_decompressing_bytes`,
    /// counted by the size the batch declares), so that such batches sent at once hold no
    /// more memory; one declaring more than the budget, or than any batch may decompress to,
    /// is refused before it takes any of it.
    async fn check_compressed(
        &self,
        batch: &RecordBatch,
        span: tracing::Span,
    ) -> Result<(), BrokerError> {
        let declared = batch.declared_uncompressed_len().unwrap_or(0);
        if declared <= INLINE_DECOMPRESSED && batch.as_bytes().len() <= INLINE_DECOMPRESSED {
            return check_records(batch, &span);
        }
        let budget = self.config.limits.max_decompressing_bytes;
        let most = budget.min(DEFAULT_MAX_UNCOMPRESSED as u64);
        if declared as u64 > most {
            return Err(BrokerError::new(
                ErrorCode::BatchTooLarge,
                format!(
                    "record batch declares {declared} bytes uncompressed, more than {most} \
                     (limits.max_decompressing_bytes {budget}, and {DEFAULT_MAX_UNCOMPRESSED} \
                     for any batch)"
                ),
            ));
        }
        // At most `DEFAULT_MAX_UNCOMPRESSED` / 1 KiB permits: fits.
        let permits = u32::try_from(decompressing_permits(declared as u64)).unwrap_or(u32::MAX);
        let room = Arc::clone(&self.decompressing)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| BrokerError::new(ErrorCode::ShuttingDown, "broker is shutting down"))?;
        let batch = batch.clone();
        // The room is held by the check itself: given back when it ends, even if this request
        // is dropped meanwhile.
        tokio::task::spawn_blocking(move || {
            let checked = check_records(&batch, &span);
            drop(room);
            checked
        })
        .await
        .map_err(|e| BrokerError::new(ErrorCode::Internal, format!("task failed: {e}")))?
    }

    /// Runs `f` on a blocking thread: work that waits for the disk (fsyncs, creating or
    /// removing directories), which on the runtime's threads would hold up every connection
    /// they serve.
    async fn on_blocking_thread<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Core) -> Result<T, BrokerError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        let core = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&core))
            .await
            .map_err(|e| BrokerError::new(ErrorCode::Internal, format!("task failed: {e}")))?
    }

    /// Creates a topic with `create` (handed the topic manager and a `prepare` step), fencing
    /// every named producer's current epoch in its partitions: a topic created after a named
    /// producer's initialisation must refuse the producer's older instances too, and keep it
    /// past its idle expiry, as the partitions that existed then do. Fenced before the topic
    /// is in the topic map (no produce can reach it yet), and again after: an initialisation
    /// in between either found the topic in the map or recorded its epoch before the second
    /// reading.
    fn create_topic(
        &self,
        create: impl FnOnce(&TopicManager, &mut dyn FnMut(&Topic)) -> Result<Arc<Topic>, BrokerError>,
    ) -> Result<Arc<Topic>, BrokerError> {
        let ids = &self.producer_ids;
        let mut created = false;
        let mut prepare = |topic: &Topic| {
            created = true;
            fence_all(&topic.partitions, &ids.named(), &ids.retired());
        };
        let topic = create(&self.topics, &mut prepare)?;
        fence_all(&topic.partitions, &ids.named(), &ids.retired());
        if created {
            self.groups.topic_created(&topic.name);
        }
        Ok(topic)
    }

    /// The topic `name` that a produce goes to: created with the default partitions if it
    /// does not exist, this broker auto-creates topics and the connection's principal may
    /// create it. (Checked once the topic is found missing, before it is created: a check
    /// made earlier, while it existed, would let a deletion in between open the way.)
    async fn topic_to_produce_to(
        self: &Arc<Self>,
        conn: &ConnState,
        name: &str,
    ) -> Result<Arc<Topic>, BrokerError> {
        match self.topics.get(name) {
            Some(topic) => Ok(topic),
            None if self.config.auto_create_topics => {
                let acl = &self.security.acl;
                if !acl.is_open() {
                    let principal = conn.principal.get().map(String::as_str).unwrap_or_default();
                    acl.check(principal, Operation::Create, ResourceType::Topic, name)
                        .map_err(denied)?;
                }
                let name = name.to_owned();
                self.on_blocking_thread(move |core| {
                    core.create_topic(|topics, prepare| {
                        topics.get_or_create_with(&name, core.config.default_partitions, prepare)
                    })
                })
                .await
            }
            None => self.topics.require(name),
        }
    }

    async fn produce(self: &Arc<Self>, conn: &ConnState, r: ProduceRequest) -> Answer {
        let topic = match self.topics.get(&r.topic) {
            Some(topic) => topic,
            None => self.topic_to_produce_to(conn, &r.topic).await?,
        };
        let log = Arc::clone(topic.partition(r.partition)?);
        let max = self.config.limits.max_batch_bytes as usize;
        if r.batch.len() > max {
            return Err(BrokerError::new(
                ErrorCode::BatchTooLarge,
                format!(
                    "record batch of {} bytes exceeds the limit of {max} bytes",
                    r.batch.len()
                ),
            ));
        }
        // Validate everything a consumer will later decode, so one bad producer cannot poison
        // a partition: header, CRC, and every record (decompressing if needed).
        let batch = RecordBatch::parse(r.batch.clone())?;
        let span = tracing::Span::current();
        if batch.header().compression() == Compression::None {
            check_records(&batch, &span)?;
        } else {
            self.check_compressed(&batch, span.clone()).await?;
        }
        let header = batch.header();
        // A named producer's id writes only for whoever may write the name, as only they may
        // start it: else anyone who may write the topic could fence the producer there (a
        // higher epoch) or take its sequence numbers (its next batch then answered as a
        // duplicate, and dropped).
        let acl = &self.security.acl;
        if header.is_idempotent() && !acl.is_open() {
            if let Some(name) = self.producer_ids.name_of(header.producer_id) {
                let principal = conn.principal.get().map(String::as_str).unwrap_or_default();
                acl.check(principal, Operation::Write, ResourceType::Producer, &name)
                    .map_err(denied)?;
            }
        }
        if header.is_idempotent() && !self.producer_ids.issued(header.producer_id) {
            return Err(BrokerError::new(
                ErrorCode::UnknownProducer,
                format!(
                    "producer id {} was not handed out by this broker (InitProducer first)",
                    header.producer_id
                ),
            ));
        }
        if header.is_idempotent() && self.producer_ids.forgotten(header.producer_id) {
            return Err(BrokerError::new(
                ErrorCode::UnknownProducer,
                format!(
                    "producer id {} belonged to a producer name forgotten after it was idle for log.named_producer_expiration_ms (InitProducer again)",
                    header.producer_id
                ),
            ));
        }
        let records = u64::from(header.record_count);
        let context = || format!("produce to {}/{}", r.topic, r.partition);
        // Appended here unless it has to wait for the disk (a segment roll creates a file and
        // syncs the directory; `flush = "always"` syncs every batch): then on a blocking thread, so that
        // the other connections this thread serves do not wait with it.
        let appended = match log.try_append(&r.batch) {
            Some(appended) => appended,
            None => {
                let (blocking_log, batch) = (Arc::clone(&log), r.batch.clone());
                tokio::task::spawn_blocking(move || blocking_log.append(&batch))
                    .await
                    .map_err(|e| {
                        BrokerError::new(ErrorCode::Internal, format!("append failed: {e}"))
                    })?
            }
        };
        let info = match appended {
            Ok(info) => info,
            Err(StorageError::DuplicateSequence { base_offset }) => {
                // The stored copy may not be on disk yet: acks=all still waits for it.
                if r.acks == Acks::All {
                    log.sync_up_to(base_offset)
                        .await
                        .map_err(|e| BrokerError::storage(context(), e))?;
                }
                return Ok(Response::Produce(ProduceResponse {
                    base_offset,
                    log_append_time: now_ms(),
                    log_start_offset: log.log_start_offset(),
                    duplicate: true,
                }));
            }
            Err(e) => return Err(BrokerError::storage(context(), e)),
        };
        // Counted once appended: consumers read it from now on, whatever the sync below gives
        // (an idempotent producer's resend after a failed sync is a duplicate, not counted
        // again; another producer's is appended again, and counted again).
        topic.metrics.record_produce(records, r.batch.len() as u64);
        if r.acks == Acks::All {
            let timeout = Duration::from_millis(u64::from(r.timeout_ms.max(1)));
            match tokio::time::timeout(timeout, log.sync_up_to(info.last_offset)).await {
                Ok(result) => result.map_err(|e| BrokerError::storage(context(), e))?,
                Err(_) => {
                    return Err(BrokerError::new(
                        ErrorCode::Timeout,
                        format!("{}: not on disk within {timeout:?}", context()),
                    ))
                }
            }
        }
        span.record("base_offset", info.base_offset);
        Ok(Response::Produce(ProduceResponse {
            base_offset: info.base_offset,
            log_append_time: info.log_append_time,
            log_start_offset: log.log_start_offset(),
            duplicate: false,
        }))
    }

    async fn fetch(&self, conn: &ConnState, r: FetchRequest) -> Answer {
        let topic = self.topics.require(&r.topic)?;
        let log = Arc::clone(topic.partition(r.partition)?);
        let limits = &self.config.limits;
        let max_bytes = r
            .max_bytes
            .min(limits.max_frame_bytes.saturating_sub(1024))
            .max(1);
        let max_wait =
            Duration::from_millis(u64::from(r.max_wait_ms.min(limits.max_fetch_wait_ms)));
        let deadline = Instant::now() + max_wait;
        // Subscribe before reading so that an append between the read and the wait is not missed.
        let mut changes = log.subscribe();
        let read = || {
            log.read(r.offset, max_bytes).map_err(|e| {
                BrokerError::storage(format!("fetch from {}/{}", r.topic, r.partition), e)
            })
        };
        // A fetch whose topic is deleted while it waits (for appends, or for room) answers
        // as for any missing topic: not with the deleted log's records or positions, which a
        // topic made again under the name would not have.
        // Retired and out of the topic map: a deletion retires the logs first, and reinstates
        // them if it fails before the topic leaves the map (its long polls then go on).
        let gone = || {
            let deleted = log.is_retired()
                && self
                    .topics
                    .get(&r.topic)
                    .is_none_or(|now| !Arc::ptr_eq(&now, &topic));
            deleted.then(|| {
                BrokerError::new(
                    ErrorCode::UnknownTopic,
                    format!("unknown topic {:?}", r.topic),
                )
            })
        };
        let records = loop {
            if let Some(gone) = gone() {
                return Err(gone);
            }
            let records = read()?;
            if !records.is_empty() {
                let Some(memory) = &conn.memory else {
                    break records;
                };
                // The records take room in the connection's (and the broker's) budget until
                // the transport lets go of them: a peer that leaves its answers unread stops
                // getting more. Without room at once, they are let go while the fetch waits
                // for it (nothing is awaited while they are held unaccounted), then read again.
                let bytes = u32::try_from(records.len()).unwrap_or(u32::MAX);
                break match memory.try_reserve(bytes) {
                    Some(room) => memory.hold(records, room).await,
                    None => {
                        drop(records);
                        let room = memory.reserve(bytes).await.map_err(|_| {
                            BrokerError::new(
                                ErrorCode::Throttled,
                                "the connection ended while the fetch waited for memory",
                            )
                        })?;
                        if let Some(gone) = gone() {
                            return Err(gone);
                        }
                        memory.hold(read()?, room).await
                    }
                };
            }
            if max_wait.is_zero() || self.shutting_down.load(Ordering::Relaxed) {
                break records;
            }
            // Deadline passed or the log was closed: answer with what there is (nothing).
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                break bytes::Bytes::new();
            }
        };
        topic.metrics.record_fetch(records.len() as u64);
        tracing::Span::current().record("bytes", records.len());
        Ok(Response::Fetch(FetchResponse {
            high_watermark: log.high_watermark(),
            log_start_offset: log.log_start_offset(),
            records,
        }))
    }

    /// A lookup by timestamp: on a blocking thread, as it reads index files and may
    /// decompress a stored batch, within the budget of bytes being decompressed (as a
    /// produce's check is), so that lookups landing on large compressed batches at once hold
    /// no more than it. Room missing is waited for here, not on the blocking thread (which
    /// would hold a thread that a produce holding room may need), and the lookup made again.
    async fn list_offsets_by_time(self: &Arc<Self>, r: ListOffsetsRequest, ts: i64) -> Answer {
        let mut held: Option<(tokio::sync::OwnedSemaphorePermit, usize)> = None;
        loop {
            let request = r.clone();
            let room = held.as_ref().map_or(0, |(_, bytes)| *bytes);
            let looked = self
                .on_blocking_thread(move |core| core.list_offsets_within(&request, ts, room))
                .await?;
            let wanted = match looked {
                Ok(answer) => return Ok(answer),
                Err(wanted) => wanted,
            };
            // Room for the batch found (none held meanwhile).
            drop(held.take());
            let permit = Arc::clone(&self.decompressing)
                .acquire_many_owned(self.lookup_permits(wanted))
                .await
                .map_err(|_| {
                    BrokerError::new(ErrorCode::ShuttingDown, "broker is shutting down")
                })?;
            held = Some((permit, wanted));
        }
    }

    /// The permits of [`Core::decompressing`] a timestamp lookup takes to decode a batch of
    /// `bytes` uncompressed: at most the whole budget (a batch stored before the budget was
    /// lowered still gets decoded, alone).
    fn lookup_permits(&self, bytes: usize) -> u32 {
        let whole = decompressing_permits(self.config.limits.max_decompressing_bytes);
        let permits = decompressing_permits(bytes as u64).min(whole);
        u32::try_from(permits).unwrap_or(u32::MAX)
    }

    /// The lookup of [`list_offsets_by_time`](Self::list_offsets_by_time), on a blocking
    /// thread, with room held for `room` bytes being decompressed; `Ok(Err(n))` when a batch
    /// needs room for `n` and none is free now.
    fn list_offsets_within(
        &self,
        r: &ListOffsetsRequest,
        ts: i64,
        room: usize,
    ) -> Result<Result<Response, usize>, BrokerError> {
        let take = |bytes: usize| -> Result<Option<tokio::sync::OwnedSemaphorePermit>, usize> {
            if bytes <= INLINE_DECOMPRESSED || bytes <= room {
                return Ok(None);
            }
            Arc::clone(&self.decompressing)
                .try_acquire_many_owned(self.lookup_permits(bytes))
                .map(Some)
                .map_err(|_| bytes)
        };
        let topic = self.topics.require(&r.topic)?;
        let log = topic.partition(r.partition)?;
        let high_watermark = log.high_watermark();
        let found = log.offset_for_timestamp_within(ts, &take).map_err(|e| {
            BrokerError::storage(format!("list offsets of {}/{}", r.topic, r.partition), e)
        })?;
        let (offset, timestamp) = match found {
            Err(wanted) => return Ok(Err(wanted)),
            Ok(Some((offset, ts))) => (offset, Some(ts)),
            Ok(None) => (high_watermark, None),
        };
        Ok(Ok(Response::ListOffsets(ListOffsetsResponse {
            offset,
            timestamp,
            high_watermark,
        })))
    }

    /// Lookups of the log's start or end: memory only (by timestamp:
    /// [`list_offsets_by_time`](Self::list_offsets_by_time)).
    async fn list_offsets(self: &Arc<Self>, r: ListOffsetsRequest) -> Answer {
        let topic = self.topics.require(&r.topic)?;
        let log = topic.partition(r.partition)?;
        let high_watermark = log.high_watermark();
        let offset = match r.spec {
            OffsetSpec::Latest => high_watermark,
            OffsetSpec::Earliest => log.log_start_offset(),
            OffsetSpec::Timestamp(ts) => return self.list_offsets_by_time(r, ts).await,
        };
        Ok(Response::ListOffsets(ListOffsetsResponse {
            offset,
            timestamp: None,
            high_watermark,
        }))
    }

    /// Whether this produce answer must be dropped (fault injection): takes one from the count.
    pub fn take_dropped_answer(&self) -> bool {
        self.drop_produce_answers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Applies retention to every partition.
    pub fn apply_retention(&self) {
        self.apply_retention_at(now_ms());
    }

    /// [`apply_retention`](Self::apply_retention) as at `now` (the broker's clock, ms), and
    /// the expiry of producer names idle for `log.named_producer_expiration_ms`.
    pub fn apply_retention_at(&self, now: i64) {
        let mut index_memory = 0;
        for log in self.topics.all_logs() {
            // The log itself reports what it deleted.
            if let Err(e) = log.apply_retention(now) {
                tracing::warn!(error = %e, "retention failed");
            }
            index_memory += log.index_memory();
            log.release_idle_index_files();
        }
        crate::metrics::set_index_memory(index_memory);
        let expiration = self.config.log.named_producer_expiration_ms;
        let since = now.saturating_sub(i64::try_from(expiration).unwrap_or(i64::MAX));
        // No topic is created meanwhile: one fenced with a name that is then forgotten would
        // keep its epoch until a restart.
        self.topics.without_changes(|| {
            let logs = self.topics.all_logs();
            let expired = self.producer_ids.expire_names(now, expiration, |id| {
                logs.iter().any(|log| log.producer_active_since(id, since))
            });
            match expired {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(count = ids.len(), "forgot idle producer names");
                    for log in &logs {
                        for &id in &ids {
                            log.unpin_producer(id);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not forget idle producer names"),
            }
        });
    }

    /// Forces every partition to disk.
    pub fn flush_all(&self) {
        for log in self.topics.all_logs() {
            if let Err(e) = log.flush() {
                tracing::error!(error = %e, "flush failed");
            }
        }
    }
}
