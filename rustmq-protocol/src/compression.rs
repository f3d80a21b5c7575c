//! Per-batch compression: none, Gzip, LZ4 (lz4_flex) and Zstd.
//!
//! A compressed records section starts with its uncompressed length (`u32`, big-endian), so
//! that a decoder can refuse a decompression bomb before allocating anything.

use std::io::{Read, Write};

use crate::error::{ProtocolError, Result};

/// The codec of a record batch, stored in the low three bits of its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Records are stored as they are.
    #[default]
    None,
    /// DEFLATE in a gzip container (flate2).
    Gzip,
    /// LZ4 block format (lz4_flex).
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Every codec.
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The attribute bits of this codec.
    pub fn id(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Lz4 => 2,
            Compression::Zstd => 3,
        }
    }

    /// The codec for attribute bits.
    pub fn from_id(id: u16) -> Result<Self> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Lz4,
            3 => Compression::Zstd,
            v => {
                return Err(ProtocolError::InvalidValue {
                    field: "compression",
                    value: v.into(),
                })
            }
        })
    }

    /// Lower-case name, as used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses `data`, prefixed by its length. `level` is clamped to the codec's range
    /// (LZ4 has no levels).
    pub fn compress(self, data: &[u8], level: i32, out: &mut Vec<u8>) -> Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| ProtocolError::Compression {
            codec: self.name(),
            reason: "input larger than 4 GiB".into(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        match self {
            Compression::None => out.extend_from_slice(data),
            Compression::Lz4 => {
                let start = out.len();
                out.resize(
                    start + lz4_flex::block::get_maximum_output_size(data.len()),
                    0,
                );
                let n = lz4_flex::block::compress_into(data, &mut out[start..]).map_err(|e| {
                    ProtocolError::Compression {
                        codec: "lz4",
                        reason: e.to_string(),
                    }
                })?;
                out.truncate(start + n);
            }
            Compression::Zstd => {
                let level = level.clamp(1, 22);
                let compressed =
                    zstd::bulk::compress(data, level).map_err(|e| ProtocolError::Compression {
                        codec: "zstd",
                        reason: e.to_string(),
                    })?;
                out.extend_from_slice(&compressed);
            }
            Compression::Gzip => {
                let level = flate2::Compression::new(level.clamp(0, 9) as u32);
                let mut enc = flate2::write::GzEncoder::new(std::mem::take(out), level);
                enc.write_all(data)
                    .and_then(|_| enc.finish())
                    .map(|v| *out = v)
                    .map_err(|e| ProtocolError::Compression {
                        codec: "gzip",
                        reason: e.to_string(),
                    })?;
            }
        }
        Ok(())
    }

    /// Decompresses a section written by [`Compression::compress`], refusing to produce more
    /// than `max_size` bytes.
    pub fn decompress(self, data: &[u8], max_size: usize) -> Result<Vec<u8>> {
        if data.len() < 4 {
            return Err(ProtocolError::CorruptBatch(
                "compressed section shorter than its size prefix",
            ));
        }
        let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if size > max_size {
            return Err(ProtocolError::TooLargeUncompressed {
                size,
                max: max_size,
            });
        }
        let body = &data[4..];
        let err = |reason: String| ProtocolError::Decompression {
            codec: self.name(),
            reason,
        };
        let out = match self {
            Compression::None => body.to_vec(),
            Compression::Lz4 => {
                let mut out = vec![0u8; size];
                let n = lz4_flex::block::decompress_into(body, &mut out)
                    .map_err(|e| err(e.to_string()))?;
                out.truncate(n);
                out
            }
            Compression::Zstd => {
                zstd::bulk::decompress(body, size).map_err(|e| err(e.to_string()))?
            }
            Compression::Gzip => {
                let mut out = Vec::with_capacity(size);
                flate2::read::GzDecoder::new(body)
                    .take(size as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| err(e.to_string()))?;
                out
            }
        };
        if out.len() != size {
            return Err(err(format!("expected {size} bytes, got {}", out.len())));
        }
        Ok(out)
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => {
                return Err(ProtocolError::InvalidValue {
                    field: "compression name",
                    value: 0,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in Compression::ALL {
            let mut out = Vec::new();
            codec.compress(&data, 3, &mut out).unwrap();
            assert_eq!(codec.decompress(&out, data.len()).unwrap(), data, "{codec}");
        }
    }

    #[test]
    fn size_limit_is_enforced_before_allocating() {
        let mut out = Vec::new();
        Compression::Lz4
            .compress(&[0u8; 4096], 1, &mut out)
            .unwrap();
        assert!(matches!(
            Compression::Lz4.decompress(&out, 100),
            Err(ProtocolError::TooLargeUncompressed { .. })
        ));
    }

    #[test]
    fn lying_size_prefix_is_an_error() {
        for codec in Compression::ALL {
            let mut out = Vec::new();
            codec
                .compress(b"hello world hello world", 1, &mut out)
                .unwrap();
            out[3] = out[3].wrapping_add(5);
            assert!(codec.decompress(&out, 1 << 20).is_err(), "{codec}");
        }
    }
}
