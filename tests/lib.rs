//! Placeholder so the crate builds.
