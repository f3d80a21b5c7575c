//! Metric names, one constant each (see the [module](super) table for kinds and labels).

/// Counter, `topic`: messages acknowledged by the broker.
pub const PRODUCER_MESSAGES_SENT: &str = "rustmq_producer_messages_sent_total";
/// Counter, `topic`: payload + key + header bytes of acknowledged messages.
pub const PRODUCER_BYTES_SENT: &str = "rustmq_producer_bytes_sent_total";
/// Counter, `topic`: record batches acknowledged.
pub const PRODUCER_BATCHES_SENT: &str = "rustmq_producer_batches_sent_total";
/// Counter, `topic`: messages that failed for good.
pub const PRODUCER_MESSAGES_FAILED: &str = "rustmq_producer_messages_failed_total";
/// Counter, `topic`: failed produce requests (retried ones included).
pub const PRODUCER_ERRORS: &str = "rustmq_producer_errors_total";
/// Counter, `topic`: produce requests resent after a retryable failure.
pub const PRODUCER_RETRIES: &str = "rustmq_producer_retries_total";
/// Histogram (seconds), `topic`: per batch, from its first message's acceptance to the answer.
pub const PRODUCER_SEND_LATENCY: &str = "rustmq_producer_send_latency_seconds";

/// Counter, `topic`, `group`: messages delivered for the first time.
pub const CONSUMER_MESSAGES_RECEIVED: &str = "rustmq_consumer_messages_received_total";
/// Counter, `topic`, `group`: messages acknowledged.
pub const CONSUMER_MESSAGES_PROCESSED: &str = "rustmq_consumer_messages_processed_total";
/// Counter, `topic`, `group`: messages nacked.
pub const CONSUMER_MESSAGES_FAILED: &str = "rustmq_consumer_messages_failed_total";
/// Counter, `topic`, `group`: redeliveries scheduled after a nack.
pub const CONSUMER_MESSAGES_RETRIED: &str = "rustmq_consumer_messages_retried_total";
/// Counter, `topic`, `group`: messages written to the dead-letter topic.
pub const CONSUMER_MESSAGES_DEAD_LETTERED: &str = "rustmq_consumer_messages_dead_lettered_total";
/// Gauge, `topic`, `group`, `partition`: high watermark minus position.
pub const CONSUMER_LAG: &str = "rustmq_consumer_lag";

/// Counter, `topic`, `group`, `handler`, `settlement`: deliveries handled.
pub const HANDLER_HANDLED: &str = "rustmq_handler_handled_total";
/// Histogram (seconds), `topic`, `group`, `handler`: time per delivery.
pub const HANDLER_DURATION: &str = "rustmq_handler_duration_seconds";
