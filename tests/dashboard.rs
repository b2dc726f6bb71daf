//! The web dashboard (`runtime/src/rest/dashboard/`) in a real browser: headless Chromium,
//! driven over the DevTools protocol (`tests/support/browser.rs`), against a cluster of real
//! `rflink-node` processes.
//!
//! A streaming WordCount runs on 2 TaskManagers × 2 slots; the page must show the cluster and
//! the job, draw every vertex of the job graph with its parallelism and every edge with its
//! ship strategy (no two boxes overlapping), and cancel the job with one click. A screenshot of
//! the job page is saved as `<target dir>/dashboard/wordcount-running.png`.
//!
//! Chromium is required: without it the test fails and says to run
//! `scripts/install-test-tools`; `RFLINK_SKIP_BROWSER=1` skips it on purpose.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use support::browser::{artifact_dir, chromium_for, ok, Browser};
use support::Cluster;

/// Each step's deadline: far above what it takes, so only a real hang fails.
const WAIT: Duration = Duration::from_secs(30);

/// The dashboard polls every `refresh-interval` (3 s); a page check may take a few of those.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// Where the screenshot goes: `dashboard/` in the target directory of the binaries under test.
fn screenshot_path() -> PathBuf {
    artifact_dir("dashboard").join("wordcount-running.png")
}

#[actix_rt::test]
async fn the_dashboard_shows_a_running_wordcount_and_cancels_it() {
    let Some(chromium) = chromium_for("the dashboard browser test") else {
        return;
    };
    let started = Instant::now();
    let cluster = Cluster::start(2, 2, &[]);
    cluster
        .wait_for_overview("2 task managers with 4 slots", WAIT, |o| {
            o.taskmanagers == 2 && o.slots_total == 4
        })
        .await;

    let output = tempfile::tempdir().expect("tempdir");
    let (job_id, details) = cluster
        .start_endless_wordcount(&output.path().display().to_string())
        .await;
    // The job as the page reads it (ids as the REST API spells them).
    let jid = details["jid"].as_str().expect("jid").to_string();
    let vertices: Vec<(String, String, u64)> = details["vertices"]
        .as_array()
        .expect("vertices")
        .iter()
        .map(|v| {
            (
                v["id"].as_str().expect("vertex id").to_string(),
                v["name"].as_str().expect("vertex name").to_string(),
                v["parallelism"].as_u64().expect("parallelism"),
            )
        })
        .collect();
    let edges = support::plan_edges(&details);
    assert!(
        vertices.len() >= 2 && !edges.is_empty(),
        "WordCount has a keyed exchange: {details}"
    );

    let mut browser = Browser::launch(&chromium).unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", cluster.rest.address());
    ok(browser.navigate(&format!("{base}/")), &browser, &cluster);

    // The overview: the cluster's TaskManagers and slots, and the job, RUNNING.
    let overview_js = format!(
        r#"(() => {{
            const o = document.querySelector('#cluster-overview');
            const f = (n) => o && o.querySelector(`[data-field="${{n}}"]`)?.textContent.trim();
            const row = document.querySelector('#jobs-table tr[data-job-id="{jid}"]');
            return {{
                taskmanagers: f('taskmanagers'),
                slotsTotal: f('slots-total'),
                slotsAvailable: f('slots-available'),
                job: row?.querySelector('[data-field="status"]')?.textContent.trim() ?? null,
                tmRows: document.querySelectorAll('#taskmanagers-table tr[data-taskmanager-id]').length,
            }};
        }})()"#,
        jid = jid,
    );
    let overview = ok(
        browser.wait_for(
            "the overview shows the cluster and the job RUNNING",
            &overview_js,
            PAGE_WAIT,
            |v| {
                v["taskmanagers"] == "2"
                    && v["slotsTotal"] == "4"
                    && v["job"] == "RUNNING"
                    && v["tmRows"] == 2
            },
        ),
        &browser,
        &cluster,
    );
    let rest_overview = cluster.rest.overview().await.expect("overview");
    assert_eq!(
        overview["slotsAvailable"],
        rest_overview.slots_available.to_string(),
        "free slots on the page and in /overview: {overview}"
    );

    // The job page, reached through the jobs table's link.
    let clicked = ok(
        browser.evaluate(&format!(
            r#"(() => {{
                const a = document.querySelector('#jobs-table tr[data-job-id="{jid}"] a');
                if (!a) return false;
                a.click();
                return true;
            }})()"#
        )),
        &browser,
        &cluster,
    );
    assert_eq!(clicked, true, "the jobs table links to the job");
    let job_js = format!(
        r#"(() => {{
            const page = document.querySelector('#job-page[data-job-id="{jid}"]');
            if (!page) return null;
            const graph = page.querySelector('svg#job-graph');
            const boxes = graph ? [...graph.querySelectorAll('g.vertex')] : [];
            return {{
                status: page.querySelector('[data-field="status"]')?.textContent.trim() ?? null,
                cancel: !!document.querySelector('button#cancel-job:not([disabled])'),
                exceptions: !!page.querySelector('#exceptions'),
                checkpoints: !!page.querySelector('#checkpoints'),
                vertices: boxes.map((g) => {{
                    const b = g.getBBox();
                    const m = g.transform.baseVal.consolidate()?.matrix;
                    return {{
                        id: g.dataset.vertexId,
                        title: g.querySelector('title')?.textContent ?? '',
                        name: g.querySelector('.vertex-name')?.textContent ?? '',
                        parallelism: g.querySelector('[data-field="parallelism"]')?.textContent.trim() ?? null,
                        box: [b.x + (m ? m.e : 0), b.y + (m ? m.f : 0), b.width, b.height],
                    }};
                }}),
                edges: graph ? [...graph.querySelectorAll('path.edge')].map((p) => ({{
                    from: p.dataset.source, to: p.dataset.target,
                    ship: p.getAttribute('data-ship-strategy'),
                }})) : [],
            }};
        }})()"#,
        jid = jid,
    );
    let expected_vertices = vertices.len();
    let job = ok(
        browser.wait_for(
            "the job page shows the running job's graph",
            &job_js,
            PAGE_WAIT,
            |v| {
                v["status"] == "RUNNING"
                    && v["cancel"] == true
                    && v["vertices"].as_array().map(Vec::len) == Some(expected_vertices)
            },
        ),
        &browser,
        &cluster,
    );
    assert_eq!(job["exceptions"], true, "{job}");
    assert_eq!(job["checkpoints"], true, "{job}");
    let drawn = job["vertices"].as_array().expect("vertices").clone();
    for (id, name, parallelism) in &vertices {
        let box_ = drawn
            .iter()
            .find(|d| d["id"] == id.as_str())
            .unwrap_or_else(|| panic!("vertex {id} ({name}) is not drawn: {job}"));
        assert_eq!(
            box_["parallelism"],
            parallelism.to_string(),
            "the parallelism of {name}: {box_}"
        );
        assert!(
            box_["title"]
                .as_str()
                .unwrap_or_default()
                .starts_with(name.as_str()),
            "the tooltip of {id} names {name}: {box_}"
        );
        // The box shows the name, shortened with an ellipsis when it does not fit.
        let shown = box_["name"].as_str().unwrap_or_default();
        let shown = shown.trim_end_matches('…');
        assert!(
            !shown.is_empty() && name.replace(' ', "").starts_with(&shown.replace(' ', "")),
            "the box of {id} shows {shown:?}, not a prefix of {name:?}"
        );
    }
    // No two boxes overlap.
    let rects: Vec<[f64; 4]> = drawn
        .iter()
        .map(|d| {
            let b = &d["box"];
            [0, 1, 2, 3].map(|i| b[i].as_f64().expect("a number"))
        })
        .collect();
    for (i, a) in rects.iter().enumerate() {
        for b in &rects[i + 1..] {
            let apart = a[0] + a[2] <= b[0]
                || b[0] + b[2] <= a[0]
                || a[1] + a[3] <= b[1]
                || b[1] + b[3] <= a[1];
            assert!(apart, "vertex boxes {a:?} and {b:?} overlap: {job}");
        }
    }
    // Every edge of the plan is drawn with its ship strategy.
    let drawn_edges = job["edges"].as_array().expect("edges");
    for (from, to, ship) in &edges {
        assert!(
            drawn_edges.iter().any(|e| e["from"] == from.as_str()
                && e["to"] == to.as_str()
                && e["ship"] == ship.as_str()),
            "edge {from} -> {to} ({ship}) is not drawn: {drawn_edges:?}"
        );
    }
    assert!(
        drawn_edges
            .iter()
            .all(|e| e["ship"].as_str().is_some_and(|s| !s.is_empty())),
        "every edge names its ship strategy: {drawn_edges:?}"
    );

    // When the REST API reports records (it may not yet: metrics can stay 0), the graph shows
    // them before the screenshot: a graph of zeros says little.
    let reported = cluster
        .rest
        .job_details(job_id)
        .await
        .map(|d| {
            let d = serde_json::to_value(&d).unwrap_or_default();
            d["vertices"].as_array().is_some_and(|vs| {
                vs.iter()
                    .any(|v| v["metrics"]["write-records"].as_u64().unwrap_or(0) > 0)
            })
        })
        .unwrap_or(false);
    if reported {
        ok(
            browser.wait_for(
                "the graph shows the records REST reports",
                "[...document.querySelectorAll('#job-graph [data-field=\"records-out\"]')]\
                 .some((t) => !['0', '—'].includes(t.textContent.trim()))",
                PAGE_WAIT,
                |v| v == true,
            ),
            &browser,
            &cluster,
        );
    }
    let screenshot = screenshot_path();
    ok(browser.screenshot(&screenshot), &browser, &cluster);
    println!("dashboard screenshot: {}", screenshot.display());

    // One click cancels the job: REST sees CANCELED, and so does the page.
    let clicked = ok(
        browser.evaluate(
            "(() => { const b = document.getElementById('cancel-job'); \
             if (!b || b.disabled) return false; b.click(); return true; })()",
        ),
        &browser,
        &cluster,
    );
    assert_eq!(clicked, true, "the cancel button is there and enabled");
    let status = cluster
        .wait_for_job_status(job_id, JobStatus::is_terminal, Instant::now() + WAIT)
        .await;
    assert_eq!(status, JobStatus::Canceled, "{}", cluster.logs());
    let after = ok(
        browser.wait_for("the job page shows CANCELED", &job_js, PAGE_WAIT, |v| {
            v["status"] == "CANCELED" && v["cancel"] == false
        }),
        &browser,
        &cluster,
    );
    assert!(
        after["vertices"].as_array().map(Vec::len) == Some(expected_vertices),
        "the graph stays drawn after the job ended: {after}"
    );
    assert!(
        browser.page_errors().is_empty(),
        "the page logged errors: {:?}",
        browser.page_errors()
    );
    println!("dashboard test took {:?}", started.elapsed());
}

/// With `rest.auth.protect-reads`, every API call of the page needs the REST token: the page
/// asks for it once (a `window.prompt`, answered here by a stand-in installed before the page's
/// scripts run), then shows the cluster and the job, and its Cancel sends the token too.
#[actix_rt::test]
async fn with_protected_reads_the_dashboard_asks_for_the_token_once() {
    let Some(chromium) = chromium_for("the dashboard token test") else {
        return;
    };
    let token = "dashboard-test-token-0123456789abcdef";
    let token_flag = format!("rest.auth.token={token}");
    let cluster = Cluster::start(
        1,
        2,
        &["-D", &token_flag, "-D", "rest.auth.protect-reads=true"],
    );
    cluster
        .wait_for_overview("1 task manager", WAIT, |o| o.taskmanagers == 1)
        .await;
    // Without the token, even a read is refused.
    let anonymous = rflink_runtime::rest::client::RestClient::new(cluster.rest.address());
    match anonymous.overview().await {
        Err(err) if err.is_unauthorized() => {}
        other => panic!("a read without the token: {other:?}"),
    }
    let output = tempfile::tempdir().expect("tempdir");
    let (job_id, details) = cluster
        .start_endless_wordcount(&output.path().display().to_string())
        .await;
    let jid = details["jid"].as_str().expect("jid").to_string();

    let mut browser = Browser::launch(&chromium).unwrap_or_else(|e| panic!("{e}"));
    let stand_in = format!(
        "window.__prompts = 0; window.prompt = () => {{ window.__prompts += 1; return '{token}'; }};"
    );
    ok(
        browser.call(
            "Page.addScriptToEvaluateOnNewDocument",
            serde_json::json!({ "source": stand_in }),
        ),
        &browser,
        &cluster,
    );
    let base = format!("http://{}", cluster.rest.address());
    ok(browser.navigate(&format!("{base}/")), &browser, &cluster);
    let row = ok(
        browser.wait_for(
            "the jobs table shows the job after one prompt",
            &format!(
                r#"(() => ({{
                    row: !!document.querySelector('#jobs-table tr[data-job-id="{jid}"] a'),
                    prompts: window.__prompts,
                    stored: sessionStorage.getItem('rflink.rest.token') !== null,
                }}))()"#
            ),
            PAGE_WAIT,
            |v| v["row"] == true,
        ),
        &browser,
        &cluster,
    );
    assert_eq!(row["prompts"], 1, "asked exactly once: {row}");
    assert_eq!(row["stored"], true, "kept for this tab: {row}");

    let clicked = ok(
        browser.evaluate(&format!(
            r#"(() => {{
                const a = document.querySelector('#jobs-table tr[data-job-id="{jid}"] a');
                if (!a) return false;
                a.click();
                return true;
            }})()"#
        )),
        &browser,
        &cluster,
    );
    assert_eq!(clicked, true);
    ok(
        browser.wait_for(
            "the job page with an enabled Cancel",
            "!!document.querySelector('button#cancel-job:not([disabled])')",
            PAGE_WAIT,
            |v| v == true,
        ),
        &browser,
        &cluster,
    );
    let clicked = ok(
        browser.evaluate(
            "(() => { const b = document.getElementById('cancel-job'); \
             if (!b || b.disabled) return false; b.click(); return true; })()",
        ),
        &browser,
        &cluster,
    );
    assert_eq!(clicked, true);
    let status = cluster
        .wait_for_job_status(job_id, JobStatus::is_terminal, Instant::now() + WAIT)
        .await;
    assert_eq!(status, JobStatus::Canceled, "{}", cluster.logs());
    let prompts = ok(browser.evaluate("window.__prompts"), &browser, &cluster);
    assert_eq!(prompts, 1, "the cancel reused the stored token");
    assert!(
        browser.page_errors().is_empty(),
        "script errors on the page: {:?}",
        browser.page_errors()
    );
}
