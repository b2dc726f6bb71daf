//! REST security (issue 10) against a real MiniCluster: the bearer token on every mutating
//! request (and on reads with `protect-reads`), HTTPS with the cluster CA, and no secret in the
//! configuration endpoints. The REST server is started in front of the MiniCluster's dispatcher
//! with a `RestServerConfig` carrying the TLS settings and the token, and a BlobServer of its
//! own to prove a refused upload stores nothing. Ports are ephemeral; every wait is bounded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;
use rflink_rpc::security::certgen::{ClusterMaterial, Validity};
use rflink_rpc::security::{rest_client_config, rest_server_config, Sensitive};
use rflink_runtime::blob::{BlobKey, BlobServer, BlobServerConfig};
use rflink_runtime::config::{find_key, Configuration};
use rflink_runtime::dispatcher::RestfulGateway;
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::jobgraph::{JobGraph, JobLibraryRef, JobProgram, JobVertex};
use rflink_runtime::metrics::MetricRegistry;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::rest::client::{RestClient, RestClientError};
use rflink_runtime::rest::{RestAuth, RestServer, RestServerConfig};
use rflink_runtime::types::JobId;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A MiniCluster with a secured REST server in front of its dispatcher.
struct Secured {
    cluster: MiniCluster,
    server: RestServer,
    blobs: Arc<BlobServer>,
    material: ClusterMaterial,
    /// The directory holding the generated `ca.pem`, `rest.pem`, ...
    certs: PathBuf,
    https: bool,
    _dir: tempfile::TempDir,
}

/// The configuration whose entries `/jobmanager/config` shows: the REST token and the cluster
/// secret both set.
fn configuration(material: &ClusterMaterial) -> Configuration {
    let mut config = Configuration::default();
    for (key, value) in [
        ("rest.auth.token", material.rest_token.expose()),
        ("security.cluster-secret", material.cluster_secret.expose()),
        ("rest.auth.protect-reads", "false"),
    ] {
        find_key(key)
            .expect("a known key")
            .apply(&mut config, value)
            .expect("a valid value");
    }
    config
}

impl Secured {
    async fn start(https: bool, protect_reads: bool) -> Secured {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = dir.path().join("certs");
        let material =
            ClusterMaterial::generate(&["localhost".into()], Validity::days(1)).expect("material");
        material.write_to(&certs, false).expect("written");
        let cluster = MiniCluster::start(MiniClusterConfig {
            num_task_managers: 1,
            slots_per_task_manager: 4,
            ..MiniClusterConfig::default()
        })
        .await
        .expect("the MiniCluster starts");
        let blobs = Arc::new(
            BlobServer::start(BlobServerConfig {
                storage_dir: dir.path().join("blobs"),
                ..Default::default()
            })
            .await
            .expect("the blob server starts"),
        );
        let tls = https.then(|| {
            rest_server_config(&certs.join("rest.pem"), &certs.join("rest.key"))
                .expect("the REST certificate loads")
        });
        let config = RestServerConfig {
            bind_host: "127.0.0.1".into(),
            port: 0,
            shutdown_timeout_secs: 1,
            tls,
            auth: Some(RestAuth {
                token: material.rest_token.clone(),
                protect_reads,
            }),
            ..RestServerConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(material.rest_token.expose()),
            "the config's Debug shows no token: {debug}"
        );
        let gateway: Arc<dyn RestfulGateway> = Arc::new(cluster.dispatcher_gateway());
        let mut entries = configuration(&material).to_entries();
        // Entries that bypassed `to_entries` are hidden by the server too.
        entries.push((
            "rest.auth.token".into(),
            material.rest_token.expose().into(),
        ));
        entries.push(("s3.secret-key".into(), "raw-s3-secret-value".into()));
        let registry = MetricRegistry::new();
        let jobmanager = registry.group("jobmanager", &[("host", "localhost".to_string())]);
        let server = RestServer::start_with_metrics(
            config,
            gateway,
            entries,
            Some(Arc::clone(&blobs)),
            Some((registry, jobmanager)),
        )
        .expect("the REST server starts");
        Secured {
            cluster,
            server,
            blobs,
            material,
            certs,
            https,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn token(&self) -> &str {
        self.material.rest_token.expose()
    }

    fn trust(&self) -> Arc<rustls::ClientConfig> {
        rest_client_config(&self.certs.join("ca.pem")).expect("the CA loads")
    }

    /// A client of this server (HTTPS when it serves HTTPS) with `token`.
    fn client(&self, token: Option<&str>) -> RestClient {
        let mut builder = RestClient::builder(self.addr().to_string());
        if self.https {
            builder = builder.tls(self.trust());
        }
        if let Some(token) = token {
            builder = builder.token(Sensitive::new(token));
        }
        builder.build().expect("a client")
    }

    /// A raw awc client (HTTPS when the server serves it) for hand-made requests.
    fn http(&self) -> (awc::Client, String) {
        let mut connector = awc::Connector::new().timeout(WAIT);
        if self.https {
            connector = connector.rustls_0_23(self.trust());
        }
        let client = awc::Client::builder()
            .timeout(WAIT)
            .connector(connector)
            .finish();
        let scheme = if self.https { "https" } else { "http" };
        (client, format!("{scheme}://{}", self.addr()))
    }

    /// `method path` with the given `Authorization` header (none: `None`) and body; the status,
    /// the `WWW-Authenticate` header and the body as JSON (Null if it is not).
    async fn raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<HeaderValue>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Option<String>, Value) {
        let (http, base) = self.http();
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = http.request(method, format!("{base}{path}"));
        if let Some(value) = authorization {
            request = request.insert_header(("authorization", value));
        }
        let sent = match body {
            Some((content_type, bytes)) => {
                request
                    .insert_header(("content-type", content_type))
                    .send_body(bytes)
                    .await
            }
            None => request.send().await,
        };
        let mut response = sent.expect("the request gets an answer");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.body().limit(1 << 24).await.expect("the body");
        (
            response.status().as_u16(),
            challenge,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    /// The ids of every job the cluster knows, asked of the dispatcher itself.
    async fn jobs(&self) -> Vec<JobId> {
        let gateway = self.cluster.dispatcher_gateway();
        RestfulGateway::job_overviews(&gateway)
            .await
            .expect("the dispatcher answers")
            .iter()
            .map(|j| j.job_id)
            .collect()
    }

    async fn close(self) {
        self.server.stop().await;
        self.blobs.close().await;
        self.cluster.close().await.expect("the cluster closes");
    }
}

fn blocking_graph(name: &str) -> JobGraph {
    JobGraph::new(
        name,
        vec![JobVertex::new("blocking", "BlockingNoOpInvokable", 1)],
    )
}

/// A graph declaring a job library of `bytes` (never checked: the request is refused first).
fn library_graph(bytes: &[u8]) -> JobGraph {
    let mut graph = blocking_graph("with a library");
    graph.program = Some(JobProgram {
        entry: "wordcount".into(),
        args: vec![],
        fingerprint: "test".into(),
        batch: false,
        library: Some(JobLibraryRef {
            file_name: "libjob.so".into(),
            blob_key: BlobKey::of(bytes).to_string(),
            size: bytes.len() as u64,
            build_fingerprint: rflink::abi::BUILD_FINGERPRINT.to_string(),
        }),
    });
    graph
}

/// A 401 from the client, with Flink's error body and the reason.
fn assert_unauthorized<T: std::fmt::Debug>(what: &str, result: Result<T, RestClientError>) {
    match result {
        Err(RestClientError::Status { code: 401, errors }) => {
            assert_eq!(errors.len(), 1, "{what}: {errors:?}");
            assert!(errors[0].contains("Unauthorized"), "{what}: {errors:?}");
            assert!(errors[0].contains("rest.auth.token"), "{what}: {errors:?}");
        }
        other => panic!("{what}: expected 401, got {other:?}"),
    }
}

/// A 401 from a raw request, with Flink's body and the challenge.
fn assert_raw_unauthorized(what: &str, answer: (u16, Option<String>, Value), token: &str) {
    let (status, challenge, body) = answer;
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer realm=\"rflink\""),
        "{what}"
    );
    let errors = body["errors"].as_array().expect("Flink's error body");
    assert_eq!(errors.len(), 1, "{what}: {body}");
    assert!(!body.to_string().contains(token), "{what}: {body}");
}

fn header(bytes: &[u8]) -> Option<HeaderValue> {
    Some(HeaderValue::from_bytes(bytes).expect("a header value"))
}

async fn wait_running(s: &Secured, job_id: JobId) {
    s.cluster
        .wait_for_job_status(job_id, WAIT, |st| st == JobStatus::Running)
        .await
        .expect("the job runs");
}

#[actix_rt::test]
async fn mutations_without_the_token_get_401_and_change_nothing() {
    let s = Secured::start(false, false).await;
    let running = s
        .cluster
        .submit_job(blocking_graph("running"))
        .await
        .expect("submits");
    wait_running(&s, running).await;

    let anonymous = s.client(None);
    let wrong = s.client(Some("not-the-token"));
    let other = blocking_graph("never submitted");
    let library = vec![0x5a_u8; 2 * 1024 * 1024];
    let with_library = library_graph(&library);
    for (who, client) in [("no token", &anonymous), ("wrong token", &wrong)] {
        assert_unauthorized(
            &format!("{who}: submit (JSON)"),
            client.submit_job(&other).await,
        );
        // A 2 MiB upload: the client still reads the 401 (the body is read and dropped).
        assert_unauthorized(
            &format!("{who}: submit (multipart with a library)"),
            client
                .submit_job_with_library(&with_library, &library)
                .await,
        );
        assert_unauthorized(&format!("{who}: cancel"), client.cancel_job(running).await);
        assert_unauthorized(
            &format!("{who}: savepoint"),
            client
                .trigger_savepoint(running, Some("/tmp/sp"), false)
                .await,
        );
        assert_unauthorized(
            &format!("{who}: stop"),
            client
                .trigger_savepoint(running, Some("/tmp/sp"), true)
                .await,
        );
    }

    // By hand: every mutating method and path, malformed credentials, the dashboard's cancel.
    let token = s.token().to_string();
    let json = || Some(("application/json", b"{}".to_vec()));
    for (method, path) in [
        ("PATCH", format!("/jobs/{running}?mode=cancel")),
        ("PATCH", format!("/v1/jobs/{running}")),
        ("GET", format!("/jobs/{running}/yarn-cancel")),
        ("POST", format!("/jobs/{running}/savepoints")),
        ("POST", format!("/v1/jobs/{running}/stop")),
        ("POST", "/jobs".to_string()),
        ("PUT", "/jobs".to_string()),
        ("DELETE", format!("/jobs/{running}")),
        ("POST", "/overview".to_string()),
    ] {
        for (how, authorization) in [
            ("none", None),
            ("empty", header(b"")),
            ("basic", header(b"Basic dXNlcjpwYXNz")),
            ("bearer without a token", header(b"Bearer")),
            ("not UTF-8", header(b"Bearer \xff\xfe")),
            ("wrong", header(format!("Bearer {token}x").as_bytes())),
            (
                "a prefix",
                header(format!("Bearer {}", &token[..8]).as_bytes()),
            ),
        ] {
            let answer = s.raw(method, &path, authorization, json()).await;
            assert_raw_unauthorized(&format!("{method} {path} ({how})"), answer, &token);
        }
    }
    let form = format!(
        "--b\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n{}\r\n--b--\r\n",
        serde_json::to_string(&serde_json::json!({"jobGraph": null})).expect("json")
    );
    let answer = s
        .raw(
            "POST",
            "/v1/jobs",
            None,
            Some(("multipart/form-data; boundary=b", form.into_bytes())),
        )
        .await;
    assert_raw_unauthorized("multipart by hand", answer, &token);

    // Nothing changed: one job, still running; nothing stored.
    assert_eq!(s.jobs().await, vec![running], "no job was submitted");
    assert_eq!(
        s.cluster.job_status(running).await.expect("status"),
        JobStatus::Running
    );
    assert_eq!(s.blobs.stats().blobs_stored, 0, "no library was stored");

    // Reads need no token (protect-reads is off).
    let ids = anonymous.job_ids().await.expect("reads are open");
    assert_eq!(ids.len(), 1);
    assert_eq!(
        anonymous.job_status(running).await.expect("status"),
        JobStatus::Running
    );
    anonymous.overview().await.expect("overview");
    let (status, _) = anonymous.get_text("/metrics").await.expect("metrics");
    assert_eq!(status, 200);

    // The right token works.
    let authorized = s.client(Some(&token));
    let submitted = authorized.submit_job(&other).await.expect("submits");
    wait_running(&s, submitted).await;
    // A savepoint reaches the JobMaster (which refuses it: the job has no checkpointing).
    match authorized
        .trigger_savepoint(running, Some("/tmp/sp"), false)
        .await
    {
        Ok(_) => {}
        Err(e) => assert!(!e.is_unauthorized(), "{e}"),
    }
    let (status, _, body) = s
        .raw(
            "GET",
            &format!("/jobs/{running}/status"),
            header(format!("bearer {token}").as_bytes()),
            None,
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("RUNNING")));
    authorized.cancel_job(running).await.expect("cancels");
    s.cluster
        .wait_for_job_status(running, WAIT, |st| st == JobStatus::Canceled)
        .await
        .expect("cancelled");
    let (status, _, _) = s
        .raw(
            "GET",
            &format!("/jobs/{submitted}/yarn-cancel"),
            header(format!("Bearer {token}").as_bytes()),
            None,
        )
        .await;
    assert_eq!(status, 202, "the dashboard's cancel with the token");
    s.cluster
        .wait_for_job_status(submitted, WAIT, |st| st == JobStatus::Canceled)
        .await
        .expect("cancelled");
    s.close().await;
}

#[actix_rt::test]
async fn protect_reads_requires_the_token_on_every_api_read() {
    let s = Secured::start(false, true).await;
    let running = s
        .cluster
        .submit_job(blocking_graph("running"))
        .await
        .expect("submits");
    wait_running(&s, running).await;
    let token = s.token().to_string();
    let bearer = || header(format!("Bearer {token}").as_bytes());
    for path in [
        "/config".to_string(),
        "/overview".to_string(),
        "/jobs".to_string(),
        "/v1/jobs/overview".to_string(),
        format!("/jobs/{running}"),
        format!("/jobs/{running}/config"),
        "/jobmanager/config".to_string(),
        "/taskmanagers".to_string(),
        "/metrics".to_string(),
        "/jobmanager/metrics".to_string(),
    ] {
        let answer = s.raw("GET", &path, None, None).await;
        assert_raw_unauthorized(&format!("GET {path}"), answer, &token);
        let answer = s.raw("GET", &path, header(b"Bearer nope"), None).await;
        assert_raw_unauthorized(&format!("GET {path} (wrong)"), answer, &token);
        let (status, _, body) = s.raw("GET", &path, bearer(), None).await;
        assert_eq!(status, 200, "GET {path} with the token: {body}");
    }
    // The dashboard's static files stay public (its API calls carry the token); unknown paths
    // are 404 as always.
    for path in ["/", "/index.html", "/app.js", "/style.css"] {
        let (status, _, _) = s.raw("GET", path, None, None).await;
        assert_eq!(status, 200, "GET {path}");
    }
    let (status, _, _) = s.raw("GET", "/no/such/path", None, None).await;
    assert_eq!(status, 404);

    let anonymous = s.client(None);
    assert_unauthorized("job ids", anonymous.job_ids().await);
    assert_unauthorized("overview", anonymous.overview().await);
    let authorized = s.client(Some(&token));
    let ids = authorized.job_ids().await.expect("with the token");
    assert_eq!(ids.len(), 1);
    authorized.cancel_job(running).await.expect("cancels");
    s.cluster
        .wait_for_job_status(running, WAIT, |st| st == JobStatus::Canceled)
        .await
        .expect("cancelled");
    s.close().await;
}

/// Sends a plaintext HTTP request to `addr` and returns what came back before the connection
/// ended (bounded).
async fn plaintext_exchange(addr: SocketAddr) -> Vec<u8> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /overview HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        // A reset ends the read with an error: what was read so far is the answer.
        let _ = stream.read_to_end(&mut answer).await;
        Some(answer)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the server ends the plaintext connection")
        .unwrap_or_default()
}

#[actix_rt::test]
async fn https_with_the_cluster_ca_works_and_anything_else_is_refused() {
    let s = Secured::start(true, false).await;
    let token = s.token().to_string();
    let client = s.client(Some(&token));
    assert!(client.is_https());
    client
        .overview()
        .await
        .expect("HTTPS with the cluster's CA");
    let job = client
        .submit_job(&blocking_graph("over https"))
        .await
        .expect("submits over HTTPS");
    wait_running(&s, job).await;
    // The name in the certificate: `localhost`, and `https://` spelled out.
    let by_name = RestClient::builder(format!("https://localhost:{}", s.addr().port()))
        .tls(s.trust())
        .build()
        .expect("a client");
    by_name.job_ids().await.expect("HTTPS by host name");
    assert_unauthorized(
        "cancel over HTTPS without the token",
        by_name.cancel_job(job).await,
    );

    // Plain HTTP to the HTTPS port gets no HTTP answer, and the server keeps serving.
    let plain = RestClient::new(s.addr().to_string());
    match plain.overview().await {
        Err(RestClientError::Status { code, .. }) => panic!("plaintext got HTTP status {code}"),
        Err(_) => {}
        Ok(o) => panic!("plaintext got an overview: {o:?}"),
    }
    let answer = plaintext_exchange(s.addr()).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer to plaintext: {:?}",
        String::from_utf8_lossy(&answer)
    );
    client.overview().await.expect("still serving HTTPS");

    // A client trusting another CA refuses the server's certificate.
    let other_dir = tempfile::tempdir().expect("temp dir");
    ClusterMaterial::generate(&[], Validity::days(1))
        .expect("other material")
        .write_to(other_dir.path(), false)
        .expect("written");
    let stranger = RestClient::builder(s.addr().to_string())
        .tls(rest_client_config(&other_dir.path().join("ca.pem")).expect("the other CA"))
        .token(Sensitive::new(token.clone()))
        .build()
        .expect("a client");
    match stranger.cancel_job(job).await {
        Err(RestClientError::Tls { reason, .. }) => {
            assert!(
                reason.to_lowercase().contains("certificate"),
                "names the certificate: {reason}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(
        s.cluster.job_status(job).await.expect("status"),
        JobStatus::Running,
        "the stranger's cancel never arrived"
    );

    // An https address without a trust store, or plain http with one, is a settings error.
    for builder in [
        RestClient::builder(format!("https://{}", s.addr())),
        RestClient::builder(format!("http://{}", s.addr())).tls(s.trust()),
        RestClient::builder(s.addr().to_string()).token(Sensitive::new("two words")),
        RestClient::builder(s.addr().to_string()).token(Sensitive::new("")),
    ] {
        match builder.build() {
            Err(RestClientError::Config { reason }) => assert!(!reason.is_empty()),
            other => panic!("expected a settings error, got {other:?}"),
        }
    }
    let deferred = RestClient::new(format!("https://{}", s.addr()));
    assert!(matches!(
        deferred.overview().await,
        Err(RestClientError::Config { .. })
    ));

    client.cancel_job(job).await.expect("cancels over HTTPS");
    s.cluster
        .wait_for_job_status(job, WAIT, |st| st == JobStatus::Canceled)
        .await
        .expect("cancelled");
    let debug = format!("{client:?}");
    assert!(!debug.contains(&token), "{debug}");
    s.close().await;
}

#[actix_rt::test]
async fn an_https_client_of_a_plain_server_fails_with_a_tls_error() {
    let s = Secured::start(false, false).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let material = ClusterMaterial::generate(&[], Validity::days(1)).expect("material");
    material.write_to(dir.path(), false).expect("written");
    let client = RestClient::builder(s.addr().to_string())
        .tls(rest_client_config(&dir.path().join("ca.pem")).expect("CA"))
        .build()
        .expect("a client");
    match client.overview().await {
        Err(RestClientError::Tls { .. }) | Err(RestClientError::Connection { .. }) => {}
        other => panic!("expected a TLS or connection error, got {other:?}"),
    }
    s.close().await;
}

#[actix_rt::test]
async fn the_configuration_endpoints_show_no_secret() {
    let s = Secured::start(false, false).await;
    let token = s.token().to_string();
    let secret = s.material.cluster_secret.expose().to_string();
    let mut graph = blocking_graph("with secrets in its configuration");
    for (key, value) in [
        ("rest.auth.token", token.as_str()),
        ("security.cluster-secret", secret.as_str()),
        ("restart-strategy.type", "none"),
    ] {
        graph.job_config.insert(key.into(), value.into());
    }
    let job = s.cluster.submit_job(graph).await.expect("submits");
    wait_running(&s, job).await;
    let client = s.client(None);
    let forbidden = [token.as_str(), secret.as_str(), "raw-s3-secret-value"];
    let check = |path: &str, body: &Value| {
        let text = body.to_string();
        for secret in forbidden {
            assert!(!text.contains(secret), "{path} shows a secret: {text}");
        }
    };

    let dashboard = client.get_json("/config").await.expect("/config");
    check("/config", &dashboard);
    for path in [
        "/jobmanager/config".to_string(),
        "/v1/jobmanager/config".to_string(),
        format!("/jobs/{job}/jobmanager/config"),
    ] {
        let entries = client.get_json(&path).await.expect("config entries");
        check(&path, &entries);
        let value_of = |key: &str| {
            entries
                .as_array()
                .expect("a list")
                .iter()
                .find(|e| e["key"] == key)
                .map(|e| e["value"].clone())
        };
        assert_eq!(value_of("rest.auth.token"), Some("******".into()), "{path}");
        assert_eq!(
            value_of("security.cluster-secret"),
            Some("******".into()),
            "{path}"
        );
        assert_eq!(value_of("s3.secret-key"), Some("******".into()), "{path}");
        assert_eq!(
            value_of("rest.auth.protect-reads"),
            Some("false".into()),
            "{path}: other keys are shown"
        );
    }
    let job_config = client
        .get_json(&format!("/jobs/{job}/config"))
        .await
        .expect("job config");
    check("/jobs/{id}/config", &job_config);
    let user = &job_config["execution-config"]["user-config"];
    assert_eq!(user["rest.auth.token"], "******", "{job_config}");
    assert_eq!(user["security.cluster-secret"], "******", "{job_config}");
    assert_eq!(user["restart-strategy.type"], "none", "{job_config}");
    let details = client.get_json(&format!("/jobs/{job}")).await.expect("job");
    check("/jobs/{id}", &details);

    s.cluster
        .dispatcher_gateway()
        .ask(rflink_runtime::dispatcher::CancelJob { job_id: job })
        .await
        .expect("asks")
        .expect("cancels");
    let deadline = Instant::now() + WAIT;
    while s.cluster.job_status(job).await.expect("status") != JobStatus::Canceled {
        assert!(Instant::now() < deadline, "the job is cancelled in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.close().await;
}
