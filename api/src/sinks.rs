//! The built-in sinks.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::PathBuf;

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
pub(crate) struct TextFileSink<T> {
    path: PathBuf,
    file: PathBuf,
    writer: Option<BufWriter<File>>,
    _type: PhantomData<fn(T)>,
}

impl<T> TextFileSink<T> {
    pub(crate) fn new(path: PathBuf) -> Self {
        TextFileSink {
            file: path.clone(),
            path,
            writer: None,
            _type: PhantomData,
        }
    }

    fn io_error(&self, e: std::io::Error) -> String {
        format!("cannot write {}: {e}", self.file.display())
    }
}

impl<T: Display + Send + 'static> SinkFunction<T> for TextFileSink<T> {
    fn open(&mut self, ctx: &SinkContext) -> Result<(), String> {
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
        let Some(writer) = &mut self.writer else {
            return Err(format!("{}: written before open", self.file.display()));
        };
        let result = writeln!(writer, "{value}");
        result.map_err(|e| self.io_error(e))
    }

    fn finish(&mut self) -> Result<(), String> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        let result = writer.flush().and_then(|()| writer.get_ref().sync_data());
        result.map_err(|e| self.io_error(e))
    }

    fn close(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            let _ = writer.flush();
        }
    }
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

    #[test]
    fn print_prefixes_parallel_subtasks() {
        let mut sink = PrintSink::<u32>::new();
        sink.open(&SinkContext {
            subtask_index: 1,
            parallelism: 2,
            max_parallelism: 128,
            attempt_number: 0,
            task_name: "print".into(),
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
            })
            .unwrap();
        single.invoke(8).unwrap();
        assert_eq!(single.buf, b"8\n");
        single.buf.clear();
    }
}
