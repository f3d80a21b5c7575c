//! RustMQ.
