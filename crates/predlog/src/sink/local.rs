//! The local sink: JSON-lines segment files in one directory.
//!
//! A segment is written as `predictions-<key>.jsonl.open` and renamed to `predictions-<key>.jsonl`
//! once closed (after an fsync), so a closed segment is complete and never changes. `<key>` is the
//! wall-clock time in ms when the segment was opened, zero-padded to 20 digits and bumped so that
//! it strictly increases: the lexical order of the names is the write order. A segment is closed
//! before it would exceed `segment_bytes`, once it is `segment_age` old, and at shutdown. Every
//! batch is written with one `write` call of whole lines, so a consumer tailing the open segment
//! sees complete lines except, at worst, the last one being written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, warn};

use super::{Encoded, SinkError};
use crate::{Error, Result, blocking, sync_dir};

const PREFIX: &str = "predictions-";
const CLOSED: &str = ".jsonl";
const OPEN: &str = ".jsonl.open";

/// The segment being written.
struct Segment {
    file: File,
    open_path: PathBuf,
    closed_path: PathBuf,
    bytes: u64,
    opened: Instant,
}

/// Writes records to rotating segment files.
pub(crate) struct LocalSink {
    dir: PathBuf,
    segment_bytes: u64,
    segment_age: Duration,
    segment: Option<Segment>,
    last_key: u64,
    buffer: Vec<u8>,
}

/// The key of a segment file name (`predictions-<20 digits>.jsonl[.open]`).
fn segment_key(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.get(..20)?;
    let suffix = &rest[20..];
    if suffix != CLOSED && suffix != OPEN {
        return None;
    }
    digits.parse().ok()
}

impl LocalSink {
    /// Opens the directory (creating it), closing segments a crashed run left open.
    pub fn open(dir: &Path, segment_bytes: u64, segment_age: Duration) -> Result<Self> {
        let io_error = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { action, path, source }
        };
        fs::create_dir_all(dir).map_err(io_error("create the log directory", dir))?;
        let mut last_key = 0;
        for entry in fs::read_dir(dir).map_err(io_error("list the log directory", dir))? {
            let entry = entry.map_err(io_error("list the log directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(key) = segment_key(name) else { continue };
            last_key = last_key.max(key);
            if name.ends_with(OPEN) {
                let path = entry.path();
                recover_open_segment(&path).map_err(io_error("close a segment left open", &path))?;
            }
        }
        Ok(LocalSink {
            dir: dir.to_owned(),
            segment_bytes,
            segment_age,
            segment: None,
            last_key,
            buffer: Vec::with_capacity(1 << 20),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `records` as lines, rotating segments as needed. Returns the indices of records not
    /// written when an error stopped the batch midway.
    pub fn send(&mut self, records: &[Encoded]) -> Result<Vec<usize>, SinkError> {
        let mut written = 0;
        let mut buffered = 0;
        // Age is checked once per batch (a clock read per record showed in profiles).
        let mut too_old = self.segment.as_ref().is_some_and(|segment| segment.opened.elapsed() >= self.segment_age);
        for record in records {
            let line = record.json.len() as u64 + 1;
            let rotate = std::mem::take(&mut too_old)
                || self.segment.as_ref().is_some_and(|segment| {
                    let used = segment.bytes + self.buffer.len() as u64;
                    used > 0 && used + line > self.segment_bytes
                });
            if rotate {
                if let Err(error) = self.write_buffer() {
                    return self.failed(error, written, records.len());
                }
                written += buffered;
                buffered = 0;
                self.close();
            }
            if self.segment.is_none()
                && let Err(error) = self.open_segment()
            {
                return self.failed(error, written, records.len());
            }
            self.buffer.extend_from_slice(&record.json);
            self.buffer.push(b'\n');
            buffered += 1;
        }
        if let Err(error) = self.write_buffer() {
            return self.failed(error, written, records.len());
        }
        Ok(Vec::new())
    }

    fn failed(&mut self, error: io::Error, written: usize, total: usize) -> Result<Vec<usize>, SinkError> {
        self.buffer.clear();
        if written == 0 {
            return Err(SinkError(format!("write to {}: {error}", self.dir.display())));
        }
        warn!(dir = %self.dir.display(), %error, written, "log segment write failed midway");
        Ok((written..total).collect())
    }

    /// Writes the buffered lines; on error, cuts the segment back to its last complete line.
    fn write_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let Some(segment) = self.segment.as_mut() else {
            return Err(io::Error::other("no open segment"));
        };
        let result = segment.file.write_all(&self.buffer);
        match result {
            Ok(()) => segment.bytes += self.buffer.len() as u64,
            Err(_) => {
                // Best effort: no torn line and no partial batch left behind.
                let _ = segment.file.set_len(segment.bytes);
                let _ = segment.file.seek(SeekFrom::Start(segment.bytes));
            }
        }
        self.buffer.clear();
        result
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let key = now_ms.max(self.last_key + 1);
        let open_path = self.dir.join(format!("{PREFIX}{key:020}{OPEN}"));
        let closed_path = self.dir.join(format!("{PREFIX}{key:020}{CLOSED}"));
        let file = OpenOptions::new().write(true).create_new(true).open(&open_path)?;
        self.last_key = key;
        debug!(segment = %open_path.display(), "opened log segment");
        self.segment = Some(Segment { file, open_path, closed_path, bytes: 0, opened: Instant::now() });
        Ok(())
    }

    /// Closes the segment if it is older than the segment age.
    pub fn maintain(&mut self) {
        if self.segment.as_ref().is_some_and(|segment| segment.opened.elapsed() >= self.segment_age) {
            self.close();
        }
    }

    /// Closes the open segment, if any: fsync, rename to `.jsonl`, fsync the directory.
    ///
    /// A failure here loses nothing (the lines are in the `.open` file, closed on the next start),
    /// so it is logged rather than reported.
    pub fn close(&mut self) {
        let Some(segment) = self.segment.take() else { return };
        let dir = self.dir.clone();
        let result = blocking(|| {
            segment.file.sync_all()?;
            fs::rename(&segment.open_path, &segment.closed_path)?;
            sync_dir(&dir)
        });
        match result {
            Ok(()) => info!(segment = %segment.closed_path.display(), bytes = segment.bytes, "closed log segment"),
            Err(error) => error!(segment = %segment.open_path.display(), %error, "cannot close log segment"),
        }
    }
}

/// Cuts a segment left open by a crash back to its last complete line and closes it.
fn recover_open_segment(path: &Path) -> io::Result<()> {
    let bytes = fs::read(path)?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |last| last + 1);
    let file = OpenOptions::new().write(true).open(path)?;
    if complete < bytes.len() {
        warn!(segment = %path.display(), torn_bytes = bytes.len() - complete, "dropping a torn last line");
        file.set_len(complete as u64)?;
    }
    file.sync_all()?;
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
    let closed = path.with_file_name(name.trim_end_matches(".open"));
    fs::rename(path, &closed)?;
    info!(segment = %closed.display(), "closed a segment left open by a previous run");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_parse() {
        assert_eq!(segment_key("predictions-00000001700000000000.jsonl"), Some(1_700_000_000_000));
        assert_eq!(segment_key("predictions-00000001700000000000.jsonl.open"), Some(1_700_000_000_000));
        assert_eq!(segment_key("predictions-0000000170000000000.jsonl"), None);
        assert_eq!(segment_key("spill"), None);
    }

    #[test]
    fn a_torn_open_segment_is_cut_and_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("predictions-00000000000000000007.jsonl.open");
        fs::write(&open, b"{\"a\":1}\n{\"a\":2}\n{\"a\"").expect("write");
        let sink = LocalSink::open(dir.path(), 1024, Duration::from_secs(60)).expect("open");
        assert_eq!(sink.last_key, 7);
        let closed = dir.path().join("predictions-00000000000000000007.jsonl");
        assert_eq!(fs::read(closed).expect("closed"), b"{\"a\":1}\n{\"a\":2}\n");
        assert!(!open.exists());
    }
}
