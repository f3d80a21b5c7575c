//! [`ConsumerBuilder`] and the client's `create_consumer*` shortcuts.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, OnceCell};

use super::group::{self, Membership};
use super::state::State;
use super::{Consumer, ConsumerConfig, ConsumerMetrics, Inner};
use crate::client::RustMqClient;
use crate::error::{ClientError, Result};
use crate::message::validate_topic;

/// Builds a [`Consumer`]: topic, group, settings and client.
///
/// ```no_run
/// use std::time::Duration;
/// use rustmq::consumer::{ConsumerBuilder, ConsumerConfig, StartPosition};
/// # async fn demo(client: rustmq::RustMqClient) -> rustmq::Result<()> {
/// let consumer = ConsumerBuilder::new()
///     .topic("payments")
///     .consumer_group("payment-processors")
///     .config(ConsumerConfig {
///         fetch_size: 500,
///         fetch_timeout: Duration::from_secs(1),
///         start_position: StartPosition::Earliest,
///         dead_letter_queue: Some("failed-payments".to_string()),
///         ..Default::default()
///     })
///     .client(client)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct ConsumerBuilder {
    topic: Option<String>,
    group: Option<String>,
    config: Option<ConsumerConfig>,
    client: Option<RustMqClient>,
}

impl ConsumerBuilder {
    /// A builder with nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The topic to consume (required).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The consumer group; overrides `ConsumerConfig::consumer_group`.
    pub fn consumer_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The settings (default: [`ConsumerConfig::default`]).
    pub fn config(mut self, config: ConsumerConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// The client to consume through (required).
    pub fn client(mut self, client: RustMqClient) -> Self {
        self.client = Some(client);
        self
    }

    /// Checks the settings and that the topic exists, joins the group (waiting for the first
    /// assignment) and starts fetching.
    ///
    /// Fails with [`ClientError::InvalidConfig`] for missing or invalid settings, with
    /// [`ClientError::TopicNotFound`] if the topic does not exist, and with the broker's
    /// refusal if the join fails.
    pub async fn build(self) -> Result<Consumer> {
        let topic = self
            .topic
            .ok_or_else(|| ClientError::InvalidConfig("a consumer needs a topic".into()))?;
        validate_topic(&topic).map_err(|e| ClientError::InvalidConfig(e.to_string()))?;
        let client = self
            .client
            .ok_or_else(|| ClientError::InvalidConfig("a consumer needs a client".into()))?;
        let mut config = self.config.unwrap_or_default();
        if let Some(group) = self.group {
            config.consumer_group = group;
        }
        config.validate()?;
        let metadata = client.metadata(Some(&[topic.as_str()])).await?;
        if !metadata.topics.iter().any(|t| t.name == topic) {
            return Err(ClientError::TopicNotFound(topic));
        }
        let consumer_id = config
            .consumer_id
            .clone()
            .unwrap_or_else(|| client.client_id().to_owned());
        let inner = Arc::new(Inner {
            instruments: crate::telemetry::ConsumerInstruments::new(&topic, &config.consumer_group),
            group: config.consumer_group.clone(),
            state: Mutex::new(State::new(
                &topic,
                config.buffer_cap(),
                config.max_buffered_bytes_per_partition,
            )),
            topic,
            consumer_id,
            config,
            client,
            data: Arc::new(Notify::new()),
            membership: Mutex::new(Membership::default()),
            rejoin: Notify::new(),
            commit_lock: tokio::sync::Mutex::new(()),
            metrics: Arc::new(ConsumerMetrics::default()),
            dead_letters: OnceCell::new(),
            group_task: Mutex::new(None),
            closed: AtomicBool::new(false),
            before_commit: std::sync::OnceLock::new(),
        });
        // Created first so that a failed join below still stops whatever it started.
        let consumer = Consumer::from_inner(Arc::clone(&inner));
        if let Err(e) = group::join_initial(&inner).await {
            // The broker may hold the member: a join it took whose answer never came (given up
            // while the rebalance waited), or one answered before the start positions failed.
            // Leaving now keeps the group from holding partitions for a consumer that never
            // was, until its session expires.
            // Within one request timeout, so that a broker that cannot be reached fails the
            // build not much later. (A join still on its way after the leave, given up by the
            // client but not yet read by the broker, makes the member again all the same.)
            if !matches!(e, ClientError::Closed) {
                let bound = inner.client.config().request_timeout;
                match tokio::time::timeout(bound, group::leave(&inner)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(left)) => {
                        tracing::debug!(group = %inner.group, error = %left, "leaving after a failed join failed");
                    }
                    Err(_) => {
                        tracing::debug!(group = %inner.group, "leaving after a failed join timed out");
                    }
                }
            }
            return Err(e);
        }
        let task = tokio::spawn(group::run(Arc::clone(&inner)));
        *inner.group_task.lock() = Some(task);
        Ok(consumer)
    }
}

impl RustMqClient {
    /// A consumer of `topic` in consumer group `group`, with [`ConsumerConfig::default`]
    /// settings; it has joined the group and received its partitions when this returns.
    ///
    /// ```no_run
    /// # async fn demo(client: rustmq::RustMqClient) -> rustmq::Result<()> {
    /// let consumer = client.create_consumer("my-topic", "my-group").await?;
    /// while let Some(consumer_message) = consumer.receive().await? {
    ///     println!("received: {}", consumer_message.message.payload_as_string()?);
    ///     consumer_message.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn create_consumer(&self, topic: &str, group: &str) -> Result<Consumer> {
        self.create_consumer_with_config(topic, group, ConsumerConfig::default())
            .await
    }

    /// A consumer with explicit settings; `group` overrides `config.consumer_group`.
    ///
    /// The seed README's "Manual Offset Management" snippet calls
    /// `create_consumer(topic, group, config)`; that three-argument form is this method,
    /// since `create_consumer` keeps the two-argument form of the Quick Start.
    pub async fn create_consumer_with_config(
        &self,
        topic: &str,
        group: &str,
        config: ConsumerConfig,
    ) -> Result<Consumer> {
        ConsumerBuilder::new()
            .topic(topic)
            .consumer_group(group)
            .config(config)
            .client(self.clone())
            .build()
            .await
    }
}
