//! Per-batch compression: none, Gzip, LZ4 (lz4_flex) and Zstd.
//!
//! A compressed records section starts with its uncompressed length (`u32`, big-endian), so
//! that a decoder can refuse a decompression bomb before allocating anything.
//!
//! The codecs other than [`Compression::None`] need the `compression` feature (on by default).
//! Without it, compressing or decompressing with one of them is
//! [`ProtocolError::CompressionUnavailable`] ([`Compression::is_available`] says beforehand).

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

    /// The levels the codec takes: Zstd 1-22, Gzip 0-9, LZ4 0-12 (0-3 its fast mode, 4-12 LZ4
    /// HC); `None` has none.
    pub fn levels(self) -> Option<std::ops::RangeInclusive<i32>> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(0..=9),
            Compression::Lz4 => Some(0..=LZ4_MAX_LEVEL),
            Compression::Zstd => Some(1..=22),
        }
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

    /// Whether this build can compress and decompress with this codec: always for
    /// [`Compression::None`], for the others only with the `compression` feature.
    pub const fn is_available(self) -> bool {
        matches!(self, Compression::None) || cfg!(feature = "compression")
    }

    /// [`ProtocolError::CompressionUnavailable`] unless [`is_available`](Self::is_available).
    fn check_available(self) -> Result<()> {
        if self.is_available() {
            Ok(())
        } else {
            Err(ProtocolError::CompressionUnavailable { codec: self.name() })
        }
    }

    /// Compresses `data`, prefixed by its length. `level` is clamped to the codec's range
    /// ([`Compression::levels`]); LZ4 compresses in its fast mode up to level 3
    /// ([`LZ4_HC_MIN_LEVEL`] - 1) and with LZ4 HC from level 4 (smaller batches, slower to
    /// make, as fast to read). A codec this build lacks is
    /// [`ProtocolError::CompressionUnavailable`], and `out` is left as it was.
    pub fn compress(self, data: &[u8], level: i32, out: &mut Vec<u8>) -> Result<()> {
        self.check_available()?;
        let len = u32::try_from(data.len()).map_err(|_| ProtocolError::Compression {
            codec: self.name(),
            reason: "input larger than 4 GiB".into(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        match self {
            Compression::None => {
                out.extend_from_slice(data);
                Ok(())
            }
            codec => {
                let level = codec
                    .levels()
                    .map_or(level, |r| level.clamp(*r.start(), *r.end()));
                codecs::compress(codec, data, level, out)
            }
        }
    }

    /// Decompresses a section written by [`Compression::compress`], refusing to produce more
    /// than `max_size` bytes. A codec this build lacks is
    /// [`ProtocolError::CompressionUnavailable`].
    pub fn decompress(self, data: &[u8], max_size: usize) -> Result<Vec<u8>> {
        self.check_available()?;
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
        let out = match self {
            Compression::None => body.to_vec(),
            codec => codecs::decompress(codec, body, size)?,
        };
        if out.len() != size {
            return Err(ProtocolError::Decompression {
                codec: self.name(),
                reason: format!("expected {size} bytes, got {}", out.len()),
            });
        }
        Ok(out)
    }
}

/// The lowest LZ4 level compressed with LZ4 HC; below it, LZ4's fast mode.
pub const LZ4_HC_MIN_LEVEL: i32 = 4;
/// The highest LZ4 level (LZ4 HC's).
pub const LZ4_MAX_LEVEL: i32 = 12;

/// The codecs proper (feature `compression`).
#[cfg(feature = "compression")]
mod codecs {
    use std::io::{Read, Write};

    use super::Compression;
    use crate::error::{ProtocolError, Result};

    /// Appends `data` compressed with `codec` (not `None`) to `out`, `level` within the codec's
    /// range.
    pub(super) fn compress(
        codec: Compression,
        data: &[u8],
        level: i32,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let err = |e: String| ProtocolError::Compression {
            codec: codec.name(),
            reason: e,
        };
        match codec {
            Compression::None => out.extend_from_slice(data),
            Compression::Lz4 => {
                let start = out.len();
                out.resize(
                    start + lz4_flex::block::get_maximum_output_size(data.len()),
                    0,
                );
                // Both write LZ4's block format, which `decompress` reads whichever made it.
                // Nothing to compress goes the fast way at every level: liblz4 1.10's optimal
                // parser (levels 10-12) reads its input even when it is empty, and an empty
                // slice's pointer is dangling (a segfault the proptests found).
                let n = if level >= super::LZ4_HC_MIN_LEVEL && !data.is_empty() {
                    let mode = lz4::block::CompressionMode::HIGHCOMPRESSION(level);
                    lz4::block::compress_to_buffer(data, Some(mode), false, &mut out[start..])
                        .map_err(|e| err(e.to_string()))?
                } else {
                    lz4_flex::block::compress_into(data, &mut out[start..])
                        .map_err(|e| err(e.to_string()))?
                };
                out.truncate(start + n);
            }
            Compression::Zstd => {
                let compressed =
                    zstd::bulk::compress(data, level).map_err(|e| err(e.to_string()))?;
                out.extend_from_slice(&compressed);
            }
            Compression::Gzip => {
                let level = flate2::Compression::new(level.unsigned_abs());
                let mut enc = flate2::write::GzEncoder::new(std::mem::take(out), level);
                enc.write_all(data)
                    .and_then(|_| enc.finish())
                    .map(|v| *out = v)
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// `body` decompressed with `codec` (not `None`): at most `size + 1` bytes (the caller
    /// checks the length).
    pub(super) fn decompress(codec: Compression, body: &[u8], size: usize) -> Result<Vec<u8>> {
        let err = |e: String| ProtocolError::Decompression {
            codec: codec.name(),
            reason: e,
        };
        Ok(match codec {
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
        })
    }
}

/// Without the feature: every codec but `None` is unavailable (callers check first).
#[cfg(not(feature = "compression"))]
mod codecs {
    use super::Compression;
    use crate::error::{ProtocolError, Result};

    pub(super) fn compress(codec: Compression, _: &[u8], _: i32, _: &mut Vec<u8>) -> Result<()> {
        Err(ProtocolError::CompressionUnavailable {
            codec: codec.name(),
        })
    }

    pub(super) fn decompress(codec: Compression, _: &[u8], _: usize) -> Result<Vec<u8>> {
        Err(ProtocolError::CompressionUnavailable {
            codec: codec.name(),
        })
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

    /// The codecs of this build.
    fn available() -> impl Iterator<Item = Compression> {
        Compression::ALL.into_iter().filter(|c| c.is_available())
    }

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in available() {
            let mut out = Vec::new();
            codec.compress(&data, 3, &mut out).unwrap();
            assert_eq!(codec.decompress(&out, data.len()).unwrap(), data, "{codec}");
        }
    }

    /// LZ4's level chooses its mode: up to 3 the fast one, from 4 LZ4 HC, which makes smaller
    /// batches of the same data (the higher, the smaller); every level reads back.
    #[cfg(feature = "compression")]
    #[test]
    fn lz4_levels_from_four_compress_harder() {
        // Text-like data with long-range repeats, which LZ4 HC's deeper search finds.
        let mut rng = 7u32;
        let words: Vec<String> = (0..200)
            .map(|_| {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                format!("word{} ", rng % 1_000)
            })
            .collect();
        let data: Vec<u8> = (0..2_000)
            .flat_map(|i: usize| {
                let w = &words[(i * 7919) % words.len()];
                w.as_bytes().to_vec()
            })
            .collect();
        let size = |level| {
            let mut out = Vec::new();
            Compression::Lz4.compress(&data, level, &mut out).unwrap();
            assert_eq!(
                Compression::Lz4.decompress(&out, data.len()).unwrap(),
                data,
                "level {level}"
            );
            out.len()
        };
        let (fast, fast3, hc4, hc12) = (size(0), size(3), size(4), size(12));
        assert_eq!(fast, fast3, "0-3 are the fast mode");
        assert!(hc4 < fast, "HC 4 {hc4} against fast {fast}");
        assert!(hc12 <= hc4, "HC 12 {hc12} against HC 4 {hc4}");
        assert_eq!(size(99), hc12, "clamped");
        // Nothing to compress, at every level (liblz4's optimal parser read an empty input).
        for level in 0..=LZ4_MAX_LEVEL {
            let mut out = Vec::new();
            Compression::Lz4.compress(&[], level, &mut out).unwrap();
            assert!(Compression::Lz4.decompress(&out, 0).unwrap().is_empty());
        }
    }

    #[cfg(feature = "compression")]
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
        for codec in available() {
            let mut out = Vec::new();
            codec
                .compress(b"hello world hello world", 1, &mut out)
                .unwrap();
            out[3] = out[3].wrapping_add(5);
            assert!(codec.decompress(&out, 1 << 20).is_err(), "{codec}");
        }
    }

    /// Without the feature, every codec but `None` is a typed error both ways, and `None`
    /// works as ever.
    #[cfg(not(feature = "compression"))]
    #[test]
    fn codecs_are_unavailable_without_the_feature() {
        assert_eq!(available().collect::<Vec<_>>(), [Compression::None]);
        let mut section = Vec::new();
        Compression::None
            .compress(b"plain", 1, &mut section)
            .unwrap();
        assert_eq!(
            Compression::None.decompress(&section, 64).unwrap(),
            b"plain"
        );
        for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let mut out = b"kept".to_vec();
            let e = codec.compress(b"data", 1, &mut out).unwrap_err();
            assert_eq!(
                e,
                ProtocolError::CompressionUnavailable {
                    codec: codec.name()
                }
            );
            assert!(e.to_string().contains("`compression` feature"), "{e}");
            assert_eq!(out, b"kept", "nothing written");
            assert_eq!(
                codec.decompress(&section, 64),
                Err(ProtocolError::CompressionUnavailable {
                    codec: codec.name()
                })
            );
        }
    }
}
