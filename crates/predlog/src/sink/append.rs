//! Appending to a segment file with direct I/O (`O_DIRECT`) where the filesystem allows it.
//!
//! On the machine the predictor was measured on, a buffered `write` cost ~2.3 ns of kernel time
//! per byte (page-cache allocation, zeroing and copy): 2 GB took 4.7 s of system time with `dd`,
//! against 0.18 s with `oflag=direct`. At a million predictions a second the log writes ~230 MB/s,
//! so buffered writes alone took half a core. Direct I/O needs block-aligned offsets, lengths and
//! buffers, so the whole blocks of every write go out directly from an aligned staging buffer, and
//! the last partial block waits in memory for the next write, which rewrites it whole. When the
//! writes pause, [`AppendFile::flush`] writes that partial block through the page cache, so that
//! readers see every line and the file never holds padding. (Writing it on every append cost more
//! than the rest of the writing: the kernel must write back a cached page before a direct write
//! covers it.)
//! Written by hand: no maintained crate does this append pattern, and it is small.
//!
//! Copying every write into the staging buffer was the largest part of the log's work left on the
//! server's own threads (~20 ns a record at one ride per request). So a chunk can be laid out for
//! a write in place instead ([`make_room`], [`AppendFile::append_in_place`]): its lines start
//! where, once the last partial block is copied in front of them, whole blocks begin on a block
//! boundary in memory; only that partial block is copied.
//!
//! Where `O_DIRECT` is refused (a filesystem without it, another OS), everything goes through the
//! page cache as before.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tracing::info;

/// Alignment of direct writes: offsets, lengths and buffer addresses. 4 KiB satisfies every
/// logical block size in use (512 and 4096 bytes).
const BLOCK: usize = 4096;
/// The most bytes staged for one direct write, so the staging buffer stays small.
const STAGING_BYTES: usize = 4 * 1024 * 1024;

/// An append-only file.
pub(crate) struct AppendFile {
    /// The file opened normally: the last partial block, `set_len`, `sync_all`.
    file: File,
    /// The same file opened with `O_DIRECT`, unless that was refused.
    direct: Option<File>,
    /// Bytes in whole blocks: written, directly.
    blocks: u64,
    /// The bytes after them (less than a block), rewritten as part of the next direct write.
    tail: Vec<u8>,
    /// How much of `tail` is in the file (written through the page cache by [`AppendFile::flush`]).
    tail_written: usize,
    /// Over-allocated so that a `BLOCK`-aligned slice of it can be staged for a direct write.
    staging: Vec<u8>,
}

impl AppendFile {
    /// Creates the file, which must not exist.
    pub fn create_new(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let direct = open_direct(path);
        Ok(AppendFile { file, direct, blocks: 0, tail: Vec::new(), tail_written: 0, staging: Vec::new() })
    }

    /// Bytes appended (some maybe only in memory until [`AppendFile::flush`]).
    pub fn len(&self) -> u64 {
        self.blocks + self.tail.len() as u64
    }

    /// Whether writes go out directly (else through the page cache).
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `data`: its whole blocks are written at once; less than a block may stay in memory
    /// until the next append or [`AppendFile::flush`]. All or (as far as can be helped) nothing of
    /// it is in the file on error.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let Some(direct) = &self.direct else {
            return self.append_buffered(data);
        };
        if self.tail.len() + data.len() < BLOCK {
            self.tail.extend_from_slice(data);
            return Ok(());
        }
        // From `blocks` on, the tail (maybe partly in the file already) and then `data`, whole
        // blocks of it directly.
        let (tail, staging) = (&self.tail, &mut self.staging);
        let mut offset = self.blocks;
        let mut carry: &[u8] = tail;
        let mut rest = data;
        let written = crate::blocking(|| -> io::Result<()> {
            while carry.len() + rest.len() >= BLOCK {
                let window = (carry.len() + rest.len()).min(STAGING_BYTES) / BLOCK * BLOCK;
                let from_rest = window - carry.len();
                let buffer = aligned(staging, window);
                buffer[..carry.len()].copy_from_slice(carry);
                buffer[carry.len()..].copy_from_slice(&rest[..from_rest]);
                direct.write_all_at(buffer, offset)?;
                offset += window as u64;
                carry = &[];
                rest = &rest[from_rest..];
            }
            Ok(())
        });
        self.after_direct(written, offset, rest, data)
    }

    /// What follows a direct write of the tail and then `data` up to `offset` (whole blocks):
    /// `rest`, the end of `data` after them, becomes the tail. Should the file take no direct
    /// writes after all (EINVAL), the tail and `data` go through the page cache from the last
    /// whole block (the same bytes where the file already has them); on any other error, the file
    /// goes back to what it held before.
    fn after_direct(&mut self, written: io::Result<()>, offset: u64, rest: &[u8], data: &[u8]) -> io::Result<()> {
        match written {
            Ok(()) => {
                self.blocks = offset;
                self.tail.clear();
                self.tail.extend_from_slice(rest);
                self.tail_written = 0;
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidInput => {
                info!(%error, "direct writes refused; writing the prediction log through the page cache");
                self.direct = None;
                self.append_buffered(data)
            }
            Err(error) => {
                let _ = self.file.set_len(self.blocks + self.tail_written as u64);
                Err(error)
            }
        }
    }

    /// Appends through the page cache: the tail still in memory (after the last whole block; only
    /// left when direct writes were refused), then `data`. The tail stays empty from then on.
    fn append_buffered(&mut self, data: &[u8]) -> io::Result<()> {
        let written = if self.tail.is_empty() {
            self.file.write_all_at(data, self.blocks)
        } else {
            let mut all = std::mem::take(&mut self.tail);
            all.extend_from_slice(data);
            let written = self.file.write_all_at(&all, self.blocks);
            all.truncate(all.len() - data.len());
            self.tail = all;
            written
        };
        match written {
            Ok(()) => {
                self.blocks += (self.tail.len() + data.len()) as u64;
                self.tail.clear();
                self.tail_written = 0;
                Ok(())
            }
            Err(error) => {
                // The tail stays in memory; the file goes back to the whole blocks.
                let _ = self.file.set_len(self.blocks);
                self.tail_written = 0;
                Err(error)
            }
        }
    }

    /// Bytes of the block the next append starts in that come before it: what a buffer laid out
    /// by [`make_room`] for [`AppendFile::append_in_place`] must leave room for. 0 when writes
    /// go through the page cache.
    pub fn lead(&self) -> usize {
        if self.direct.is_some() { self.tail.len() } else { 0 }
    }

    /// [`AppendFile::append`] of `buffer[start..]`, without copying it when it was laid out for
    /// this file's [`AppendFile::lead`] by [`make_room`]: the partial block still in memory is
    /// copied into the room before `start` (which this overwrites), and the whole blocks go out
    /// from `buffer` directly. Any other layout is appended the usual way.
    pub fn append_in_place(&mut self, buffer: &mut [u8], start: usize) -> io::Result<()> {
        let lead = self.tail.len();
        let fits = lead <= start
            && buffer[start - lead..].as_ptr().addr().is_multiple_of(BLOCK)
            && buffer.len() - start + lead >= BLOCK;
        let (Some(direct), true) = (&self.direct, fits) else {
            return self.append(&buffer[start..]);
        };
        buffer[start - lead..start].copy_from_slice(&self.tail);
        let blocks = &buffer[start - lead..];
        let whole = blocks.len() / BLOCK * BLOCK;
        let written = crate::blocking(|| direct.write_all_at(&blocks[..whole], self.blocks));
        self.after_direct(written, self.blocks + whole as u64, &blocks[whole..], &buffer[start..])
    }

    /// Writes the part of the last block still only in memory, through the page cache (readers
    /// see it at once; the next direct write rewrites the block whole).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.tail_written < self.tail.len() {
            self.file.write_all_at(&self.tail[self.tail_written..], self.blocks + self.tail_written as u64)?;
            self.tail_written = self.tail.len();
        }
        Ok(())
    }

    /// Writes what is in memory, then flushes data and metadata to the disk.
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_all()
    }
}

impl Drop for AppendFile {
    /// Writes the end still in memory (best effort): lines counted as sent must be in the file
    /// even when the writer goes away without closing it.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Empties `lines` and lays it out for lines that [`AppendFile::append_in_place`] can write
/// without copying them, to a file whose [`AppendFile::lead`] is `lead`: fills it with `room`
/// bytes (returned) such that `lines[room - lead..]` starts on a block boundary in memory, and
/// reserves `expected` bytes after them. Lines that outgrow that move the buffer, and are then
/// copied as before.
pub(crate) fn make_room(lines: &mut Vec<u8>, lead: usize, expected: usize) -> usize {
    let lead = lead % BLOCK;
    lines.clear();
    lines.reserve(BLOCK + lead + expected);
    let room = (BLOCK - lines.as_ptr().addr() % BLOCK) % BLOCK + lead;
    lines.resize(room, 0);
    room
}

/// A `BLOCK`-aligned slice of `len` bytes in `staging` (grown to the largest window once).
fn aligned(staging: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if staging.len() < len + BLOCK {
        *staging = vec![0; STAGING_BYTES.max(len) + BLOCK];
    }
    let start = (BLOCK - staging.as_ptr().addr() % BLOCK) % BLOCK;
    &mut staging[start..start + len]
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_read_back_exactly_whatever_the_write_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment");
        let mut file = AppendFile::create_new(&path).expect("create");
        eprintln!("direct writes: {}", file.is_direct());
        let mut expected = Vec::new();
        // Sizes around the block and staging sizes, from a partial block and from a boundary.
        let sizes = [10, 4086, 1, 4095, 8192, 5000, 3, STAGING_BYTES + 123, BLOCK - 126, 7, 2 * STAGING_BYTES, 1];
        for (i, size) in sizes.into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect();
            file.append(&data).expect("append");
            expected.extend_from_slice(&data);
            assert_eq!(file.len(), expected.len() as u64);
            let on_disk = std::fs::read(&path).expect("read");
            assert!(expected.starts_with(&on_disk), "after write {i} of {size} bytes: a prefix");
            assert!(expected.len() - on_disk.len() < BLOCK, "at most a partial block in memory");
            if i % 2 == 0 {
                file.flush().expect("flush");
                assert_eq!(std::fs::read(&path).expect("read"), expected, "after write {i} of {size} bytes");
            }
        }
        file.sync_all().expect("sync");
        assert_eq!(std::fs::read(&path).expect("read"), expected);
    }

    #[test]
    fn lines_laid_out_for_the_lead_are_written_in_place_and_others_as_usual() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment");
        let mut file = AppendFile::create_new(&path).expect("create");
        let mut expected = Vec::new();
        let mut append = |file: &mut AppendFile, i: usize, size: usize, lead: usize| {
            let data: Vec<u8> = (0..size).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect();
            let mut buffer = vec![9; 3];
            let room = make_room(&mut buffer, lead, size);
            assert!(buffer[..room].iter().all(|b| *b == 0), "room, emptied first");
            buffer.extend_from_slice(&data);
            file.append_in_place(&mut buffer, room).expect("append");
            expected.extend_from_slice(&data);
            assert_eq!(file.len(), expected.len() as u64);
            let on_disk = std::fs::read(&path).expect("read");
            assert!(expected.starts_with(&on_disk), "after write {i} of {size} bytes: a prefix");
            if i.is_multiple_of(2) {
                file.flush().expect("flush");
                assert_eq!(std::fs::read(&path).expect("read"), expected, "after write {i} of {size} bytes");
            }
        };
        // From a block boundary, from partial blocks, less than a block, exactly blocks.
        for (i, size) in [10, 5000, 4086, 3 * BLOCK + 17, 1, 2 * BLOCK, 700, 9000].into_iter().enumerate() {
            let lead = file.lead();
            append(&mut file, i, size, lead);
        }
        if file.is_direct() {
            assert!(file.staging.is_empty(), "nothing went through the staging buffer");
        }
        // Laid out for another lead: copied as usual, the same bytes in the file.
        let lead = file.lead() + 1;
        append(&mut file, 8, 2 * BLOCK + 5, lead);
        if file.is_direct() {
            assert!(!file.staging.is_empty(), "this one went through the staging buffer");
        }
        file.sync_all().expect("sync");
        assert_eq!(std::fs::read(&path).expect("read"), expected);
    }
}
