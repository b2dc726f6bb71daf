//! `rflink-bench`: benchmarks of rflink, each measured against a baseline in the same run.
//!
//! ```text
//! cargo run --release -p rflink-bench -- rpc [options]
//! cargo run --release -p rflink-bench -- submit [options]
//! cargo run --release -p rflink-bench -- wordcount [options]
//! cargo run --release -p rflink-bench -- windows [options]
//! cargo build --release -p rflink-job-template && cargo run --release -p rflink-bench -- library
//! cargo build --release -p rflink-dist && cargo run --release -p rflink-bench -- startup [options]
//! cargo build --release -p rflink-dist && cargo run --release -p rflink-bench -- recovery [options]
//! cargo build --release -p rflink-dist --features etcd &&
//!     cargo run --release -p rflink-bench -- failover-jm [options]
//! ```
//!
//! Every benchmark prints human-readable lines and ends with exactly one JSON object on the last
//! line of stdout, for scripts. Exit codes: 0 success, 1 the benchmark failed, 2 bad usage.

mod cli;
mod failover;
mod library;
mod node;
mod recovery;
mod rpc;
mod startup;
mod stats;
mod submit;
mod threads;
mod windows;
mod wordcount;

use std::process::ExitCode;

/// The same allocator as `rflink-node` and the WordCount example: records are allocated on one
/// task thread and freed on another, which glibc's malloc serves slowly (arena locks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The error type of everything that can fail while benchmarking.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A parsed command line.
enum Command {
    Help,
    Rpc(rpc::Options),
    Submit(submit::Options),
    Startup(startup::Options),
    Wordcount(wordcount::Options),
    Recovery(recovery::Options),
    FailoverJm(failover::Options),
    Library(library::Options),
    Windows(windows::Options),
}

/// The benchmarks, for the usage text. Add new subcommands here and in [`parse`].
const BENCHMARKS: &[(&str, &str)] = &[
    (
        "rpc",
        "remote ask latency and tell throughput of rflink-rpc on loopback, each against raw TCP",
    ),
    (
        "submit",
        "submit-to-RUNNING/FINISHED of no-op jobs on a warm MiniCluster, against Dispatcher asks",
    ),
    (
        "startup",
        "rflink-node JobManager/TaskManager start-to-ready and idle RSS, against process spawns",
    ),
    (
        "wordcount",
        "the wordcount example job on a MiniCluster (p=1, p=2), against a 1-thread Rust word count",
    ),
    (
        "library",
        "WordCount from the template job library (C ABI) against the same job compiled in",
    ),
    (
        "windows",
        "event-time tumbling-window word count (p=1, p=2), against a 1-thread hand-written loop",
    ),
    (
        "recovery",
        "kill -> running / first record after SIGKILL of a TaskManager; checkpointing on/off throughput",
    ),
    (
        "failover-jm",
        "kill -> running after SIGKILL of the leading JobManager (HA on etcd), against the lease TTL",
    ),
];

fn usage() -> String {
    let mut text = String::from("usage: rflink-bench <benchmark> [options]\n\nbenchmarks:\n");
    for (name, what) in BENCHMARKS {
        text.push_str(&format!("  {name:<11} {what}\n"));
    }
    text.push_str("\noptions of rpc:\n");
    text.push_str(rpc::OPTIONS_HELP);
    text.push_str("\n\noptions of submit:\n");
    text.push_str(submit::OPTIONS_HELP);
    text.push_str("\n\noptions of startup:\n");
    text.push_str(startup::OPTIONS_HELP);
    text.push_str("\n\noptions of wordcount:\n");
    text.push_str(wordcount::OPTIONS_HELP);
    text.push_str("\n\noptions of recovery:\n");
    text.push_str(recovery::OPTIONS_HELP);
    text.push_str("\n\noptions of failover-jm:\n");
    text.push_str(failover::OPTIONS_HELP);
    text.push_str("\n\noptions of library:\n");
    text.push_str(library::OPTIONS_HELP);
    text.push_str("\n\noptions of windows:\n");
    text.push_str(windows::OPTIONS_HELP);
    text.push_str("\n  -h, --help   show this help\n");
    text
}

fn parse(args: &[String]) -> Result<Command, String> {
    let Some((name, rest)) = args.split_first() else {
        return Err("no benchmark given".into());
    };
    if cli::wants_help(args) {
        return Ok(Command::Help);
    }
    match name.as_str() {
        "rpc" => rpc::Options::parse(rest).map(Command::Rpc),
        "submit" => submit::Options::parse(rest).map(Command::Submit),
        "startup" => startup::Options::parse(rest).map(Command::Startup),
        "wordcount" => wordcount::Options::parse(rest).map(Command::Wordcount),
        "recovery" => recovery::Options::parse(rest).map(Command::Recovery),
        "failover-jm" => failover::Options::parse(rest).map(Command::FailoverJm),
        "library" => library::Options::parse(rest).map(Command::Library),
        "windows" => windows::Options::parse(rest).map(Command::Windows),
        other => Err(format!("unknown benchmark {other:?}")),
    }
}

/// Logs of the in-process cluster go to stderr, only if `RUST_LOG` asks for them.
fn init_tracing() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&args) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("error: {problem}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            print!("{}", usage());
            Ok(())
        }
        Command::Rpc(options) => rpc::run(&options),
        Command::Submit(options) => {
            init_tracing();
            submit::run(&options)
        }
        Command::Startup(options) => startup::run(&options),
        Command::Wordcount(options) => {
            init_tracing();
            wordcount::run(&options)
        }
        Command::Recovery(options) => {
            init_tracing();
            recovery::run(&options)
        }
        Command::FailoverJm(options) => {
            init_tracing();
            failover::run(&options)
        }
        Command::Windows(options) => {
            init_tracing();
            windows::run(&options)
        }
        Command::Library(options) => {
            init_tracing();
            library::run(&options)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_or_missing_benchmark_is_a_usage_error() {
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["nosuch"])).is_err());
        assert!(parse(&args(&["--rounds", "3"])).is_err());
    }

    #[test]
    fn help_anywhere_is_help() {
        assert!(matches!(parse(&args(&["--help"])), Ok(Command::Help)));
        assert!(matches!(parse(&args(&["rpc", "-h"])), Ok(Command::Help)));
    }

    #[test]
    fn rpc_parses_its_options() {
        match parse(&args(&["rpc", "--rounds", "5", "--tells=1000"])) {
            Ok(Command::Rpc(o)) => {
                assert_eq!(o.rounds, 5);
                assert_eq!(o.tells, 1000);
                assert_eq!(o.payload, 100);
            }
            _ => panic!("expected rpc options"),
        }
        assert!(parse(&args(&["rpc", "--rounds"])).is_err());
        assert!(parse(&args(&["rpc", "--rounds", "x"])).is_err());
        assert!(parse(&args(&["rpc", "--rounds", "0"])).is_err());
        assert!(parse(&args(&["rpc", "--bogus", "1"])).is_err());
        assert!(parse(&args(&["rpc", "extra"])).is_err());
    }

    #[test]
    fn submit_parses_its_options() {
        match parse(&args(&["submit", "--jobs", "50", "--warmup=0"])) {
            Ok(Command::Submit(o)) => {
                assert_eq!((o.jobs, o.warmup, o.parallelism), (50, 0, 2));
                assert_eq!((o.task_managers, o.slots), (2, 2));
            }
            _ => panic!("expected submit options"),
        }
        assert!(parse(&args(&["submit", "--jobs", "0"])).is_err());
        // More parallelism than slots can never run.
        assert!(parse(&args(&["submit", "--parallelism", "5"])).is_err());
        assert!(parse(&args(&["submit", "--parallelism", "4"])).is_ok());
    }

    #[test]
    fn startup_parses_its_options() {
        match parse(&args(&["startup", "--rounds", "3", "--settle-ms", "0"])) {
            Ok(Command::Startup(o)) => assert_eq!((o.rounds, o.settle_ms), (3, 0)),
            _ => panic!("expected startup options"),
        }
        assert!(parse(&args(&["startup", "--rounds", "0"])).is_err());
    }

    #[test]
    fn wordcount_parses_its_options() {
        match parse(&args(&["wordcount", "--words", "200000", "--runs=1"])) {
            Ok(Command::Wordcount(o)) => {
                assert_eq!((o.words, o.vocab, o.runs), (200_000, 10_000, 1));
                assert!(o.keep_input.is_none());
            }
            _ => panic!("expected wordcount options"),
        }
        assert!(parse(&args(&["wordcount", "--runs", "0"])).is_err());
    }

    #[test]
    fn recovery_parses_its_options() {
        match parse(&args(&[
            "recovery",
            "--trials",
            "3",
            "--throughput-lines=0",
        ])) {
            Ok(Command::Recovery(o)) => {
                assert_eq!((o.trials, o.fast_trials, o.throughput_lines), (3, 5, 0));
            }
            _ => panic!("expected recovery options"),
        }
        assert!(parse(&args(&["recovery", "--trials", "0"])).is_err());
    }

    #[test]
    fn failover_jm_parses_its_options() {
        match parse(&args(&[
            "failover-jm",
            "--trials",
            "3",
            "--lease-ttl-ms=3000",
        ])) {
            Ok(Command::FailoverJm(o)) => {
                assert_eq!((o.trials, o.lease_ttl_ms, o.timeout_secs), (3, 3000, 60));
            }
            _ => panic!("expected failover-jm options"),
        }
        assert!(parse(&args(&["failover-jm", "--lease-ttl-ms", "999"])).is_err());
        assert!(parse(&args(&["failover-jm", "--trials", "0"])).is_err());
    }
}
