//! rustmq depended on as `rustmq-client` (`rustmq-client = { package = "rustmq", .. }`), the
//! way code written for the seed SDK keeps compiling: `tests/renamed.rs` writes seed-style
//! code with `#[derive(Topic)]` and `#[handler]` and runs it on the embedded broker. That it
//! compiles is most of the test: the macros must reach rustmq as `::rustmq_client`.
