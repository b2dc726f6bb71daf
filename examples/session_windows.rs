//! Event-time session windows on the embedded, in-process cluster: sessions per user over
//! out-of-order `user timestamp_ms` lines, with late events to a side output.
//!
//! ```text
//! cargo run --release --example session_windows -- --input FILE --output FILE --late-output FILE
//! ```
//!
//! The arguments go to the `session-windows` job of `rflink-examples` (`--gap MS`,
//! `--out-of-orderness MS`, `--allowed-lateness MS`, `--parallelism N`; built-in sample events
//! without `--input`); on a cluster: `rflink -m HOST:8081 run --example session-windows ...`.

mod local;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    local::run(
        "session-windows",
        "Session windows",
        "usage: session_windows [--input FILE|DIR]... [--output FILE] [--late-output FILE] \
         [--gap MS] [--out-of-orderness MS] [--allowed-lateness MS] [--parallelism N]\n\
         Prints `user start end count` per session (to --output) and the events too late for \
         any session as `user timestamp` (to --late-output).",
    )
}
