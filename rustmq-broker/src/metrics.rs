//! The broker's metrics, through the [`metrics`] facade.
//!
//! The broker only records: nothing is collected unless the embedding program installs a
//! recorder. The `rustmq-broker` and `rustmq broker` binaries install a Prometheus exporter
//! when `metrics_listen` is configured ([`install_prometheus`], feature `prometheus`); an
//! embedding program may call it too, or install any other `metrics` recorder.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `rustmq_broker_requests_total` | counter | `kind` | requests answered |
//! | `rustmq_broker_request_errors_total` | counter | `kind`, `code` | requests answered with an error |
//! | `rustmq_broker_request_duration_seconds` | histogram | `kind` | time from decoded request to answer |
//! | `rustmq_broker_produce_records_total` | counter | `topic` | records appended |
//! | `rustmq_broker_produce_bytes_total` | counter | `topic` | record-batch bytes appended |
//! | `rustmq_broker_fetch_bytes_total` | counter | `topic` | record-batch bytes returned by fetches |
//! | `rustmq_broker_connections` | gauge | | open client connections |
//! | `rustmq_broker_request_memory_bytes` | gauge | | bytes reserved in the request budget: frames being read or handled, fetch answers not yet let go of |
//! | `rustmq_broker_request_memory_waits_total` | counter | | frames and fetches that waited for room in the request budget |
//! | `rustmq_broker_index_memory_bytes` | gauge | | bytes of segment index entries held in memory, all partitions, as of the last retention pass |
//! | `rustmq_broker_fsyncs_total` | counter | | fdatasync calls for appended data |
//! | `rustmq_broker_fsync_duration_seconds` | histogram | | time of each of those calls |

use std::sync::LazyLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Key, Label, Level, Metadata, Unit};
use rustmq_protocol::{ApiKind, ErrorCode};

/// Requests answered, by `kind`.
pub const REQUESTS_TOTAL: &str = "rustmq_broker_requests_total";
/// Error answers, by `kind` and `code`.
pub const REQUEST_ERRORS_TOTAL: &str = "rustmq_broker_request_errors_total";
/// Request handling time, by `kind`.
pub const REQUEST_DURATION_SECONDS: &str = "rustmq_broker_request_duration_seconds";
/// Records appended, by `topic`.
pub const PRODUCE_RECORDS_TOTAL: &str = "rustmq_broker_produce_records_total";
/// Record-batch bytes appended, by `topic`.
pub const PRODUCE_BYTES_TOTAL: &str = "rustmq_broker_produce_bytes_total";
/// Record-batch bytes sent to fetchers, by `topic`.
pub const FETCH_BYTES_TOTAL: &str = "rustmq_broker_fetch_bytes_total";
/// Open client connections.
pub const CONNECTIONS: &str = "rustmq_broker_connections";
/// Bytes reserved in the request budget: frames being read or handled, fetch answers not yet
/// let go of.
pub const REQUEST_MEMORY_BYTES: &str = "rustmq_broker_request_memory_bytes";
/// Gauge: bytes of segment index entries held in memory, all partitions, as of the last
/// retention pass.
pub const INDEX_MEMORY_BYTES: &str = "rustmq_broker_index_memory_bytes";
/// Frames and fetches that waited for room in the request budget.
pub const REQUEST_MEMORY_WAITS_TOTAL: &str = "rustmq_broker_request_memory_waits_total";
/// fdatasync calls for appended data (group commits and segment rolls).
pub const FSYNCS_TOTAL: &str = "rustmq_broker_fsyncs_total";
/// Duration of each fdatasync.
pub const FSYNC_DURATION_SECONDS: &str = "rustmq_broker_fsync_duration_seconds";

/// Registers the descriptions and units of every broker metric with the installed recorder
/// (exporters show them as `# HELP` lines). Harmless without a recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS_TOTAL, "Requests answered, by kind");
    describe_counter!(
        REQUEST_ERRORS_TOTAL,
        "Requests answered with an error, by kind and code"
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a decoded request to its answer, by kind"
    );
    describe_counter!(PRODUCE_RECORDS_TOTAL, "Records appended, by topic");
    describe_counter!(
        PRODUCE_BYTES_TOTAL,
        Unit::Bytes,
        "Record-batch bytes appended, by topic"
    );
    describe_counter!(
        FETCH_BYTES_TOTAL,
        Unit::Bytes,
        "Record-batch bytes returned by fetches, by topic"
    );
    describe_gauge!(CONNECTIONS, "Open client connections");
    describe_gauge!(
        REQUEST_MEMORY_BYTES,
        Unit::Bytes,
        "Bytes reserved in the request budget: frames being read or handled, fetch answers not yet let go of"
    );
    describe_gauge!(
        INDEX_MEMORY_BYTES,
        Unit::Bytes,
        "Bytes of segment index entries held in memory (the active segments' whole indexes, one entry in 64 of sealed ones'), as of the last retention pass"
    );
    describe_counter!(
        REQUEST_MEMORY_WAITS_TOTAL,
        "Frames and fetches that waited for room in the request budget"
    );
    describe_counter!(FSYNCS_TOTAL, "fdatasync calls for appended data");
    describe_histogram!(
        FSYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of each fdatasync"
    );
}

// The metrics recorded for every request go through keys made once (`Key`s hash their name
// and labels when made, and a topic label is an owned copy of the name): the macros would make
// them again on every call. They are still registered with the recorder on every call, as the
// macros do, so a recorder installed (or set for a thread) at any time gets them all.

/// What the macros pass along with the metrics of this module.
const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

fn counter_of(key: &Key) -> metrics::Counter {
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
}

fn histogram_of(key: &Key) -> metrics::Histogram {
    metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
}

/// The keys of a request kind's metrics, by wire code.
struct KindKeys {
    requests: Key,
    duration: Key,
}

static KIND_KEYS: LazyLock<Vec<Option<KindKeys>>> = LazyLock::new(|| {
    let mut keys: Vec<Option<KindKeys>> = Vec::new();
    for &kind in ApiKind::ALL {
        let code = usize::from(kind.code());
        if keys.len() <= code {
            keys.resize_with(code + 1, || None);
        }
        let labels = || vec![Label::new("kind", kind.name())];
        keys[code] = Some(KindKeys {
            requests: Key::from_parts(REQUESTS_TOTAL, labels()),
            duration: Key::from_parts(REQUEST_DURATION_SECONDS, labels()),
        });
    }
    keys
});

pub(crate) fn record_request(kind: ApiKind, elapsed: Duration, error: Option<ErrorCode>) {
    match KIND_KEYS
        .get(usize::from(kind.code()))
        .and_then(Option::as_ref)
    {
        Some(keys) => {
            counter_of(&keys.requests).increment(1);
            histogram_of(&keys.duration).record(elapsed.as_secs_f64());
        }
        None => {
            counter!(REQUESTS_TOTAL, "kind" => kind.name()).increment(1);
            histogram!(REQUEST_DURATION_SECONDS, "kind" => kind.name())
                .record(elapsed.as_secs_f64());
        }
    }
    if let Some(code) = error {
        counter!(REQUEST_ERRORS_TOTAL, "kind" => kind.name(), "code" => code.to_string())
            .increment(1);
    }
}

/// The keys of a topic's metrics, made with the topic.
#[derive(Debug)]
pub(crate) struct TopicMetrics {
    produce_records: Key,
    produce_bytes: Key,
    fetch_bytes: Key,
}

impl TopicMetrics {
    pub(crate) fn new(topic: &str) -> Self {
        let labels = || vec![Label::new("topic", topic.to_owned())];
        Self {
            produce_records: Key::from_parts(PRODUCE_RECORDS_TOTAL, labels()),
            produce_bytes: Key::from_parts(PRODUCE_BYTES_TOTAL, labels()),
            fetch_bytes: Key::from_parts(FETCH_BYTES_TOTAL, labels()),
        }
    }

    pub(crate) fn record_produce(&self, records: u64, bytes: u64) {
        counter_of(&self.produce_records).increment(records);
        counter_of(&self.produce_bytes).increment(bytes);
    }

    pub(crate) fn record_fetch(&self, bytes: u64) {
        if bytes > 0 {
            counter_of(&self.fetch_bytes).increment(bytes);
        }
    }
}

/// A gauge that goes up and down, kept as a count of this process's own (every broker in it)
/// and published whole with each change: a recorder installed after some changes (as an
/// embedding program may do) then shows the true value from its first update on, where
/// increments and decrements would leave it off by what happened before, even below zero.
/// The count is published under its lock: with the add and the publication apart, two
/// changes could publish in the other order and leave the gauge at the older value.
struct UpDown(parking_lot::Mutex<i64>);

impl UpDown {
    const fn new() -> Self {
        Self(parking_lot::const_mutex(0))
    }

    /// Adds `delta` and sets `gauge` to the new count.
    fn add(&self, delta: i64, gauge: impl FnOnce() -> metrics::Gauge) {
        let mut count = self.0.lock();
        *count += delta;
        gauge().set(*count as f64);
    }
}

static OPEN_CONNECTIONS: UpDown = UpDown::new();
static REQUEST_MEMORY: UpDown = UpDown::new();

pub(crate) fn connection_opened() {
    OPEN_CONNECTIONS.add(1, || gauge!(CONNECTIONS));
}

pub(crate) fn connection_closed() {
    OPEN_CONNECTIONS.add(-1, || gauge!(CONNECTIONS));
}

/// Made once: the macro would build (and hash) the key on every request.
static REQUEST_MEMORY_KEY: LazyLock<Key> =
    LazyLock::new(|| Key::from_static_name(REQUEST_MEMORY_BYTES));

fn gauge_of(key: &Key) -> metrics::Gauge {
    metrics::with_recorder(|recorder| recorder.register_gauge(key, &METADATA))
}

pub(crate) fn request_memory_reserved(bytes: u32) {
    REQUEST_MEMORY.add(i64::from(bytes), || gauge_of(&REQUEST_MEMORY_KEY));
}

pub(crate) fn request_memory_released(bytes: usize) {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    REQUEST_MEMORY.add(-bytes, || gauge_of(&REQUEST_MEMORY_KEY));
}

pub(crate) fn request_memory_wait() {
    counter!(REQUEST_MEMORY_WAITS_TOTAL).increment(1);
}

pub(crate) fn set_index_memory(bytes: usize) {
    gauge!(INDEX_MEMORY_BYTES).set(bytes as f64);
}

pub(crate) fn record_fsync(elapsed: Duration) {
    counter!(FSYNCS_TOTAL).increment(1);
    histogram!(FSYNC_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

/// Why [`install_prometheus`] failed.
#[cfg(feature = "prometheus")]
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {message}")]
pub struct PrometheusError {
    addr: std::net::SocketAddr,
    message: String,
}

/// Installs a global Prometheus recorder serving `GET /metrics` (any path, in fact) on `addr`
/// over plain HTTP, and describes the broker's metrics. Client metrics recorded in the same
/// process (an embedded broker and clients) are served too.
///
/// The endpoint takes at most [`MAX_SCRAPE_CONNECTIONS`] connections at once (others are
/// closed as they come), each with [`SCRAPE_TIMEOUT`] for its request and answer, so that
/// idle or slow peers cannot hold the broker's file descriptors; the page is rendered on the
/// task serving the connection. It is meant for a trusted network: peers that keep the
/// connections busy can keep scrapes out, though not clients.
///
/// Call it once per process, from a `tokio` runtime: it fails if a recorder is already
/// installed. Histograms are exported with buckets from 10 µs to 10 s.
#[cfg(feature = "prometheus")]
pub fn install_prometheus(addr: std::net::SocketAddr) -> Result<(), PrometheusError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    const BUCKETS: &[f64] = &[
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let err = |e: &dyn std::fmt::Display| PrometheusError {
        addr,
        message: e.to_string(),
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| err(&e))?;
    listener.set_nonblocking(true).map_err(|e| err(&e))?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| err(&e))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| err(&e))?
        .install_recorder()
        .map_err(|e| err(&e))?;
    describe();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            // What the exporter's own listener did: histograms drained, idle data dropped.
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        }
    });
    tokio::spawn(scrape::serve(listener, handle));
    Ok(())
}

/// Scrape connections served at once by [`install_prometheus`]'s endpoint.
#[cfg(feature = "prometheus")]
pub const MAX_SCRAPE_CONNECTIONS: usize = 16;

/// How long a scrape connection has for its request and the answer.
#[cfg(feature = "prometheus")]
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The scrape endpoint: HTTP/1.1, one request per connection, any path.
#[cfg(feature = "prometheus")]
mod scrape {
    use std::sync::Arc;

    use metrics_exporter_prometheus::PrometheusHandle;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{MAX_SCRAPE_CONNECTIONS, SCRAPE_TIMEOUT};

    /// The most bytes of a request's head read before it is refused.
    const MAX_HEAD: usize = 8 * 1024;

    pub(super) async fn serve(listener: TcpListener, handle: PrometheusHandle) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPE_CONNECTIONS));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!("metrics endpoint: too many connections, one closed");
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let answered = tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &handle)).await;
                if let Ok(Err(error)) = answered {
                    tracing::debug!(%error, "metrics endpoint: scrape failed");
                }
                drop(slot);
            });
        }
    }

    /// Reads a request's head and answers it: the page for `GET`, 405 for other methods,
    /// 431 for a head larger than [`MAX_HEAD`].
    async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        let status = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&chunk[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                break if head.starts_with(b"GET ") {
                    "200 OK"
                } else {
                    "405 Method Not Allowed"
                };
            }
            if head.len() > MAX_HEAD {
                break "431 Request Header Fields Too Large";
            }
        };
        let body = if status.starts_with("200") {
            handle.render()
        } else {
            String::new()
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    /// Keys made before any recorder (a topic's, with the topic; the request kinds', at first
    /// use) reach a recorder set afterwards, under the documented names and labels.
    #[test]
    fn keys_made_before_a_recorder_reach_it() {
        let topic = TopicMetrics::new("orders");
        record_request(ApiKind::Produce, Duration::from_millis(1), None);
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            topic.record_produce(3, 120);
            topic.record_fetch(0);
            topic.record_fetch(50);
            record_request(
                ApiKind::Produce,
                Duration::from_millis(2),
                Some(ErrorCode::Timeout),
            );
        });
        type Sample = (String, Vec<(String, String)>, DebugValue);
        let samples: Vec<Sample> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let (_, key) = key.into_parts();
                let labels = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                (key.name().to_owned(), labels, value)
            })
            .collect();
        let value = |name: &str, label: (&str, &str)| {
            let found: Vec<_> = samples
                .iter()
                .filter(|(n, labels, _)| {
                    n == name && labels.iter().any(|(k, v)| k == label.0 && v == label.1)
                })
                .map(|(_, _, value)| value)
                .collect();
            assert_eq!(found.len(), 1, "{name} {label:?} in {samples:?}");
            found[0]
        };
        let counter = |name, label| match value(name, label) {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        };
        assert_eq!(counter(PRODUCE_RECORDS_TOTAL, ("topic", "orders")), 3);
        assert_eq!(counter(PRODUCE_BYTES_TOTAL, ("topic", "orders")), 120);
        assert_eq!(counter(FETCH_BYTES_TOTAL, ("topic", "orders")), 50);
        assert_eq!(counter(REQUESTS_TOTAL, ("kind", "Produce")), 1);
        assert_eq!(counter(REQUEST_ERRORS_TOTAL, ("kind", "Produce")), 1);
        match value(REQUEST_DURATION_SECONDS, ("kind", "Produce")) {
            DebugValue::Histogram(values) => assert_eq!(values.len(), 1),
            other => panic!("not a histogram: {other:?}"),
        }
    }

    /// An up-and-down gauge reads the whole count under a recorder installed after some of
    /// its changes (increments would have read the changes since, here below zero).
    #[test]
    fn a_gauge_counted_before_its_recorder_reads_the_whole_count() {
        static OPEN: UpDown = UpDown::new();
        let gauge = || metrics::gauge!("test_open");
        OPEN.add(3, gauge);
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let read = || {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .find_map(|(key, _, _, value)| (key.key().name() == "test_open").then_some(value))
        };
        metrics::with_local_recorder(&recorder, || OPEN.add(-1, gauge));
        assert_eq!(read(), Some(DebugValue::Gauge(2.0.into())));
        metrics::with_local_recorder(&recorder, || {
            OPEN.add(-2, gauge);
        });
        assert_eq!(read(), Some(DebugValue::Gauge(0.0.into())));
    }
}
