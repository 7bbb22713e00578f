//! The local sink: JSON-lines segment files in one directory.
//!
//! A segment is written as `predictions-<key>.jsonl.open` and renamed to `predictions-<key>.jsonl`
//! once closed (after an fsync), so a closed segment is complete and never changes. `<key>` is the
//! wall-clock time in ms when the segment was opened, zero-padded to 20 digits and bumped so that
//! it strictly increases: the lexical order of the names is the write order. A segment is closed
//! before it would exceed `segment_bytes` (unless one line is larger), once it is `segment_age` old,
//! and at shutdown; the fsync and rename happen on a thread of their own while writing goes on in
//! the next segment, so for a moment two segments can be `.open`. Every write is of whole lines,
//! so a consumer tailing the open segment sees complete lines except, at worst, the last one being
//! written.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, warn};

use super::append::AppendFile;
use super::{Encoded, SinkError};
use crate::{Error, Result, blocking, sync_dir};

const PREFIX: &str = "predictions-";
const CLOSED: &str = ".jsonl";
const OPEN: &str = ".jsonl.open";

/// The segment being written.
struct Segment {
    file: AppendFile,
    open_path: PathBuf,
    closed_path: PathBuf,
    opened: Instant,
}

/// Writes records to rotating segment files.
pub(crate) struct LocalSink {
    dir: PathBuf,
    segment_bytes: u64,
    segment_age: Duration,
    segment: Option<Segment>,
    last_key: u64,
    /// Threads closing retired segments.
    closing: Vec<std::thread::JoinHandle<()>>,
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
        Ok(LocalSink { dir: dir.to_owned(), segment_bytes, segment_age, segment: None, last_key, closing: Vec::new() })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where in its block the next write to the open segment starts ([`AppendFile::lead`]): 0
    /// when a new segment will be opened for it (none is open, or this one is old enough to go).
    pub fn lead(&self) -> usize {
        match &self.segment {
            Some(segment) if !self.too_old(segment) => segment.file.lead(),
            _ => 0,
        }
    }

    /// Whether `segment` is old enough to be closed before the next write.
    fn too_old(&self, segment: &Segment) -> bool {
        segment.opened.elapsed() >= self.segment_age
    }

    /// Appends the chunks' lines (after each one's `room`), rotating segments as needed (a chunk
    /// is split at a line boundary when it does not fit the segment). When an error stops the
    /// batch midway, the chunk it stopped in is cut to its unwritten lines and the indices of the
    /// unwritten chunks are returned; `Err` means nothing was written.
    pub fn send(&mut self, records: &mut [Encoded]) -> Result<Vec<usize>, SinkError> {
        // Age is checked once per batch (a clock read per record showed in profiles).
        let mut too_old = self.segment.as_ref().is_some_and(|segment| self.too_old(segment));
        for index in 0..records.len() {
            let mut offset = records[index].room;
            while offset < records[index].lines.len() {
                let rest = &records[index].lines[offset..];
                let used = self.segment.as_ref().map_or(0, |segment| segment.file.len());
                let room = self.segment_bytes.saturating_sub(used);
                let old = std::mem::take(&mut too_old) && self.segment.is_some();
                let piece = if old {
                    0
                } else if rest.len() as u64 <= room {
                    rest.len()
                } else {
                    // The whole lines that fit; a line larger than a segment gets one of its own.
                    let fits = rest[..room as usize].iter().rposition(|b| *b == b'\n').map_or(0, |last| last + 1);
                    if fits == 0 && used == 0 {
                        rest.iter().position(|b| *b == b'\n').map_or(rest.len(), |end| end + 1)
                    } else {
                        fits
                    }
                };
                let rotate = old || piece < rest.len();
                if piece > 0 {
                    if self.segment.is_none()
                        && let Err(error) = self.open_segment()
                    {
                        return self.failed(error, records, index, offset);
                    }
                    // The room before the lines is free to write in (see `Encoded::room`), before
                    // the first piece only.
                    let chunk = &mut records[index];
                    let in_place = offset == chunk.room;
                    if let Err(error) = self.write(&mut chunk.lines[..offset + piece], offset, in_place) {
                        return self.failed(error, records, index, offset);
                    }
                    offset += piece;
                }
                if rotate {
                    self.retire();
                }
            }
        }
        Ok(Vec::new())
    }

    /// The outcome of a batch that stopped at `offset` in chunk `index`: that chunk loses its
    /// written lines, and it and the chunks after it are to be retried.
    fn failed(
        &mut self,
        error: io::Error,
        records: &mut [Encoded],
        index: usize,
        offset: usize,
    ) -> Result<Vec<usize>, SinkError> {
        // Nothing written yet: the first chunk's lines start after its room.
        if index == 0 && offset == records[0].room {
            return Err(SinkError(format!("write to {}: {error}", self.dir.display())));
        }
        let chunk = &mut records[index];
        chunk.count -= chunk.lines[chunk.room..offset].iter().filter(|b| **b == b'\n').count();
        chunk.lines.drain(..offset);
        chunk.room = 0;
        warn!(dir = %self.dir.display(), %error, "log segment write failed midway");
        Ok((index..records.len()).collect())
    }

    /// Writes whole lines, `buffer[start..]`, to the open segment (`in_place`: the bytes before
    /// `start` are room it may write in; see [`AppendFile::append_in_place`]); on error, cuts it
    /// back to its last complete line.
    fn write(&mut self, buffer: &mut [u8], start: usize, in_place: bool) -> io::Result<()> {
        let Some(segment) = self.segment.as_mut() else {
            return Err(io::Error::other("no open segment"));
        };
        if in_place { segment.file.append_in_place(buffer, start) } else { segment.file.append(&buffer[start..]) }
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let key = now_ms.max(self.last_key + 1);
        let open_path = self.dir.join(format!("{PREFIX}{key:020}{OPEN}"));
        let closed_path = self.dir.join(format!("{PREFIX}{key:020}{CLOSED}"));
        let file = AppendFile::create_new(&open_path)?;
        self.last_key = key;
        debug!(segment = %open_path.display(), "opened log segment");
        self.segment = Some(Segment { file, open_path, closed_path, opened: Instant::now() });
        Ok(())
    }

    /// Writes out the end of the open segment held in memory (less than a block, see
    /// [`AppendFile`]); run on the flush interval, so lines reach readers within it at worst.
    pub fn flush(&mut self) {
        if let Some(segment) = self.segment.as_mut()
            && let Err(error) = segment.file.flush()
        {
            warn!(segment = %segment.open_path.display(), %error, "cannot write the end of the log segment; retrying");
        }
    }

    /// Closes the segment if it is older than the segment age.
    pub fn maintain(&mut self) {
        if self.segment.as_ref().is_some_and(|segment| segment.opened.elapsed() >= self.segment_age) {
            self.retire();
        }
        self.closing.retain(|closer| !closer.is_finished());
    }

    /// Hands the open segment, if any, to a thread that closes it (see [`close_segment`]), so that
    /// the writes go on in the next segment meanwhile: the fsync of a full segment takes as long as
    /// writing tens of megabytes to the disk, during which the records would pile up in memory.
    /// Readers tell a finished `.open` segment by the newer segment after it.
    fn retire(&mut self) {
        let Some(mut segment) = self.segment.take() else { return };
        // Its end first (cheap), so that it is whole by the time a newer segment exists; the
        // closing thread retries on failure.
        if let Err(error) = segment.file.flush() {
            warn!(segment = %segment.open_path.display(), %error, "cannot write the end of the log segment; retrying");
        }
        let dir = self.dir.clone();
        self.closing.retain(|closer| !closer.is_finished());
        let spawned =
            std::thread::Builder::new().name("predlog-close".into()).spawn(move || close_segment(segment, &dir));
        match spawned {
            Ok(closer) => self.closing.push(closer),
            // The segment was moved into the failed closure and dropped (its end written, no
            // fsync); its lines are in the `.open` file, which the next start closes.
            Err(error) => error!(%error, "cannot start a thread to close a log segment"),
        }
    }

    /// Closes the open segment and waits for every segment being closed (at shutdown).
    pub fn close(&mut self) {
        self.retire();
        let closing = std::mem::take(&mut self.closing);
        blocking(|| {
            for closer in closing {
                let _ = closer.join();
            }
        });
    }
}

/// Closes a segment: fsync, rename to `.jsonl`, fsync the directory.
///
/// A failure here loses nothing (the lines are in the `.open` file, closed on the next start), so it
/// is logged rather than reported.
fn close_segment(mut segment: Segment, dir: &Path) {
    let result = segment
        .file
        .sync_all()
        .and_then(|()| fs::rename(&segment.open_path, &segment.closed_path))
        .and_then(|()| sync_dir(dir));
    match result {
        Ok(()) => info!(segment = %segment.closed_path.display(), bytes = segment.file.len(), "closed log segment"),
        Err(error) => error!(segment = %segment.open_path.display(), %error, "cannot close log segment"),
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

    /// A chunk of the lines `{"n":<i>}` for `range`, each padded to 10 bytes with its newline.
    fn chunk(range: std::ops::Range<usize>) -> Encoded {
        let mut chunk = Encoded::default();
        for i in range {
            chunk.lines.extend_from_slice(format!("{{\"n\":{i:03}}}\n").as_bytes());
            chunk.count += 1;
        }
        chunk
    }

    /// `chunk` laid out for a sink whose next write starts `lead` bytes into a block (the lines
    /// after room, as the formatter makes them).
    fn roomy(mut chunk: Encoded, lead: usize) -> Encoded {
        let text = std::mem::take(&mut chunk.lines);
        chunk.room = crate::sink::append::make_room(&mut chunk.lines, lead, text.len());
        chunk.lines.extend_from_slice(&text);
        chunk
    }

    /// The closed segments' contents, in order.
    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir).expect("list").map(|entry| entry.expect("entry").path()).collect();
        names.sort();
        names.iter().map(|path| fs::read_to_string(path).expect("read")).collect()
    }

    #[test]
    fn chunks_are_split_at_line_boundaries_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for three 10-byte lines per segment.
        let mut sink = LocalSink::open(dir.path(), 35, Duration::from_secs(60)).expect("open");
        let mut huge = Encoded::default();
        huge.lines.extend_from_slice(format!("{{\"n\":\"{}\"}}\n", "x".repeat(50)).as_bytes());
        huge.count = 1;
        let mut batch = vec![chunk(0..2), roomy(chunk(2..9), 7), huge.clone(), roomy(chunk(9..10), 0)];
        assert_eq!(sink.send(&mut batch).expect("send"), Vec::<usize>::new());
        sink.close();
        let lines = |range: std::ops::Range<usize>| range.map(|i| format!("{{\"n\":{i:03}}}\n")).collect::<String>();
        let huge = String::from_utf8(huge.lines).expect("utf-8");
        assert_eq!(segments(dir.path()), [lines(0..3), lines(3..6), lines(6..9), huge, lines(9..10)]);
    }

    #[test]
    fn chunks_laid_out_for_the_sink_are_written_whole_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment_bytes = 3 * 4096 + 100;
        let mut sink = LocalSink::open(dir.path(), segment_bytes, Duration::from_secs(60)).expect("open");
        let mut all = Vec::new();
        // ~5,000 bytes a chunk: whole blocks in place, a partial one carried, segments rotated.
        for first in (0..3000).step_by(450) {
            let chunk = chunk(first..first + 450);
            all.extend_from_slice(&chunk.lines);
            let mut batch = vec![roomy(chunk, sink.lead())];
            assert!(sink.send(&mut batch).expect("send").is_empty());
        }
        sink.close();
        let segments = segments(dir.path());
        assert!(segments.len() > 2, "rotated");
        for segment in &segments {
            assert!(segment.ends_with('\n') && segment.len() as u64 <= segment_bytes, "whole lines, within the size");
        }
        assert_eq!(segments.concat().into_bytes(), all, "every line once, in order");
    }

    #[test]
    fn a_write_error_midway_cuts_the_chunk_to_its_unwritten_lines() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("logs");
        let mut sink = LocalSink::open(&dir, 100, Duration::from_secs(60)).expect("open");
        let mut first = vec![chunk(0..5)];
        assert!(sink.send(&mut first).expect("send").is_empty());
        // The open segment stays writable, but the next one cannot be created.
        fs::remove_dir_all(&dir).expect("remove the directory");
        let mut batch = vec![roomy(chunk(5..25), sink.lead()), chunk(25..30)];
        let failed = sink.send(&mut batch).expect("part of the batch was written");
        assert_eq!(failed, [0, 1]);
        assert_eq!((batch[0].count, batch[1].count), (15, 5), "5 lines of the first chunk were written");
        assert_eq!((batch[0].room, &batch[0].lines), (0, &chunk(10..25).lines), "its room went with them");
        // Nothing at all written: an error, with room before the lines or without.
        for lead in [None, Some(0), Some(100)] {
            let mut batch = vec![match lead {
                Some(lead) => roomy(chunk(30..31), lead),
                None => chunk(30..31),
            }];
            assert!(sink.send(&mut batch).is_err(), "lead {lead:?}");
            assert_eq!(batch[0].count, 1);
        }
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
