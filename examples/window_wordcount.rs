//! Flink's WindowWordCount on the embedded, in-process cluster: word counts over sliding count
//! windows (every `--slide` occurrences of a word, the count of its last `--window`).
//!
//! ```text
//! cargo run --release --example window_wordcount -- --input FILE --output FILE --window 250 --slide 150
//! ```
//!
//! The arguments go to the `window-wordcount` job of `rflink-examples`; on a cluster:
//! `rflink -m HOST:8081 run --example window-wordcount ...`.

mod local;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    local::run(
        "window-wordcount",
        "WindowWordCount",
        "usage: window_wordcount [--input FILE|DIR]... [--output FILE] [--window N] [--slide N] \
         [--parallelism N]\n\
         Every --slide (150) occurrences of a word, prints the count of its last --window (250) \
         occurrences as `word count` (to --output, or printed).",
    )
}
