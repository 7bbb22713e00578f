//! Appending to a segment file with direct I/O (`O_DIRECT`) where the filesystem allows it.
//!
//! On the machine the predictor was measured on, a buffered `write` cost ~2.3 ns of kernel time
//! per byte (page-cache allocation, zeroing and copy): 2 GB took 4.7 s of system time with `dd`,
//! against 0.18 s with `oflag=direct`. At a million predictions a second the log writes ~230 MB/s,
//! so buffered writes alone took half a core. Direct I/O needs block-aligned offsets, lengths and
//! buffers, so the whole blocks of every write go out directly from an aligned staging buffer and
//! the last partial block through the page cache (so that readers see every line at once and the
//! file never holds padding); the next write rewrites that block, whole, directly. The kernel
//! keeps the two paths coherent (it writes back and drops cached pages a direct write covers).
//! Written by hand: no maintained crate does this append pattern, and it is small.
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
    /// The file opened normally: small writes, `set_len`, `sync_all`.
    file: File,
    /// The same file opened with `O_DIRECT`, unless that was refused.
    direct: Option<File>,
    /// Bytes written.
    len: u64,
    /// The file's last partial block (`len % BLOCK` bytes), rewritten whole by the next direct write.
    tail: Vec<u8>,
    /// Over-allocated so that a `BLOCK`-aligned slice of it can be staged for a direct write.
    staging: Vec<u8>,
}

impl AppendFile {
    /// Creates the file, which must not exist.
    pub fn create_new(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let direct = open_direct(path);
        Ok(AppendFile { file, direct, len: 0, tail: Vec::new(), staging: Vec::new() })
    }

    /// Bytes written.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether writes go out directly (else through the page cache).
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `data`, all of it or (on error, as far as can be helped) none of it.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.write_at_end(data) {
            Ok(()) => {
                self.len += data.len() as u64;
                if self.direct.is_some() {
                    let tail_len = (self.len % BLOCK as u64) as usize;
                    if data.len() >= tail_len {
                        self.tail.clear();
                    } else {
                        // Still in the same block: keep what it held before.
                        self.tail.drain(..self.tail.len() + data.len() - tail_len);
                    }
                    self.tail.extend_from_slice(&data[data.len().saturating_sub(tail_len)..]);
                }
                Ok(())
            }
            Err(error) => {
                // No partial write left behind (whole lines only in the file).
                let _ = self.file.set_len(self.len);
                Err(error)
            }
        }
    }

    fn write_at_end(&mut self, data: &[u8]) -> io::Result<()> {
        let AppendFile { file, direct, len, tail, staging } = self;
        let Some(direct_file) = direct.as_ref() else {
            return file.write_all_at(data, *len);
        };
        // From `offset` (block-aligned), `carry` is already in the file and `rest` is new.
        let mut offset = *len - tail.len() as u64;
        let mut carry: &[u8] = tail;
        let mut rest = data;
        if carry.len() + rest.len() >= BLOCK {
            let written = crate::blocking(|| -> io::Result<()> {
                while carry.len() + rest.len() >= BLOCK {
                    let window = (carry.len() + rest.len()).min(STAGING_BYTES) / BLOCK * BLOCK;
                    let from_rest = window - carry.len();
                    let buffer = aligned(staging, window);
                    buffer[..carry.len()].copy_from_slice(carry);
                    buffer[carry.len()..].copy_from_slice(&rest[..from_rest]);
                    direct_file.write_all_at(buffer, offset)?;
                    offset += window as u64;
                    carry = &[];
                    rest = &rest[from_rest..];
                }
                Ok(())
            });
            if let Err(error) = written {
                if error.kind() != io::ErrorKind::InvalidInput {
                    return Err(error);
                }
                // EINVAL: this file or filesystem takes no direct writes (after all). Rewrite from
                // the last aligned offset reached through the page cache (the same bytes where the
                // file already has them).
                info!(%error, "direct writes refused; writing the prediction log through the page cache");
                *direct = None;
                file.write_all_at(carry, offset)?;
                return file.write_all_at(rest, offset + carry.len() as u64);
            }
        }
        // Less than a block left: through the page cache, so that readers see it now.
        file.write_all_at(rest, offset + carry.len() as u64)
    }

    /// Flushes data and metadata to the disk.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// A `BLOCK`-aligned slice of `len` bytes in `staging` (grown to the largest window once).
fn aligned(staging: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if staging.len() < len + BLOCK {
        *staging = vec![0; STAGING_BYTES.max(len) + BLOCK];
    }
    let start = staging.as_ptr().align_offset(BLOCK);
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
            assert_eq!(std::fs::read(&path).expect("read"), expected, "after write {i} of {size} bytes");
        }
        file.sync_all().expect("sync");
    }
}
