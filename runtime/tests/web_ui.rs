//! `web.ui.dir`: the JobManager's REST server serving a directory of static files (such as the
//! `web/` folder of Flink's `flink-dist` jar, Flink's own web UI) at `/` instead of the built-in
//! dashboard, on an in-process MiniCluster. The REST API keeps its paths; a path naming no file
//! is Flink's 404; `..` and encoded dots do not leave the directory.
//!
//! Requests are written by hand over TCP, so the paths reach the server exactly as written (an
//! HTTP client would normalize `/../` away).

use std::path::Path;
use std::time::Duration;

use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every request and the cluster's start, bounded.
const WAIT: Duration = Duration::from_secs(30);

const INDEX: &str = "<!doctype html><title>a web ui</title><script src=\"a.js\"></script>";
const SCRIPT: &str = "console.log('a.js');";

/// One answer: status, headers (names lower-cased) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `method path` over a fresh connection, the path sent byte for byte as given.
async fn request(address: std::net::SocketAddr, method: &str, path: &str) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Length: 0\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {WAIT:?}"));
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn cluster(ui_dir: Option<&Path>) -> (MiniCluster, std::net::SocketAddr) {
    let cluster = MiniCluster::start(MiniClusterConfig {
        rest: true,
        rest_ui_dir: ui_dir.map(Path::to_path_buf),
        ..MiniClusterConfig::default()
    })
    .await
    .expect("the cluster starts");
    cluster
        .wait_for_task_managers(1, WAIT)
        .await
        .expect("the task manager registers");
    let address = cluster.rest_address().expect("the REST server runs");
    (cluster, address)
}

/// Asserts Flink's 404 for `path` (`{"errors":["Unable to load requested file <path>."]}`,
/// where the path is the one the server routed).
fn assert_flink_404(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 404, "{what}: {}", answer.body);
    let errors = answer.json()["errors"].clone();
    let message = errors[0].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Unable to load requested file /") && message.ends_with('.'),
        "{what}: {}",
        answer.body
    );
}

#[actix_rt::test]
async fn a_ui_dir_is_served_at_the_root_next_to_the_rest_api() {
    let root = tempfile::tempdir().expect("tempdir");
    let ui = root.path().join("web");
    std::fs::create_dir_all(ui.join("assets")).expect("mkdir");
    std::fs::write(ui.join("index.html"), INDEX).expect("write");
    std::fs::write(ui.join("a.js"), SCRIPT).expect("write");
    std::fs::write(ui.join("assets/logo.svg"), "<svg/>").expect("write");
    std::fs::write(ui.join(".hidden"), "hidden-file-content").expect("write");
    // Beside the directory: what `..` would reach if it could leave it.
    std::fs::write(root.path().join("outside.txt"), "outside-file-content").expect("write");
    let (cluster, address) = cluster(Some(&ui)).await;

    // `/` is the index, and so is `/index.html`.
    for path in ["/", "/index.html"] {
        let index = request(address, "GET", path).await;
        assert_eq!(index.status, 200, "GET {path}: {}", index.body);
        assert_eq!(index.body, INDEX, "GET {path}");
        assert!(
            index
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "GET {path}: {:?}",
            index.headers
        );
        assert_eq!(index.header("content-disposition"), None, "GET {path}");
    }
    let script = request(address, "GET", "/a.js").await;
    assert_eq!(script.status, 200, "{}", script.body);
    assert_eq!(script.body, SCRIPT);
    assert!(
        script
            .header("content-type")
            .is_some_and(|t| t.contains("javascript")),
        "{:?}",
        script.headers
    );
    let logo = request(address, "GET", "/assets/logo.svg").await;
    assert_eq!((logo.status, logo.body.as_str()), (200, "<svg/>"));
    // HEAD is answered too (no body).
    let head = request(address, "HEAD", "/a.js").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");

    // The REST API keeps its paths, bare and under /v1.
    for path in ["/overview", "/v1/overview", "/config", "/jobs/overview"] {
        let api = request(address, "GET", path).await;
        assert_eq!(api.status, 200, "GET {path}: {}", api.body);
        assert!(
            api.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "GET {path}: {:?}",
            api.headers
        );
        api.json();
    }
    assert_eq!(
        request(address, "GET", "/overview").await.json()["taskmanagers"],
        1
    );
    // The built-in dashboard's files are not there.
    assert_flink_404(&request(address, "GET", "/app.js").await, "GET /app.js");

    // A path naming no file: Flink's words, with the path.
    let missing = request(address, "GET", "/missing.js").await;
    assert_flink_404(&missing, "GET /missing.js");
    assert_eq!(
        missing.json(),
        serde_json::json!({"errors": ["Unable to load requested file /missing.js."]})
    );
    assert_flink_404(
        &request(address, "GET", "/assets/nothing/here.css").await,
        "a missing nested file",
    );
    assert_flink_404(
        &request(address, "GET", "/assets").await,
        "a directory without index",
    );

    // Nothing outside the directory, however the path is spelled; no hidden files.
    for path in [
        "/../outside.txt",
        "/../../etc/passwd",
        "/%2e%2e/outside.txt",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/assets/../../outside.txt",
        "/..%2foutside.txt",
        "/.hidden",
        "/./a.js",
    ] {
        let answer = request(address, "GET", path).await;
        assert!(
            !answer.body.contains("outside-file-content")
                && !answer.body.contains("hidden-file-content"),
            "GET {path} leaked: {}",
            answer.body
        );
        assert!(
            !answer.body.contains("root:"),
            "GET {path} leaked /etc/passwd"
        );
        assert_flink_404(&answer, &format!("GET {path}"));
    }

    // Other methods on files: 404, like any path the API does not have.
    assert_flink_404(&request(address, "POST", "/a.js").await, "POST /a.js");
    assert_flink_404(&request(address, "DELETE", "/").await, "DELETE /");
    // A REST path with a method it lacks keeps its 405.
    assert_eq!(request(address, "DELETE", "/overview").await.status, 405);

    cluster.close().await.expect("the cluster stops");
}

#[actix_rt::test]
async fn without_a_ui_dir_the_built_in_dashboard_is_served() {
    let (cluster, address) = cluster(None).await;
    let index = request(address, "GET", "/").await;
    assert_eq!(index.status, 200, "{}", index.body);
    assert!(index.body.contains("app.js"), "{}", index.body);
    for path in ["/app.js", "/style.css", "/index.html"] {
        assert_eq!(
            request(address, "GET", path).await.status,
            200,
            "GET {path}"
        );
    }
    assert_eq!(
        request(address, "GET", "/overview").await.json()["taskmanagers"],
        1
    );
    assert_flink_404(&request(address, "GET", "/a.js").await, "GET /a.js");
    cluster.close().await.expect("the cluster stops");
}

/// A `ui_dir` without an `index.html` is refused when the server starts, not at the first
/// request.
#[actix_rt::test]
async fn a_ui_dir_without_an_index_is_refused_at_start() {
    let empty = tempfile::tempdir().expect("tempdir");
    let result = MiniCluster::start(MiniClusterConfig {
        rest: true,
        rest_ui_dir: Some(empty.path().to_path_buf()),
        ..MiniClusterConfig::default()
    })
    .await;
    let error = match result {
        Ok(cluster) => {
            cluster.close().await.expect("the cluster stops");
            panic!("a ui_dir without index.html was accepted");
        }
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("index.html") && error.contains(&empty.path().display().to_string()),
        "{error}"
    );
}
