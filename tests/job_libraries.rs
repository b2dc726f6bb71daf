//! Job libraries on a cluster of real `rflink-node` processes: jobs that were not compiled into
//! the nodes, built as `cdylib`s (the template `examples/job-template`, the test library
//! `tests/jobs/test-jobs`), submitted with `rflink run LIBRARY.so` (multipart upload to the
//! JobManager, BlobServer, fetched and loaded by the TaskManagers), and every kind of bad
//! artifact refused with its own error while the cluster goes on serving.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rflink_runtime::client::build_library_job_graph;
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::library::JobLibrary;
use rflink_runtime::rest::client::RestClientError;
use rflink_runtime::types::JobId;
use support::{job_libraries, Cluster};

/// Every step's deadline: far above what each takes, so only a real hang fails.
const WAIT: Duration = Duration::from_secs(60);

fn library(name: &str) -> PathBuf {
    job_libraries().join(format!("lib{name}.so"))
}

fn text(lines: usize, salt: usize) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "The quick fox{} jumps over the lazy dog{}; THE end {}\n",
                i % 7,
                (i + salt) % 4,
                salt
            )
        })
        .collect()
}

fn letter_counts(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for c in text.chars().filter(char::is_ascii_alphabetic) {
        *counts
            .entry(c.to_ascii_lowercase().to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// The `key count` lines a sink wrote.
fn parse_counts(path: &Path) -> BTreeMap<String, u64> {
    let written = std::fs::read_to_string(path).expect("the sink wrote its file");
    rflink_examples::parse_counts(&written).expect("`key count` lines")
}

fn s(list: &[&str]) -> Vec<String> {
    list.iter().map(|x| x.to_string()).collect()
}

fn job_id_in(stdout: &str) -> JobId {
    stdout
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("a job id in {stdout:?}"))
}

async fn started(task_managers: usize, slots: u32) -> Cluster {
    let cluster = Cluster::start(task_managers, slots, &[]);
    cluster
        .wait_for_task_managers(task_managers as u32, WAIT)
        .await;
    cluster
}

#[actix_rt::test]
async fn a_library_job_runs_on_the_cluster_and_logs_through_its_task_managers() {
    let template = library("rflink_job_template");
    let cluster = started(2, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    let output = dir.path().join("output.txt");
    let input_text = text(2000, 1);
    std::fs::write(&input, &input_text).expect("write");

    let (code, stdout, stderr) = cluster.cli(
        &s(&[
            "run",
            &template.display().to_string(),
            "--input",
            &input.display().to_string(),
            "--output",
            &output.display().to_string(),
            "--parallelism",
            "3",
        ]),
        WAIT,
    );
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        cluster.logs()
    );
    assert!(stdout.contains("FINISHED"), "{stdout}");
    assert_eq!(
        parse_counts(&output),
        rflink_examples::count_words(&input_text)
    );
    // The library's tracing event reached the TaskManagers' logs, under the node's logging.
    let tm_logs: String = cluster.tms.iter().map(|tm| tm.logs()).collect();
    assert!(
        tm_logs.contains("job template: counting the words of"),
        "{tm_logs}"
    );
    // Each TaskManager loaded the library once, however many of its tasks run it.
    for tm in &cluster.tms {
        let loads = tm.logs().matches("job library loaded").count();
        assert!(loads <= 1, "{loads} loads in {}", tm.logs());
    }
    assert!(tm_logs.contains("job library loaded"), "{tm_logs}");

    // Jobs compiled into rflink-node still run beside library jobs.
    let counts = cluster.run_wordcount("to be or not to be", &[], WAIT);
    assert_eq!(counts.get("to"), Some(&2));
}

#[actix_rt::test]
async fn bad_libraries_are_refused_each_with_its_own_error_and_the_cluster_goes_on() {
    let template = library("rflink_job_template");
    let foreign = library("rflink_test_foreign_build");
    let mut cluster = started(1, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    std::fs::write(&input, text(50, 2)).expect("write");
    let input = input.display().to_string();
    let run = |library: &Path| {
        cluster.cli(
            &s(&["run", &library.display().to_string(), "--input", &input]),
            WAIT,
        )
    };

    // The client refuses what it cannot load, with the library's own error (exit 2).
    let good_bytes = std::fs::read(&template).expect("read");
    let truncated = dir.path().join("libtruncated.so");
    std::fs::write(&truncated, &good_bytes[..good_bytes.len() / 2]).expect("write");
    let not_elf = dir.path().join("libnotes.so");
    std::fs::write(&not_elf, "just some text, not a library").expect("write");
    let mut other_arch = good_bytes.clone();
    let machine: u16 = if std::env::consts::ARCH == "x86_64" {
        183
    } else {
        62
    };
    other_arch[18..20].copy_from_slice(&machine.to_le_bytes());
    let other_arch_path = dir.path().join("libotherarch.so");
    std::fs::write(&other_arch_path, &other_arch).expect("write");
    let not_a_job_library = PathBuf::from(env!("CARGO_BIN_EXE_rflink"));
    // The template with its entry point's name changed in every symbol table: the note is
    // there, the entry point is not.
    let mut no_entry = good_bytes.clone();
    let name = b"rflink_plugin_entry\0";
    let mut renamed = 0;
    for at in 0..no_entry.len().saturating_sub(name.len()) {
        if &no_entry[at..at + name.len()] == name {
            no_entry[at + name.len() - 2] = b'z';
            renamed += 1;
        }
    }
    assert!(renamed > 0, "the entry point's name is in the file");
    let no_entry_path = dir.path().join("libnoentry.so");
    std::fs::write(&no_entry_path, &no_entry).expect("write");
    for (path, needle) in [
        (foreign.as_path(), "rflink 0.0.1 / rustc 1.70.0"),
        (truncated.as_path(), "is truncated"),
        (not_elf.as_path(), "is not a shared library"),
        (other_arch_path.as_path(), "is built for aarch64"),
        (not_a_job_library.as_path(), "is not an rflink job library"),
        (no_entry_path.as_path(), "has no entry point"),
    ] {
        let (code, stdout, stderr) = run(path);
        assert_eq!(code, 2, "{path:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        if !(std::env::consts::ARCH != "x86_64" && needle.contains("aarch64")) {
            assert!(stderr.contains(needle), "{path:?}: {needle:?} in {stderr}");
        }
    }
    let (_, _, stderr) = run(&foreign);
    assert!(
        stderr.contains(rflink::abi::BUILD_FINGERPRINT),
        "both builds named: {stderr}"
    );

    // The JobManager checks every upload itself, whatever the client did: a graph built from
    // the good library but uploaded with other bytes (matching checksums) is refused by
    // inspection, and bytes that do not match the declared checksum are a corrupt upload.
    let loaded = JobLibrary::load(&template).expect("loads");
    let args = s(&["--input", &input]);
    let refused = |bytes: &[u8]| {
        let graph = build_library_job_graph(&loaded, bytes, "wordcount", &args).expect("builds");
        (graph, bytes.to_vec())
    };
    let foreign_bytes = std::fs::read(&foreign).expect("read");
    for (bytes, needle) in [
        (foreign_bytes.clone(), "rflink 0.0.1 / rustc 1.70.0"),
        (good_bytes[..good_bytes.len() / 2].to_vec(), "is truncated"),
        (b"garbage".to_vec(), "is not a shared library"),
    ] {
        let (graph, bytes) = refused(&bytes);
        let err = cluster
            .rest
            .submit_job_with_library(&graph, &bytes)
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains(needle), "{needle:?} in {text}");
        assert!(
            matches!(&err, RestClientError::Status { code: 400, .. }),
            "{err:?}"
        );
    }
    let (graph, _) = refused(&good_bytes);
    let mut flipped = good_bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let err = cluster
        .rest
        .submit_job_with_library(&graph, &flipped)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(cluster.rest.job_ids().await.expect("jobs").is_empty());

    // And it still runs a good library job.
    let output = dir.path().join("out.txt");
    let (code, stdout, stderr) = cluster.cli(
        &s(&[
            "run",
            &template.display().to_string(),
            "--input",
            &input,
            "--output",
            &output.display().to_string(),
        ]),
        WAIT,
    );
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        cluster.logs()
    );
    assert_eq!(
        parse_counts(&output),
        rflink_examples::count_words(&std::fs::read_to_string(&input).expect("read"))
    );
    assert!(cluster.jm.is_running());
    assert!(cluster.tms[0].is_running());
}

#[actix_rt::test]
async fn two_libraries_run_side_by_side_and_a_panicking_one_fails_alone() {
    let template = library("rflink_job_template").display().to_string();
    let tests = library("rflink_test_jobs").display().to_string();
    let mut cluster = started(2, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let words_text = text(600, 3);
    let letters_text = text(500, 4);
    std::fs::write(path("words.txt"), &words_text).expect("write");
    std::fs::write(path("letters.txt"), &letters_text).expect("write");
    std::fs::write(path("panic.txt"), "one\ntwo\nboom\nthree\n").expect("write");

    let submit = |args: Vec<String>| {
        let mut all = s(&["run", "-d"]);
        all.extend(args);
        let (code, stdout, stderr) = cluster.cli(&all, WAIT);
        assert_eq!(code, 0, "{all:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        job_id_in(&stdout)
    };
    let words = submit(s(&[
        &template,
        "--input",
        &path("words.txt"),
        "--output",
        &path("words.out"),
        "--parallelism",
        "2",
    ]));
    // Held RUNNING (its records wait for the gate file) until the other library's job is done.
    let letters = submit(s(&[
        &tests,
        "--class",
        "letter-count",
        "--input",
        &path("letters.txt"),
        "--output",
        &path("letters.out"),
        "--wait-for",
        &path("gate"),
    ]));
    let panics = submit(s(&[
        &tests,
        "--class",
        "panic-on",
        "--input",
        &path("panic.txt"),
        "--output",
        &path("panic.out"),
        "--word",
        "boom",
        "--lines-per-second",
        "10",
    ]));
    let deadline = Instant::now() + WAIT;
    let panic_status = cluster
        .wait_for_job_status(panics, JobStatus::is_globally_terminal, deadline)
        .await;
    assert_eq!(panic_status, JobStatus::Failed);
    let exceptions = cluster
        .rest
        .job_exceptions(panics)
        .await
        .expect("exceptions");
    let root = format!("{:?}", exceptions.exception_history.entries.first());
    assert!(root.contains("user code panicked"), "{root}");
    assert!(root.contains("panic-on met the word"), "{root}");

    // The template library's job runs to its end while the test library's job is RUNNING.
    let status = cluster
        .wait_for_job_status(words, JobStatus::is_globally_terminal, deadline)
        .await;
    assert_eq!(status, JobStatus::Finished, "{}", cluster.logs());
    let letters_status = cluster.rest.job_status(letters).await.expect("status");
    assert_eq!(letters_status, JobStatus::Running, "held by its gate");
    std::fs::write(path("gate"), "open").expect("open the gate");
    let status = cluster
        .wait_for_job_status(letters, JobStatus::is_globally_terminal, deadline)
        .await;
    assert_eq!(status, JobStatus::Finished, "{}", cluster.logs());
    assert_eq!(
        parse_counts(Path::new(&path("words.out"))),
        rflink_examples::count_words(&words_text)
    );
    assert_eq!(
        parse_counts(Path::new(&path("letters.out"))),
        letter_counts(&letters_text)
    );
    // Every TaskManager survived the panic and is still registered.
    for tm in &mut cluster.tms {
        assert!(tm.is_running());
    }
    let overview = cluster.rest.overview().await.expect("overview");
    assert_eq!(overview.taskmanagers, 2);
}

/// Event time through a job library on real processes: timestamps, watermarks and window timers
/// cross the C ABI and the network between two TaskManagers, and every window's count is exact.
#[actix_rt::test]
async fn a_library_job_with_event_time_windows_is_exact() {
    let library_path = library("rflink_test_jobs");
    let cluster = started(2, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    let output = dir.path().join("output.txt");
    let lines: Vec<(i64, String)> = text(3000, 5)
        .lines()
        .enumerate()
        .map(|(i, line)| ((i as i64) * 10 + ((i * 37) % 90) as i64, line.to_owned()))
        .collect();
    let file: String = lines.iter().map(|(ts, l)| format!("{ts} {l}\n")).collect();
    std::fs::write(&input, file).expect("write");
    let mut expected: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (ts, line) in &lines {
        let end = ts.div_euclid(1000) * 1000 + 1000;
        for c in line.chars().filter(char::is_ascii_alphabetic) {
            *expected
                .entry((c.to_ascii_lowercase().to_string(), end))
                .or_default() += 1;
        }
    }
    let (code, stdout, stderr) = cluster.cli(
        &s(&[
            "run",
            &library_path.display().to_string(),
            "--class",
            "letter-windows",
            "--input",
            &input.display().to_string(),
            "--output",
            &output.display().to_string(),
            "--parallelism",
            "2",
        ]),
        WAIT,
    );
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        cluster.logs()
    );
    let mut got: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for line in std::fs::read_to_string(&output).expect("output").lines() {
        let mut parts = line.split(' ');
        let (Some(letter), Some(end), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("not `letter end count`: {line:?}");
        };
        let previous = got.insert(
            (letter.to_owned(), end.parse().expect("end")),
            n.parse().expect("count"),
        );
        assert!(previous.is_none(), "window emitted twice: {line:?}");
    }
    assert_eq!(got, expected);
}
