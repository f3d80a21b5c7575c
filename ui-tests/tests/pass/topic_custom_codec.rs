//! `codec = path::To::Type` takes any type implementing `rustmq::codec::Codec`.

use rustmq::Topic;
use serde::{Deserialize, Serialize};

mod codecs {
    use rustmq::codec::{Codec, CodecError};

    /// JSON with a one-byte version prefix.
    pub struct VersionedJson;

    impl Codec for VersionedJson {
        const NAME: &'static str = "versioned-json";
        fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
            let mut bytes = vec![1];
            bytes.extend(serde_json::to_vec(value).map_err(|e| CodecError::encode(Self::NAME, e))?);
            Ok(bytes)
        }
        fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
            match bytes.split_first() {
                Some((1, rest)) => {
                    serde_json::from_slice(rest).map_err(|e| CodecError::decode(Self::NAME, e))
                }
                _ => Err(CodecError::decode(Self::NAME, "unknown version")),
            }
        }
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "audit", codec = crate::codecs::VersionedJson)]
struct AuditEntry {
    who: String,
}

fn main() {
    use rustmq::codec::Codec;
    let entry = AuditEntry { who: "ops".into() };
    let bytes = <AuditEntry as Topic>::Codec::encode(&entry).unwrap();
    assert_eq!(bytes[0], 1);
    assert_eq!(
        <AuditEntry as Topic>::Codec::decode::<AuditEntry>(&bytes).unwrap(),
        entry
    );
    assert_eq!(
        rustmq::typed::TopicInfo::of::<AuditEntry>().codec,
        "versioned-json"
    );
}
