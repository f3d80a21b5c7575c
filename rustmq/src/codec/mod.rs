//! Serde codecs for typed topics: JSON (the default), bincode and postcard, and the [`Codec`]
//! trait for others.
//!
//! bincode is pinned to its 2.x line: 3.0.0 is a tombstone release (the project ended its
//! development in 2025) and must not be picked up by a semver-compatible update.

use std::cell::RefCell;

mod json;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A payload that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{codec} {direction} failed: {message}")]
pub struct CodecError {
    /// The codec's name.
    pub codec: &'static str,
    /// `encode` or `decode`.
    pub direction: &'static str,
    /// What went wrong.
    pub message: String,
}

impl CodecError {
    /// An encoding failure of `codec`.
    pub fn encode(codec: &'static str, e: impl std::fmt::Display) -> Self {
        Self {
            codec,
            direction: "encode",
            message: e.to_string(),
        }
    }

    /// A decoding failure of `codec`.
    pub fn decode(codec: &'static str, e: impl std::fmt::Display) -> Self {
        Self {
            codec,
            direction: "decode",
            message: e.to_string(),
        }
    }
}

/// Turns values into payload bytes and back.
///
/// ```
/// use rustmq::codec::{Codec, CodecError};
///
/// /// Payloads as `key=value` text lines (for a legacy consumer).
/// struct Csv;
/// impl Codec for Csv {
///     const NAME: &'static str = "csv";
///     fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
///         serde_json::to_vec(value).map_err(|e| CodecError::encode(Self::NAME, e))
///     }
///     fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
///         serde_json::from_slice(bytes).map_err(|e| CodecError::decode(Self::NAME, e))
///     }
/// }
/// ```
pub trait Codec: Send + Sync + 'static {
    /// Name; a typed stream processor writes it to the `content-type` header of the messages
    /// it produces (the typed producer does not, to keep its messages lean), and a payload
    /// that fails to decode names the header's codec in its poison reason when it differs.
    const NAME: &'static str;
    /// Encodes a value.
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError>;
    /// Decodes a value; any failure makes the message a poison message.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
    /// Encodes a value at the end of `buf`: what the typed producer calls, with a buffer it
    /// reuses from one message to the next. On failure `buf` may hold part of the value past
    /// its old length; the caller cuts it back.
    ///
    /// The default appends what [`encode`](Self::encode) returns (one allocation and one copy
    /// more); the built-in codecs write into `buf` directly.
    fn encode_into<T: Serialize>(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
        buf.extend_from_slice(&Self::encode(value)?);
        Ok(())
    }
}

thread_local! {
    /// Where [`encode_shared`] encodes on this thread: each payload is split off it, and once
    /// every payload of an allocation is dropped the allocation is written again.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Room the scratch buffer must have before a value is encoded into it; below it, the buffer
/// takes its memory back (or a new allocation of [`SCRATCH_CHUNK`]).
const SCRATCH_ROOM: usize = 512;
/// Each allocation of the scratch buffer: room for dozens of small payloads.
const SCRATCH_CHUNK: usize = 16 * 1024;

/// Encodes `value` with `C` into memory shared with the payloads encoded before it on this
/// thread: a payload that is dropped soon after (the producer copies it into its batch) lets
/// the next ones reuse its memory, so a stream of small values allocates nothing per value.
///
/// A payload held for long keeps its allocation (about [`SCRATCH_CHUNK`] bytes, up to twice
/// that as the buffer grows, besides its own) from being reused, so this is only for payloads
/// the producer takes at once; a payload larger than the chunk gets an allocation of its own.
pub(crate) fn encode_shared<C: Codec, T: Serialize>(value: &T) -> Result<Bytes, CodecError> {
    SCRATCH
        .try_with(|scratch| {
            let mut buf = scratch.borrow_mut();
            // Empty but after a value whose `Serialize` panicked half-way (the unwinding left
            // its bytes): they must not lead the next payload.
            buf.clear();
            if buf.capacity() < SCRATCH_ROOM {
                buf.reserve(SCRATCH_CHUNK);
            }
            match C::encode_into(value, &mut buf) {
                Ok(()) if buf.len() <= SCRATCH_CHUNK => Ok(buf.split().freeze()),
                // The buffer grew for this payload: the payload leaves with that allocation.
                Ok(()) => Ok(std::mem::take(&mut *buf).freeze()),
                // What a failed value wrote is cleared by the next call; a buffer grown for a
                // large value is not kept.
                Err(e) => {
                    if buf.capacity() > 2 * SCRATCH_CHUNK {
                        *buf = BytesMut::new();
                    }
                    Err(e)
                }
            }
        })
        // The thread is exiting and its scratch buffer is gone.
        .unwrap_or_else(|_| C::encode(value).map(Bytes::from))
}

/// Where an encoder writes: a `Vec<u8>` (`encode`) or a `BytesMut` (`encode_into`).
trait Out {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Out for BytesMut {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// An [`Out`] as `io::Write` for the encoders: every write appends at once. (`bytes`' own
/// `Writer` goes through `BufMut::put` and `write_all`'s loop over short writes for each of
/// the dozen small writes a JSON value takes.)
struct Append<'a, O>(&'a mut O);

impl<O: Out> std::io::Write for Append<'_, O> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.put(bytes);
        Ok(bytes.len())
    }

    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.put(bytes);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// JSON (serde_json): readable, the default.
///
/// Encodes to serde_json's compact output, byte for byte, but checks strings for characters
/// to escape eight bytes at a time rather than one (serde_json's own scan was over half of a
/// typical event's encoding). Decodes with serde_json.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(128);
        json::write(value, &mut out).map_err(|e| CodecError::encode(Self::NAME, e))?;
        Ok(out)
    }
    fn encode_into<T: Serialize>(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
        json::write(value, buf).map_err(|e| CodecError::encode(Self::NAME, e))
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        // JSON text is UTF-8 (RFC 8259): checked once for the whole payload (std's check runs
        // a word at a time over ASCII), after which serde_json reads strings without checking
        // each again, as `from_slice` does string by string.
        let text = std::str::from_utf8(bytes).map_err(|e| CodecError::decode(Self::NAME, e))?;
        serde_json::from_str(text).map_err(|e| CodecError::decode(Self::NAME, e))
    }
}

/// bincode 2.x with its standard configuration (varint integers, little-endian).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl Codec for Bincode {
    const NAME: &'static str = "bincode";
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map_err(|e| CodecError::encode(Self::NAME, e))
    }
    fn encode_into<T: Serialize>(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(value, &mut Append(buf), bincode::config::standard())
            .map(drop)
            .map_err(|e| CodecError::encode(Self::NAME, e))
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| CodecError::decode(Self::NAME, e))?;
        if used != bytes.len() {
            return Err(CodecError::decode(
                Self::NAME,
                format!("{} trailing bytes", bytes.len() - used),
            ));
        }
        Ok(value)
    }
}

/// postcard: compact, for small messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl Codec for Postcard {
    const NAME: &'static str = "postcard";
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        postcard::to_stdvec(value).map_err(|e| CodecError::encode(Self::NAME, e))
    }
    fn encode_into<T: Serialize>(value: &T, buf: &mut BytesMut) -> Result<(), CodecError> {
        postcard::to_io(value, Append(buf))
            .map(drop)
            .map_err(|e| CodecError::encode(Self::NAME, e))
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| CodecError::decode(Self::NAME, e))?;
        if !rest.is_empty() {
            return Err(CodecError::decode(
                Self::NAME,
                format!("{} trailing bytes", rest.len()),
            ));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: String,
        cents: u64,
        tags: Vec<String>,
    }

    fn round_trip<C: Codec>() {
        let order = Order {
            id: "o-1".into(),
            cents: 1234,
            tags: vec!["a".into()],
        };
        let bytes = C::encode(&order).unwrap();
        assert_eq!(C::decode::<Order>(&bytes).unwrap(), order, "{}", C::NAME);
        assert!(
            C::decode::<Order>(&bytes[..bytes.len() - 1]).is_err(),
            "{}: truncated",
            C::NAME
        );
        assert!(
            C::decode::<Order>(b"\xff\xfe garbage").is_err(),
            "{}: garbage",
            C::NAME
        );
    }

    /// JSON is checked as UTF-8 once, then read as text: strings with any characters and
    /// escapes decode as before, and a payload that is not UTF-8 anywhere is refused.
    #[test]
    fn json_reads_any_text_and_refuses_what_is_not_utf8() {
        let order = Order {
            id: "ü€😀 \"quoted\"\n\u{7}".into(),
            cents: 1,
            tags: vec!["日本".into(), String::new()],
        };
        let bytes = Json::encode(&order).unwrap();
        assert_eq!(Json::decode::<Order>(&bytes).unwrap(), order);
        let escaped = br#"{"id":"\u00fc\ud83d\ude00","cents":2,"tags":[]}"#;
        assert_eq!(Json::decode::<Order>(escaped).unwrap().id, "ü😀");
        for bad in [
            &b"{\"id\":\"\xff\",\"cents\":1,\"tags\":[]}"[..],
            &b"{\"id\":\"a\",\"cents\":1,\"tags\":[]} \xc3"[..],
        ] {
            assert!(Json::decode::<Order>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_codec_round_trips_and_rejects_garbage() {
        round_trip::<Json>();
        round_trip::<Bincode>();
        round_trip::<Postcard>();
    }

    /// A codec that only has `encode` and `decode`: `encode_into` is the trait's default.
    struct Plain;
    impl Codec for Plain {
        const NAME: &'static str = "plain";
        fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
            Json::encode(value)
        }
        fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
            Json::decode(bytes)
        }
    }

    fn order(n: u64) -> Order {
        Order {
            id: format!("order-{n}"),
            cents: n,
            tags: vec!["x".repeat((n % 50) as usize)],
        }
    }

    fn appends_what_encode_returns<C: Codec>() {
        let mut buf = BytesMut::from(&b"before"[..]);
        C::encode_into(&order(7), &mut buf).unwrap();
        assert_eq!(&buf[..6], b"before", "{}", C::NAME);
        assert_eq!(buf[6..], C::encode(&order(7)).unwrap()[..], "{}", C::NAME);
        let payload = encode_shared::<C, _>(&order(8)).unwrap();
        assert_eq!(
            C::decode::<Order>(&payload).unwrap(),
            order(8),
            "{}",
            C::NAME
        );
    }

    #[test]
    fn every_codec_encodes_into_a_buffer_as_it_encodes_alone() {
        appends_what_encode_returns::<Json>();
        appends_what_encode_returns::<Bincode>();
        appends_what_encode_returns::<Postcard>();
        appends_what_encode_returns::<Plain>();
    }

    /// Payloads encoded one after the other share an allocation, which is written again only
    /// once none of its payloads is held: a held payload never changes.
    #[test]
    fn shared_encoding_reuses_memory_only_when_its_payloads_are_gone() {
        let first = encode_shared::<Json, _>(&order(0)).unwrap();
        let second = encode_shared::<Json, _>(&order(1)).unwrap();
        assert_eq!(second.as_ptr(), first.as_ptr().wrapping_add(first.len()));
        let start = first.as_ptr();
        drop((first, second));

        // Enough values to fill the chunk several times, each dropped at once: the memory
        // comes back to its start instead of new allocations.
        let mut back_at_start = 0;
        for n in 0..2_000 {
            let payload = encode_shared::<Json, _>(&order(n)).unwrap();
            assert_eq!(Json::decode::<Order>(&payload).unwrap(), order(n));
            back_at_start += usize::from(payload.as_ptr() == start);
        }
        assert!(back_at_start >= 2, "reused {back_at_start} times");

        // One payload held across as many more: it keeps its bytes.
        let held = encode_shared::<Json, _>(&order(4_242)).unwrap();
        let copy = held.to_vec();
        let mut others = Vec::new();
        for n in 0..2_000 {
            others.push(encode_shared::<Json, _>(&order(n)).unwrap());
            if others.len() > 10 {
                others.remove(0);
            }
        }
        assert_eq!(held[..], copy[..]);
        for (payload, n) in others.iter().zip(1_990..) {
            assert_eq!(Json::decode::<Order>(payload).unwrap(), order(n));
        }
    }

    #[test]
    fn shared_encoding_of_a_large_value_or_a_failed_one_leaves_later_payloads_whole() {
        let large = Order {
            id: "L".repeat(3 * SCRATCH_CHUNK),
            cents: 1,
            tags: Vec::new(),
        };
        let payload = encode_shared::<Json, _>(&large).unwrap();
        assert_eq!(Json::decode::<Order>(&payload).unwrap(), large);
        let next = encode_shared::<Json, _>(&order(3)).unwrap();
        assert_eq!(next[..], Json::encode(&order(3)).unwrap()[..]);

        // JSON keys must be strings: this fails after writing the map's opening brace.
        let bad: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(encode_shared::<Json, _>(&bad).is_err());
        let after = encode_shared::<Json, _>(&order(4)).unwrap();
        assert_eq!(after[..], Json::encode(&order(4)).unwrap()[..]);
        assert_eq!(payload.len(), Json::encode(&large).unwrap().len());
    }

    /// A value whose `Serialize` panics half-way (a user's impl) leaves nothing in front of
    /// the next payload encoded on the thread.
    #[test]
    fn a_value_that_panics_while_encoding_leaves_later_payloads_whole() {
        struct Panics;
        impl Serialize for Panics {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("written", "before the panic")?;
                panic!("a user's Serialize panics");
            }
        }
        let panicked = std::panic::catch_unwind(|| encode_shared::<Json, _>(&Panics));
        assert!(panicked.is_err());
        let next = encode_shared::<Json, _>(&order(5)).unwrap();
        assert_eq!(next[..], Json::encode(&order(5)).unwrap()[..]);
    }
}
