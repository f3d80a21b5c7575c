//! How long the broker takes to initialise an idempotent producer (`InitProducer`), without
//! the network: what `ProducerIds::init` costs, unnamed and named.
//!
//! ```text
//! cargo build --release -p benches --example producer_init
//! target/release/examples/producer_init [INITS] [NAMES]
//! ```
//!
//! Opens a producer-id registry in a temporary directory holding NAMES (default 0) other
//! named producers, and times INITS (default 3,000)
//! unnamed initialisations (every idempotent producer's), then INITS / 10 initialisations of
//! ten names in turn (a stream's, at each session start: each writes and syncs the registry,
//! which is the baseline of the run). Prints one JSON line with the medians, p99s and means.

use std::time::Instant;

use rustmq_broker::producers::ProducerIds;

fn stats(mut us: Vec<f64>) -> (f64, f64, f64) {
    us.sort_by(f64::total_cmp);
    let at = |p: f64| us[((us.len() as f64 * p) as usize).min(us.len() - 1)];
    let mean = us.iter().sum::<f64>() / us.len() as f64;
    (at(0.5), at(0.99), mean)
}

fn main() {
    let inits: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3_000);
    let names: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let dir = tempfile::tempdir().expect("temporary directory");
    // The registry as a broker that initialised NAMES names would have written it.
    let mut registry = format!("next_id = {}\n[named]\n", names + 1);
    for i in 0..names {
        registry.push_str(&format!("\"deployment-{i}\" = [{i}, 0]\n"));
    }
    registry.push_str("[initialised_at]\n");
    for i in 0..names {
        registry.push_str(&format!("\"deployment-{i}\" = 1700000000000\n"));
    }
    std::fs::write(dir.path().join("producers.toml"), registry).expect("write the registry");
    let ids = ProducerIds::open(dir.path()).expect("open the registry");
    let time = |name: Option<&str>| {
        let start = Instant::now();
        ids.init(name).expect("init");
        start.elapsed().as_secs_f64() * 1e6
    };
    let unnamed: Vec<f64> = (0..inits).map(|_| time(None)).collect();
    let streams: Vec<String> = (0..10).map(|i| format!("stream-{i}")).collect();
    let named: Vec<f64> = (0..inits / 10)
        .map(|i| time(Some(&streams[i % streams.len()])))
        .collect();
    let (u50, u99, umean) = stats(unnamed);
    let (n50, n99, nmean) = stats(named);
    println!(
        "{{\"inits\":{inits},\"names\":{names},\"unnamed_p50_us\":{u50:.1},\"unnamed_p99_us\":{u99:.1},\"unnamed_mean_us\":{umean:.1},\"named_p50_us\":{n50:.1},\"named_p99_us\":{n99:.1},\"named_mean_us\":{nmean:.1},\"unnamed_mean_over_named_mean\":{:.4}}}",
        umean / nmean
    );
}
