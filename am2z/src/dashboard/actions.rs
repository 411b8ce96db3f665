//! The actions: retry a run, cancel a run, stop a session. POST only, each with
//! `Authorization: Bearer <token>`; without a configured token they are all refused.
//!
//! A browser cannot send that header to another origin without a CORS preflight, which this
//! router never answers, so a page elsewhere cannot make a visitor's browser act (no CSRF).

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Dashboard;
use super::api::{ApiError, run_id, session_id};
use crate::SessionId;
use crate::runtime::{CancelOutcome, Inspect, RetryOutcome};

/// Proof that a request carries the actions token; the extractor refuses it otherwise, before
/// anything else of the request is read.
pub(super) struct Authorized;

/// Why an action was refused.
pub(super) struct Refused(&'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: &'static str,
        }
        (StatusCode::FORBIDDEN, Json(Body { error: self.0 })).into_response()
    }
}

impl<R: Inspect> FromRequestParts<Arc<Dashboard<R>>> for Authorized {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard<R>>,
    ) -> Result<Self, Refused> {
        let Some(expected) = &dashboard.token else {
            return Err(Refused(
                "actions are disabled: the dashboard was started without an actions token",
            ));
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => Err(Refused(
                "this action needs the header `Authorization: Bearer <actions token>`",
            )),
            Some(given) if same_secret(given.as_bytes(), expected.as_bytes()) => Ok(Authorized),
            Some(_) => Err(Refused("the actions token is wrong")),
        }
    }
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut differ = given.len() ^ expected.len();
    for (at, byte) in expected.iter().enumerate() {
        let other = given.get(at).copied().unwrap_or(!byte);
        differ |= usize::from(other ^ byte);
    }
    differ == 0
}

/// `POST /api/sessions/{session}/runs/{run}/retry`
pub(super) async fn retry<R: Inspect>(
    _: Authorized,
    State(dashboard): State<Arc<Dashboard<R>>>,
    Path((session, run)): Path<(String, String)>,
) -> Result<Json<RetryOutcome>, ApiError> {
    let session = session_id(&session)?;
    let run = run_id(&run)?;
    let outcome = dashboard.runtime.retry_run(&session, run).await?;
    tracing::info!(%session, %run, ?outcome, "dashboard: retry run");
    Ok(Json(outcome))
}

/// `POST /api/sessions/{session}/runs/{run}/cancel`
pub(super) async fn cancel<R: Inspect>(
    _: Authorized,
    State(dashboard): State<Arc<Dashboard<R>>>,
    Path((session, run)): Path<(String, String)>,
) -> Result<Json<CancelOutcome>, ApiError> {
    let session = session_id(&session)?;
    let run = run_id(&run)?;
    let outcome = dashboard.runtime.cancel_run(&session, run).await?;
    tracing::info!(%session, %run, ?outcome, "dashboard: cancel run");
    Ok(Json(outcome))
}

/// What stopping a session answers.
#[derive(Serialize)]
struct Stopped {
    stopped: SessionId,
}

/// `POST /api/sessions/{session}/stop`
pub(super) async fn stop_session<R: Inspect>(
    _: Authorized,
    State(dashboard): State<Arc<Dashboard<R>>>,
    Path(session): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_id(&session)?;
    dashboard.runtime.stop_session(&session).await?;
    tracing::info!(%session, "dashboard: stop session");
    Ok(Json(Stopped { stopped: session }).into_response())
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_match_only_exactly() {
        assert!(same_secret(b"token-123", b"token-123"));
        assert!(!same_secret(b"token-124", b"token-123"));
        assert!(!same_secret(b"token-12", b"token-123"));
        assert!(!same_secret(b"token-1234", b"token-123"));
        assert!(!same_secret(b"", b"token-123"));
    }
}
