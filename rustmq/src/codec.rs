//! Serde codecs for typed topics: JSON (the default), bincode and postcard, and the [`Codec`]
//! trait for others.
//!
//! bincode is pinned to its 2.x line: 3.0.0 is a tombstone release (the project ended its
//! development in 2025) and must not be picked up by a semver-compatible update.

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
    /// Name, also written to the `content-type` header of produced messages.
    const NAME: &'static str;
    /// Encodes a value.
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError>;
    /// Decodes a value; any failure makes the message a poison message.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// JSON (serde_json): readable, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::encode(Self::NAME, e))
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
}
