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

/// The process's resident memory now and at its highest (`VmRSS`, `VmHWM`), in KiB.
pub fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
