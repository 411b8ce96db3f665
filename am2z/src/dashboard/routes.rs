//! Every route of the dashboard, and the headers every answer carries.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{Dashboard, actions, api, pages, sse};
use crate::runtime::Inspect;

pub(super) fn routes<R: Inspect>(dashboard: Arc<Dashboard<R>>) -> Router {
    Router::new()
        // Pages.
        .route("/", get(pages::overview::<R>))
        .route("/sessions/{session}", get(pages::session::<R>))
        .route("/sessions/{session}/runs/{run}", get(pages::run::<R>))
        .route("/assets/{file}", get(asset))
        // The JSON API the pages use.
        .route("/api/stats", get(api::stats::<R>))
        .route("/api/workers", get(api::workers::<R>))
        .route("/api/sessions", get(api::sessions::<R>))
        .route(
            "/api/sessions/{session}/stats",
            get(api::session_stats::<R>),
        )
        .route("/api/sessions/{session}/runs", get(api::runs::<R>))
        .route("/api/sessions/{session}/runs/{run}", get(api::run::<R>))
        .route("/api/events", get(sse::events::<R>))
        // Actions: POST only (any other method answers 405), each behind the token.
        .route(
            "/api/sessions/{session}/stop",
            post(actions::stop_session::<R>),
        )
        .route(
            "/api/sessions/{session}/runs/{run}/retry",
            post(actions::retry::<R>),
        )
        .route(
            "/api/sessions/{session}/runs/{run}/cancel",
            post(actions::cancel::<R>),
        )
        .route("/metrics", get(api::metrics::<R>))
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(secure))
        .with_state(dashboard)
}

/// Headers on every answer: no framing, no sniffing, no referrer, nothing from elsewhere, and
/// no inline script (the pages load their script and style from `/assets`).
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// On a loopback address, refuses requests that name another host: a page elsewhere whose
/// name was re-pointed at 127.0.0.1 (DNS rebinding) would otherwise read the dashboard as if
/// it were its own.
pub(super) async fn loopback_hosts_only(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or_default());
    match host {
        Some(host) if !names_loopback(host) => (
            StatusCode::FORBIDDEN,
            "this dashboard listens on loopback and answers only requests addressed to \
             localhost, 127.0.0.1 or [::1]\n",
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// Whether a `Host` header names this machine: `localhost` or a loopback address, with or
/// without a port.
fn names_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:7480`
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The files under `assets/`, built into the binary.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// `GET /assets/{file}`
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => pages::not_found().await.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::names_loopback;

    #[test]
    fn only_loopback_hosts_pass() {
        for host in [
            "localhost",
            "localhost:7480",
            "LOCALHOST:1",
            "127.0.0.1:7480",
            "127.1.2.3",
            "[::1]:7480",
            "[::1]",
        ] {
            assert!(names_loopback(host), "{host}");
        }
        for host in [
            "evil.example:7480",
            "evil.example",
            "10.0.0.1:7480",
            "[::2]:80",
            "localhost.evil.example",
            "",
        ] {
            assert!(!names_loopback(host), "{host}");
        }
    }
}
