//! The built-in sinks, and [`read_committed_parts`] to read the output of the exactly-once
//! text sink.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::{SinkContext, SinkFunction};

/// How many bytes `print()` buffers before writing to stdout.
const PRINT_BUFFER: usize = 8 * 1024;

/// `print()`: `Display` lines to stdout, prefixed with `"{subtask + 1}> "` when parallel.
///
/// Lines are buffered and written in whole lines, so lines of different subtasks never mix.
pub(crate) struct PrintSink<T> {
    prefix: String,
    buf: Vec<u8>,
    _type: PhantomData<fn(T)>,
}

impl<T> PrintSink<T> {
    pub(crate) fn new() -> Self {
        PrintSink {
            prefix: String::new(),
            buf: Vec::new(),
            _type: PhantomData,
        }
    }

    fn write_out(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        let result = stdout.write_all(&self.buf).and_then(|()| stdout.flush());
        self.buf.clear();
        result.map_err(|e| format!("cannot print to stdout: {e}"))
    }
}

impl<T: Display + Send + 'static> SinkFunction<T> for PrintSink<T> {
    fn open(&mut self, ctx: &SinkContext) -> Result<(), String> {
        if ctx.parallelism > 1 {
            self.prefix = format!("{}> ", ctx.subtask_index + 1);
        }
        Ok(())
    }

    fn invoke(&mut self, value: T) -> Result<(), String> {
        // Writing into a Vec cannot fail.
        let _ = writeln!(self.buf, "{}{value}", self.prefix);
        if self.buf.len() >= PRINT_BUFFER {
            self.write_out()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        self.write_out()
    }

    fn flush(&mut self) -> Result<(), String> {
        self.write_out()
    }

    fn close(&mut self) {
        let _ = self.write_out();
    }
}

/// `write_as_text(path)`: one `Display` line per record.
///
/// Without checkpoints, one file (`path`, or `path/{subtask + 1}` when parallel) written
/// directly. With checkpoints ([`SinkContext::checkpointing`]), an exactly-once two-phase
/// commit sink over the directory `path` ([`PartFiles`]).
pub(crate) struct TextFileSink<T> {
    path: PathBuf,
    file: PathBuf,
    writer: Option<BufWriter<File>>,
    parts: Option<PartFiles>,
    restored: Option<PartState>,
    _type: PhantomData<fn(T)>,
}

impl<T> TextFileSink<T> {
    pub(crate) fn new(path: PathBuf) -> Self {
        TextFileSink {
            file: path.clone(),
            path,
            writer: None,
            parts: None,
            restored: None,
            _type: PhantomData,
        }
    }

    fn io_error(&self, e: std::io::Error) -> String {
        format!("cannot write {}: {e}", self.file.display())
    }
}

impl<T: Display + Send + 'static> SinkFunction<T> for TextFileSink<T> {
    fn open(&mut self, ctx: &SinkContext) -> Result<(), String> {
        if ctx.checkpointing {
            self.parts = Some(PartFiles::open(
                &self.path,
                ctx.subtask_index,
                ctx.attempt_number,
                self.restored.take(),
            )?);
            return Ok(());
        }
        self.file = if ctx.parallelism > 1 {
            std::fs::create_dir_all(&self.path)
                .map_err(|e| format!("cannot create directory {}: {e}", self.path.display()))?;
            self.path.join((ctx.subtask_index + 1).to_string())
        } else {
            self.path.clone()
        };
        let file = File::create(&self.file).map_err(|e| self.io_error(e))?;
        self.writer = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(())
    }

    fn invoke(&mut self, value: T) -> Result<(), String> {
        if let Some(parts) = &mut self.parts {
            return parts.write(&value);
        }
        let Some(writer) = &mut self.writer else {
            return Err(format!("{}: written before open", self.file.display()));
        };
        let result = writeln!(writer, "{value}");
        result.map_err(|e| self.io_error(e))
    }

    fn finish(&mut self) -> Result<(), String> {
        if let Some(parts) = &mut self.parts {
            // The final checkpoint pre-commits and commits the rest.
            return parts.flush();
        }
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        let result = writer.flush().and_then(|()| writer.get_ref().sync_data());
        result.map_err(|e| self.io_error(e))
    }

    fn snapshot_state(&mut self, checkpoint_id: u64) -> Result<Vec<u8>, String> {
        match &mut self.parts {
            Some(parts) => parts.snapshot(checkpoint_id),
            None => {
                if let Some(writer) = &mut self.writer {
                    let result = writer.flush();
                    result.map_err(|e| self.io_error(e))?;
                }
                Ok(Vec::new())
            }
        }
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            // The state of a sink that ran without checkpoints.
            return Ok(());
        }
        let restored = PartState::decode(state)?;
        // Only completed checkpoints are restored: what they pre-committed is committed now
        // (again, if the notification came through before the failure).
        for pending in &restored.pending {
            commit_part(&self.path, restored.subtask, pending)?;
        }
        if !restored.pending.is_empty() {
            sync_dir(&self.path)?;
        }
        self.restored = Some(PartState {
            pending: Vec::new(),
            ..restored
        });
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        match &mut self.parts {
            Some(parts) => parts.commit(checkpoint_id),
            None => Ok(()),
        }
    }

    fn close(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            let _ = writer.flush();
        }
        // An in-progress part file stays behind; the next attempt deletes it.
        self.parts = None;
    }
}

/// A part file pre-committed for a checkpoint, waiting for the checkpoint to complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingPart {
    checkpoint_id: u64,
    seq: u64,
    attempt: u32,
}

/// The checkpoint state of the text sink in checkpointing mode.
///
/// Encoded with [`crate::Codec`] as `(version: u8 = 1, subtask: u32, next_seq: u64,
/// pending: Vec<(checkpoint_id: u64, seq: u64, attempt: u32)>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartState {
    subtask: u32,
    next_seq: u64,
    pending: Vec<PendingPart>,
}

type EncodedPartState = (u8, u32, u64, Vec<(u64, u64, u32)>);

impl PartState {
    fn encode(&self) -> Vec<u8> {
        let encoded: EncodedPartState = (
            1,
            self.subtask,
            self.next_seq,
            self.pending
                .iter()
                .map(|p| (p.checkpoint_id, p.seq, p.attempt))
                .collect(),
        );
        crate::codec::encode_to_vec(&encoded)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (version, subtask, next_seq, pending) =
            crate::codec::decode_exact::<EncodedPartState>(bytes)
                .map_err(|e| format!("malformed text sink state: {e}"))?;
        if version != 1 {
            return Err(format!("unsupported text sink state version {version}"));
        }
        let pending: Vec<PendingPart> = pending
            .into_iter()
            .map(|(checkpoint_id, seq, attempt)| PendingPart {
                checkpoint_id,
                seq,
                attempt,
            })
            .collect();
        if pending.iter().any(|p| p.seq >= next_seq) {
            return Err(format!(
                "malformed text sink state: a pending part numbered at or after {next_seq}"
            ));
        }
        Ok(PartState {
            subtask,
            next_seq,
            pending,
        })
    }
}

/// The name of an in-progress (hidden, uncommitted) part file.
fn in_progress_name(subtask: u32, seq: u64, attempt: u32) -> String {
    format!(".part-{subtask}-{seq}.{attempt}.inprogress")
}

/// The name of a committed part file.
fn committed_name(subtask: u32, seq: u64) -> String {
    format!("part-{subtask}-{seq}")
}

/// A decimal number without sign or other characters.
fn parse_digits<N: std::str::FromStr>(text: &str) -> Option<N> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `(subtask, seq)` of a committed part file name.
fn parse_committed(name: &str) -> Option<(u32, u64)> {
    let (subtask, seq) = name.strip_prefix("part-")?.split_once('-')?;
    Some((parse_digits(subtask)?, parse_digits(seq)?))
}

/// `(subtask, seq, attempt)` of an in-progress part file name.
fn parse_in_progress(name: &str) -> Option<(u32, u64, u32)> {
    let rest = name.strip_prefix(".part-")?.strip_suffix(".inprogress")?;
    let (subtask, rest) = rest.split_once('-')?;
    let (seq, attempt) = rest.split_once('.')?;
    Some((
        parse_digits(subtask)?,
        parse_digits(seq)?,
        parse_digits(attempt)?,
    ))
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync directory {}: {e}", dir.display()))
}

/// Renames a pending part to its committed name. Idempotent: a part committed already is fine.
fn commit_part(dir: &Path, subtask: u32, pending: &PendingPart) -> Result<(), String> {
    let from = dir.join(in_progress_name(subtask, pending.seq, pending.attempt));
    let to = dir.join(committed_name(subtask, pending.seq));
    match std::fs::rename(&from, &to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.is_file() => Ok(()),
        Err(e) => Err(format!(
            "cannot commit {} of checkpoint {} as {}: {e}",
            from.display(),
            pending.checkpoint_id,
            to.display()
        )),
    }
}

/// The exactly-once text sink of one subtask: records go to an in-progress part file; a
/// checkpoint closes and fsyncs it and records it as pending; a completed checkpoint renames its
/// pending files to their committed names. Flink: `FileSink` with its bucket writer.
struct PartFiles {
    dir: PathBuf,
    subtask: u32,
    attempt: u32,
    next_seq: u64,
    current: Option<(u64, BufWriter<File>)>,
    pending: Vec<PendingPart>,
}

impl PartFiles {
    /// Opens the directory: creates it, deletes this subtask's in-progress files that no
    /// checkpoint holds (the output of a failed attempt) and continues the numbering after the
    /// restored state, or after the committed parts there are.
    fn open(
        dir: &Path,
        subtask: u32,
        attempt: u32,
        restored: Option<PartState>,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        if let Some(state) = &restored {
            if state.subtask != subtask {
                return Err(format!(
                    "the text sink state belongs to subtask {}, not {subtask}",
                    state.subtask
                ));
            }
        }
        let pending: Vec<PendingPart> = restored
            .as_ref()
            .map(|s| s.pending.clone())
            .unwrap_or_default();
        let list_error = |e: std::io::Error| format!("cannot list {}: {e}", dir.display());
        let mut next_committed = 0u64;
        let mut deleted = false;
        for entry in std::fs::read_dir(dir).map_err(list_error)? {
            let entry = entry.map_err(list_error)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((i, seq)) = parse_committed(name) {
                if i == subtask {
                    next_committed = next_committed.max(seq.saturating_add(1));
                }
            } else if let Some((i, seq, attempt)) = parse_in_progress(name) {
                let held = pending.iter().any(|p| p.seq == seq && p.attempt == attempt);
                if i == subtask && !held {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| format!("cannot delete {}: {e}", entry.path().display()))?;
                    deleted = true;
                }
            }
        }
        if deleted {
            sync_dir(dir)?;
        }
        Ok(PartFiles {
            dir: dir.to_path_buf(),
            subtask,
            attempt,
            next_seq: restored.map_or(next_committed, |s| s.next_seq),
            current: None,
            pending,
        })
    }

    fn write(&mut self, value: &dyn Display) -> Result<(), String> {
        if self.current.is_none() {
            let seq = self.next_seq;
            let path = self
                .dir
                .join(in_progress_name(self.subtask, seq, self.attempt));
            let file = File::create(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            self.next_seq += 1;
            self.current = Some((seq, BufWriter::with_capacity(64 * 1024, file)));
        }
        let Some((seq, writer)) = &mut self.current else {
            return Err("internal error: no in-progress part file".to_owned());
        };
        let seq = *seq;
        let result = writeln!(writer, "{value}");
        result.map_err(|e| self.write_error(seq, &e))
    }

    fn write_error(&self, seq: u64, e: &std::io::Error) -> String {
        format!(
            "cannot write {}: {e}",
            self.dir
                .join(in_progress_name(self.subtask, seq, self.attempt))
                .display()
        )
    }

    fn flush(&mut self) -> Result<(), String> {
        if let Some((seq, writer)) = &mut self.current {
            let seq = *seq;
            if let Err(e) = writer.flush() {
                return Err(self.write_error(seq, &e));
            }
        }
        Ok(())
    }

    /// Pre-commits: the in-progress file is flushed, fsynced, closed and pending for
    /// `checkpoint_id`. Returns the state to restore from.
    fn snapshot(&mut self, checkpoint_id: u64) -> Result<Vec<u8>, String> {
        if let Some((seq, mut writer)) = self.current.take() {
            let result = writer.flush().and_then(|()| writer.get_ref().sync_all());
            if let Err(e) = result {
                return Err(self.write_error(seq, &e));
            }
            drop(writer);
            // The file's directory entry must be durable before the checkpoint is.
            sync_dir(&self.dir)?;
            self.pending.push(PendingPart {
                checkpoint_id,
                seq,
                attempt: self.attempt,
            });
        }
        let state = PartState {
            subtask: self.subtask,
            next_seq: self.next_seq,
            pending: self
                .pending
                .iter()
                .filter(|p| p.checkpoint_id <= checkpoint_id)
                .copied()
                .collect(),
        };
        Ok(state.encode())
    }

    /// Commits the pending files of every checkpoint up to `checkpoint_id`.
    fn commit(&mut self, checkpoint_id: u64) -> Result<(), String> {
        let mut committed = false;
        for pending in &self.pending {
            if pending.checkpoint_id <= checkpoint_id {
                commit_part(&self.dir, self.subtask, pending)?;
                committed = true;
            }
        }
        self.pending.retain(|p| p.checkpoint_id > checkpoint_id);
        if committed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The committed output of a checkpointed `write_as_text(dir)`: the committed part files
/// (`part-{subtask}-{seq}`) of `dir` concatenated in (subtask, seq) order. In-progress and other
/// files are ignored.
///
/// # Errors
/// The directory or a part file cannot be read, or a part is not UTF-8.
pub fn read_committed_parts(dir: impl AsRef<Path>) -> std::io::Result<String> {
    let dir = dir.as_ref();
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((subtask, seq)) = parse_committed(name) {
            if entry.file_type()?.is_file() {
                parts.push((subtask, seq, entry.path()));
            }
        }
    }
    parts.sort();
    let mut text = String::new();
    for (_, _, path) in parts {
        text.push_str(&std::fs::read_to_string(path)?);
    }
    Ok(text)
}

/// `collect(name)`: appends records to the in-process registry of [`crate::testing`].
pub(crate) struct CollectSink<T> {
    name: String,
    buf: Vec<T>,
}

impl<T> CollectSink<T> {
    pub(crate) fn new(name: String) -> Self {
        CollectSink {
            name,
            buf: Vec::new(),
        }
    }
}

impl<T: Send + 'static> CollectSink<T> {
    fn publish(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        crate::testing::append_collected(&self.name, std::mem::take(&mut self.buf))
    }
}

impl<T: Send + 'static> SinkFunction<T> for CollectSink<T> {
    fn invoke(&mut self, value: T) -> Result<(), String> {
        self.buf.push(value);
        if self.buf.len() >= 1024 {
            self.publish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        self.publish()
    }

    fn flush(&mut self) -> Result<(), String> {
        self.publish()
    }

    fn close(&mut self) {
        let _ = self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{execute_locally, ExchangeMode};
    use crate::StreamExecutionEnvironment;

    fn sorted_lines(text: &str) -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    #[test]
    fn write_as_text_writes_a_file_or_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        for parallelism in [1u32, 3] {
            let out = dir.path().join(format!("out-{parallelism}"));
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(parallelism);
            env.generate_sequence(1, 50).write_as_text(&out);
            execute_locally(&env.stream_graph().unwrap(), ExchangeMode::Typed).unwrap();
            let text = if parallelism == 1 {
                std::fs::read_to_string(&out).unwrap()
            } else {
                let mut names: Vec<String> = std::fs::read_dir(&out)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                assert_eq!(names, vec!["1", "2", "3"]);
                names
                    .iter()
                    .map(|n| std::fs::read_to_string(out.join(n)).unwrap())
                    .collect()
            };
            let mut expected: Vec<String> = (1..=50).map(|i: u64| i.to_string()).collect();
            expected.sort();
            assert_eq!(sorted_lines(&text), expected);
        }
    }

    #[test]
    fn write_as_text_errors_are_returned() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        // A directory cannot be created where a file is.
        env.generate_sequence(1, 5).write_as_text(&blocker);
        let err = execute_locally(&env.stream_graph().unwrap(), ExchangeMode::Typed).unwrap_err();
        assert!(err.contains("cannot create directory"), "{err}");
    }

    fn sink_ctx(subtask_index: u32, attempt_number: u32) -> SinkContext {
        SinkContext {
            subtask_index,
            parallelism: 2,
            max_parallelism: 128,
            attempt_number,
            task_name: "text".into(),
            checkpointing: true,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn write_all(sink: &mut TextFileSink<String>, lines: &[&str]) {
        for line in lines {
            sink.invoke((*line).to_owned()).unwrap();
        }
    }

    #[test]
    fn two_phase_text_sink_commits_on_notification_only() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut sink = TextFileSink::<String>::new(out.clone());
        sink.open(&sink_ctx(1, 0)).unwrap();
        assert!(out.is_dir(), "the directory is created");
        write_all(&mut sink, &["a", "b"]);
        let s1 = sink.snapshot_state(1).unwrap();
        assert_eq!(read_committed_parts(&out).unwrap(), "");
        assert_eq!(names(&out), vec![".part-1-0.0.inprogress"]);
        write_all(&mut sink, &["c"]);
        sink.notify_checkpoint_complete(1).unwrap();
        assert_eq!(read_committed_parts(&out).unwrap(), "a\nb\n");
        // A repeated notification is harmless.
        sink.notify_checkpoint_complete(1).unwrap();
        let s2 = sink.snapshot_state(2).unwrap();
        // A checkpoint without new records pre-commits nothing.
        let s3 = sink.snapshot_state(3).unwrap();
        assert_eq!(
            PartState::decode(&s3).unwrap(),
            PartState::decode(&s2).unwrap()
        );
        sink.finish().unwrap();
        sink.notify_checkpoint_complete(3).unwrap();
        assert_eq!(read_committed_parts(&out).unwrap(), "a\nb\nc\n");
        assert_eq!(names(&out), vec!["part-1-0", "part-1-1"]);
        sink.close();
        assert!(PartState::decode(&s1).unwrap().pending.len() == 1);
        // The state of a sink without checkpoints restores to nothing.
        TextFileSink::<String>::new(out.clone())
            .restore_state(&[])
            .unwrap();
    }

    #[test]
    fn a_failed_attempt_leaves_no_committed_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_path_buf();
        // Attempt 0: checkpoint 1 pre-committed but its notification lost, then more output.
        let mut sink = TextFileSink::<String>::new(out.clone());
        sink.open(&sink_ctx(0, 0)).unwrap();
        write_all(&mut sink, &["one", "two"]);
        let s1 = sink.snapshot_state(1).unwrap();
        write_all(&mut sink, &["three"]);
        let _s2 = sink.snapshot_state(2).unwrap();
        write_all(&mut sink, &["four"]);
        sink.flush().unwrap();
        drop(sink); // crash: no close, no notification
        assert_eq!(read_committed_parts(&out).unwrap(), "");
        // Another subtask's files are left alone.
        std::fs::write(out.join(".part-1-0.0.inprogress"), "other\n").unwrap();
        std::fs::write(out.join("part-1-0"), "committed\n").unwrap();

        // Attempt 1 restores checkpoint 1 (the last completed one): its pending part is
        // committed, the rest of attempt 0 is deleted.
        let mut sink = TextFileSink::<String>::new(out.clone());
        sink.restore_state(&s1).unwrap();
        assert!(out.join("part-0-0").is_file());
        sink.open(&sink_ctx(0, 1)).unwrap();
        assert_eq!(
            names(&out),
            vec![".part-1-0.0.inprogress", "part-0-0", "part-1-0"]
        );
        write_all(&mut sink, &["three", "four"]);
        sink.snapshot_state(3).unwrap();
        assert_eq!(
            names(&out),
            vec![
                ".part-0-1.1.inprogress",
                ".part-1-0.0.inprogress",
                "part-0-0",
                "part-1-0"
            ]
        );
        sink.notify_checkpoint_complete(3).unwrap();
        sink.close();
        assert_eq!(
            read_committed_parts(&out).unwrap(),
            "one\ntwo\nthree\nfour\ncommitted\n"
        );

        // Restoring an already committed checkpoint again is idempotent.
        let mut again = TextFileSink::<String>::new(out.clone());
        again.restore_state(&s1).unwrap();
        // A state of another subtask is refused at open.
        assert!(again
            .open(&sink_ctx(1, 2))
            .unwrap_err()
            .contains("subtask 0, not 1"));
    }

    #[test]
    fn malformed_sink_states_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = TextFileSink::<String>::new(dir.path().to_path_buf());
        assert!(sink
            .restore_state(&[1, 2, 3])
            .unwrap_err()
            .contains("malformed"));
        // A pending part that is neither in progress nor committed cannot be committed.
        let lost = PartState {
            subtask: 0,
            next_seq: 5,
            pending: vec![PendingPart {
                checkpoint_id: 1,
                seq: 4,
                attempt: 0,
            }],
        };
        assert!(sink
            .restore_state(&lost.encode())
            .unwrap_err()
            .contains("cannot commit"));
        let bad = PartState {
            next_seq: 4,
            ..lost
        };
        assert!(PartState::decode(&bad.encode()).is_err());
        let mut rng = crate::SplitMix64::new(17);
        for _ in 0..500 {
            let len = rng.gen_range(48) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = PartState::decode(&bytes);
        }
    }

    #[test]
    fn part_file_names_parse_strictly() {
        assert_eq!(parse_committed("part-3-17"), Some((3, 17)));
        assert_eq!(parse_committed(&committed_name(2, 9)), Some((2, 9)));
        assert_eq!(parse_committed("part-+3-17"), None);
        assert_eq!(parse_committed("part-3-"), None);
        assert_eq!(parse_committed("part-3-1x"), None);
        assert_eq!(
            parse_in_progress(&in_progress_name(4, 5, 6)),
            Some((4, 5, 6))
        );
        assert_eq!(parse_in_progress(".part-4-5.inprogress"), None);
        assert_eq!(parse_in_progress("part-4-5.0.inprogress"), None);
        assert_eq!(parse_committed(&in_progress_name(1, 2, 3)), None);
    }

    /// A source and a text sink in one chain, run through a failure: the records after the
    /// last completed checkpoint are replayed by the source and written once.
    #[test]
    fn exactly_once_text_output_across_a_failure() {
        use crate::task::{CheckpointBarrier, VertexContext};
        use crate::SourceStatus;

        let barrier = |id: u64| CheckpointBarrier {
            id,
            timestamp: 0,
            savepoint: false,
        };
        for parallelism in [1u32, 2] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out");
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(parallelism);
            env.generate_sequence(0, 99).write_as_text(&out);
            let graph = env.stream_graph().unwrap();
            assert_eq!(graph.plan().vertices.len(), 1);
            let ctx = |subtask: u32, attempt: u32| VertexContext {
                subtask_index: subtask,
                parallelism,
                max_parallelism: 128,
                attempt_number: attempt,
                task_name: format!("chain {subtask}"),
                checkpointing: true,
            };
            for subtask in 0..parallelism {
                // Attempt 0: checkpoint 1 completes, checkpoint 2 does not, then a crash.
                let mut first = graph.instantiate(0, ctx(subtask, 0), Vec::new()).unwrap();
                first.open().unwrap();
                first.poll_source(7).unwrap();
                let s1 = first.snapshot(barrier(1)).unwrap();
                first.notify_checkpoint_complete(1).unwrap();
                first.poll_source(9).unwrap();
                first.snapshot(barrier(2)).unwrap();
                first.poll_source(11).unwrap();
                first.flush().unwrap();
                first.close();

                // Attempt 1 restores checkpoint 1 and runs to the end, with a final checkpoint.
                let mut second = graph.instantiate(0, ctx(subtask, 1), Vec::new()).unwrap();
                second.restore(&s1).unwrap();
                second.open().unwrap();
                while second.poll_source(5).unwrap() != SourceStatus::Finished {}
                second.end_input().unwrap();
                second.snapshot(barrier(3)).unwrap();
                second.notify_checkpoint_complete(3).unwrap();
                second.finish_outputs().unwrap();
                second.close();
            }
            let expected: String = (0..parallelism)
                .flat_map(|s| {
                    (0..100u64).filter(move |n| n % u64::from(parallelism) == u64::from(s))
                })
                .map(|n| format!("{n}\n"))
                .collect();
            assert_eq!(
                read_committed_parts(&out).unwrap(),
                expected,
                "p={parallelism}"
            );
            assert!(
                names(&out).iter().all(|n| !n.ends_with(".inprogress")),
                "{:?}",
                names(&out)
            );
        }
    }

    #[test]
    fn print_prefixes_parallel_subtasks() {
        let mut sink = PrintSink::<u32>::new();
        sink.open(&SinkContext {
            subtask_index: 1,
            parallelism: 2,
            max_parallelism: 128,
            attempt_number: 0,
            task_name: "print".into(),
            checkpointing: false,
        })
        .unwrap();
        sink.invoke(7).unwrap();
        assert_eq!(sink.buf, b"2> 7\n");
        sink.buf.clear();
        let mut single = PrintSink::<u32>::new();
        single
            .open(&SinkContext {
                subtask_index: 0,
                parallelism: 1,
                max_parallelism: 128,
                attempt_number: 0,
                task_name: "print".into(),
                checkpointing: false,
            })
            .unwrap();
        single.invoke(8).unwrap();
        assert_eq!(single.buf, b"8\n");
        single.buf.clear();
    }
}
