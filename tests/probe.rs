//! `rflink-node --health-check HOST:PORT [--health-rest]`, the probe the compose healthchecks
//! run inside the scratch image: exit codes and reasons against a real JobManager, a closed
//! port and HTTP servers that answer something else than 200.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The probe's own timeouts are 2 s per step; this bounds a whole run.
const PROBE_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `rflink-node ARGS`, killed past [`PROBE_DEADLINE`].
fn node(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rflink-node"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rflink-node starts");
    let deadline = Instant::now() + PROBE_DEADLINE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("rflink-node {args:?} did not end within {PROBE_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn describe(out: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A one-shot HTTP server answering `status_line` to the first request; returns its address.
fn http_once(status_line: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "{status_line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    address
}

/// An address nothing listens on (bound, then released).
fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

#[test]
fn the_probe_passes_on_a_running_job_manager_and_needs_no_role() {
    let jm = support::Node::start(
        "jobmanager",
        &[
            "--role",
            "jm",
            "--rpc-port",
            "0",
            "--rest-port",
            "0",
            "--bind-host",
            "127.0.0.1",
        ]
        .map(String::from),
    );
    let rest = jm.ready("rest");
    let out = node(&["--health-check", &rest, "--health-rest"]);
    assert!(out.status.success(), "{}\n{}", describe(&out), jm.logs());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("healthy:"));
    // TCP only: the RPC port.
    let rpc = jm.ready("rpc_bind");
    let rpc = if rpc.is_empty() { jm.ready("rpc") } else { rpc };
    let out = node(&[&format!("--health-check={rpc}")]);
    assert!(out.status.success(), "{}\n{}", describe(&out), jm.logs());
}

#[test]
fn the_probe_fails_with_a_reason() {
    let closed = closed_address();
    for args in [
        vec!["--health-check", closed.as_str()],
        vec!["--health-check", closed.as_str(), "--health-rest"],
    ] {
        let out = node(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("cannot connect"), "{stderr}");
    }

    let not_found = http_once("HTTP/1.1 404 Not Found");
    let out = node(&["--health-check", &not_found, "--health-rest"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        describe(&out)
    );

    let ok = http_once("HTTP/1.1 200 OK");
    let out = node(&["--health-check", &ok, "--health-rest"]);
    assert!(out.status.success(), "{}", describe(&out));

    let out = node(&["--health-check", "no-port-here", "--health-rest"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // A bad probe command line is a usage error.
    let out = node(&["--health-check"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn advertised_host_from_hostname_sets_the_task_manager_host() {
    let out = node(&[
        "--role",
        "tm",
        "--advertised-host-from-hostname",
        "--check-config",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let host = stdout
        .lines()
        .find_map(|l| l.strip_prefix("taskmanager.host: "))
        .unwrap_or_else(|| panic!("taskmanager.host in {stdout}"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if !kernel.trim().is_empty() {
        assert_eq!(host, kernel.trim());
    }
    // With a wildcard bind and no taskmanager.host, the configuration would be rejected.
    let out = node(&[
        "--role",
        "tm",
        "--bind-host",
        "0.0.0.0",
        "--advertised-host-from-hostname",
        "--check-config",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = node(&[
        "--role",
        "tm",
        "--advertised-host-from-hostname",
        "--advertised-host",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}
