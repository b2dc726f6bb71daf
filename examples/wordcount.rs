//! WordCount on the embedded, in-process cluster (a MiniCluster with one TaskManager that has
//! as many slots as the job's parallelism), as Flink's WordCount runs in a local environment.
//!
//! ```text
//! cargo run --release --example wordcount -- --input FILE --output FILE --parallelism N
//! ```
//!
//! Every argument goes to the `wordcount` job of `rflink-examples` (see its docs): `--input`
//! (repeatable; a file or a directory; built-in text without it), `--output` (printed without
//! it), `--parallelism`. The same job runs on a cluster with
//! `rflink -m HOST:8081 run --example wordcount --input ...`.

mod local;

/// As in `rflink-node`: records allocated on one task thread are freed on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    local::run(
        "wordcount",
        "WordCount",
        "usage: wordcount [--input FILE|DIR]... [--output FILE] [--parallelism N]\n\
         Counts the words of the input (built-in text without --input) on an embedded cluster; \
         writes `word count` lines to --output, or prints them.",
    )
}
