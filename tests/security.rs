//! Issue 10 with real `rflink-node` processes on loopback: a cluster secured with mutual TLS and
//! a cluster secret runs WordCount across TaskManagers; TaskManagers with a wrong secret, no
//! secret, no TLS or a certificate of another CA cannot join and the cluster goes on; a node
//! with an expired certificate does not start; the secret never shows in logs or config.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rflink_rpc::security::certgen::{CertificateAuthority, ClusterMaterial, Validity};
use support::{run_bounded, Cluster, Node};

const WAIT: Duration = Duration::from_secs(30);

/// The cluster's material, written to a temporary directory.
struct Material {
    dir: tempfile::TempDir,
    secret: String,
}

impl Material {
    fn generate() -> Material {
        let dir = tempfile::tempdir().expect("tempdir");
        let material =
            ClusterMaterial::generate(&[], Validity::days(1)).expect("generate the material");
        material.write_to(dir.path(), false).expect("write");
        Material {
            secret: material.cluster_secret.expose().to_string(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The `-D` flags of a node of this cluster: the secret file and mutual TLS.
    fn flags(&self) -> Vec<String> {
        tls_flags(
            &self.path("node.pem"),
            &self.path("node.key"),
            &self.path("ca.pem"),
        )
        .into_iter()
        .chain(define(
            "security.cluster-secret-file",
            &self.path("cluster-secret"),
        ))
        .collect()
    }
}

fn define(key: &str, value: &str) -> [String; 2] {
    ["-D".to_string(), format!("{key}={value}")]
}

fn tls_flags(cert: &str, key: &str, ca: &str) -> Vec<String> {
    [
        define("security.ssl.internal.enabled", "true"),
        define("security.ssl.internal.cert", cert),
        define("security.ssl.internal.key", key),
        define("security.ssl.internal.truststore", ca),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn start(material: &Material, task_managers: usize) -> Cluster {
    let flags = material.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Cluster::start(task_managers, 1, &flags)
}

/// Waits (bounded) until `node`'s output contains `needle`; panics with the cluster's logs.
fn wait_for_log(cluster: &Cluster, node: &Node, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !node.logs().contains(needle) {
        if Instant::now() >= deadline {
            panic!(
                "{} never logged {needle:?} within {WAIT:?}\n{}\n---- {} ----\n{}",
                node.name(),
                cluster.logs(),
                node.name(),
                node.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text() -> String {
    (0..400)
        .map(|i| {
            format!(
                "to be or not to be {} that is the question {}\n",
                i % 7,
                i % 13
            )
        })
        .collect()
}

/// Two TaskManagers with one slot each: parallelism 2 puts the keyed exchange on remote
/// channels, so records cross TLS data connections; deployments come over RPC, and every task's
/// information is offloaded (`blob.offload.minsize=0`), so each TaskManager fetches it from the
/// BlobServer: all three transports, secured.
#[actix_rt::test]
async fn a_secured_cluster_runs_wordcount_across_task_managers() {
    let material = Material::generate();
    let mut flags = material.flags();
    flags.extend(define("blob.offload.minsize", "0"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start(2, 1, &flags);
    cluster
        .wait_for_overview("two TaskManagers registered", WAIT, |o| o.taskmanagers == 2)
        .await;
    let text = text();
    let counts = cluster.run_wordcount(&text, &["--parallelism", "2"], WAIT);
    assert_eq!(
        counts,
        rflink_examples::count_words(&text),
        "{}",
        cluster.logs()
    );
    // The secret never reaches a log line, and /jobmanager/config hides it.
    assert!(!cluster.logs().contains(&material.secret));
    let config = cluster
        .rest
        .get_json("/jobmanager/config")
        .await
        .expect("config");
    let shown = config.to_string();
    assert!(!shown.contains(&material.secret), "{shown}");
    assert!(
        shown.contains("security.cluster-secret-file"),
        "the key itself is listed: {shown}"
    );
}

/// A TaskManager holding another secret, one holding none and one without TLS: none can
/// register; the JobManager logs why; the cluster keeps its TaskManager and runs jobs.
#[actix_rt::test]
async fn task_managers_without_the_right_secret_or_tls_cannot_join() {
    let material = Material::generate();
    let mut cluster = start(&material, 1);
    cluster
        .wait_for_overview("the good TaskManager registered", WAIT, |o| {
            o.taskmanagers == 1
        })
        .await;

    // Another secret: a later -D overrides the cluster's secret file.
    let other = tempfile::tempdir().expect("tempdir");
    let other_secret = other.path().join("secret");
    std::fs::write(&other_secret, "a-different-cluster-secret-value\n").expect("write");
    let mut wrong = material.flags();
    wrong.extend(define(
        "security.cluster-secret-file",
        &other_secret.display().to_string(),
    ));
    cluster.add_task_manager(1, &wrong);
    let bad = cluster.tms.len() - 1;
    wait_for_log(&cluster, &cluster.tms[bad], "holds another cluster secret");
    wait_for_log(&cluster, &cluster.jm, "holds another cluster secret");

    // TLS but no secret.
    let no_secret = tls_flags(
        &material.path("node.pem"),
        &material.path("node.key"),
        &material.path("ca.pem"),
    );
    cluster.add_task_manager(1, &no_secret);
    let bare = cluster.tms.len() - 1;
    wait_for_log(
        &cluster,
        &cluster.tms[bare],
        "this node has no security.cluster-secret",
    );
    wait_for_log(
        &cluster,
        &cluster.jm,
        "did not start the cluster-secret handshake",
    );

    // The secret but no TLS.
    let plaintext: Vec<String> = define(
        "security.cluster-secret-file",
        &material.path("cluster-secret"),
    )
    .into_iter()
    .collect();
    cluster.add_task_manager(1, &plaintext);
    let plain = cluster.tms.len() - 1;
    wait_for_log(&cluster, &cluster.tms[plain], "does not speak TLS");
    wait_for_log(&cluster, &cluster.jm, "does not speak TLS");

    cluster
        .assert_overview_holds(
            "only the good TaskManager is registered",
            Duration::from_secs(2),
            |o| o.taskmanagers == 1 && o.slots_total == 1,
        )
        .await;
    let text = text();
    let counts = cluster.run_wordcount(&text, &[], WAIT);
    assert_eq!(counts, rflink_examples::count_words(&text));
}

/// A TaskManager whose certificate comes from another CA (and which trusts only that CA, so it
/// starts): each side refuses the other's certificate, and the cluster goes on.
#[actix_rt::test]
async fn a_certificate_of_another_ca_cannot_join() {
    let material = Material::generate();
    let mut cluster = start(&material, 1);
    cluster
        .wait_for_overview("the good TaskManager registered", WAIT, |o| {
            o.taskmanagers == 1
        })
        .await;
    let other = tempfile::tempdir().expect("tempdir");
    let ca = CertificateAuthority::generate("intruder CA", Validity::days(1)).expect("ca");
    let issued = ca.issue("intruder", &[], Validity::days(1)).expect("issue");
    let cert = write(other.path(), "node.pem", &issued.cert_pem);
    let key = write(other.path(), "node.key", issued.key_pem.expose());
    let trust = write(other.path(), "ca.pem", &ca.cert_pem());
    let mut flags = tls_flags(&cert, &key, &trust);
    flags.extend(define(
        "security.cluster-secret-file",
        &material.path("cluster-secret"),
    ));
    cluster.add_task_manager(1, &flags);
    let intruder = cluster.tms.len() - 1;
    wait_for_log(
        &cluster,
        &cluster.tms[intruder],
        "not signed by a CA in this node's trust store",
    );
    cluster
        .assert_overview_holds(
            "the intruder never registers",
            Duration::from_secs(2),
            |o| o.taskmanagers == 1,
        )
        .await;
    let text = text();
    assert_eq!(
        cluster.run_wordcount(&text, &[], WAIT),
        rflink_examples::count_words(&text)
    );
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// Misconfigurations a node can see alone stop it at start, exit code 2, naming the problem:
/// an expired certificate, a missing key file, a short secret, TLS without its files.
#[test]
fn a_node_refuses_to_start_with_bad_security_settings() {
    let material = Material::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = tempfile::tempdir().expect("tempdir");
    // An expired certificate of a CA the node trusts.
    let ca = CertificateAuthority::generate("cluster", Validity::days(1)).expect("ca");
    let expired = ca
        .issue("node", &[], Validity::expired(Duration::from_secs(3600)))
        .expect("issue");
    let trust = write(ca_dir.path(), "ca.pem", &ca.cert_pem());
    let cert = write(dir.path(), "expired.pem", &expired.cert_pem);
    let key = write(dir.path(), "expired.key", expired.key_pem.expose());

    let cases: Vec<(Vec<String>, &str)> = vec![
        (tls_flags(&cert, &key, &trust), "expired"),
        (
            tls_flags(
                &material.path("node.pem"),
                &material.path("missing.key"),
                &material.path("ca.pem"),
            ),
            "missing.key",
        ),
        (
            define("security.cluster-secret", "too-short").to_vec(),
            "security.cluster-secret",
        ),
        (
            define("security.ssl.internal.enabled", "true").to_vec(),
            "security.ssl.internal.cert",
        ),
    ];
    for (flags, needle) in cases {
        for role in ["jm", "tm"] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_rflink-node"));
            command
                .args(["--role", role, "--rpc-port", "0", "--rest-port", "0"])
                .args(["--bind-host", "127.0.0.1", "--advertised-host", "127.0.0.1"])
                .args(&flags);
            if role == "tm" {
                command.args(["--jobmanager", "127.0.0.1:1"]);
            }
            let (code, stdout, stderr) =
                run_bounded(command, &format!("rflink-node {role} {flags:?}"), WAIT);
            assert_eq!(code, 2, "{role} {flags:?}\n{stdout}\n{stderr}");
            assert!(
                stderr.contains(needle),
                "{role} {flags:?}: {needle:?} missing from\n{stderr}"
            );
            assert!(
                !stderr.contains("too-short"),
                "the secret is echoed: {stderr}"
            );
            assert!(
                !stdout.contains("RFLINK_READY"),
                "it must not start: {stdout}"
            );
        }
    }
}
