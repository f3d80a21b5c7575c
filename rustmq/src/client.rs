//! [`RustMqClient`]: the connection pool to the brokers, topic administration, and the
//! request path the producer and consumer are built on.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustmq_protocol::{
    BrokerLimits, CreateTopicRequest, DeleteTopicRequest, DescribeGroupRequest,
    DescribeTopicRequest, ListGroupsRequest, ListTopicsRequest, MetadataRequest, PingRequest,
    Request, Response,
};
use tokio::task::JoinHandle;

use crate::admin::{
    ClusterMetadata, GroupDescription, TopicDescription, TopicSettings, TopicSummary,
};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::transport::{spawn_health_task, Pool, Unanswered};

/// A connection to a RustMQ deployment: a pool of QUIC connections to one of the configured
/// brokers at a time (the others are failover addresses, see [`ClientConfig::brokers`]), with
/// reconnection, request timeouts, in-flight limits and health checks.
///
/// Cheap to clone: clones share the pool. The pool closes when [`close`](Self::close) is
/// called or the last clone is dropped.
///
/// ```no_run
/// use rustmq::{ClientConfig, RustMqClient};
///
/// # async fn example() -> rustmq::Result<()> {
/// let client = RustMqClient::new(ClientConfig::default()).await?;
/// client.create_topic("orders", 3).await?;
/// for topic in client.list_topics().await? {
///     println!("{} ({} partitions)", topic.name, topic.partitions);
/// }
/// let health = client.health_check().await?;
/// println!("{}/{} connections healthy", health.healthy_connections, health.total_connections);
/// client.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RustMqClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    client_id: String,
    pool: Arc<Pool>,
    health_task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The task only holds a weak reference, but it would otherwise linger until its next
        // tick; connections close as quinn drops them.
        if let Some(task) = self.health_task.get_mut().take() {
            task.abort();
        }
    }
}

impl fmt::Debug for RustMqClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustMqClient")
            .field("client_id", &self.inner.client_id)
            .field("brokers", &self.inner.config.brokers)
            .field("closed", &self.inner.pool.is_closed())
            .finish()
    }
}

/// Result of [`RustMqClient::health_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthStatus {
    /// Connections that answered their ping in time.
    pub healthy_connections: usize,
    /// Connections pinged (failed ones have been closed and will be reopened on demand).
    pub total_connections: usize,
    /// Mean round-trip time of the answered pings, if any was timed.
    pub latency: Option<Duration>,
}

/// Counters of a client's connections since it was created, from
/// [`RustMqClient::connection_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Connections currently open.
    pub active_connections: usize,
    /// Requests currently awaiting an answer.
    pub in_flight_requests: usize,
    /// Requests issued (a transparent retry does not count twice; health pings not at all).
    pub total_requests: u64,
    /// Requests that ended in an error (including error answers from the broker).
    pub failed_requests: u64,
    /// Connections opened to replace one that was lost.
    pub reconnects: u64,
    /// Bytes of request frames written, hello and pings included.
    pub bytes_sent: u64,
    /// Bytes of response frames read, hello and pings included.
    pub bytes_received: u64,
    /// The largest UDP payload the open connections send now, the smallest if they differ:
    /// what path MTU discovery found, up to [`QuicConfig::max_udp_payload_size`] (and the
    /// broker's own bound). `None` without an open connection.
    ///
    /// [`QuicConfig::max_udp_payload_size`]: crate::QuicConfig::max_udp_payload_size
    pub udp_payload_size: Option<u16>,
}

impl RustMqClient {
    /// Validates `config`, then connects to the first broker of `config.brokers` that answers
    /// (trying them all at once, and taking one that answers once every broker before it in
    /// the list has failed; the whole list again per `retry_config`) and starts the
    /// background health check. That broker serves every request until it is lost; see
    /// [`ClientConfig::brokers`].
    ///
    /// Fails with [`ClientError::InvalidConfig`] or [`ClientError::Tls`] for a bad
    /// configuration, with [`ClientError::Connection`] if no broker could be reached, and with
    /// the broker's refusal ([`ClientError::Authentication`], ...) if every broker failed and
    /// one answered the hello with an error.
    pub async fn new(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("rustmq-{:08x}", fastrand::u32(..)));
        let pool = Arc::new(Pool::new(&config, client_id.clone())?);
        if let Err(error) = pool.connect_initial().await {
            pool.close().await;
            return Err(error);
        }
        let health_task = (!config.keep_alive_interval.is_zero())
            .then(|| spawn_health_task(Arc::downgrade(&pool), config.keep_alive_interval));
        tracing::debug!(%client_id, brokers = ?config.brokers, "client connected");
        Ok(RustMqClient {
            inner: Arc::new(Inner {
                config,
                client_id,
                pool,
                health_task: parking_lot::Mutex::new(health_task),
            }),
        })
    }

    /// Closes every connection gracefully and stops the health check. Requests in flight and
    /// every later call fail with [`ClientError::Closed`]. Closing twice is harmless.
    pub async fn close(&self) -> Result<()> {
        if let Some(task) = self.inner.health_task.lock().take() {
            task.abort();
        }
        self.inner.pool.close().await;
        Ok(())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.pool.is_closed()
    }

    /// Pings every connection within `health_check_timeout` (first opening one if the broker
    /// in use has none, even while it backs off after failed attempts, or failing over to the
    /// next broker if it cannot be reached).
    /// Connections that fail are closed and reopened on demand.
    ///
    /// Fails when no connection is healthy: with [`ClientError::Timeout`] if every ping timed
    /// out, [`ClientError::Connection`] otherwise.
    pub async fn health_check(&self) -> Result<HealthStatus> {
        self.ensure_open()?;
        let report = self.inner.pool.check_health().await;
        if report.healthy == 0 {
            if !report.errors.is_empty()
                && report
                    .errors
                    .iter()
                    .all(|e| matches!(e, ClientError::Timeout { .. }))
            {
                return Err(ClientError::timeout(self.inner.config.health_check_timeout));
            }
            let reasons: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
            return Err(ClientError::Connection(format!(
                "no healthy connection ({} checked): {}",
                report.total,
                reasons.join("; ")
            )));
        }
        let latency = u32::try_from(report.latencies.len())
            .ok()
            .filter(|n| *n > 0)
            .map(|n| report.latencies.iter().sum::<Duration>() / n);
        Ok(HealthStatus {
            healthy_connections: report.healthy,
            total_connections: report.total,
            latency,
        })
    }

    /// Counters of this client's connections and requests.
    pub async fn connection_stats(&self) -> Result<ConnectionStats> {
        use std::sync::atomic::Ordering::Relaxed;
        let pool = &self.inner.pool;
        let counters = pool.counters();
        let now = pool.stats();
        Ok(ConnectionStats {
            active_connections: now.active_connections,
            in_flight_requests: now.in_flight,
            total_requests: counters.total_requests.load(Relaxed),
            failed_requests: counters.failed_requests.load(Relaxed),
            reconnects: counters.reconnects.load(Relaxed),
            bytes_sent: counters.bytes_sent.load(Relaxed),
            bytes_received: counters.bytes_received.load(Relaxed),
            udp_payload_size: now.udp_payload_size,
        })
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The client id sent to the brokers (configured, or generated when `client_id` is
    /// `None`).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The limits announced by the most recently connected broker (frame, batch and in-flight
    /// limits); `None` only before the first connection.
    pub fn broker_limits(&self) -> Option<BrokerLimits> {
        self.inner.pool.limits()
    }

    /// Round trip to a broker on a pooled connection; returns the time it took.
    pub async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        let nonce = fastrand::u64(..);
        match self.request(Request::Ping(PingRequest { nonce })).await? {
            Response::Ping(pong) if pong.nonce == nonce => Ok(started.elapsed()),
            Response::Ping(_) => Err(ClientError::UnexpectedResponse(
                "ping answered with another nonce".into(),
            )),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// Creates a topic with `partitions` partitions (0: the broker's default partition count,
    /// as auto-created topics get) and the broker's default settings.
    ///
    /// Fails with [`ClientError::Broker`] and code `TopicAlreadyExists` if it exists.
    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        self.create_topic_with(name, partitions, TopicSettings::default())
            .await
    }

    /// Creates a topic with `partitions` partitions unless it already exists (then its
    /// partition count is left as it is). Any other failure is returned.
    pub async fn ensure_topic(&self, name: &str, partitions: u32) -> Result<()> {
        match self.create_topic(name, partitions).await {
            Err(e) if e.error_code() == Some(crate::ErrorCode::TopicAlreadyExists) => Ok(()),
            other => other,
        }
    }

    /// Creates a topic with explicit settings.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        settings: TopicSettings,
    ) -> Result<()> {
        let request = Request::CreateTopic(CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            settings: settings.into(),
        });
        match self.request(request).await? {
            Response::CreateTopic(_) => Ok(()),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// Deletes a topic and all its data. Fails with [`ClientError::TopicNotFound`] if it does
    /// not exist.
    ///
    /// Not idempotent: a deletion whose answer did not come in time (a
    /// [`ClientError::Timeout`]) may still complete on the broker, and deleting again then
    /// fails with [`ClientError::TopicNotFound`]. A caller that retries should take that
    /// answer as done.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = Request::DeleteTopic(DeleteTopicRequest {
            name: name.to_owned(),
        });
        match self.request(request).await.map_err(|e| e.for_topic(name))? {
            Response::DeleteTopic(_) => Ok(()),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        match self
            .request(Request::ListTopics(ListTopicsRequest {}))
            .await?
        {
            Response::ListTopics(list) => Ok(list.topics.into_iter().map(Into::into).collect()),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// A topic's settings and partitions. Fails with [`ClientError::TopicNotFound`] if it
    /// does not exist.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = Request::DescribeTopic(DescribeTopicRequest {
            name: name.to_owned(),
        });
        match self.request(request).await.map_err(|e| e.for_topic(name))? {
            Response::DescribeTopic(description) => Ok(description.into()),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// Brokers and the partition layout of `topics` (`None` for every topic), each topic once
    /// and sorted by name. Topics that do not exist are left out of the answer; naming more
    /// than [`crate::protocol::MAX_METADATA_TOPICS`] fails with the broker's `InvalidRequest`.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
        let request = Request::Metadata(MetadataRequest {
            topics: topics.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        });
        match self.request(request).await? {
            Response::Metadata(metadata) => Ok(metadata.into()),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// Every consumer group the broker knows (including ones with no members left but
    /// committed offsets), sorted by name.
    pub async fn list_groups(&self) -> Result<Vec<String>> {
        match self
            .request(Request::ListGroups(ListGroupsRequest {}))
            .await?
        {
            Response::ListGroups(list) => Ok(list.groups),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// A consumer group's state, members, assignment and committed offsets. Fails with
    /// [`ClientError::Broker`] and code `UnknownGroup` if the broker has never seen it.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let request = Request::DescribeGroup(DescribeGroupRequest {
            group: group.to_owned(),
        });
        match self.request(request).await? {
            Response::DescribeGroup(description) => Ok(description.into()),
            other => Err(ClientError::unexpected_response(&other)),
        }
    }

    /// Sends any request and returns the broker's answer; error answers become errors. For
    /// tests and tools: it bypasses every check the typed API makes.
    #[doc(hidden)]
    pub async fn raw_request(&self, request: Request) -> Result<Response> {
        self.request(request).await
    }

    /// [`raw_request`](Self::raw_request) with a total `timeout` instead of the configured
    /// `request_timeout`: for a long-poll fetch, which the broker may hold for its
    /// `max_wait_ms`, pass `request_timeout + max_wait` (as the consumer's fetches do), or the
    /// request times out on an idle partition whenever the wait is not shorter than the
    /// timeout.
    #[doc(hidden)]
    pub async fn raw_request_with_timeout(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response> {
        self.request_with_timeout(request, timeout).await
    }

    /// Sends a request within `request_timeout`. Requests that are safe to repeat (reads,
    /// pings) are re-sent transparently after a lost connection; others return the
    /// (retryable) error to the caller.
    pub(crate) async fn request(&self, request: Request) -> Result<Response> {
        self.send_request(&request).await
    }

    /// [`request`](Self::request) for a request the caller keeps (to send again, say).
    pub(crate) async fn send_request(&self, request: &Request) -> Result<Response> {
        self.inner
            .pool
            .request(request, self.inner.config.request_timeout)
            .await
    }

    /// Writes a request within `request_timeout` without waiting for its answer (fire and
    /// forget); the answer is read, within `request_timeout` counted from now, through
    /// [`Unanswered::answer`]. Never re-sent.
    pub(crate) async fn write_request(&self, request: &Request) -> Result<Unanswered> {
        self.inner
            .pool
            .write_request(request, self.inner.config.request_timeout)
            .await
    }

    /// Like [`request`](Self::request), with a total `timeout` instead of `request_timeout`:
    /// a long-poll fetch passes `request_timeout + max_wait`.
    pub(crate) async fn request_with_timeout(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response> {
        self.inner.pool.request(&request, timeout).await
    }

    fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(ClientError::Closed)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
