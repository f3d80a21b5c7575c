//! Metrics and trace context: the names the client records under, and W3C `traceparent`.
//!
//! With the `metrics` feature (on by default) the client records through the
//! [`metrics`](https://docs.rs/metrics) facade, and it logs through `tracing`; it never installs
//! a recorder or a subscriber, and without a recorder recording costs a few branches. Without
//! the feature nothing is recorded, and `describe` and `MetricsLayer` do not exist; the
//! counters of [`Producer::metrics`](crate::Producer::metrics),
//! [`Consumer::metrics`](crate::Consumer::metrics) and
//! [`MessageStream::metrics`](crate::MessageStream::metrics) are there either way.
//!
//! Every metric is named `rustmq_<component>_<what>[_total|_seconds]` (Prometheus style:
//! counters end in `_total`, histograms of durations in `_seconds`), labelled with `topic`
//! (and `group`, `handler`, `partition` where they apply). docs/OBSERVABILITY.md lists them
//! all with the broker's ([`rustmq_broker::metrics`](https://docs.rs/rustmq-broker)).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `rustmq_producer_messages_sent_total` | counter | topic |
//! | `rustmq_producer_bytes_sent_total` | counter | topic |
//! | `rustmq_producer_batches_sent_total` | counter | topic |
//! | `rustmq_producer_messages_failed_total` | counter | topic |
//! | `rustmq_producer_errors_total` | counter | topic |
//! | `rustmq_producer_retries_total` | counter | topic |
//! | `rustmq_producer_send_latency_seconds` | histogram | topic |
//! | `rustmq_consumer_messages_received_total` | counter | topic, group |
//! | `rustmq_consumer_messages_processed_total` | counter | topic, group |
//! | `rustmq_consumer_messages_failed_total` | counter | topic, group |
//! | `rustmq_consumer_messages_retried_total` | counter | topic, group |
//! | `rustmq_consumer_messages_dead_lettered_total` | counter | topic, group |
//! | `rustmq_consumer_lag` | gauge | topic, group, partition |
//! | `rustmq_handler_handled_total` | counter | topic, group, handler, settlement |
//! | `rustmq_handler_duration_seconds` | histogram | topic, group, handler |
//!
//! Tracing targets: `rustmq::produce` (a `send` span per awaited send, a `produce` span per
//! batch request), `rustmq::fetch` (a `fetch` span per partition fetch task of a consumer),
//! `rustmq::handle` (a `handle` span per delivery, from [`TraceLayer`](crate::TraceLayer));
//! connection events log under `rustmq::transport`.

mod consumer;
pub mod names;
pub mod trace_context;

pub(crate) use consumer::ConsumerInstruments;

/// What a producer's or consumer's instruments hold instead of a `metrics` handle when the
/// `metrics` feature is off: recording into it is nothing.
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoopCounter;

#[cfg(not(feature = "metrics"))]
impl NoopCounter {
    #[inline(always)]
    pub(crate) fn increment(&self, _: u64) {}
}

#[cfg(feature = "opentelemetry")]
pub mod otel;

pub use trace_context::{TraceParent, TRACEPARENT_HEADER, TRACESTATE_HEADER};

/// Registers descriptions and units of the client's metrics with the installed recorder
/// (exporters show them as help text). Harmless without a recorder.
///
/// Available with the `metrics` feature.
#[cfg(feature = "metrics")]
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_counter!(
        PRODUCER_MESSAGES_SENT,
        "Messages acknowledged by the broker"
    );
    describe_counter!(
        PRODUCER_BYTES_SENT,
        Unit::Bytes,
        "Payload, key and header bytes acknowledged"
    );
    describe_counter!(PRODUCER_BATCHES_SENT, "Record batches acknowledged");
    describe_counter!(PRODUCER_MESSAGES_FAILED, "Messages that failed for good");
    describe_counter!(
        PRODUCER_ERRORS,
        "Failed produce requests, retried ones included"
    );
    describe_counter!(
        PRODUCER_RETRIES,
        "Produce requests sent again after a retryable failure"
    );
    describe_histogram!(
        PRODUCER_SEND_LATENCY,
        Unit::Seconds,
        "Per batch: from its first message's acceptance to the broker's answer"
    );
    describe_counter!(
        CONSUMER_MESSAGES_RECEIVED,
        "Messages delivered for the first time"
    );
    describe_counter!(CONSUMER_MESSAGES_PROCESSED, "Messages acknowledged");
    describe_counter!(CONSUMER_MESSAGES_FAILED, "Messages nacked");
    describe_counter!(
        CONSUMER_MESSAGES_RETRIED,
        "Redeliveries scheduled after a nack"
    );
    describe_counter!(
        CONSUMER_MESSAGES_DEAD_LETTERED,
        "Messages written to the dead-letter topic"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "High watermark minus the consumer's position, per partition"
    );
    describe_counter!(HANDLER_HANDLED, "Deliveries handled, by settlement");
    describe_histogram!(
        HANDLER_DURATION,
        Unit::Seconds,
        "Time a handler (and inner layers) took per delivery"
    );
}
