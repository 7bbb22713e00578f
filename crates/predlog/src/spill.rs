//! The spill: an on-disk FIFO of records the sink could not take (yet).
//!
//! Segments are `spill-<seq>-<run>.jsonl` files of whole JSON lines (the record encoding), or
//! `spill-<seq>-<run>.requests` files of frames of requests in the compact form the local sink
//! queues them in (see [`crate::queued::FRAME_HEADER_BYTES`]): spilling those costs a fifth of the
//! bytes and none of the JSON formatting, which waits until the records are sent. `<seq>`
//! is 20 zero-padded digits; appends go to new segments with increasing numbers, and records that
//! must go *before* everything spilled (a batch in flight when the sink failed) go to a new segment
//! numbered below the first one. `<run>` makes every name unique across runs. Segments are read in
//! lexical order; how far the first ones were sent is kept in `cursor` (rewritten atomically each
//! flush interval and at shutdown), and a segment is deleted once all of it was sent. After a
//! crash, the records sent since the cursor was last written are sent again (at-least-once).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tracing::{debug, error, info, warn};

use crate::config::KINESIS_MAX_RECORD_BYTES;
use crate::queued::{FRAME_HEADER_BYTES, FrameError, FrameHeader, Requests};
use crate::record::PredictionRecord;
use crate::sink::{Encoded, record_count};
use crate::{Error, Result, Stats, blocking, sync_dir};

/// A spill segment is closed (fsync) and a new one started past this size.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// The first sequence number; front insertions count down from it, appends up.
const SEQ_BASE: u64 = 9_000_000_000_000_000_000;
const CURSOR: &str = "cursor";
const CURSOR_TMP: &str = "cursor.tmp";

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// JSON lines (`.jsonl`).
    Lines,
    /// Frames of requests (`.requests`).
    Requests,
}

impl Kind {
    fn extension(self) -> &'static str {
        match self {
            Kind::Lines => "jsonl",
            Kind::Requests => "requests",
        }
    }
}

struct SpillSegment {
    seq: u64,
    kind: Kind,
    name: String,
    /// Bytes in the file (complete lines or frames, except maybe a torn tail left by a crash).
    len: u64,
    /// Bytes already sent (a line or frame boundary).
    consumed: u64,
}

/// Records read from the spill (or held in memory): JSON lines, or requests still to be turned
/// into lines (local sink).
pub(crate) enum Content {
    Lines(Vec<Encoded>),
    Requests(Requests),
}

impl Content {
    /// Records held.
    pub fn count(&self) -> usize {
        match self {
            Content::Lines(records) => record_count(records),
            Content::Requests(requests) => requests.count(),
        }
    }
}

/// What reading a frame gave.
enum FrameRead {
    Batch(SpillBatch),
    /// A damaged frame or an unreadable end was skipped: read on.
    Skipped,
    /// Nothing to read now.
    Wait,
}

/// Records read from the front of the spill; acknowledged with [`Spill::ack`].
pub(crate) struct SpillBatch {
    pub content: Content,
    /// Segment the records are from.
    pub seq: u64,
    /// Offset just past the batch's last line.
    pub end: u64,
}

/// The on-disk FIFO. `backlog` (records not yet sent, in [`Stats`]) is kept exact.
pub(crate) struct Spill {
    dir: PathBuf,
    stats: Arc<Stats>,
    segments: VecDeque<SpillSegment>,
    /// Appends go to the last segment while this is open.
    writer: Option<File>,
    next_back: u64,
    next_front: u64,
    run: String,
    cursor_dirty: bool,
    unsynced: bool,
    /// The frame being written, kept for its memory.
    frame: Vec<u8>,
}

fn parse_name(name: &str) -> Option<(u64, Kind)> {
    let rest = name.strip_prefix("spill-")?;
    let (rest, kind) = match rest.strip_suffix(".jsonl") {
        Some(rest) => (rest, Kind::Lines),
        None => (rest.strip_suffix(".requests")?, Kind::Requests),
    };
    let (seq, run) = rest.split_once('-')?;
    if seq.len() != 20 || run.is_empty() {
        return None;
    }
    Some((seq.parse().ok()?, kind))
}

/// Records in a segment from `offset` on: its lines, or the records of its frames; a torn or
/// unreadable tail counts as one.
fn count_records(path: &Path, offset: u64, kind: Kind) -> io::Result<u64> {
    match kind {
        Kind::Lines => count_lines(path, offset),
        Kind::Requests => count_frames(path, offset),
    }
}

/// Records of the frames from `offset` to the end of the file (reading only their headers).
fn count_frames(path: &Path, mut offset: u64) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut records = 0;
    while offset < len {
        match read_header(&mut file, offset)? {
            Ok(header) if offset + header.frame_bytes() <= len => {
                records += u64::from(header.records);
                offset += header.frame_bytes();
            }
            // A frame a crash cut short: its records are lost.
            Ok(header) => return Ok(records + u64::from(header.records).max(1)),
            // An unknown tail: one unreadable record, as for lines.
            Err(_) => return Ok(records + 1),
        }
    }
    Ok(records)
}

/// The header of the frame at `offset` (`Torn` when the file ends first).
fn read_header(file: &mut File, offset: u64) -> io::Result<Result<FrameHeader, FrameError>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut head = Vec::with_capacity(FRAME_HEADER_BYTES);
    file.take(FRAME_HEADER_BYTES as u64).read_to_end(&mut head)?;
    Ok(FrameHeader::parse(&head))
}

/// Lines from `offset` to the end of the file, a torn tail counting as one.
fn count_lines(path: &Path, offset: u64) -> io::Result<u64> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut lines = 0;
    let mut last = b'\n';
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        last = chunk[chunk.len() - 1];
        let consumed = chunk.len();
        reader.consume(consumed);
    }
    Ok(lines + u64::from(last != b'\n'))
}

impl Spill {
    /// Opens (creating) the directory and counts what a previous run left there.
    pub fn open(dir: &Path, stats: Arc<Stats>) -> Result<Self> {
        let io_error = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { action, path, source }
        };
        fs::create_dir_all(dir).map_err(io_error("create the spill directory", dir))?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error("list the spill directory", dir))? {
            let entry = entry.map_err(io_error("list the spill directory", dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let Some((seq, kind)) = parse_name(&name) else { continue };
            let len = entry.metadata().map_err(io_error("stat a spill segment", &entry.path()))?.len();
            segments.push(SpillSegment { seq, kind, name, len, consumed: 0 });
        }
        segments.sort_by(|a, b| a.name.cmp(&b.name));
        let cursor_path = dir.join(CURSOR);
        match fs::read_to_string(&cursor_path) {
            Ok(cursor) => {
                for line in cursor.lines() {
                    let Some((name, offset)) = line.split_once(' ') else { continue };
                    let Ok(offset) = offset.parse::<u64>() else { continue };
                    if let Some(segment) = segments.iter_mut().find(|segment| segment.name == name) {
                        segment.consumed = offset.min(segment.len);
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { action: "read the spill cursor", path: cursor_path, source }),
        }
        let mut backlog = 0;
        for segment in &segments {
            let path = dir.join(&segment.name);
            backlog += count_records(&path, segment.consumed, segment.kind)
                .map_err(io_error("read a spill segment", &path))?;
        }
        let next_back = segments.iter().map(|s| s.seq + 1).max().unwrap_or(SEQ_BASE).max(SEQ_BASE);
        let next_front = segments.iter().map(|s| s.seq).min().unwrap_or(SEQ_BASE).min(SEQ_BASE) - 1;
        stats.backlog.store(backlog, Relaxed);
        stats.recovered.store(backlog, Relaxed);
        if backlog > 0 {
            info!(dir = %dir.display(), records = backlog, segments = segments.len(), "found spilled records; sending them first");
        }
        let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut spill = Spill {
            dir: dir.to_owned(),
            stats,
            segments: segments.into(),
            writer: None,
            next_back,
            next_front,
            run,
            cursor_dirty: true,
            unsynced: false,
            frame: Vec::new(),
        };
        spill.gc();
        spill.persist_cursor();
        Ok(spill)
    }

    /// Records spilled and not yet sent.
    pub fn backlog(&self) -> u64 {
        self.stats.backlog.load(Relaxed)
    }

    fn new_segment(&mut self, seq: u64, kind: Kind) -> io::Result<(SpillSegment, File)> {
        let name = format!("spill-{seq:020}-{}.{}", self.run, kind.extension());
        let file = OpenOptions::new().write(true).create_new(true).open(self.dir.join(&name))?;
        Ok((SpillSegment { seq, kind, name, len: 0, consumed: 0 }, file))
    }

    /// Writes the chunks' lines one after the other, as they are (copying them into one buffer
    /// first doubled the memory a big spill took); returns the bytes written.
    fn write_lines(file: &mut File, records: &[Encoded]) -> io::Result<u64> {
        let mut written = 0;
        for chunk in records {
            file.write_all(chunk.text())?;
            written += chunk.text().len() as u64;
        }
        Ok(written)
    }

    /// Appends records (JSON lines) after everything spilled.
    pub fn append(&mut self, records: &[Encoded]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.append_with(Kind::Lines, record_count(records) as u64, |file| Self::write_lines(file, records))
    }

    /// Appends requests (one frame) after everything spilled.
    pub fn append_requests(&mut self, requests: &Requests) -> io::Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let frame = self.frame_of(requests);
        let result = self.append_with(Kind::Requests, requests.count() as u64, |file| {
            file.write_all(&frame)?;
            Ok(frame.len() as u64)
        });
        self.keep_frame(frame);
        result
    }

    /// `requests` as a frame, in the buffer kept from the last one.
    fn frame_of(&mut self, requests: &Requests) -> Vec<u8> {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        requests.write_frame(&mut frame);
        frame
    }

    /// Keeps a frame's buffer for the next one (unless a huge batch grew it).
    fn keep_frame(&mut self, frame: Vec<u8>) {
        if frame.capacity() <= 16 << 20 {
            self.frame = frame;
        }
    }

    /// Appends `records` records with `write` to the last segment, or a new one when there is
    /// none open, it is full or of another kind.
    fn append_with(
        &mut self,
        kind: Kind,
        records: u64,
        write: impl FnOnce(&mut File) -> io::Result<u64>,
    ) -> io::Result<()> {
        let done = self.segments.back().is_some_and(|segment| segment.len >= SEGMENT_BYTES || segment.kind != kind);
        if done && let Some(writer) = self.writer.take() {
            blocking(|| writer.sync_data())?;
            self.unsynced = false;
        }
        if self.writer.is_none() {
            let (segment, file) = self.new_segment(self.next_back, kind)?;
            self.next_back += 1;
            debug!(segment = segment.name, "opened spill segment");
            self.segments.push_back(segment);
            self.writer = Some(file);
        }
        let (Some(writer), Some(segment)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no spill segment"));
        };
        let written = match write(writer) {
            Ok(written) => written,
            Err(error) => {
                // Cut back to the last complete line or frame; if that fails too, close the
                // segment so that the torn end is at its end (skipped on reading) and not in the
                // middle of later records.
                let repaired = writer.set_len(segment.len).and_then(|()| writer.seek(SeekFrom::Start(segment.len)));
                if repaired.is_err() {
                    self.writer = None;
                }
                return Err(error);
            }
        };
        segment.len += written;
        self.unsynced = true;
        self.stats.backlog.fetch_add(records, Relaxed);
        Ok(())
    }

    /// Writes records in a new segment before everything spilled (fsynced at once).
    /// `counted` says whether they are already in the backlog (moved) or new to it.
    pub fn push_front(&mut self, content: &Content, counted: bool) -> io::Result<()> {
        let count = content.count() as u64;
        if count == 0 {
            return Ok(());
        }
        let (kind, frame, lines): (_, _, &[Encoded]) = match content {
            Content::Lines(records) => (Kind::Lines, None, records),
            Content::Requests(requests) => (Kind::Requests, Some(self.frame_of(requests)), &[]),
        };
        let (mut segment, mut file) = self.new_segment(self.next_front, kind)?;
        self.next_front -= 1;
        let path = self.dir.join(&segment.name);
        let written = blocking(|| {
            let written = match &frame {
                Some(frame) => {
                    file.write_all(frame)?;
                    frame.len() as u64
                }
                None => Self::write_lines(&mut file, lines)?,
            };
            file.sync_data()?;
            sync_dir(&self.dir)?;
            Ok::<_, io::Error>(written)
        });
        if let Some(frame) = frame {
            self.keep_frame(frame);
        }
        segment.len = match written {
            Ok(written) => written,
            Err(error) => {
                let _ = fs::remove_file(&path);
                return Err(error);
            }
        };
        self.segments.push_front(segment);
        if !counted {
            self.stats.backlog.fetch_add(count, Relaxed);
        }
        Ok(())
    }

    /// Reads up to `max_records` / `max_bytes` ([`Encoded::size`]; for unkeyed records, the lines
    /// with their newlines) records from the front, or the front's frame of requests (whatever its
    /// size); corrupt keyed lines and damaged frames met first are skipped and counted. `None`
    /// when the spill is empty.
    pub fn read_batch(&mut self, max_records: usize, max_bytes: usize, keyed: bool) -> io::Result<Option<SpillBatch>> {
        let max_record = if keyed { KINESIS_MAX_RECORD_BYTES } else { usize::MAX };
        loop {
            self.gc();
            let writer_open = self.writer.is_some() && self.segments.len() == 1;
            let Some(front) = self.segments.front_mut() else {
                let backlog = self.stats.backlog.swap(0, Relaxed);
                if backlog > 0 {
                    warn!(backlog, "spill backlog miscounted; the spill is empty");
                }
                return Ok(None);
            };
            let path = self.dir.join(&front.name);
            let available = front.len - front.consumed;
            if available == 0 {
                // Only the segment being appended to can be fully sent and still here: then
                // nothing is left anywhere.
                let backlog = self.stats.backlog.swap(0, Relaxed);
                if backlog > 0 {
                    warn!(backlog, "spill backlog miscounted; the spill is empty");
                }
                self.gc();
                return Ok(None);
            }
            if front.kind == Kind::Requests {
                match self.read_frame(writer_open)? {
                    FrameRead::Batch(batch) => return Ok(Some(batch)),
                    FrameRead::Skipped => continue,
                    FrameRead::Wait => return Ok(None),
                }
            }
            let mut window = (max_bytes as u64 + 1).min(available);
            let data = loop {
                let mut file = File::open(&path)?;
                file.seek(SeekFrom::Start(front.consumed))?;
                let mut data = Vec::with_capacity(window as usize);
                file.take(window).read_to_end(&mut data)?;
                if data.contains(&b'\n') || window >= available || (data.len() as u64) < window {
                    break data;
                }
                window = (window * 2).min(available);
            };
            let base = front.consumed;
            if !keyed && memchr::memchr(b'\n', &data).is_some() {
                let batch = Self::whole_lines(data, max_records, max_bytes);
                return Ok(Some(SpillBatch {
                    end: base + batch.lines.len() as u64,
                    content: Content::Lines(vec![batch]),
                    seq: front.seq,
                }));
            }
            // Keyed records, one per chunk (Kinesis entries); unkeyed ones only get here when
            // `data` holds no whole line (a torn tail, below).
            let mut records: Vec<Encoded> = Vec::new();
            let mut taken = 0;
            let mut bytes = 0;
            let mut pos = 0;
            while taken < max_records {
                let Some(newline) = data[pos..].iter().position(|b| *b == b'\n') else { break };
                let line = &data[pos..pos + newline];
                // Kinesis needs the ride id (the partition key) and a record it would refuse must not
                // block the spill, so keyed lines are parsed. Unkeyed lines go to local segments as
                // they are: parsing them cost the background task more than the writing, and the
                // segments' readers skip a line that does not parse anyway.
                let parsed = if keyed {
                    PredictionRecord::from_json(line)
                        .map(|record| Encoded::from_json(line, &record.ride_id, true))
                        .map_err(|error| error.to_string())
                } else {
                    Ok(Encoded::from_json(line, "", false))
                }
                .and_then(|encoded| {
                    if encoded.size() > max_record {
                        return Err(format!("record of {} bytes is too large for the sink", encoded.size()));
                    }
                    Ok(encoded)
                });
                match parsed {
                    Ok(encoded) => {
                        if taken > 0 && bytes + encoded.size() > max_bytes {
                            break;
                        }
                        bytes += encoded.size();
                        taken += 1;
                        match records.last_mut() {
                            Some(chunk) if !keyed => {
                                chunk.lines.extend_from_slice(&encoded.lines);
                                chunk.count += 1;
                            }
                            _ => records.push(encoded),
                        }
                    }
                    Err(error) if taken == 0 => {
                        // Skipped lines before the batch are consumed at once.
                        warn!(segment = front.name, offset = base + pos as u64, error, "skipping a corrupt spill line");
                        front.consumed = base + (pos + newline + 1) as u64;
                        self.stats.corrupt.fetch_add(1, Relaxed);
                        self.stats.backlog.fetch_sub(1, Relaxed);
                        self.cursor_dirty = true;
                    }
                    Err(_) => break,
                }
                pos += newline + 1;
            }
            if !records.is_empty() {
                return Ok(Some(SpillBatch {
                    content: Content::Lines(records),
                    seq: front.seq,
                    end: base + pos as u64,
                }));
            }
            let rest = &data[pos..];
            if rest.contains(&b'\n') || pos > 0 {
                continue;
            }
            if writer_open {
                // Unreachable in practice: the writer only writes whole lines.
                warn!(segment = front.name, "spill segment ends with a partial line");
                return Ok(None);
            }
            // No newline up to the end of a finished segment: a line torn by a crash.
            warn!(segment = front.name, bytes = rest.len(), "skipping a torn last spill line");
            front.consumed = front.len;
            self.stats.corrupt.fetch_add(1, Relaxed);
            self.stats.backlog.fetch_sub(1, Relaxed);
            self.cursor_dirty = true;
        }
    }

    /// Reads the frame at the front of the first segment (a `.requests` one, not fully sent): a
    /// chunk of the background task's, a few MiB of lines at most. A damaged frame, or the
    /// unreadable end of the segment, is skipped and counted.
    fn read_frame(&mut self, writer_open: bool) -> io::Result<FrameRead> {
        let Some(front) = self.segments.front_mut() else { return Ok(FrameRead::Wait) };
        let path = self.dir.join(&front.name);
        let (base, available) = (front.consumed, front.len - front.consumed);
        let mut file = File::open(&path)?;
        let (unreadable, lost) = match read_header(&mut file, base)? {
            Ok(header) if header.frame_bytes() <= available => {
                let mut payload = vec![0; header.payload_bytes as usize];
                file.read_exact(&mut payload)?;
                let end = base + header.frame_bytes();
                match Requests::from_frame(&header, payload) {
                    Ok(requests) => {
                        let content = Content::Requests(requests);
                        return Ok(FrameRead::Batch(SpillBatch { content, seq: front.seq, end }));
                    }
                    Err(error) => {
                        let records = u64::from(header.records);
                        warn!(segment = front.name, offset = base, records, %error, "skipping a damaged spill frame");
                        front.consumed = end;
                        self.stats.corrupt.fetch_add(records, Relaxed);
                        self.stats.backlog.fetch_sub(records, Relaxed);
                        self.cursor_dirty = true;
                        return Ok(FrameRead::Skipped);
                    }
                }
            }
            // Counted as its records (see `count_frames`).
            Ok(header) => (FrameError::Torn, u64::from(header.records).max(1)),
            Err(error) => (error, 1),
        };
        if writer_open {
            // Unreachable in practice: the writer only writes whole frames.
            warn!(segment = front.name, error = %unreadable, "spill segment ends with a partial frame");
            return Ok(FrameRead::Wait);
        }
        // Nothing after it can be found: the rest of the segment is lost, counted as when the
        // spill was opened.
        warn!(segment = front.name, offset = base, bytes = available, records = lost, error = %unreadable, "skipping the unreadable end of a spill segment");
        if matches!(unreadable, FrameError::Unknown(_)) {
            // Not a torn end: a frame of another version or byte order, or damage. The file is
            // kept (renamed, so that it is not read again) for someone to look at.
            let kept = self.dir.join(format!("{}.unreadable", front.name));
            match fs::rename(&path, &kept) {
                Ok(()) => warn!(kept = %kept.display(), "kept the unreadable spill segment aside"),
                Err(error) => error!(segment = %path.display(), %error, "cannot rename an unreadable spill segment"),
            }
        }
        front.consumed = front.len;
        self.stats.corrupt.fetch_add(lost, Relaxed);
        self.stats.backlog.fetch_sub(lost, Relaxed);
        self.cursor_dirty = true;
        Ok(FrameRead::Skipped)
    }

    /// The local sink's batch from `data` (the front of a segment): its whole lines, up to
    /// `max_records` and `max_bytes` (at least the first line), as one chunk made of `data`
    /// itself. The local sink writes lines as they are, so they need no parsing, and copying
    /// them line by line (an allocation each) cost the catching up more than the writing.
    /// `data` must hold a whole line.
    fn whole_lines(mut data: Vec<u8>, max_records: usize, max_bytes: usize) -> Encoded {
        let first = memchr::memchr(b'\n', &data).unwrap_or(data.len().saturating_sub(1));
        let mut end =
            memchr::memrchr(b'\n', &data[..max_bytes.min(data.len())]).map_or(first, |last| last.max(first)) + 1;
        let mut count = memchr::memchr_iter(b'\n', &data[..end]).count();
        if count > max_records {
            count = max_records.max(1);
            end = memchr::memchr_iter(b'\n', &data).nth(count - 1).map_or(end, |at| at + 1);
        }
        data.truncate(end);
        Encoded { lines: data, count, ..Encoded::default() }
    }

    /// Marks a batch as sent up to `end`; `released` records leave the backlog.
    pub fn ack(&mut self, seq: u64, end: u64, released: u64) {
        if let Some(segment) = self.segments.iter_mut().find(|segment| segment.seq == seq) {
            segment.consumed = segment.consumed.max(end);
        }
        self.release(released);
        self.cursor_dirty = true;
        self.gc();
    }

    /// Records sent (or dropped) out of an unacknowledged batch leave the backlog.
    pub fn release(&mut self, records: u64) {
        self.stats.backlog.fetch_sub(records, Relaxed);
    }

    /// Deletes fully sent segments from the front; closes the writer once all is sent.
    fn gc(&mut self) {
        while let Some(front) = self.segments.front() {
            if front.consumed < front.len {
                break;
            }
            if self.segments.len() == 1 && self.writer.is_some() {
                if self.backlog() > 0 {
                    break;
                }
                self.writer = None;
                self.unsynced = false;
            }
            let path = self.dir.join(&front.name);
            if let Err(error) = fs::remove_file(&path)
                && error.kind() != io::ErrorKind::NotFound
            {
                error!(segment = %path.display(), %error, "cannot delete a sent spill segment");
            }
            debug!(segment = front.name, "deleted sent spill segment");
            self.segments.pop_front();
            self.cursor_dirty = true;
        }
    }

    /// Periodic: fsync appended records and rewrite the cursor when it moved.
    pub fn flush(&mut self) {
        if self.unsynced
            && let Some(writer) = self.writer.as_ref()
        {
            if let Err(error) = blocking(|| writer.sync_data()) {
                error!(dir = %self.dir.display(), %error, "cannot fsync the spill");
            }
            self.unsynced = false;
        }
        self.persist_cursor();
    }

    /// Writes the consumed offsets (`cursor.tmp`, fsync, rename), or removes the cursor when
    /// nothing is partly sent.
    pub fn persist_cursor(&mut self) {
        if !self.cursor_dirty {
            return;
        }
        let entries: String = self
            .segments
            .iter()
            .filter(|segment| segment.consumed > 0)
            .map(|segment| format!("{} {}\n", segment.name, segment.consumed))
            .collect();
        let cursor = self.dir.join(CURSOR);
        let result = if entries.is_empty() {
            match fs::remove_file(&cursor) {
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            let tmp = self.dir.join(CURSOR_TMP);
            blocking(|| {
                let mut file = File::create(&tmp)?;
                file.write_all(entries.as_bytes())?;
                file.sync_data()?;
                fs::rename(&tmp, &cursor)
            })
        };
        match result {
            Ok(()) => self.cursor_dirty = false,
            Err(error) => error!(cursor = %cursor.display(), %error, "cannot write the spill cursor"),
        }
    }

    /// At shutdown: fsync, persist the cursor, fsync the directory.
    pub fn close(&mut self) {
        self.flush();
        if let Err(error) = blocking(|| sync_dir(&self.dir)) {
            error!(dir = %self.dir.display(), %error, "cannot fsync the spill directory");
        }
        self.writer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_of_frames_it_cannot_read_is_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = "spill-09000000000000000000-aaaaaaaaaaaa.requests";
        // A frame of a later format version (or of the other byte order): its length cannot be
        // trusted, so nothing after it can be found.
        let mut frame = b"LPRQ\x02\x01\0\0".to_vec();
        frame.extend_from_slice(&[0; 200]);
        fs::write(dir.path().join(name), &frame).expect("write");
        let stats = Arc::new(Stats::default());
        let mut spill = Spill::open(dir.path(), stats.clone()).expect("open");
        assert_eq!(spill.backlog(), 1, "counted as one unreadable record");
        assert!(spill.read_batch(usize::MAX, usize::MAX, false).expect("read").is_none());
        assert_eq!((stats.corrupt.load(Relaxed), spill.backlog()), (1, 0));
        assert!(!dir.path().join(name).exists());
        let kept = fs::read(dir.path().join(format!("{name}.unreadable"))).expect("kept aside");
        assert_eq!(kept, frame);
        // Not read again by the next run.
        drop(spill);
        let spill = Spill::open(dir.path(), Arc::new(Stats::default())).expect("reopen");
        assert_eq!(spill.backlog(), 0);
    }

    #[test]
    fn the_local_sinks_batch_is_whole_lines_within_the_limits() {
        let data = b"a\nbb\nccc\ntorn".to_vec();
        let batch = |max_records, max_bytes| {
            let chunk = Spill::whole_lines(data.clone(), max_records, max_bytes);
            (String::from_utf8(chunk.lines).expect("utf-8"), chunk.count)
        };
        assert_eq!(batch(usize::MAX, 100), ("a\nbb\nccc\n".to_owned(), 3), "never the torn tail");
        assert_eq!(batch(usize::MAX, 5), ("a\nbb\n".to_owned(), 2), "a line ending at the limit is in");
        assert_eq!(batch(usize::MAX, 4), ("a\n".to_owned(), 1));
        assert_eq!(batch(usize::MAX, 1), ("a\n".to_owned(), 1), "at least the first line");
        assert_eq!(batch(2, 100), ("a\nbb\n".to_owned(), 2));
        assert_eq!(batch(0, 100), ("a\n".to_owned(), 1));
        let long = Spill::whole_lines(b"long line\nx\n".to_vec(), usize::MAX, 3);
        assert_eq!((long.lines, long.count), (b"long line\n".to_vec(), 1), "a first line over the limit");
    }
}
