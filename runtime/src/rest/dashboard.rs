//! rflink's web dashboard: a few static files compiled into the binary and served at `/`.
//!
//! The page (`dashboard/index.html`, `app.js`, `style.css`) is plain HTML, CSS and JavaScript
//! with no build step, no framework and no request leaving the JobManager: it reads the same
//! Flink REST API as any other client (`/overview`, `/jobs/overview`, `/jobs/{id}`, ...) and
//! draws the job graph as SVG.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

/// One file of the dashboard: its path, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    path: "/index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("dashboard/index.html"),
};

const ASSETS: [Asset; 3] = [
    INDEX,
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/style.css"),
    },
];

/// The total size of the dashboard's files in bytes.
pub fn size() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

fn serve(asset: &'static Asset) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ))
        // The files change only with the binary; a short cache keeps an upgrade visible.
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        ))
        .body(asset.body)
}

/// Registers `/` (the page) and every file of the dashboard (bare paths only, never under
/// `/v1`, which is the REST API's).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { serve(&INDEX) }));
    for asset in &ASSETS {
        cfg.route(
            asset.path,
            web::get().to(move || async move { serve(asset) }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_stays_small() {
        // The issue allows a few hundred KB; keep well below.
        assert!(size() < 300 * 1024, "dashboard is {} bytes", size());
        assert!(INDEX.body.contains("app.js"));
    }
}
