//! Two OS processes: the RPC between a parent test and a child node, and what the parent sees
//! when the child dies.
//!
//! There is no extra binary: the test binary re-executes itself as the child. `child_node` is a
//! test that returns at once unless `RFLINK_RPC_TEST_CHILD` is set; in the child it serves a
//! `TestEndpoint`, prints one `RFLINK_READY <address>` line and serves until its stdin closes (the
//! parent closes it for a graceful stop; it also closes if the parent dies, so a child never
//! outlives its test). The parent runs it through libtest's own arguments, which works the same
//! under `cargo test` and `cargo nextest run` (both run this binary).
//!
//! Every child is owned by a [`ChildNode`] guard that kills and reaps it on drop, so a failing
//! assertion leaks no process. Failure messages carry the child's output.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rflink_rpc::{RpcAddress, RpcError, RpcGateway, RpcService};
use support::*;

/// Set (to anything) in the environment of a child node.
const CHILD_ENV: &str = "RFLINK_RPC_TEST_CHILD";
/// The line a child prints once its endpoint is served, followed by the endpoint's address.
const READY: &str = "RFLINK_READY ";
/// The line a child prints after its service closed cleanly.
const BYE: &str = "RFLINK_BYE";
/// How long a child may take to start, or to exit once asked to.
const CHILD_DEADLINE: Duration = Duration::from_secs(30);
/// An ask timeout far beyond every `bounded` deadline: an ask that fails in time did not time out.
const LONG_ASK_TIMEOUT: Duration = Duration::from_secs(60);

// ---- the child side ----

/// The child node. A no-op in a normal test run; see the module docs.
#[test]
fn child_node() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    actix_rt::System::new().block_on(serve_until_stdin_closes());
}

async fn serve_until_stdin_closes() {
    let service = service().await;
    let (server, _probe) = start_test_endpoint(&service);

    // Reading stdin blocks, so a thread waits for its end and reports it to the runtime.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed_tx.send(());
    });

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}{}", server.address()).expect("child writes its ready line");
        out.flush().expect("child flushes its ready line");
    }

    let _ = closed_rx.await;
    service
        .close()
        .await
        .expect("the child's rpc service closes cleanly");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{BYE}").expect("child writes its goodbye line");
    out.flush().expect("child flushes its goodbye line");
}

// ---- the parent side ----

/// A running child process. Dropping it kills and reaps the child.
struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Everything the child wrote, line by line, tagged with the stream.
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl ChildProcess {
    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// SIGKILL (on unix), then reap, so the process is surely gone when this returns.
    fn kill(&mut self) {
        self.stdin.take();
        // Fails only if the child already exited, which is just as good.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the reader threads; they end at the pipes' EOF, i.e. once the child has exited.
    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child node serving a `TestEndpoint` at `address`.
struct ChildNode {
    process: ChildProcess,
    address: RpcAddress,
}

impl ChildNode {
    /// Starts a child node and waits (bounded) for its ready line.
    async fn spawn() -> ChildNode {
        let exe = std::env::current_exe().expect("the test binary knows its own path");
        let mut child = Command::new(exe)
            .args(["child_node", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the test binary re-executes itself as a child node");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let stderr = child.stderr.take().expect("the child's stderr is piped");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        let readers = vec![
            read_lines("stdout", stdout, Arc::clone(&output), Some(ready_tx)),
            read_lines("stderr", stderr, Arc::clone(&output), None),
        ];
        // From here on the guard owns the child: a panic below kills it.
        let process = ChildProcess {
            child,
            stdin,
            output,
            readers,
        };
        let line = match tokio::time::timeout(CHILD_DEADLINE, ready_rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => panic!(
                "the child node exited before it was ready; its output:\n{}",
                process.output()
            ),
            Err(_) => panic!(
                "the child node was not ready within {CHILD_DEADLINE:?}; its output:\n{}",
                process.output()
            ),
        };
        let address = line.parse::<RpcAddress>().unwrap_or_else(|err| {
            panic!(
                "the child's ready line {line:?} holds no address: {err}; its output:\n{}",
                process.output()
            )
        });
        ChildNode { process, address }
    }

    fn address(&self) -> &RpcAddress {
        &self.address
    }

    fn output(&self) -> String {
        self.process.output()
    }

    /// SIGKILLs the child and reaps it.
    fn kill(&mut self) {
        self.process.kill();
    }

    /// Closes the child's stdin, its signal to stop gracefully, and waits (bounded) for its exit.
    async fn shut_down(&mut self) -> ExitStatus {
        self.process.stdin.take();
        let deadline = tokio::time::Instant::now() + CHILD_DEADLINE;
        loop {
            match self.process.child.try_wait() {
                Ok(Some(status)) => {
                    self.process.join_readers();
                    return status;
                }
                Ok(None) => {}
                Err(err) => panic!("waiting for the child failed: {err}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child did not exit within {CHILD_DEADLINE:?} of its stdin closing; its \
                 output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Connects `service` to the child's endpoint, with the long ask timeout.
    async fn connect(&self, service: &RpcService) -> RpcGateway<TestEndpoint> {
        match bounded("connect", service.connect::<TestEndpoint>(self.address())).await {
            Ok(gateway) => gateway.with_ask_timeout(LONG_ASK_TIMEOUT),
            Err(err) => panic!(
                "connecting to the child at {} failed: {err}; its output:\n{}",
                self.address(),
                self.output()
            ),
        }
    }
}

/// Copies `stream` into `output` line by line on a thread; the first ready line goes to `ready`.
fn read_lines(
    tag: &'static str,
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<Vec<String>>>,
    mut ready: Option<tokio::sync::oneshot::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            // libtest may have printed `test child_node ... ` on the same line, without a newline.
            if let Some(at) = line.find(READY) {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(line[at + READY.len()..].trim().to_string());
                }
            }
            output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("[child {tag}] {line}"));
        }
        // Dropping an unused `ready` tells the parent the child ended without being ready.
    })
}

/// Asserts that `result` is `RecipientUnreachable` for `message` at `node`'s endpoint.
fn assert_unreachable<T: std::fmt::Debug>(
    result: Result<T, RpcError>,
    node: &ChildNode,
    message: &str,
) {
    match result {
        Err(RpcError::RecipientUnreachable {
            recipient,
            message: failed,
            reason,
        }) => {
            assert_eq!(recipient, node.address().to_string(), "reason: {reason}");
            assert_eq!(failed, message, "reason: {reason}");
        }
        other => panic!(
            "expected RecipientUnreachable for {message} at {}, got {other:?}; the child's \
             output:\n{}",
            node.address(),
            node.output()
        ),
    }
}

// ---- the tests ----

#[actix_rt::test]
async fn asks_and_tells_cross_processes() {
    let mut node = ChildNode::spawn().await;
    let service = service().await;
    let gw = node.connect(&service).await;
    assert!(!gw.is_local());

    assert_eq!(
        bounded("echo", gw.ask(Echo("across processes".into()))).await,
        Ok("across processes".to_string()),
        "child output:\n{}",
        node.output()
    );
    for i in 1..=1000 {
        gw.tell(Add(i)).expect("tell queued");
    }
    // One ordered connection: the total is read after every add.
    assert_eq!(bounded("total", gw.ask(Total)).await, Ok(500_500));
    // The endpoint's own error comes back typed from the other process.
    assert_eq!(
        bounded(
            "fail",
            gw.ask(Fail {
                code: 7,
                asynchronously: false,
            })
        )
        .await,
        Ok(Err(TestError::Refused(7)))
    );
    assert_eq!(service.stats().open_connections, 1);

    // Graceful stop: the child closes its service and exits with success.
    let status = node.shut_down().await;
    assert!(
        status.success(),
        "the child exited with {status}; its output:\n{}",
        node.output()
    );
    assert!(
        node.output().contains(BYE),
        "the child did not report a clean close; its output:\n{}",
        node.output()
    );
    // The node is gone: asks fail typed, and its connection is dropped.
    assert_unreachable(
        bounded("echo after exit", gw.ask(Echo("gone".into()))).await,
        &node,
        "Echo",
    );
    eventually("the connection to the exited child closes", || {
        service.stats().open_connections == 0
    })
    .await;
    bounded("close", service.close())
        .await
        .expect("service closes");
}

#[actix_rt::test]
async fn killed_process_fails_pending_and_new_asks_fast() {
    let mut node = ChildNode::spawn().await;
    let service = service().await;
    let gw = node.connect(&service).await;
    assert_eq!(gw.ask_timeout(), LONG_ASK_TIMEOUT);
    assert_eq!(service.stats().open_connections, 1);

    // The first poll of an ask on a pooled connection queues its request; then the task owns it.
    let slow_gw = gw.clone();
    let mut slow = Box::pin(async move {
        slow_gw
            .ask(SlowEcho {
                ms: 30_000,
                text: "never".into(),
            })
            .await
    });
    assert!(futures::poll!(&mut slow).is_pending());
    let slow = actix_rt::spawn(slow);
    // Same connection and mailbox, in order: once Echo is answered the child holds the SlowEcho.
    assert_eq!(
        bounded("echo", gw.ask(Echo("before the kill".into()))).await,
        Ok("before the kill".to_string())
    );
    assert!(!slow.is_finished(), "SlowEcho answered early");

    node.kill();

    // The pending ask fails as soon as the connection drops, not after its 60 s timeout.
    let pending = bounded("the in-flight ask", slow)
        .await
        .expect("the ask task does not panic");
    assert_unreachable(pending, &node, "SlowEcho");
    // A new ask redials, is refused, and fails at once too.
    assert_unreachable(
        bounded("an ask after the kill", gw.ask(Echo("after".into()))).await,
        &node,
        "Echo",
    );
    eventually("the connection to the killed child closes", || {
        service.stats().open_connections == 0
    })
    .await;
    bounded("close", service.close())
        .await
        .expect("service closes");
}

#[actix_rt::test]
async fn restarted_process_is_reached_again() {
    let service = service().await;

    let mut first = ChildNode::spawn().await;
    let old_gw = first.connect(&service).await;
    assert_eq!(
        bounded("echo to the first child", old_gw.ask(Echo("one".into()))).await,
        Ok("one".to_string())
    );
    first.kill();
    assert_unreachable(
        bounded("echo to the killed child", old_gw.ask(Echo("x".into()))).await,
        &first,
        "Echo",
    );
    eventually("the connection to the killed child closes", || {
        service.stats().open_connections == 0
    })
    .await;

    // A new incarnation (on a new ephemeral port); the same service reaches it.
    let second = ChildNode::spawn().await;
    let gw = second.connect(&service).await;
    assert_eq!(
        bounded("echo to the second child", gw.ask(Echo("two".into()))).await,
        Ok("two".to_string()),
        "child output:\n{}",
        second.output()
    );
    for i in 1..=10 {
        gw.tell(Add(i)).expect("tell queued");
    }
    assert_eq!(bounded("total", gw.ask(Total)).await, Ok(55));
    let again = bounded(
        "echo to the killed child again",
        old_gw.ask(Echo("y".into())),
    )
    .await;
    if second.address() == first.address() {
        // The OS happened to hand the freed port to the new child: the old gateway redials and
        // reaches the new incarnation of the same endpoint.
        assert_eq!(again, Ok("y".to_string()));
    } else {
        // The dead node stays dead without disturbing the live one.
        assert_unreachable(again, &first, "Echo");
    }
    assert_eq!(
        bounded(
            "echo to the second child again",
            gw.ask(Echo("three".into()))
        )
        .await,
        Ok("three".to_string())
    );
    eventually("only the live child's connection stays open", || {
        service.stats().open_connections == 1
    })
    .await;
    assert_eq!(service.stats().connections_established, 2);
    bounded("close", service.close())
        .await
        .expect("service closes");
}
