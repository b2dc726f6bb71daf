//! The built-in sources, all in the pull model of [`SourceFunction`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Collector, SourceContext, SourceFunction, SourceStatus, SplitMix64};

/// How long a socket read may block before the poll returns `Idle`.
pub const SOCKET_READ_TIMEOUT: Duration = Duration::from_millis(100);

/// How long connecting a socket source may take.
const SOCKET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Subtask `i` of `p` takes elements `i, i + p, …` of a shared vector.
pub(crate) struct CollectionSource<T> {
    data: Arc<Mutex<Vec<T>>>,
    items: std::vec::IntoIter<T>,
}

impl<T> CollectionSource<T> {
    pub(crate) fn new(data: Arc<Mutex<Vec<T>>>) -> Self {
        CollectionSource {
            data,
            items: Vec::new().into_iter(),
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
                Some(item) => out.collect(item),
                None => return Ok(SourceStatus::Finished),
            }
        }
        Ok(if self.items.len() == 0 {
            SourceStatus::Finished
        } else {
            SourceStatus::More
        })
    }
}

/// `from..=to`, subtask `i` of `p` taking offsets `i, i + p, …`.
pub(crate) struct SequenceSource {
    from: u64,
    count: u128,
    next: u128,
    step: u128,
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
        }
    }
}

impl SourceFunction<u64> for SequenceSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), String> {
        self.next = u128::from(ctx.subtask_index);
        self.step = u128::from(ctx.parallelism.max(1));
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
pub(crate) struct GeneratorSource<F> {
    count: Option<u64>,
    seed: u64,
    f: Arc<F>,
    next: Option<u64>,
    step: u64,
}

impl<F> GeneratorSource<F> {
    pub(crate) fn new(count: Option<u64>, seed: u64, f: Arc<F>) -> Self {
        GeneratorSource {
            count,
            seed,
            f,
            next: Some(0),
            step: 1,
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
        self.next = Some(u64::from(ctx.subtask_index));
        self.step = u64::from(ctx.parallelism.max(1));
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

/// Reads the lines of the splits assigned to this subtask.
pub(crate) struct TextFileSource {
    path: PathBuf,
    split_size: u64,
    splits: VecDeque<FileSplit>,
    current: Option<SplitReader>,
    buf: Vec<u8>,
}

impl TextFileSource {
    pub(crate) fn new(path: PathBuf, split_size: u64) -> Self {
        TextFileSource {
            path,
            split_size,
            splits: VecDeque::new(),
            current: None,
            buf: Vec::new(),
        }
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
                    Some(split) => self.current.insert(SplitReader::open(&split)?),
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
