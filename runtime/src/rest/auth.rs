//! Bearer-token access control of the REST API (`rest.auth.token`, `rest.auth.protect-reads`).
//!
//! Every endpoint of the REST API is registered through [`resource`](super::server::resource),
//! which wraps it in [`require_token`]: the one place every API request passes, after routing
//! and before any handler (or its 405 answer) runs. When the server has a token, a request that
//! needs it ([`TokenCheck::needs_token`]) and does not carry it as `Authorization: Bearer
//! <token>` is answered 401 with Flink's error body and `WWW-Authenticate: Bearer
//! realm="rflink"`, logged at `warn` (method, path, peer and why; never the token), and never
//! reaches its handler: nothing is submitted, cancelled, triggered or stored. The body of a
//! refused request is read and dropped chunk by chunk (bounded by
//! `rest.server.max-content-length` and the request timeout) so the client reads the 401
//! instead of a reset connection; nothing of it is kept.
//!
//! The dashboard's static files and unknown paths are not API resources and stay public.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::server::{error_body, AppState};
use super::RestAuth;

/// The realm of the `WWW-Authenticate` challenge.
pub(super) const CHALLENGE: &str = "Bearer realm=\"rflink\"";

/// The server's token, kept as its SHA-256 (compared in constant time), and what it guards.
pub(super) struct TokenCheck {
    digest: [u8; 32],
    protect_reads: bool,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCheck")
            .field("protect_reads", &self.protect_reads)
            .finish_non_exhaustive()
    }
}

/// Why a request's credentials were refused. The messages name no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum AuthFailure {
    /// No `Authorization` header.
    #[error("the request has no Authorization header")]
    Missing,
    /// The header is not visible ASCII (e.g. not UTF-8).
    #[error("the Authorization header is not valid header text")]
    NotText,
    /// Another scheme than `Bearer` (e.g. `Basic`), or no credentials at all.
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    /// `Bearer` with nothing after it.
    #[error("the Authorization header's bearer token is empty")]
    Empty,
    /// Not the server's token.
    #[error("the bearer token is not the cluster's REST token")]
    Wrong,
}

impl TokenCheck {
    pub(super) fn new(auth: &RestAuth) -> Self {
        TokenCheck {
            digest: digest(auth.token.expose().as_bytes()),
            protect_reads: auth.protect_reads,
        }
    }

    /// Whether `method path` needs the token: every request that may change something (any
    /// method but GET, HEAD and OPTIONS, and the dashboard's cancel, `GET
    /// /jobs/{id}/yarn-cancel`), and with `protect_reads` every request.
    pub(super) fn needs_token(&self, method: &Method, path: &str) -> bool {
        self.protect_reads || is_mutating(method, path)
    }

    /// Checks the request's `Authorization` header.
    pub(super) fn check(&self, header: Option<&HeaderValue>) -> Result<(), AuthFailure> {
        let header = header.ok_or(AuthFailure::Missing)?;
        let text = header.to_str().map_err(|_| AuthFailure::NotText)?.trim();
        let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
        // RFC 9110: the scheme is case-insensitive.
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::NotBearer);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthFailure::Empty);
        }
        if constant_time_eq(&digest(token.as_bytes()), &self.digest) {
            Ok(())
        } else {
            Err(AuthFailure::Wrong)
        }
    }
}

/// Whether a request may change something.
fn is_mutating(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || path.trim_end_matches('/').ends_with("/yarn-cancel")
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equality of two digests in time independent of where they differ (both have the same
/// length whatever the tokens' lengths).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// The middleware of every API resource: lets the request through if the server has no
/// token, the request does not need it, or it carries it; else answers 401.
pub(super) async fn require_token<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        // Every resource runs inside the app that holds the state.
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let Some(check) = state.token_check.as_ref() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if !check.needs_token(req.method(), req.path()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let failure = match check.check(req.headers().get(header::AUTHORIZATION)) {
        Ok(()) => return Ok(next.call(req).await?.map_into_boxed_body()),
        Err(failure) => failure,
    };
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_string(), |a: SocketAddr| a.to_string());
    warn!(
        method = %req.method(),
        path = req.path(),
        peer = %peer,
        reason = %failure,
        "rest request refused: 401, no valid REST token"
    );
    let drained = drain(
        &mut req,
        state.max_content_length(),
        state.request_timeout(),
    )
    .await;
    let message = format!(
        "Unauthorized: {failure}. This rflink cluster requires its REST token (rest.auth.token) \
         as `Authorization: Bearer <token>` on this request (the rflink CLI: --token, \
         --token-file or RFLINK_REST_TOKEN)."
    );
    let mut response = error_body(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(req.into_response(response))
}

/// Reads and drops a refused request's body, so the client (still sending) reads the 401
/// rather than a reset connection. Stops past `max` bytes or `timeout`; returns whether the
/// whole body was read (else the connection is closed after the answer).
async fn drain(req: &mut ServiceRequest, max: usize, timeout: Duration) -> bool {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return false;
    }
    let mut payload = req.take_payload();
    let reading = async {
        let mut seen = 0usize;
        while let Some(chunk) = payload.next().await {
            match chunk {
                Ok(chunk) => {
                    seen = seen.saturating_add(chunk.len());
                    if seen > max {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(timeout, reading)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rflink_rpc::security::Sensitive;

    fn check(protect_reads: bool) -> TokenCheck {
        TokenCheck::new(&RestAuth {
            token: Sensitive::new("s3cret-token"),
            protect_reads,
        })
    }

    fn value(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).expect("a header value")
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let c = check(false);
        assert_eq!(c.check(Some(&value("Bearer s3cret-token"))), Ok(()));
        assert_eq!(c.check(Some(&value("bearer  s3cret-token "))), Ok(()));
        assert_eq!(c.check(None), Err(AuthFailure::Missing));
        assert_eq!(c.check(Some(&value(""))), Err(AuthFailure::NotBearer));
        assert_eq!(c.check(Some(&value("Bearer"))), Err(AuthFailure::Empty));
        assert_eq!(c.check(Some(&value("Bearer   "))), Err(AuthFailure::Empty));
        assert_eq!(
            c.check(Some(&value("Basic czNjcmV0LXRva2Vu"))),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            c.check(Some(&value("Bearer s3cret-tokenX"))),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(
            c.check(Some(&value("Bearer S3CRET-TOKEN"))),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(
            c.check(Some(
                &HeaderValue::from_bytes(b"Bearer \xffs3cret").expect("opaque bytes")
            )),
            Err(AuthFailure::NotText)
        );
    }

    #[test]
    fn mutations_always_need_it_reads_only_when_protected() {
        let open = check(false);
        let closed = check(true);
        for (method, path) in [
            (Method::POST, "/jobs"),
            (Method::PATCH, "/v1/jobs/0123"),
            (Method::PUT, "/anything"),
            (Method::DELETE, "/jobs/x"),
            (Method::GET, "/jobs/0123/yarn-cancel"),
        ] {
            assert!(open.needs_token(&method, path), "{method} {path}");
            assert!(closed.needs_token(&method, path), "{method} {path}");
        }
        for path in ["/overview", "/metrics", "/jobs/0123"] {
            assert!(!open.needs_token(&Method::GET, path), "{path}");
            assert!(closed.needs_token(&Method::GET, path), "{path}");
        }
    }

    #[test]
    fn debug_shows_no_token() {
        let text = format!("{:?}", check(true));
        assert!(!text.contains("s3cret"), "{text}");
    }
}
