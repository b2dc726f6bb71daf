//! The built-in sources, all in the pull model of [`SourceFunction`].
//!
//! Every built-in source but the socket source is replayable: its checkpoint state is its
//! position (a `u64`, `u128` or split index and byte offset, encoded with [`Codec`]) and a
//! restored source continues right after the last record emitted before the snapshot.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::codec::{decode_exact, encode_to_vec};
use crate::{Codec, Collector, SourceContext, SourceFunction, SourceStatus, SplitMix64};

/// How long a socket read may block before the poll returns `Idle`.
pub const SOCKET_READ_TIMEOUT: Duration = Duration::from_millis(100);

/// How long connecting a socket source may take.
const SOCKET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Decodes a source position, naming the source in the error.
fn decode_position<P: Codec>(state: &[u8], source: &str) -> Result<P, String> {
    decode_exact::<P>(state).map_err(|e| format!("malformed {source} state: {e}"))
}

/// Subtask `i` of `p` takes elements `i, i + p, …` of a shared vector.
///
/// Checkpoint state: the number of elements of this subtask's share emitted (`u64`).
pub(crate) struct CollectionSource<T> {
    data: Arc<Mutex<Vec<T>>>,
    items: std::vec::IntoIter<T>,
    emitted: u64,
}

impl<T> CollectionSource<T> {
    pub(crate) fn new(data: Arc<Mutex<Vec<T>>>) -> Self {
        CollectionSource {
            data,
            items: Vec::new().into_iter(),
            emitted: 0,
        }
    }
}

impl<T: Clone + Send + 'static> SourceFunction<T> for CollectionSource<T> {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), String> {
        let data = self
            .data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let share: Vec<T> = data
            .iter()
            .skip(ctx.subtask_index as usize)
            .step_by(ctx.parallelism.max(1) as usize)
            .skip(usize::try_from(self.emitted).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        self.items = share.into_iter();
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut dyn Collector<T>,
        max_records: usize,
    ) -> Result<SourceStatus, String> {
        for _ in 0..max_records {
            match self.items.next() {
                Some(item) => {
                    self.emitted += 1;
                    out.collect(item);
                }
                None => return Ok(SourceStatus::Finished),
            }
        }
        Ok(if self.items.len() == 0 {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, String> {
        Ok(encode_to_vec(&self.emitted))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.emitted = decode_position(state, "collection source")?;
        Ok(())
    }
}

/// `from..=to`, subtask `i` of `p` taking offsets `i, i + p, …`.
///
/// Checkpoint state: the offset of the next number (`u128`).
pub(crate) struct SequenceSource {
    from: u64,
    count: u128,
    next: u128,
    step: u128,
    restored: Option<u128>,
}

impl SequenceSource {
    pub(crate) fn new(from: u64, to: u64) -> Self {
        let count = if to < from {
            0
        } else {
            u128::from(to - from) + 1
        };
        SequenceSource {
            from,
            count,
            next: 0,
            step: 1,
            restored: None,
        }
    }
}

impl SourceFunction<u64> for SequenceSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), String> {
        self.next = self
            .restored
            .unwrap_or_else(|| u128::from(ctx.subtask_index));
        self.step = u128::from(ctx.parallelism.max(1));
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, String> {
        Ok(encode_to_vec(&self.next))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.restored = Some(decode_position(state, "sequence source")?);
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut dyn Collector<u64>,
        max_records: usize,
    ) -> Result<SourceStatus, String> {
        for _ in 0..max_records {
            if self.next >= self.count {
                return Ok(SourceStatus::Finished);
            }
            // `next < count <= to - from + 1`, so the sum stays within `from..=to`.
            out.collect(self.from + self.next as u64);
            self.next += self.step;
        }
        Ok(if self.next >= self.count {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }
}

/// Element `n` is `f(rng(seed, n), n)`; subtask `i` of `p` produces `i, i + p, …`.
///
/// Checkpoint state: the number of elements this subtask emitted (`u64`); a restored source
/// regenerates the same remaining elements.
pub(crate) struct GeneratorSource<F> {
    count: Option<u64>,
    seed: u64,
    f: Arc<F>,
    next: Option<u64>,
    step: u64,
    emitted: u64,
}

impl<F> GeneratorSource<F> {
    pub(crate) fn new(count: Option<u64>, seed: u64, f: Arc<F>) -> Self {
        GeneratorSource {
            count,
            seed,
            f,
            next: Some(0),
            step: 1,
            emitted: 0,
        }
    }

    fn exhausted(&self) -> bool {
        match (self.next, self.count) {
            (None, _) => true,
            (Some(n), Some(count)) => n >= count,
            (Some(_), None) => false,
        }
    }
}

impl<T, F> SourceFunction<T> for GeneratorSource<F>
where
    T: Send + 'static,
    F: Fn(&mut SplitMix64, u64) -> T + Send + Sync + 'static,
{
    fn open(&mut self, ctx: &SourceContext) -> Result<(), String> {
        self.step = u64::from(ctx.parallelism.max(1));
        self.next = self
            .emitted
            .checked_mul(self.step)
            .and_then(|skipped| skipped.checked_add(u64::from(ctx.subtask_index)));
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, String> {
        Ok(encode_to_vec(&self.emitted))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.emitted = decode_position(state, "generator source")?;
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut dyn Collector<T>,
        max_records: usize,
    ) -> Result<SourceStatus, String> {
        for _ in 0..max_records {
            if self.exhausted() {
                return Ok(SourceStatus::Finished);
            }
            let Some(index) = self.next else {
                return Ok(SourceStatus::Finished);
            };
            let mut rng = SplitMix64::for_index(self.seed, index);
            out.collect((self.f)(&mut rng, index));
            self.emitted += 1;
            self.next = index.checked_add(self.step);
        }
        Ok(if self.exhausted() {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }
}

/// A byte range of one file; a line belongs to the split where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileSplit {
    pub(crate) path: PathBuf,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// The files a text source reads: `path` itself, or the visible regular files of the directory
/// `path`, sorted by name.
pub(crate) fn list_files(path: &Path) -> Result<Vec<(PathBuf, u64)>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read text input {}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![(path.to_path_buf(), meta.len())]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list directory {}: {e}", path.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list directory {}: {e}", path.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let file = entry.path();
        let meta = std::fs::metadata(&file)
            .map_err(|e| format!("cannot read text input {}: {e}", file.display()))?;
        if meta.is_file() {
            files.push((file, meta.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// Cuts files into splits of `split_size` bytes (empty files have none).
pub(crate) fn compute_splits(files: &[(PathBuf, u64)], split_size: u64) -> Vec<FileSplit> {
    let split_size = split_size.max(1);
    let mut splits = Vec::new();
    for (path, len) in files {
        let mut start = 0;
        while start < *len {
            let end = start.saturating_add(split_size).min(*len);
            splits.push(FileSplit {
                path: path.clone(),
                start,
                end,
            });
            start = end;
        }
    }
    splits
}

struct SplitReader {
    reader: BufReader<File>,
    path: PathBuf,
    pos: u64,
    end: u64,
}

impl SplitReader {
    fn open(split: &FileSplit) -> Result<Self, String> {
        let describe = |e: std::io::Error| format!("cannot read {}: {e}", split.path.display());
        let file = File::open(&split.path).map_err(describe)?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut pos = split.start;
        if split.start > 0 {
            // The line that contains byte `start - 1` belongs to the previous split, unless that
            // byte ends it: skip through the first newline at or after `start - 1`.
            reader
                .seek(SeekFrom::Start(split.start - 1))
                .map_err(describe)?;
            let mut skipped = Vec::new();
            let n = reader.read_until(b'\n', &mut skipped).map_err(describe)?;
            pos = split.start - 1 + n as u64;
        }
        Ok(SplitReader {
            reader,
            path: split.path.clone(),
            pos,
            end: split.end,
        })
    }

    /// Opens `split` to read from byte `offset`, the start of a line of the split (a position
    /// saved by a checkpoint).
    fn open_at(split: &FileSplit, offset: u64) -> Result<Self, String> {
        let describe = |e: std::io::Error| format!("cannot read {}: {e}", split.path.display());
        let file = File::open(&split.path).map_err(describe)?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        reader.seek(SeekFrom::Start(offset)).map_err(describe)?;
        Ok(SplitReader {
            reader,
            path: split.path.clone(),
            pos: offset,
            end: split.end,
        })
    }

    /// Reads the next line starting inside the split into `buf` (with its terminator); false
    /// when there is none.
    fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<bool, String> {
        if self.pos >= self.end {
            return Ok(false);
        }
        buf.clear();
        let n = self
            .reader
            .read_until(b'\n', buf)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        self.pos += n as u64;
        Ok(n > 0)
    }
}

/// Strips one trailing `\n` or `\r\n`.
fn trim_line_end(mut line: &[u8]) -> &[u8] {
    if let [rest @ .., b'\n'] = line {
        line = rest;
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
    }
    line
}

/// The position of a [`TextFileSource`] in a checkpoint: `(splits of the subtask, index of the
/// split being read or to read next, byte offset of the next line in that split's file if it
/// is being read)`.
type TextPosition = (u64, u64, Option<u64>);

/// Reads the lines of the splits assigned to this subtask.
///
/// Checkpoint state: [`TextPosition`]; a restored source seeks to the saved offset when it
/// opens. The files must not change in between (the number of splits is checked).
pub(crate) struct TextFileSource {
    path: PathBuf,
    split_size: u64,
    splits: VecDeque<FileSplit>,
    /// How many splits this subtask has, and how many it has taken from `splits`.
    total_splits: u64,
    taken_splits: u64,
    current: Option<SplitReader>,
    buf: Vec<u8>,
    restored: Option<TextPosition>,
}

impl TextFileSource {
    pub(crate) fn new(path: PathBuf, split_size: u64) -> Self {
        TextFileSource {
            path,
            split_size,
            splits: VecDeque::new(),
            total_splits: 0,
            taken_splits: 0,
            current: None,
            buf: Vec::new(),
            restored: None,
        }
    }

    /// Moves to the position of a checkpoint.
    fn seek(&mut self, (total, index, offset): TextPosition) -> Result<(), String> {
        if total != self.total_splits {
            return Err(format!(
                "cannot restore the text source on {}: the checkpoint knew {total} splits for \
                 this subtask, there are {} now (the input changed)",
                self.path.display(),
                self.total_splits
            ));
        }
        if index > total || (index == total && offset.is_some()) {
            return Err(format!(
                "malformed text source state: split {index} of {total}"
            ));
        }
        for _ in 0..index {
            self.splits.pop_front();
        }
        self.taken_splits = index;
        if let Some(offset) = offset {
            let Some(split) = self.splits.pop_front() else {
                return Err(format!(
                    "malformed text source state: split {index} of {total}"
                ));
            };
            if offset < split.start {
                return Err(format!(
                    "malformed text source state: offset {offset} before split {}..{} of {}",
                    split.start,
                    split.end,
                    split.path.display()
                ));
            }
            self.taken_splits += 1;
            self.current = Some(SplitReader::open_at(&split, offset)?);
        }
        Ok(())
    }
}

impl SourceFunction<String> for TextFileSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), String> {
        let files = list_files(&self.path)?;
        let parallelism = ctx.parallelism.max(1) as usize;
        self.splits = compute_splits(&files, self.split_size)
            .into_iter()
            .skip(ctx.subtask_index as usize)
            .step_by(parallelism)
            .collect();
        self.total_splits = self.splits.len() as u64;
        self.taken_splits = 0;
        self.current = None;
        if let Some(position) = self.restored {
            self.seek(position)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, String> {
        let position: TextPosition = match &self.current {
            Some(reader) => (
                self.total_splits,
                self.taken_splits.saturating_sub(1),
                Some(reader.pos),
            ),
            None => (self.total_splits, self.taken_splits, None),
        };
        Ok(encode_to_vec(&position))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.restored = Some(decode_position(state, "text source")?);
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut dyn Collector<String>,
        max_records: usize,
    ) -> Result<SourceStatus, String> {
        let mut emitted = 0;
        while emitted < max_records {
            let reader = match &mut self.current {
                Some(reader) => reader,
                None => match self.splits.pop_front() {
                    Some(split) => {
                        self.taken_splits += 1;
                        self.current.insert(SplitReader::open(&split)?)
                    }
                    None => return Ok(SourceStatus::Finished),
                },
            };
            if reader.next_line(&mut self.buf)? {
                let line = trim_line_end(&self.buf);
                out.collect(String::from_utf8_lossy(line).into_owned());
                emitted += 1;
            } else {
                self.current = None;
            }
        }
        Ok(if self.current.is_none() && self.splits.is_empty() {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }

    fn close(&mut self) {
        self.current = None;
        self.splits.clear();
    }
}

/// Lines from a TCP connection, until the peer closes it.
///
/// Not replayable: it keeps no checkpoint state (the default `snapshot_state`), so after a
/// restore it reads whatever a new connection brings; records are neither replayed nor
/// deduplicated across a failure.
pub(crate) struct SocketTextSource {
    host: String,
    port: u16,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    scanned: usize,
    eof: bool,
}

impl SocketTextSource {
    pub(crate) fn new(host: String, port: u16) -> Self {
        SocketTextSource {
            host,
            port,
            stream: None,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            eof: false,
        }
    }

    /// The next complete line in the buffer, if any.
    fn next_buffered_line(&mut self) -> Option<String> {
        let from = self.start.max(self.scanned);
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = from + offset + 1;
                let line =
                    String::from_utf8_lossy(trim_line_end(&self.buf[self.start..end])).into_owned();
                self.start = end;
                self.scanned = end;
                Some(line)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }
}

impl SourceFunction<String> for SocketTextSource {
    fn open(&mut self, _ctx: &SourceContext) -> Result<(), String> {
        let target = format!("{}:{}", self.host, self.port);
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {target}: {e}"))?;
        let mut last_error = format!("cannot resolve {target}: no addresses");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, SOCKET_CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(SOCKET_READ_TIMEOUT))
                        .map_err(|e| format!("cannot configure socket to {target}: {e}"))?;
                    self.stream = Some(stream);
                    return Ok(());
                }
                Err(e) => last_error = format!("cannot connect to {target}: {e}"),
            }
        }
        Err(last_error)
    }

    fn poll_next(
        &mut self,
        out: &mut dyn Collector<String>,
        max_records: usize,
    ) -> Result<SourceStatus, String> {
        let mut emitted = 0;
        let mut chunk = [0u8; 8192];
        while emitted < max_records {
            if let Some(line) = self.next_buffered_line() {
                out.collect(line);
                emitted += 1;
                continue;
            }
            if self.eof {
                if self.start < self.buf.len() {
                    let rest = String::from_utf8_lossy(trim_line_end(&self.buf[self.start..]))
                        .into_owned();
                    out.collect(rest);
                }
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
                return Ok(SourceStatus::Finished);
            }
            if emitted > 0 {
                // Hand over what we have rather than wait for more.
                return Ok(SourceStatus::More);
            }
            let Some(stream) = &mut self.stream else {
                return Err("socket source polled before open".to_owned());
            };
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.scanned -= self.start;
                self.start = 0;
            }
            match stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(SourceStatus::Idle);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("socket {}:{}: {e}", self.host, self.port)),
            }
        }
        Ok(if self.eof && self.start >= self.buf.len() {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }

    fn close(&mut self) {
        self.stream = None;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;
    use crate::testing::{execute_locally, take_collected, ExchangeMode};
    use crate::StreamExecutionEnvironment;

    fn ctx(subtask_index: u32, parallelism: u32) -> SourceContext {
        SourceContext {
            subtask_index,
            parallelism,
            max_parallelism: 128,
            attempt_number: 0,
            task_name: "test".into(),
            checkpointing: true,
        }
    }

    /// Runs every subtask of `source()` to the end, with small polls.
    fn drain<T, S: SourceFunction<T>>(
        parallelism: u32,
        source: impl Fn() -> S,
    ) -> Result<Vec<Vec<T>>, String> {
        let mut all = Vec::new();
        for i in 0..parallelism {
            let mut s = source();
            s.open(&ctx(i, parallelism))?;
            let mut out = Vec::new();
            let mut polls = 0;
            loop {
                polls += 1;
                assert!(polls < 100_000, "source does not finish");
                let before = out.len();
                let status = s.poll_next(&mut out, 3)?;
                assert!(out.len() - before <= 3);
                if status == SourceStatus::Finished {
                    break;
                }
            }
            s.close();
            all.push(out);
        }
        Ok(all)
    }

    /// Contents with long and short lines, empty lines, CRLF, and no trailing newline.
    fn write_fixture(dir: &Path) -> Vec<String> {
        let mut expected = Vec::new();
        let long = "x".repeat(70);
        let files: Vec<(&str, String)> = vec![
            ("a.txt", format!("one\ntwo\r\n\nthree {long}\nfour")),
            ("b.txt", format!("{long}\r\n{long}{long}\nshort\n\r\n")),
            ("c.txt", String::new()),
            ("d.txt", "single line no newline".to_owned()),
            ("e.txt", (0..40).map(|i| format!("line {i}\n")).collect()),
            (".hidden", "never read\n".to_owned()),
            ("_SUCCESS", "never read\n".to_owned()),
        ];
        for (name, content) in &files {
            std::fs::write(dir.join(name), content).unwrap();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let mut rest = content.as_str();
            while !rest.is_empty() {
                let (line, tail) = match rest.find('\n') {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, ""),
                };
                expected.push(line.strip_suffix('\r').unwrap_or(line).to_owned());
                rest = tail;
            }
        }
        std::fs::create_dir(dir.join("subdir")).unwrap();
        std::fs::write(dir.join("subdir/f.txt"), "not recursive\n").unwrap();
        expected
    }

    #[test]
    fn text_splits_read_every_line_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let expected = write_fixture(dir.path());
        let mut sorted_expected = expected.clone();
        sorted_expected.sort();
        for split_size in [1, 2, 5, 16, 64, 1 << 20] {
            for parallelism in 1..=5 {
                let parts = drain(parallelism, || {
                    TextFileSource::new(dir.path().to_path_buf(), split_size)
                })
                .unwrap();
                if parallelism == 1 {
                    assert_eq!(
                        parts[0], expected,
                        "split size {split_size} keeps file order"
                    );
                }
                let mut all: Vec<String> = parts.into_iter().flatten().collect();
                all.sort();
                assert_eq!(
                    all, sorted_expected,
                    "split size {split_size}, p={parallelism}"
                );
            }
        }
    }

    #[test]
    fn splits_cover_files_and_skip_empty_ones() {
        let files = vec![
            (PathBuf::from("a"), 10),
            (PathBuf::from("b"), 0),
            (PathBuf::from("c"), 4),
        ];
        let splits = compute_splits(&files, 4);
        let ranges: Vec<(&str, u64, u64)> = splits
            .iter()
            .map(|s| (s.path.to_str().unwrap(), s.start, s.end))
            .collect();
        assert_eq!(
            ranges,
            vec![("a", 0, 4), ("a", 4, 8), ("a", 8, 10), ("c", 0, 4)]
        );
        assert_eq!(compute_splits(&files, 0).len(), 14);
    }

    #[test]
    fn single_file_and_lossy_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bytes.txt");
        std::fs::write(&file, b"ok\nbad \xff byte\r\nend").unwrap();
        let parts = drain(1, || TextFileSource::new(file.clone(), 4)).unwrap();
        assert_eq!(parts[0], vec!["ok", "bad \u{fffd} byte", "end"]);
    }

    #[test]
    fn missing_path_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let mut source = TextFileSource::new(missing, 16);
        let err = source.open(&ctx(0, 1)).unwrap_err();
        assert!(err.contains("missing"), "{err}");

        // Building a graph on a missing path is fine; running it fails the subtask.
        let mut env = StreamExecutionEnvironment::new();
        env.read_text_file(dir.path().join("nope.txt"))
            .collect("missing-path");
        let graph = env.stream_graph().unwrap();
        let err = execute_locally(&graph, ExchangeMode::Typed).unwrap_err();
        assert!(err.contains("nope.txt"), "{err}");
    }

    #[test]
    fn read_text_file_in_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = write_fixture(dir.path());
        expected.sort();
        for parallelism in 1..=3 {
            let sink = format!("text-job-{parallelism}");
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(parallelism);
            env.read_text_file_with_split_size(dir.path(), 7)
                .map(|line| line)
                .set_parallelism(2)
                .collect(&sink);
            execute_locally(&env.stream_graph().unwrap(), ExchangeMode::Mixed).unwrap();
            let mut got = take_collected::<String>(&sink);
            got.sort();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn collection_sequence_and_generator_sources_split_by_index() {
        let data = Arc::new(Mutex::new((0..10u32).collect::<Vec<_>>()));
        let parts = drain(3, || CollectionSource::new(data.clone())).unwrap();
        assert_eq!(parts, vec![vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);

        let parts = drain(2, || SequenceSource::new(2, 7)).unwrap();
        assert_eq!(parts, vec![vec![2, 4, 6], vec![3, 5, 7]]);
        assert!(drain(2, || SequenceSource::new(5, 4))
            .unwrap()
            .iter()
            .all(Vec::is_empty));
        let parts = drain(1, || SequenceSource::new(u64::MAX - 1, u64::MAX)).unwrap();
        assert_eq!(parts, vec![vec![u64::MAX - 1, u64::MAX]]);

        let f = Arc::new(|_: &mut SplitMix64, n: u64| n);
        let parts = drain(2, || GeneratorSource::new(Some(5), 1, f.clone())).unwrap();
        assert_eq!(parts, vec![vec![0, 2, 4], vec![1, 3]]);

        let mut unbounded = GeneratorSource::new(None, 1, f.clone());
        unbounded.open(&ctx(0, 1)).unwrap();
        let mut out = Vec::new();
        for _ in 0..10 {
            assert_eq!(unbounded.poll_next(&mut out, 100), Ok(SourceStatus::More));
        }
        assert_eq!(out.len(), 1000);
    }

    /// Polls `source` to the end in polls of up to `poll` records.
    fn run_to_end<T, S: SourceFunction<T>>(source: &mut S, poll: usize, out: &mut Vec<T>) {
        for _ in 0..100_000 {
            if source.poll_next(out, poll).unwrap() == SourceStatus::Finished {
                return;
            }
        }
        panic!("source does not finish");
    }

    /// For every subtask of `parallelism` and every cut `n`: `n` records, a snapshot, then the
    /// rest; a fresh source restored from the snapshot emits exactly the rest.
    fn check_replay<T, S>(parallelism: u32, make: impl Fn() -> S)
    where
        T: Clone + PartialEq + std::fmt::Debug,
        S: SourceFunction<T>,
    {
        for subtask in 0..parallelism {
            let mut whole = make();
            whole.open(&ctx(subtask, parallelism)).unwrap();
            let mut full = Vec::new();
            run_to_end(&mut whole, 4, &mut full);
            for n in 0..=full.len() {
                let mut first = make();
                first.open(&ctx(subtask, parallelism)).unwrap();
                let mut before = Vec::new();
                while before.len() < n {
                    let want = (n - before.len()).min(3);
                    first.poll_next(&mut before, want).unwrap();
                }
                assert_eq!(before.len(), n);
                let snapshot = first.snapshot_state().unwrap();
                // Taking a snapshot does not disturb the running source.
                let mut continued = before.clone();
                run_to_end(&mut first, 2, &mut continued);
                assert_eq!(continued, full, "subtask {subtask}, cut {n}, continued");
                // The snapshot of a finished source restores to a finished source.
                let end = first.snapshot_state().unwrap();

                let mut restored = make();
                restored.restore_state(&snapshot).unwrap();
                restored.open(&ctx(subtask, parallelism)).unwrap();
                let mut replay = before;
                run_to_end(&mut restored, 5, &mut replay);
                assert_eq!(replay, full, "subtask {subtask}, cut {n}, restored");

                let mut finished = make();
                finished.restore_state(&end).unwrap();
                finished.open(&ctx(subtask, parallelism)).unwrap();
                let mut nothing = Vec::new();
                run_to_end(&mut finished, 5, &mut nothing);
                assert!(nothing.is_empty(), "subtask {subtask}: {nothing:?}");
            }
        }
    }

    /// Restoring arbitrary bytes and opening fails or works, never panics.
    fn check_garbage<T, S: SourceFunction<T>>(make: impl Fn() -> S) {
        let mut rng = SplitMix64::new(99);
        for _ in 0..300 {
            let len = rng.gen_range(40) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let mut source = make();
            if source.restore_state(&bytes).is_ok() && source.open(&ctx(1, 2)).is_ok() {
                let _ = source.poll_next(&mut Vec::new(), 10);
            }
        }
    }

    #[test]
    fn collection_sequence_and_generator_sources_replay_from_a_snapshot() {
        let data = Arc::new(Mutex::new((0..23u32).collect::<Vec<_>>()));
        for p in [1, 3] {
            check_replay(p, || CollectionSource::new(data.clone()));
            check_replay(p, || SequenceSource::new(100, 140));
            let f = Arc::new(|rng: &mut SplitMix64, n: u64| (n, rng.next_u64()));
            check_replay(p, || GeneratorSource::new(Some(29), 5, f.clone()));
        }
        check_replay(2, || SequenceSource::new(u64::MAX - 6, u64::MAX));
        check_garbage(|| CollectionSource::new(data.clone()));
        check_garbage(|| SequenceSource::new(1, 10));
        let f = Arc::new(|_: &mut SplitMix64, n: u64| n);
        check_garbage(|| GeneratorSource::new(Some(10), 1, f.clone()));
        assert!(SequenceSource::new(1, 2)
            .restore_state(&[1, 2, 3])
            .unwrap_err()
            .contains("malformed sequence source state"));
    }

    #[test]
    fn an_unbounded_generator_continues_after_a_restore() {
        let f = Arc::new(|rng: &mut SplitMix64, n: u64| (n, rng.next_u64()));
        let mut first = GeneratorSource::new(None, 7, f.clone());
        first.open(&ctx(1, 3)).unwrap();
        let mut before = Vec::new();
        first.poll_next(&mut before, 50).unwrap();
        let snapshot = first.snapshot_state().unwrap();
        let mut expected = Vec::new();
        first.poll_next(&mut expected, 40).unwrap();
        let mut restored = GeneratorSource::new(None, 7, f);
        restored.restore_state(&snapshot).unwrap();
        restored.open(&ctx(1, 3)).unwrap();
        let mut after = Vec::new();
        restored.poll_next(&mut after, 40).unwrap();
        assert_eq!(after, expected);
        assert_eq!(after[0].0, 50 * 3 + 1);
    }

    #[test]
    fn text_source_replays_from_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        write_fixture(dir.path());
        for split_size in [1, 7, 64, 1 << 20] {
            for p in [1, 2] {
                check_replay(p, || {
                    TextFileSource::new(dir.path().to_path_buf(), split_size)
                });
            }
        }
        let file = dir.path().join("e.txt");
        check_replay(1, || TextFileSource::new(file.clone(), 16));
        check_garbage(|| TextFileSource::new(dir.path().to_path_buf(), 7));

        // A snapshot taken on other input (another number of splits) is refused at open.
        let mut first = TextFileSource::new(dir.path().to_path_buf(), 7);
        first.open(&ctx(0, 1)).unwrap();
        first.poll_next(&mut Vec::new(), 5).unwrap();
        let snapshot = first.snapshot_state().unwrap();
        let mut other = TextFileSource::new(dir.path().to_path_buf(), 64);
        other.restore_state(&snapshot).unwrap();
        assert!(other
            .open(&ctx(0, 1))
            .unwrap_err()
            .contains("the input changed"));
    }

    #[test]
    fn socket_source_keeps_no_state() {
        let mut source = SocketTextSource::new("127.0.0.1".into(), 9);
        assert_eq!(source.snapshot_state(), Ok(Vec::new()));
        assert_eq!(source.restore_state(b"anything"), Ok(()));
    }

    #[test]
    fn socket_source_reads_lines_until_the_peer_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"hello\r\nworld\npart").unwrap();
            std::thread::sleep(Duration::from_millis(250));
            conn.write_all(b"ial\nlast").unwrap();
        });
        let mut source = SocketTextSource::new("127.0.0.1".into(), port);
        source.open(&ctx(0, 1)).unwrap();
        let mut out = Vec::new();
        let mut idle = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "socket source did not finish"
            );
            match source.poll_next(&mut out, 2).unwrap() {
                SourceStatus::Finished => break,
                SourceStatus::Idle => idle += 1,
                SourceStatus::More => {}
            }
        }
        server.join().unwrap();
        assert_eq!(out, vec!["hello", "world", "partial", "last"]);
        assert!(idle >= 1, "a read timeout shows as Idle");
        source.close();
    }

    #[test]
    fn socket_source_reports_connection_errors() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut source = SocketTextSource::new("127.0.0.1".into(), port);
        assert!(source
            .open(&ctx(0, 1))
            .unwrap_err()
            .contains("cannot connect"));
        let mut unopened = SocketTextSource::new("127.0.0.1".into(), port);
        assert!(unopened.poll_next(&mut Vec::new(), 1).is_err());
    }
}
