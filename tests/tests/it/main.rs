//! The integration tests: one test binary, so that the real broker, client and their
//! dependencies are linked once rather than once per file. Every test starts its own broker on
//! an ephemeral port with its own temporary directory, so they run side by side.
//!
//! `cargo test -p tests --test it <module>` runs one file's tests, e.g. `security_tls`.
//! `observability_trace.rs` stays a binary of its own: it needs the `opentelemetry` feature.
//! So does `observability_metrics.rs`: it installs the process's metrics recorder, and the
//! brokers of other tests in the same process would close connections whose opening it never
//! saw (its connection gauge went below zero).

mod consumer_support;
mod security_support;
mod stream_support;

mod broker_bad_peers;
mod broker_concurrency;
mod broker_durability;
mod broker_roundtrip;
mod client_pool;
mod consumer_failures;
mod consumer_flow;
mod consumer_offsets;
mod consumer_retry;
mod consumer_seek;
mod group_membership;
mod producer_delivery;
mod security_acl;
mod security_auth;
mod security_tls;
mod stream_errors;
mod stream_exactly_once;
mod stream_lifecycle;
mod stream_modes;
mod stream_windows;
mod typed_failures;
mod typed_service;
