//! Benchmarks live in `benches/`; this library holds what the non-criterion ones share.

/// The first command-line argument that parses as a number (the message count), or `default`.
/// `cargo bench` passes flags such as `--bench` too; they are skipped.
pub fn messages_arg(default: usize) -> usize {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(default)
}

/// The runtime of the end-to-end benches: two workers, one per core of the machine kind the
/// figures in docs/PERFORMANCE.md come from.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
