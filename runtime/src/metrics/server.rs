//! The Prometheus endpoint of a TaskManager: `GET /metrics` on its own port
//! (`metrics.reporter.prom.port`, a port or a range `9250-9260` as in Flink: the first free one
//! is taken). The JobManager serves `/metrics` on its REST port instead.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, App, HttpResponse, HttpServer};
use thiserror::Error;
use tracing::{error, info};

use super::MetricRegistry;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the metrics endpoint did not start.
#[derive(Debug, Error)]
pub enum MetricsServerError {
    /// The port setting is neither a port nor a range `low-high`.
    #[error("invalid metrics.reporter.prom.port '{0}': expected a port (0 for any) or a range like 9250-9260")]
    InvalidPort(String),
    /// No port of the range could be bound.
    #[error("cannot bind the metrics endpoint on {host}:{ports}: {reason}")]
    Bind {
        /// The bind host.
        host: String,
        /// The port or range.
        ports: String,
        /// The last bind error.
        reason: String,
    },
    /// Not started inside a tokio runtime.
    #[error("the metrics endpoint must be started inside a tokio runtime")]
    NoRuntime,
}

/// Parses `metrics.reporter.prom.port`: `9249`, `0`, or `9250-9260`.
pub fn parse_port_range(spec: &str) -> Result<(u16, u16), MetricsServerError> {
    let bad = || MetricsServerError::InvalidPort(spec.to_string());
    let spec = spec.trim();
    match spec.split_once('-') {
        None => {
            let port: u16 = spec.parse().map_err(|_| bad())?;
            Ok((port, port))
        }
        Some((low, high)) => {
            let low: u16 = low.trim().parse().map_err(|_| bad())?;
            let high: u16 = high.trim().parse().map_err(|_| bad())?;
            if low > high || low == 0 {
                return Err(bad());
            }
            Ok((low, high))
        }
    }
}

/// A running metrics endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer {
    handle: ServerHandle,
    local_addr: SocketAddr,
}

/// The response to a scrape.
pub fn prometheus_response(registry: &MetricRegistry) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
        ))
        .body(registry.render_prometheus())
}

impl MetricsServer {
    /// Binds the first free port of `ports` on `host` and serves `registry` at `/metrics`.
    pub fn start(
        host: &str,
        ports: &str,
        registry: MetricRegistry,
    ) -> Result<MetricsServer, MetricsServerError> {
        let (low, high) = parse_port_range(ports)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| MetricsServerError::NoRuntime)?;
        let mut last_error = String::from("no port tried");
        let mut bound = None;
        for port in low..=high {
            let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
                Ok(addrs) => addrs.collect(),
                Err(e) => {
                    last_error = e.to_string();
                    break;
                }
            };
            match TcpListener::bind(&addrs[..]) {
                Ok(listener) => {
                    bound = Some(listener);
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let bind_error = |reason: String| MetricsServerError::Bind {
            host: host.to_string(),
            ports: ports.to_string(),
            reason,
        };
        let listener = bound.ok_or_else(|| bind_error(last_error))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| bind_error(e.to_string()))?;
        let data = web::Data::new(registry);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/metrics",
                    web::get().to(|registry: web::Data<MetricRegistry>| async move {
                        prometheus_response(&registry)
                    }),
                )
                .default_service(web::to(|| async {
                    HttpResponse::NotFound()
                        .content_type("text/plain; charset=utf-8")
                        .body("not found: the metrics are at /metrics\n")
                }))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .map_err(|e| bind_error(e.to_string()))?
        .run();
        let handle = server.handle();
        runtime.spawn(async move {
            if let Err(e) = server.await {
                error!(component = "MetricsServer", error = %e, "metrics endpoint failed");
            }
        });
        info!(component = "MetricsServer", address = %local_addr, "prometheus metrics at /metrics");
        Ok(MetricsServer { handle, local_addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("9249").ok(), Some((9249, 9249)));
        assert_eq!(parse_port_range("0").ok(), Some((0, 0)));
        assert_eq!(parse_port_range(" 9250 - 9260 ").ok(), Some((9250, 9260)));
        for bad in ["", "x", "9260-9250", "0-5", "1-x", "70000"] {
            assert!(
                matches!(
                    parse_port_range(bad),
                    Err(MetricsServerError::InvalidPort(_))
                ),
                "{bad}"
            );
        }
    }
}
