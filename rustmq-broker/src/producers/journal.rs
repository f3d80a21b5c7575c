//! The producer registry's journal: each change an initialisation makes, appended and synced,
//! instead of rewriting the whole registry.
//!
//! Rewriting `producers.toml` at every named initialisation cost time in proportion to the
//! names it held, under the registry's lock: 39 ms per initialisation with 10,000 names,
//! 440 ms with 100,000 (`producer_init`), so a broker with many stream instances served a few
//! initialisations a second. Now an initialisation appends one line here and syncs it; once
//! the journal holds as many lines as the registry has names (and at least [`COMPACT_MIN`]),
//! the next change rewrites `producers.toml` whole and starts the journal again, so the cost
//! per initialisation stays constant.
//!
//! `producers.journal`, one entry per line: `{checksum, 8 hex digits} {JSON}`, the checksum a
//! crc32c of the generation (8 bytes, big-endian) and the JSON. The first line is the
//! generation of the registry file it follows ([`Entry::Generation`]); a journal of another
//! generation is of a compaction that wrote the registry but crashed before it started the
//! journal again, and the registry holds all of it: it is ignored. Lines of an older
//! generation left after a newer header (a crash inside [`Journal::reset`]) fail their
//! checksum. An incomplete or damaged last line (a write torn by a crash: never acknowledged)
//! is cut off; a damaged line with good ones after it is damage the open refuses.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::warn;

/// A journal holding fewer entries than this is not compacted, whatever the registry's size.
#[cfg(not(test))]
pub(super) const COMPACT_MIN: usize = 1_024;
#[cfg(test)]
pub(super) const COMPACT_MIN: usize = 8;

/// One change to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Entry {
    /// The first line: the generation of `producers.toml` this journal follows.
    Generation(u64),
    /// A block of ids reserved up to `next_id` (an unnamed initialisation).
    Block { next_id: i64 },
    /// A named initialisation: `name` is at `id` and `epoch`, initialised at `at` (the
    /// broker's clock, ms); ids are reserved up to `next_id`; `retired` is the name's
    /// previous id, when it used every epoch.
    Init {
        name: String,
        id: i64,
        epoch: i16,
        at: i64,
        next_id: i64,
        retired: Option<i64>,
    },
}

/// The open journal.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    /// The generation of the registry it follows.
    generation: u64,
    /// Its length: where the next entry goes.
    len: u64,
    /// Entries after the header.
    entries: usize,
    /// A failed write could not be cut off: nothing more is appended until it is started
    /// again (the next change compacts instead).
    broken: bool,
}

/// The checksum of a line of the journal of `generation` holding `json`.
fn checksum(generation: u64, json: &str) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&generation.to_be_bytes()), json.as_bytes())
}

/// `entry` as a line of the journal of `generation`.
fn encode(entry: &Entry, generation: u64) -> Vec<u8> {
    let json = serde_json::to_string(entry).expect("an entry serializes");
    format!("{:08x} {json}\n", checksum(generation, &json)).into_bytes()
}

/// The entry on `line` (without its newline) of the journal of `generation`, if it is whole.
fn decode(line: &[u8], generation: u64) -> Option<Entry> {
    let line = std::str::from_utf8(line).ok()?;
    let (crc, json) = line.split_once(' ')?;
    if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != checksum(generation, json) {
        return None;
    }
    serde_json::from_str(json).ok()
}

impl Journal {
    /// Opens (creating) the journal at `path` following the registry of `generation`, and
    /// returns the entries to apply to it: none when the journal is of another generation or
    /// missing, which is then started again. A damaged tail is cut off.
    pub(super) fn open(path: &Path, generation: u64) -> io::Result<(Self, Vec<Entry>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut entries = Vec::new();
        let mut good = 0;
        let mut lines = bytes.split_inclusive(|&b| b == b'\n');
        let header = lines.next().filter(|l| l.ends_with(b"\n"));
        let read = |line: &[u8]| line.strip_suffix(b"\n").and_then(|l| decode(l, generation));
        if header.and_then(read) == Some(Entry::Generation(generation)) {
            good = header.map_or(0, <[u8]>::len);
            while let Some(line) = lines.next() {
                match read(line) {
                    Some(Entry::Generation(_)) | None => {
                        // Torn by a crash, the last line; with good ones after it, damage
                        // that would lose acknowledged entries if it were cut off.
                        if lines.any(|later| read(later).is_some()) {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "{} is damaged at byte {good}, with entries after the damage",
                                    path.display()
                                ),
                            ));
                        }
                        break;
                    }
                    Some(entry) => {
                        entries.push(entry);
                        good += line.len();
                    }
                }
            }
        }
        let mut journal = Self {
            file,
            generation,
            len: good as u64,
            entries: entries.len(),
            broken: false,
        };
        if good == 0 {
            // Missing, empty, of another generation or damaged from its first line.
            journal.reset(generation)?;
            if let Some(dir) = path.parent() {
                crate::storage::sync_dir(dir)?;
            }
        } else if good < bytes.len() {
            warn!(journal = %path.display(), kept = good, dropped = bytes.len() - good,
                "cutting off a damaged tail of the producer journal");
            journal.file.set_len(journal.len)?;
            journal.file.sync_data()?;
        }
        Ok((journal, entries))
    }

    /// Appends `entry` and syncs it. On failure nothing of it stays (or the journal is
    /// marked broken, and the next change compacts).
    pub(super) fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let line = encode(entry, self.generation);
        let written = self
            .file
            .write_all_at(&line, self.len)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                self.entries += 1;
                Ok(())
            }
            Err(err) => {
                if self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data())
                    .is_err()
                {
                    self.broken = true;
                }
                Err(err)
            }
        }
    }

    /// Whether the next change should rewrite the registry (holding `names` names) and start
    /// the journal again, rather than be appended.
    pub(super) fn wants_compaction(&self, names: usize) -> bool {
        self.broken || self.entries >= COMPACT_MIN.max(names)
    }

    /// The generation of the registry the journal follows.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes no more entries until it is started again: a rewrite of the registry may have
    /// replaced the file this journal follows.
    pub(super) fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Starts the journal again after the registry of `generation` was written (it holds
    /// everything before). On failure the journal is broken until a later reset.
    pub(super) fn reset(&mut self, generation: u64) -> io::Result<()> {
        self.broken = true;
        let header = encode(&Entry::Generation(generation), generation);
        self.file.set_len(0)?;
        self.file.write_all_at(&header, 0)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.len = header.len() as u64;
        self.entries = 0;
        self.broken = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(name: &str, epoch: i16) -> Entry {
        Entry::Init {
            name: name.to_owned(),
            id: 7,
            epoch,
            at: 1_000,
            next_id: 1_000,
            retired: None,
        }
    }

    /// Entries read back in order; a torn or damaged line ends the journal and is cut off,
    /// and what is appended after is read back.
    #[test]
    fn entries_are_read_back_up_to_a_damaged_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("producers.journal");
        let (mut journal, entries) = Journal::open(&path, 3).unwrap();
        assert!(entries.is_empty());
        for epoch in 0..3 {
            journal.append(&init("a \"quoted\"\nname", epoch)).unwrap();
        }
        journal.append(&Entry::Block { next_id: 2_000 }).unwrap();
        drop(journal);
        let (_, entries) = Journal::open(&path, 3).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[2], init("a \"quoted\"\nname", 2));

        // A torn last line, then one with a wrong checksum.
        let whole = std::fs::read(&path).unwrap();
        for damage in [&b"0000"[..], &b"00000000 {\"Block\":{\"next_id\":5}}\n"[..]] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(damage);
            std::fs::write(&path, &bytes).unwrap();
            let (mut journal, entries) = Journal::open(&path, 3).unwrap();
            assert_eq!(entries.len(), 4);
            assert_eq!(std::fs::read(&path).unwrap(), whole, "cut off");
            journal.append(&init("b", 0)).unwrap();
            drop(journal);
            let (_, entries) = Journal::open(&path, 3).unwrap();
            assert_eq!(entries.last(), Some(&init("b", 0)));
            std::fs::write(&path, &whole).unwrap();
        }
    }

    /// A journal of another generation is ignored and started again.
    #[test]
    fn a_journal_of_another_generation_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("producers.journal");
        let (mut journal, _) = Journal::open(&path, 3).unwrap();
        journal.append(&init("a", 0)).unwrap();
        drop(journal);
        let (journal, entries) = Journal::open(&path, 4).unwrap();
        assert!(entries.is_empty());
        assert_eq!(journal.generation(), 4);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            encode(&Entry::Generation(4), 4)
        );
    }

    /// Lines of an older generation after a newer header (a reset whose truncation was lost
    /// in a crash) are not read; a damaged line with good ones after it refuses the open.
    #[test]
    fn stale_lines_are_not_read_and_damage_inside_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("producers.journal");
        let (mut journal, _) = Journal::open(&path, 3).unwrap();
        journal.append(&init("a", 0)).unwrap();
        journal.append(&init("a", 1)).unwrap();
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        let header = encode(&Entry::Generation(3), 3).len();
        let newer = encode(&Entry::Generation(4), 4);
        assert_eq!(newer.len(), header);
        bytes[..header].copy_from_slice(&newer);
        std::fs::write(&path, &bytes).unwrap();
        let (_, entries) = Journal::open(&path, 4).unwrap();
        assert!(entries.is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), newer, "cut off");

        let (mut journal, _) = Journal::open(&path, 4).unwrap();
        for epoch in 0..3 {
            journal.append(&init("a", epoch)).unwrap();
        }
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = header + encode(&init("a", 0), 4).len();
        bytes[second + 12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Journal::open(&path, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
