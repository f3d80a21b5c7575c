//! Strategies and helpers shared by the property tests.
//!
//! Each test crate uses its own subset, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

mod damage;
mod messages;
mod records;

pub(crate) use damage::*;
pub(crate) use messages::*;
pub(crate) use records::*;

use proptest::test_runner::{Config, FileFailurePersistence};

/// `cases` cases; failures are saved beside the test file as `<name>.regressions`.
pub(crate) fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}
