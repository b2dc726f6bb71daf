//! Flink's own web dashboard (the Angular app in the `web/` folder of Flink 2.3's
//! `lib/flink-dist-*.jar`) against a cluster of real `rflink-node` processes, in headless
//! Chromium driven over the DevTools protocol (`tests/support/browser.rs`).
//!
//! The JobManager serves the extracted folder at `/` (`web.ui.dir`), next to the REST API the app
//! calls with page-relative paths. A streaming WordCount runs on 2 TaskManagers × 1 slot; Flink's
//! pages must show the cluster (overview), the job's graph (every vertex and edge of
//! `/jobs/{id}`, with their metrics), both TaskManagers, the job's checkpoints, exceptions,
//! configuration, vertex tabs and application, and, once the job is cancelled with the app's own
//! button (`GET /jobs/{id}/yarn-cancel`), the job as CANCELED among the completed jobs and on its
//! page. Every response the app receives is recorded: none may be a 5xx, nor a 404 (the pages
//! checked need no endpoint rflink lacks); and the app may log no error but two of its own (see
//! [`FLINKS_OWN_ERRORS`]), since an error there is usually a REST answer it could not read. A
//! screenshot of the job page is saved as `<target dir>/flink-web-ui/job.png`.
//!
//! Needs Flink's distribution (`scripts/install-flink-cli`, as `tests/flink_cli.rs`; skipped with
//! `RFLINK_SKIP_FLINK_CLI=1`), python3 to unzip the jar, and Chromium (as `tests/dashboard.rs`;
//! skipped with `RFLINK_SKIP_BROWSER=1`).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use serde_json::Value;
use support::browser::{artifact_dir, chromium_for, ok, Browser};
use support::{Cluster, FLINK_VERSION};

/// Each step's deadline: far above what it takes, so only a real hang fails.
const WAIT: Duration = Duration::from_secs(30);

/// Extracting the web UI from the jar (15 MB of 380 MB).
const EXTRACT_TIMEOUT: Duration = Duration::from_secs(60);

/// The app polls every `web.refresh-interval`; 1 s here keeps the pages quick to catch up.
const REFRESH: &str = "web.refresh-interval=1 s";

/// The Flink installation, or `None` when the test is skipped on purpose; panics with what to do
/// when there is none.
fn flink_home() -> Option<PathBuf> {
    if let Some(home) = support::find_flink_home() {
        return Some(home);
    }
    if std::env::var("RFLINK_SKIP_FLINK_CLI").as_deref() == Ok("1") {
        println!("SKIPPED: Flink's distribution is not installed and RFLINK_SKIP_FLINK_CLI=1");
        return None;
    }
    panic!(
        "Flink {FLINK_VERSION}'s distribution (its web UI is in lib/flink-dist-*.jar) was not \
         found in $FLINK_HOME, $RFLINK_TOOLS_DIR (default ~/.cache/rflink-tools) or python3's \
         pyflink: run scripts/install-test-tools (or scripts/install-flink-cli), or set \
         FLINK_HOME; RFLINK_SKIP_FLINK_CLI=1 skips this test"
    );
}

/// Extracts `web/` of `<home>/lib/flink-dist-*.jar` (a zip) into `into` with python3's zipfile
/// (which keeps every member inside the target), and returns the folder holding `index.html`.
fn extract_web_ui(home: &Path, into: &Path) -> PathBuf {
    const SCRIPT: &str = r#"
import glob, os, sys, zipfile
home, into = sys.argv[1], sys.argv[2]
jars = sorted(glob.glob(os.path.join(home, "lib", "flink-dist*.jar")))
if not jars:
    sys.exit("no lib/flink-dist*.jar in " + home)
with zipfile.ZipFile(jars[0]) as jar:
    names = [n for n in jar.namelist() if n.startswith("web/")]
    if "web/index.html" not in names:
        sys.exit(jars[0] + " holds no web/index.html")
    jar.extractall(into, names)
print(jars[0], len(names))
"#;
    let mut command = Command::new("python3");
    command.arg("-c").arg(SCRIPT).arg(home).arg(into);
    let (code, stdout, stderr) =
        support::run_bounded(command, "extracting Flink's web UI", EXTRACT_TIMEOUT);
    assert_eq!(
        code,
        0,
        "extracting web/ from {}/lib/flink-dist-*.jar failed:\n{stdout}{stderr}",
        home.display()
    );
    println!("Flink's web UI from {}", stdout.trim());
    into.join("web")
}

/// Where the screenshots go: `flink-web-ui/` in the target directory of the binaries under test.
fn screenshot_dir() -> PathBuf {
    artifact_dir("flink-web-ui")
}

/// Page errors of Flink's app itself, not caused by a REST answer: what its components do when
/// the page they are on is left quickly (the test moves on as soon as a page shows what it
/// checks): d3-zoom reads the width of the job graph's `<svg width="100%">` once it is no
/// longer laid out (Chromium refuses), and the code editor of the exceptions pages resizes
/// after it was torn down.
const FLINKS_OWN_ERRORS: [&str; 2] = [
    "Failed to read the 'value' property from 'SVGLength'",
    "Cannot read properties of null (reading 'layout')",
];

/// Prints how long a step took and the page errors logged so far.
fn step(browser: &Browser, what: &str, since: Instant) {
    println!(
        "[{:>6} ms, {} page errors so far] {what}",
        since.elapsed().as_millis(),
        browser.page_errors().len()
    );
}

/// The rows of the first `nz-table` under `selector`: each row's cells' text.
fn table_rows_js(selector: &str) -> String {
    format!(
        r#"[...document.querySelectorAll('{selector} nz-table tbody tr.ant-table-row')]
            .map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()))"#
    )
}

/// Whether some row of `rows` (a [`table_rows_js`] value) has `first` as its first cell and
/// `status` as its last.
fn has_row(rows: &Value, first: &str, status: &str) -> bool {
    rows.as_array().is_some_and(|rows| {
        rows.iter().any(|row| {
            let cells = row.as_array().cloned().unwrap_or_default();
            cells.first().and_then(Value::as_str) == Some(first)
                && cells.last().and_then(Value::as_str) == Some(status)
        })
    })
}

#[actix_rt::test]
async fn flinks_web_ui_shows_an_rflink_cluster_its_job_and_cancels_it() {
    let Some(home) = flink_home() else {
        return;
    };
    let Some(chromium) = chromium_for("the Flink web UI browser test") else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let web = extract_web_ui(&home, dir.path());
    let ui_dir = format!("web.ui.dir={}", web.display());
    let cluster = Cluster::start(2, 1, &["-D", &ui_dir, "-D", REFRESH]);
    cluster.wait_for_task_managers(2, WAIT).await;

    let (job_id, details) = cluster
        .start_endless_wordcount(&dir.path().join("out").display().to_string())
        .await;
    // The job as the app reads it (ids as the REST API spells them).
    let jid = details["jid"].as_str().expect("jid").to_string();
    let name = details["name"].as_str().expect("name").to_string();
    let vertices: BTreeMap<String, String> = details["vertices"]
        .as_array()
        .expect("vertices")
        .iter()
        .map(|v| {
            (
                v["id"].as_str().expect("vertex id").to_string(),
                v["name"].as_str().expect("vertex name").to_string(),
            )
        })
        .collect();
    // Flink's app names an edge's SVG group `<source>-<target>`.
    let edges: Vec<(String, String)> = support::plan_edges(&details)
        .into_iter()
        .map(|(source, target, ship)| (format!("{source}-{target}"), ship))
        .collect();
    assert!(
        vertices.len() >= 2 && !edges.is_empty(),
        "WordCount has a keyed exchange: {details}"
    );
    let task_managers: Vec<String> = cluster
        .rest
        .taskmanagers()
        .await
        .expect("taskmanagers")
        .into_iter()
        .map(|tm| tm.id)
        .collect();
    assert_eq!(task_managers.len(), 2, "{task_managers:?}");
    let rest_overview = cluster.rest.overview().await.expect("overview");
    println!("cluster and job ready after {:?}", started.elapsed());

    let mut browser = Browser::launch(&chromium).unwrap_or_else(|e| panic!("{e}"));
    ok(browser.record_responses(), &browser, &cluster);
    let base = format!("http://{}/", cluster.rest.address());

    // The overview: slots and TaskManagers (Flink's statistic cards), and the job's application
    // among the running ones.
    let page = Instant::now();
    ok(
        browser.navigate(&format!("{base}#/overview")),
        &browser,
        &cluster,
    );
    let overview_js = format!(
        r#"(() => {{
            const cards = {{}};
            for (const card of document.querySelectorAll('flink-overview-statistic nz-card')) {{
                const title = card.querySelector('.ant-card-head-title')?.textContent.trim();
                const fields = {{ total: card.querySelector('.total')?.textContent.trim() }};
                for (const f of card.querySelectorAll('.footer .field')) {{
                    const [k, v] = [...f.querySelectorAll('span')].map((s) => s.textContent.trim());
                    fields[k] = v;
                }}
                cards[title] = fields;
            }}
            return {{ cards, applications: {rows} }};
        }})()"#,
        rows = table_rows_js("flink-application-list"),
    );
    let slots_total = rest_overview.slots_total.to_string();
    let overview = ok(
        browser.wait_for(
            "Flink's overview shows 2 TaskManagers, their slots and the running job",
            &overview_js,
            WAIT,
            |v| {
                let slots = &v["cards"]["Available Task Slots"];
                slots["Task Managers"] == "2"
                    && slots["Total Task Slots"] == slots_total.as_str()
                    && has_row(&v["applications"], &name, "RUNNING")
            },
        ),
        &browser,
        &cluster,
    );
    let now = cluster.rest.overview().await.expect("overview");
    assert_eq!(
        overview["cards"]["Available Task Slots"]["total"],
        now.slots_available.to_string(),
        "free slots in Flink's overview and in /overview: {overview}"
    );
    step(&browser, &format!("overview shown: {overview}"), page);

    // The running jobs list, and the job page through a click on its row.
    let page = Instant::now();
    ok(
        browser.navigate(&format!("{base}#/job/running")),
        &browser,
        &cluster,
    );
    let jobs_js = table_rows_js("flink-job-list");
    ok(
        browser.wait_for(
            "Flink's running jobs list shows the job",
            &jobs_js,
            WAIT,
            |rows| has_row(rows, &name, "RUNNING"),
        ),
        &browser,
        &cluster,
    );
    let clicked = ok(
        browser.evaluate(&format!(
            r#"(() => {{
                const row = [...document.querySelectorAll('flink-job-list tbody tr.ant-table-row')]
                    .find((tr) => tr.querySelector('td')?.textContent.trim() === {name});
                if (!row) return false;
                row.click();
                return true;
            }})()"#,
            name = serde_json::to_string(&name).expect("a string"),
        )),
        &browser,
        &cluster,
    );
    assert_eq!(clicked, true, "the running jobs list has a row for {name}");
    let job_js = r#"(() => {
        const field = (title) => [...document.querySelectorAll('flink-job-status td')]
            .find((td) => td.previousElementSibling?.textContent.trim() === title)
            ?.textContent.trim() ?? null;
        const graph = document.querySelector('flink-dagre svg');
        // The graph is laid out hidden, then zoomed to fit and shown.
        const container = document.querySelector('flink-dagre flink-svg-container');
        return {
            shown: !!container && getComputedStyle(container).visibility === 'visible',
            hash: location.hash,
            jobId: field('Job ID'),
            state: field('Job State'),
            cancel: [...document.querySelectorAll('flink-job-status a[nz-popconfirm]')]
                .some((a) => a.textContent.trim() === 'Cancel Job'),
            nodes: graph ? Object.fromEntries([...graph.querySelectorAll('g.node-group')]
                .map((g) => [g.id, g.querySelector('.description')?.textContent.trim() ?? ''])) : {},
            metrics: graph ? [...graph.querySelectorAll('.node-label.metric')]
                .map((m) => m.textContent.trim()) : [],
            links: graph ? Object.fromEntries([...graph.querySelectorAll('g.link-group')]
                .map((g) => [g.id, g.querySelector('.edge-label')?.textContent.trim() ?? ''])) : {},
            rows: [...document.querySelectorAll('flink-job-overview-list tbody tr.ant-table-row')]
                .map((tr) => tr.querySelector('td')?.textContent.trim()),
        };
    })()"#;
    let expected_nodes = vertices.len();
    let job = ok(
        browser.wait_for(
            "Flink's job page draws the running job's graph",
            job_js,
            WAIT,
            |v| {
                v["jobId"] == jid.as_str()
                    && v["state"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("RUNNING"))
                    && v["cancel"] == true
                    && v["shown"] == true
                    && v["nodes"].as_object().map(|n| n.len()) == Some(expected_nodes)
                    && v["links"].as_object().map(|l| l.len()) == Some(edges.len())
            },
        ),
        &browser,
        &cluster,
    );
    assert_eq!(
        job["hash"],
        format!("#/job/running/{jid}/overview"),
        "the row's click opens the job: {job}"
    );
    for (id, vertex_name) in &vertices {
        assert_eq!(
            job["nodes"][id.as_str()],
            vertex_name.as_str(),
            "the graph's node {id} names its vertex: {job}"
        );
        assert!(
            job["rows"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r == vertex_name.as_str())),
            "the vertex table lists {vertex_name}: {job}"
        );
    }
    for (link, ship) in &edges {
        assert_eq!(
            job["links"][link.as_str()],
            ship.as_str(),
            "the edge {link} is drawn with its ship strategy: {job}"
        );
    }
    step(&browser, &format!("job page shown: {job}"), page);
    // Once the app has read the vertices' metrics (`/jobs/{id}/vertices/{vid}/subtasks/metrics`
    // after the first refresh), each box shows its back pressure, busy time and skew.
    let page = Instant::now();
    let job = ok(
        browser.wait_for(
            "Flink's job graph shows every vertex's metrics",
            job_js,
            WAIT,
            |v| {
                v["metrics"].as_array().is_some_and(|m| {
                    m.len() == 3 * expected_nodes
                        && m.iter().all(|t| {
                            t.as_str()
                                .is_some_and(|t| t.ends_with('%') && !t.contains("N/A"))
                        })
                })
            },
        ),
        &browser,
        &cluster,
    );
    step(
        &browser,
        &format!("job graph metrics shown: {}", job["metrics"]),
        page,
    );
    let screenshot = screenshot_dir().join("job.png");
    ok(browser.screenshot(&screenshot), &browser, &cluster);
    println!("Flink web UI screenshot: {}", screenshot.display());

    // The TaskManagers list: both, by id.
    let page = Instant::now();
    ok(
        browser.navigate(&format!("{base}#/task-manager")),
        &browser,
        &cluster,
    );
    let tms_js = "[...document.querySelectorAll('flink-task-manager-list tbody tr.ant-table-row \
                  td:first-child a')].map((a) => a.textContent.trim())";
    let listed = ok(
        browser.wait_for(
            "Flink's TaskManagers list shows both TaskManagers",
            tms_js,
            WAIT,
            |ids| {
                task_managers.iter().all(|id| {
                    ids.as_array()
                        .is_some_and(|ids| ids.contains(&id.as_str().into()))
                })
            },
        ),
        &browser,
        &cluster,
    );
    step(&browser, &format!("TaskManagers shown: {listed}"), page);

    // More of Flink's pages of the running job, its vertex, a TaskManager and the JobManager:
    // each shows what the REST API answered.
    let (source, source_name) = vertices
        .iter()
        .find(|(_, name)| name.starts_with("Source"))
        .expect("WordCount has a source");
    let parallelism = "2/2 (100%)";
    let pages: Vec<(String, Vec<&str>)> = vec![
        // The latest checkpoint's operators, from /checkpoints/details/{id}'s per-vertex tasks.
        (
            format!("job/running/{jid}/checkpoints"),
            vec![
                "Checkpoint Counts",
                "Latest Completed Checkpoint",
                source_name.as_str(),
                parallelism,
            ],
        ),
        (
            format!("job/running/{jid}/exceptions"),
            vec!["Root Exception", "Exception History"],
        ),
        (
            format!("job/running/{jid}/configuration"),
            vec!["Execution Configuration", "Job parallelism"],
        ),
        (
            format!("job/running/{jid}/overview/{source}/subtasks"),
            vec!["Accumulated Time", "RUNNING", "127.0.0.1:"],
        ),
        (
            format!("job/running/{jid}/overview/{source}/taskmanagers"),
            vec!["Endpoint", "RUNNING", "127.0.0.1:"],
        ),
        (
            format!("job/running/{jid}/overview/{source}/backpressure"),
            vec!["Back Pressure Status", "OK"],
        ),
        // `accumulators` and `subtasks/accumulators` together (none in rflink: empty tables).
        (
            format!("job/running/{jid}/overview/{source}/accumulators"),
            vec!["Vertex Accumulators", "SubTask Accumulators"],
        ),
        (
            format!("task-manager/{}/metrics", task_managers[0]),
            vec!["Free/All Slots", task_managers[0].as_str(), "Network"],
        ),
        // The job's application (Flink 2.x; an rflink job is its own), where the job page's
        // "Return to Application" leads: `/applications/{id}`.
        (
            format!("application/running/{jid}"),
            vec![
                "Application ID",
                jid.as_str(),
                "Running Job List",
                name.as_str(),
                "RUNNING",
            ],
        ),
        (
            format!("application/running/{jid}/exceptions"),
            vec!["Root Exception", "No Root Exception"],
        ),
        (
            "job-manager/config".to_string(),
            vec!["jobmanager.rpc.address", "web.ui.dir"],
        ),
    ];
    for (route, texts) in &pages {
        let page = Instant::now();
        ok(
            browser.navigate(&format!("{base}#/{route}")),
            &browser,
            &cluster,
        );
        let texts_json = serde_json::to_string(texts).expect("strings");
        ok(
            browser.wait_for(
                &format!("#/{route} shows {texts:?}"),
                &format!(
                    "(() => {{
                        const text = (document.querySelector('nz-content')?.textContent ?? '')
                            .replace(/\\s+/g, ' ');
                        const missing = {texts_json}.filter((t) => !text.includes(t));
                        return {{ missing, text: missing.length ? text.slice(0, 2000) : '' }};
                    }})()"
                ),
                WAIT,
                |v| v["missing"].as_array().is_some_and(Vec::is_empty),
            ),
            &browser,
            &cluster,
        );
        step(&browser, &format!("#/{route} shown"), page);
    }

    // Cancel with the app's own button (a confirm pop-over, then `yarn-cancel`).
    let page = Instant::now();
    ok(
        browser.navigate(&format!("{base}#/job/running/{jid}/overview")),
        &browser,
        &cluster,
    );
    ok(
        browser.wait_for("the job page offers Cancel Job", job_js, WAIT, |v| {
            v["jobId"] == jid.as_str() && v["cancel"] == true
        }),
        &browser,
        &cluster,
    );
    let click_cancel = r#"(() => {
        const a = [...document.querySelectorAll('flink-job-status a[nz-popconfirm]')]
            .find((a) => a.textContent.trim() === 'Cancel Job');
        if (!a) return 'no Cancel Job link';
        a.click();
        return 'clicked';
    })()"#;
    assert_eq!(
        ok(browser.evaluate(click_cancel), &browser, &cluster),
        "clicked"
    );
    let confirm = r#"(() => {
        const pop = [...document.querySelectorAll('.ant-popover')]
            .find((p) => p.textContent.includes('Cancel Job?'));
        const yes = pop && [...pop.querySelectorAll('button')]
            .find((b) => b.textContent.trim() === 'Yes');
        if (!yes) return false;
        yes.click();
        return true;
    })()"#;
    ok(
        browser.wait_for("the confirm pop-over's Yes", confirm, WAIT, |v| v == true),
        &browser,
        &cluster,
    );
    let status = cluster
        .wait_for_job_status(job_id, JobStatus::is_terminal, Instant::now() + WAIT)
        .await;
    assert_eq!(status, JobStatus::Canceled, "{}", cluster.logs());
    step(&browser, "cancelled from Flink's job page", page);

    // The completed jobs list shows it CANCELED.
    let page = Instant::now();
    ok(
        browser.navigate(&format!("{base}#/job/completed")),
        &browser,
        &cluster,
    );
    ok(
        browser.wait_for(
            "Flink's completed jobs list shows the job CANCELED",
            &jobs_js,
            WAIT,
            |rows| has_row(rows, &name, "CANCELED"),
        ),
        &browser,
        &cluster,
    );
    // Its page, from the completed jobs: CANCELED, the graph still drawn.
    ok(
        browser.navigate(&format!("{base}#/job/completed/{jid}/overview")),
        &browser,
        &cluster,
    );
    ok(
        browser.wait_for(
            "Flink's page of the completed job shows CANCELED and the graph",
            job_js,
            WAIT,
            |v| {
                v["jobId"] == jid.as_str()
                    && v["state"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("CANCELED"))
                    && v["cancel"] == false
                    && v["nodes"].as_object().map(|n| n.len()) == Some(expected_nodes)
            },
        ),
        &browser,
        &cluster,
    );
    step(&browser, "completed jobs and the job's page shown", page);

    // The cancel went through the app's own call (its response event has long arrived).
    assert!(
        browser
            .responses()
            .iter()
            .any(|r| r.url.ends_with(&format!("jobs/{jid}/yarn-cancel")) && r.status == 202),
        "the app cancelled through GET /jobs/{jid}/yarn-cancel, answered 202: {:#?}",
        browser.responses()
    );

    // What the app received: no server error; the 404s are endpoints rflink does not have.
    let responses = browser.responses().to_vec();
    let mut not_found: Vec<&str> = responses
        .iter()
        .filter(|r| r.status == 404)
        .map(|r| r.url.strip_prefix(&base).unwrap_or(&r.url))
        .collect();
    not_found.sort_unstable();
    not_found.dedup();
    println!(
        "{} responses; 404 (absent in rflink, see docs/rest-api.md): {not_found:?}",
        responses.len()
    );
    // The pages checked call no endpoint rflink lacks: a 404 would be a part of one missing.
    assert!(
        not_found.is_empty(),
        "pages the test checks got 404s: {not_found:#?}"
    );
    let server_errors: Vec<String> = responses
        .iter()
        .filter(|r| r.status >= 500)
        .map(|r| format!("{} {}", r.status, r.url))
        .collect();
    assert!(
        server_errors.is_empty(),
        "the app received server errors: {server_errors:#?}\n{}",
        cluster.logs()
    );
    let (known, unexpected): (Vec<&String>, Vec<&String>) = browser
        .page_errors()
        .iter()
        .partition(|e| FLINKS_OWN_ERRORS.iter().any(|known| e.contains(known)));
    if !known.is_empty() {
        println!(
            "{} page errors of Flink's app itself, from pages left quickly: {FLINKS_OWN_ERRORS:?}",
            known.len()
        );
    }
    assert!(
        unexpected.is_empty(),
        "Flink's app logged errors (a REST answer it could not read?): {unexpected:#?}"
    );
    println!("Flink web UI test took {:?}", started.elapsed());
}
