//! Compile-fail and compile-pass cases of rustmq's macros. Refresh the `.stderr` snapshots
//! with `TRYBUILD=overwrite cargo test -p ui-tests` (see README.md).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/fail/*.rs");
    t.pass("tests/pass/*.rs");
}
