//! Attributes on the function: docs and `deprecated` on the struct, `cfg` on everything, the
//! rest on `handle`; raw identifiers; visibility; eight arguments.

#![deny(missing_docs)]
//! (crate docs for `missing_docs`)

use rustmq::{handler, Attempt, Handler, Headers, Metadata, State, Topic};
use serde::{Deserialize, Serialize};

/// A ping.
#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "pings")]
pub struct Ping;

/// Public handlers keep their docs.
pub mod handlers {
    use super::*;

    /// Answers pings.
    #[handler]
    #[inline]
    #[allow(unused_variables)]
    pub async fn r#pong(ping: Ping, unused: Metadata) {}

    /// Takes the maximum of eight arguments.
    #[handler(group = "all")]
    pub async fn everything(
        a: Ping,
        b: Metadata,
        c: Headers,
        d: Attempt,
        e: State<()>,
        f: Metadata,
        g: Headers,
        h: Attempt,
    ) {
        let _ = (a, b, c, d, e, f, g, h);
    }

    /// Compiled out entirely.
    #[cfg(any())]
    #[handler]
    pub async fn gone(ping: Ping) {}

    /// Still there, with a warning for its users.
    #[deprecated = "use pong"]
    #[handler]
    pub async fn old(ping: Ping) {
        let _ = ping;
    }
}

fn main() {
    assert_eq!(Handler::<_, ()>::options(&handlers::pong).name, "pong");
    assert_eq!(
        Handler::<_, ()>::options(&handlers::everything).group,
        Some("all")
    );
    let _ = handlers::pong::handle;
}
