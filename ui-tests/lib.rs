//! Compile-fail and compile-pass tests of `#[derive(Topic)]` and `#[handler]`; see README.md.
