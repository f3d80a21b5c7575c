//! The W3C Trace Context `traceparent` header (version `00`), as carried in message headers.
//!
//! ```
//! use rustmq::telemetry::TraceParent;
//!
//! let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let parent = TraceParent::parse(header).unwrap();
//! assert!(parent.is_sampled());
//! assert_eq!(parent.to_string(), header);
//! ```
//!
//! With the `opentelemetry` feature the producer writes this header on every message sent
//! inside a traced span, and [`TraceLayer`](crate::TraceLayer) makes the sender's span the
//! parent of the `handle` span.

use std::fmt;

/// Header name of the trace parent.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Header name of the vendor trace state: taken with a valid `traceparent` when it is valid
/// itself ([`valid_tracestate`]), else dropped whole. (The W3C recommendation allows dropping
/// a `tracestate` that does not parse; one longer than 512 characters it would have truncated,
/// its entries over 128 characters first: this drops it whole.)
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Most characters of a `tracestate` taken from a message (the 512 the W3C recommendation asks
/// every vendor to propagate): a producer's is copied into every message its consumers'
/// handlers send, hop after hop, and into the tracing backend.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// Whether `state` is a `tracestate` to take: at most [`MAX_TRACESTATE_LEN`] bytes (spaces
/// around members included) and 32 list members (empty ones included, as the grammar and
/// opentelemetry's parser count them), each `key=value` with a key of the W3C grammar (`[a-z][a-z0-9_\-*/]{0,255}`,
/// or `tenant@system`), no key twice, and a value of 1 to 256 printable ASCII characters other
/// than `,` and `=`, not ending in a space. Empty members (`a=1,,b=2`) are allowed.
pub fn valid_tracestate(state: &str) -> bool {
    if state.len() > MAX_TRACESTATE_LEN {
        return false;
    }
    if state.split(',').count() > 32 {
        return false;
    }
    let mut keys: Vec<&str> = Vec::new();
    for member in state.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = member.split_once('=') else {
            return false;
        };
        if !valid_key(key) || !valid_value(value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
    }
    true
}

/// A `tracestate` key: `simple-key` or `tenant-id@system-id`.
fn valid_key(key: &str) -> bool {
    let tail = |c: u8| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            (1..=256).contains(&b.len())
                && b[0].is_ascii_lowercase()
                && b[1..].iter().all(|&c| tail(c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t[1..].iter().all(|&c| tail(c))
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && s[1..].iter().all(|&c| tail(c))
        }
    }
}

/// A `tracestate` value: 1 to 256 of `%x20-2B / %x2D-3C / %x3E-7E`, the last not a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    (1..=256).contains(&b.len())
        && b.iter()
            .all(|&c| matches!(c, 0x20..=0x2B | 0x2D..=0x3C | 0x3E..=0x7E))
        && b[b.len() - 1] != b' '
}

/// A parsed `traceparent`: trace id, parent span id and trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// 8-byte id of the parent span (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Parses a version-`00` header; `None` when it is malformed or has an all-zero id.
    /// Later versions are read by their first four fields, as the specification asks.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        // Two lowercase hex digits (`2HEXDIGLC`), `ff` being invalid.
        let [version_byte] = decode_hex::<1>(version)?;
        if version_byte == 0xff {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let span_id: [u8; 8] = decode_hex(span)?;
        let [flags] = decode_hex::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Whether the sender sampled the trace.
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // The specification allows lowercase only.
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// A hostile producer's `tracestate` is not taken (and so not copied into every message
    /// downstream): over 512 characters or 32 members, a key twice, a control or non-ASCII
    /// character, a key outside the grammar. (Spaces around a member are the list's own.)
    #[test]
    fn only_a_w3c_tracestate_is_taken() {
        for good in [
            "rojo=00f067aa0ba902b7",
            "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7",
            "a=1,,b=2",
            "tenant1@system=x y",
            "k_-*/9=v",
            "",
        ] {
            assert!(valid_tracestate(good), "{good:?}");
        }
        let many: String = (0..33).map(|i| format!("k{i}=v,")).collect();
        let long = format!("k={}", "v".repeat(MAX_TRACESTATE_LEN));
        for bad in [
            "rojo=1,rojo=2",
            "rojo=a\u{7}b",
            "rojo=caf\u{e9}",
            "rojo=a\tb",
            "Rojo=1",
            "1abc=1",
            "rojo",
            "rojo=",
            "rojo=a=b",
            "@system=1",
            "tenant@=1",
            "tenant@Sys=1",
            many.as_str(),
            long.as_str(),
        ] {
            assert!(!valid_tracestate(bad), "{bad:?}");
        }
        let thirty_two: String = (0..32)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(valid_tracestate(&thirty_two));
        // Empty members count, as opentelemetry's parser counts them (it would drop the last).
        assert!(!valid_tracestate(&format!(",{thirty_two}")));
    }

    #[test]
    fn round_trips() {
        let p = TraceParent::parse(GOOD).unwrap();
        assert_eq!(p.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(p.to_string(), GOOD);
        assert!(!TraceParent { flags: 0, ..p }.is_sampled());
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "FF-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may append fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }
}
