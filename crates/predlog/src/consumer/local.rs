//! Reading a local log directory: closed segments in name order, then the open segment up to its
//! last complete line.
//!
//! A segment is identified by its base name `predictions-<key>`: the writer renames
//! `<base>.jsonl.open` to `<base>.jsonl` when it closes it (same bytes, same inode), so the reader
//! looks the segment up under either name and keeps its byte offset across the rename. A segment is
//! finished once it is closed (or a newer segment exists) and read to its end.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::{Batch, LocalPosition, Position, SourceCounters, SourceError, SourceResult, SourceTarget, parse_record};
use crate::Error;

const PREFIX: &str = "predictions-";
const CLOSED: &str = ".jsonl";
const OPEN: &str = ".jsonl.open";
/// How often the directory and the open segment are polled while waiting.
const POLL: Duration = Duration::from_millis(50);
/// How often, while the open segment has nothing new, the directory is listed to find out whether
/// the writer moved on without renaming it (a failed close).
const RELIST_WHILE_OPEN: Duration = Duration::from_secs(1);
/// Bytes read per batch at most (whole lines; one longer line is still read whole).
const MAX_CHUNK_BYTES: u64 = 8 * 1024 * 1024;

/// The base name (`predictions-<20 digits>`) of a segment file name, if it is one.
fn segment_base(name: &str) -> Option<&str> {
    let base = name.strip_suffix(OPEN).or_else(|| name.strip_suffix(CLOSED))?;
    is_segment_base(base).then_some(base)
}

fn is_segment_base(base: &str) -> bool {
    base.strip_prefix(PREFIX).is_some_and(|key| key.len() == 20 && key.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads one log directory.
#[derive(Debug)]
pub(super) struct LocalSource {
    dir: PathBuf,
    /// The base name of the segment being read; `None` before the first one.
    segment: Option<String>,
    /// Bytes of `segment` read (a line boundary).
    offset: u64,
    /// `segment` is read to its end and will not grow: move on to the next one.
    done: bool,
    /// A newer segment exists, so `segment` will not grow even if it is still named `.open`.
    superseded: bool,
    /// When the directory was last listed.
    listed_at: Option<Instant>,
    /// Bytes of the segments after `segment`, as last listed.
    later_bytes: u64,
    counters: SourceCounters,
}

impl LocalSource {
    /// Opens `dir` (which must exist) to read after `from`.
    pub async fn open(dir: PathBuf, from: Option<LocalPosition>) -> SourceResult<Self> {
        if let Some(from) = &from
            && !is_segment_base(&from.segment)
        {
            return Err(SourceError::InvalidPosition {
                target: SourceTarget::Local(dir).to_string(),
                reason: format!("`{}` is not a segment name", from.segment),
            });
        }
        let metadata = std::fs::metadata(&dir).map_err(|source| Error::Io {
            action: "open the log directory",
            path: dir.clone(),
            source,
        })?;
        if !metadata.is_dir() {
            let source = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
            return Err(Error::Io { action: "open the log directory", path: dir, source }.into());
        }
        let (segment, offset) = from.map_or((None, 0), |from| (Some(from.segment), from.offset));
        Ok(LocalSource {
            dir,
            segment,
            offset,
            done: false,
            superseded: false,
            listed_at: None,
            later_bytes: 0,
            counters: SourceCounters::default(),
        })
    }

    pub fn position(&self) -> Option<LocalPosition> {
        self.segment.as_ref().map(|segment| LocalPosition { segment: segment.clone(), offset: self.offset })
    }

    pub(super) fn counters_mut(&mut self) -> &mut SourceCounters {
        &mut self.counters
    }

    pub fn counters(&self) -> SourceCounters {
        self.counters.clone()
    }

    pub async fn next_batch(&mut self, max_records: usize, wait: Duration) -> SourceResult<Option<Batch>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(batch) = self.poll(max_records).await? {
                return Ok(Some(batch));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    /// Reads what is there now: a batch, or `None` when there is nothing new.
    async fn poll(&mut self, max_records: usize) -> SourceResult<Option<Batch>> {
        loop {
            let segment = match &self.segment {
                Some(segment) if !self.done => segment.clone(),
                _ => {
                    let segments = self.list().await?;
                    let current = self.segment.as_deref();
                    let Some((next, _)) =
                        segments.iter().find(|(base, _)| current.is_none_or(|current| base.as_str() > current))
                    else {
                        return Ok(None);
                    };
                    debug!(segment = next, "reading log segment");
                    self.later_bytes = segments.iter().filter(|(base, _)| base > next).map(|(_, len)| len).sum();
                    self.segment = Some(next.clone());
                    (self.offset, self.done, self.superseded) = (0, false, false);
                    next.clone()
                }
            };

            let chunk = {
                let (dir, base, offset, superseded) = (self.dir.clone(), segment.clone(), self.offset, self.superseded);
                tokio::task::spawn_blocking(move || read_chunk(&dir, &base, offset, superseded, max_records))
                    .await
                    .map_err(|error| SourceError::Task(error.to_string()))?
                    .map_err(|source| Error::Io { action: "read", path: self.dir.join(&segment), source })?
            };
            let Some(chunk) = chunk else {
                // Deleted (retention) before it was read to its end.
                warn!(segment, offset = self.offset, "log segment disappeared; continuing with the next one");
                self.done = true;
                continue;
            };
            self.counters.bytes_behind = chunk.len.saturating_sub(chunk.end) + self.later_bytes;
            if chunk.closed && self.offset > chunk.len {
                warn!(segment, offset = self.offset, len = chunk.len, "log segment shorter than the position");
            }
            if let Some((start, len)) = chunk.torn {
                self.counters.bad_records += 1;
                warn!(record = format!("{segment}:{start}"), bytes = len, "skipping a torn last line");
            }
            let progressed = !chunk.lines.is_empty() || chunk.torn.is_some();
            self.offset = chunk.end;

            let mut records = Vec::with_capacity(chunk.lines.len());
            let mut first_last: Option<(u64, u64)> = None;
            for (start, line) in &chunk.lines {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Some(record) = parse_record(line, || format!("{segment}:{start}"), &mut self.counters) {
                    records.push(record);
                    first_last = Some((first_last.map_or(*start, |(first, _)| first), *start));
                }
            }
            if let Some((first, last)) = first_last {
                self.counters.records += records.len() as u64;
                self.counters.batches += 1;
                return Ok(Some(Batch {
                    records,
                    position: Position { local: self.position(), kinesis: None },
                    first: format!("{segment}:{first}"),
                    last: format!("{segment}:{last}"),
                    source: segment,
                }));
            }
            if progressed {
                continue; // only unreadable lines: read on
            }
            if chunk.closed || self.superseded {
                self.done = true;
                continue;
            }
            // The open segment has nothing new. Normally the writer renames it before starting the
            // next one; if that rename failed, a newer segment exists and this one is complete.
            if self.listed_at.is_none_or(|at| at.elapsed() >= RELIST_WHILE_OPEN) {
                let segments = self.list().await?;
                self.later_bytes = segments.iter().filter(|(base, _)| *base > segment).map(|(_, len)| len).sum();
                if segments.iter().any(|(base, _)| *base > segment) {
                    // Read it once more (lines may have been appended since), then move on.
                    self.superseded = true;
                    continue;
                }
            }
            return Ok(None);
        }
    }

    /// The segments in the directory, in name (write) order, with their sizes.
    async fn list(&mut self) -> SourceResult<Vec<(String, u64)>> {
        let dir = self.dir.clone();
        let listing = tokio::task::spawn_blocking(move || list_segments(&dir))
            .await
            .map_err(|error| SourceError::Task(error.to_string()))?
            .map_err(|source| Error::Io { action: "list the log directory", path: self.dir.clone(), source })?;
        self.listed_at = Some(Instant::now());
        Ok(listing)
    }
}

fn list_segments(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(segment_base) else { continue };
        // A segment renamed or deleted since the listing: its size does not matter.
        let len = entry.metadata().map_or(0, |metadata| metadata.len());
        segments.push((base.to_owned(), len));
    }
    segments.sort();
    segments.dedup_by(|a, b| a.0 == b.0);
    Ok(segments)
}

/// Lines read from a segment.
struct Chunk {
    /// The segment was found under its closed name.
    closed: bool,
    /// Complete lines (without the `\n`) with their byte offsets.
    lines: Vec<(u64, Vec<u8>)>,
    /// The offset after the last line read (and after a torn tail, if any).
    end: u64,
    /// The file's size when it was opened.
    len: u64,
    /// A torn last line (offset, bytes) of a segment that will not grow: skipped.
    torn: Option<(u64, u64)>,
}

/// Opens a file, `None` if it does not exist.
fn open_existing(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Reads up to `max_lines` complete lines of segment `base` from `offset`. `None` if the segment
/// does not exist under either name. A partial last line is left for later, unless the segment is
/// closed (or `superseded`): then it is torn for good and reported in [`Chunk::torn`].
fn read_chunk(dir: &Path, base: &str, offset: u64, superseded: bool, max_lines: usize) -> io::Result<Option<Chunk>> {
    let closed_path = dir.join(format!("{base}{CLOSED}"));
    let open_path = dir.join(format!("{base}{OPEN}"));
    // The rename from `.open` to closed may happen between two lookups: look for the closed name
    // again last. An open file handle reads the same bytes whatever the file is called meanwhile.
    let (file, closed) = match open_existing(&closed_path)? {
        Some(file) => (file, true),
        None => match open_existing(&open_path)? {
            Some(file) => (file, false),
            None => match open_existing(&closed_path)? {
                Some(file) => (file, true),
                None => return Ok(None),
            },
        },
    };
    let len = file.metadata()?.len();
    let mut chunk = Chunk { closed, lines: Vec::new(), end: offset, len, torn: None };
    if offset >= len {
        return Ok(Some(chunk));
    }
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    reader.seek(SeekFrom::Start(offset))?;
    while chunk.lines.len() < max_lines && chunk.end - offset < MAX_CHUNK_BYTES {
        let mut line = Vec::new();
        let read = reader.read_until(b'\n', &mut line)? as u64;
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            chunk.lines.push((chunk.end, line));
            chunk.end += read;
            continue;
        }
        if closed || superseded {
            chunk.torn = Some((chunk.end, read));
            chunk.end += read;
        }
        break;
    }
    Ok(Some(chunk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_base("predictions-00000001700000000000.jsonl"), Some("predictions-00000001700000000000"));
        assert_eq!(
            segment_base("predictions-00000001700000000000.jsonl.open"),
            Some("predictions-00000001700000000000")
        );
        assert_eq!(segment_base("predictions-0000000170000000000.jsonl"), None);
        assert_eq!(segment_base("predictions-0000000170000000000x.jsonl"), None);
        assert_eq!(segment_base("spill"), None);
    }

    #[test]
    fn reads_complete_lines_only_and_follows_the_rename() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "predictions-00000000000000000001";
        let open = dir.path().join(format!("{base}{OPEN}"));
        std::fs::write(&open, b"a\nbb\nccc").expect("write");
        let chunk = read_chunk(dir.path(), base, 0, false, 10).expect("read").expect("exists");
        assert!(!chunk.closed);
        assert_eq!(chunk.lines, vec![(0, b"a".to_vec()), (2, b"bb".to_vec())]);
        assert_eq!((chunk.end, chunk.torn), (5, None));

        std::fs::rename(&open, dir.path().join(format!("{base}{CLOSED}"))).expect("rename");
        let chunk = read_chunk(dir.path(), base, 5, false, 10).expect("read").expect("exists");
        assert!(chunk.closed);
        assert!(chunk.lines.is_empty());
        assert_eq!((chunk.end, chunk.torn), (8, Some((5, 3))));
        assert!(read_chunk(dir.path(), "predictions-00000000000000000002", 0, false, 10).expect("read").is_none());
    }
}
