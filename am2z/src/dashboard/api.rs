//! The JSON API under `/api`: what the pages show, as the [`Inspect`] types serialise.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Dashboard;
use super::activity::ActivitySnapshot;
use crate::runtime::{Cursor, Inspect, PageRequest, RunFilter, RuntimeStats};
use crate::{Error, RunId, SessionId};

/// Items per page when the request does not say.
pub(super) const DEFAULT_LIMIT: usize = 50;

/// An [`Error`] as an HTTP answer: its status, and `{"error": <message>, "detail": <error>}`.
pub(super) struct ApiError(pub(super) Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

/// The status an error answers with.
pub(super) fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::Validation { .. } => StatusCode::BAD_REQUEST,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    detail: &'a Error,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.0.to_string(),
            detail: &self.0,
        };
        (status_of(&self.0), Json(body)).into_response()
    }
}

/// The query of a listing: paging, and for runs a filter. Empty values mean "not given", as
/// an HTML form sends them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Listing {
    /// The cursor of the page before.
    pub(super) after: Option<String>,
    /// Items per page.
    pub(super) limit: Option<String>,
    /// Only runs in this state.
    pub(super) state: Option<String>,
    /// Only runs of this processor.
    pub(super) processor: Option<String>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Listing {
    /// The page asked for.
    pub(super) fn page(&self) -> Result<PageRequest, Error> {
        let limit = match given(&self.limit) {
            None => DEFAULT_LIMIT,
            Some(text) => text.parse().map_err(|_| {
                Error::validation(
                    "limit",
                    format!("`{}` is not a number of items", text.escape_debug()),
                )
            })?,
        };
        Ok(PageRequest {
            after: given(&self.after).map(Cursor::new),
            limit,
        })
    }

    /// The filter asked for.
    pub(super) fn filter(&self) -> Result<RunFilter, Error> {
        Ok(RunFilter {
            state: given(&self.state).map(str::parse).transpose()?,
            processor: given(&self.processor).map(str::to_owned),
        })
    }
}

/// Reads a session id from a path segment.
pub(super) fn session_id(text: &str) -> Result<SessionId, Error> {
    SessionId::new(text)
}

/// Reads a run id from a path segment.
pub(super) fn run_id(text: &str) -> Result<RunId, Error> {
    text.parse()
}

/// `GET /api/sessions`
pub(super) async fn sessions<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
    Query(listing): Query<Listing>,
) -> Result<Response, ApiError> {
    let page = dashboard.runtime.sessions(listing.page()?).await?;
    Ok(Json(page).into_response())
}

/// `GET /api/sessions/{session}/runs`
pub(super) async fn runs<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
    Path(session): Path<String>,
    Query(listing): Query<Listing>,
) -> Result<Response, ApiError> {
    let session = session_id(&session)?;
    let page = dashboard
        .runtime
        .runs(&session, &listing.filter()?, listing.page()?)
        .await?;
    Ok(Json(page).into_response())
}

/// `GET /api/sessions/{session}/runs/{run}`
pub(super) async fn run<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
    Path((session, run)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = session_id(&session)?;
    let run = run_id(&run)?;
    match dashboard.runtime.run(&session, run).await? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(ApiError(Error::not_found(
            "run",
            run.to_string(),
            Vec::<String>::new(),
        ))),
    }
}

/// `GET /api/sessions/{session}/stats`
pub(super) async fn session_stats<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
    Path(session): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_id(&session)?;
    Ok(Json(dashboard.runtime.session_stats(&session).await?).into_response())
}

/// `GET /api/workers`
pub(super) async fn workers<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
) -> Result<Response, ApiError> {
    Ok(Json(dashboard.runtime.workers().await?).into_response())
}

/// What `GET /api/stats` answers.
#[derive(Serialize)]
struct Stats {
    runtime: RuntimeStats,
    activity: ActivitySnapshot,
    actions_enabled: bool,
}

/// `GET /api/stats`
pub(super) async fn stats<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
) -> Result<Response, ApiError> {
    dashboard.start_watching();
    let stats = Stats {
        runtime: dashboard.runtime.stats().await?,
        activity: dashboard.activity.snapshot(SystemTime::now()),
        actions_enabled: dashboard.actions_enabled(),
    };
    Ok(Json(stats).into_response())
}

/// `GET /metrics`: the Prometheus text, when a renderer is configured.
pub(super) async fn metrics<R: Inspect>(State(dashboard): State<Arc<Dashboard<R>>>) -> Response {
    let Some(render) = &dashboard.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not configured: set `DashboardConfig::metrics`\n",
        )
            .into_response();
    };
    match render().await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "rendering the metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RunState;

    #[test]
    fn listings_read_forms() {
        let listing = Listing {
            after: Some(String::new()),
            limit: Some("20".into()),
            state: Some("failed".into()),
            processor: Some(" ".into()),
        };
        assert_eq!(listing.page().ok(), Some(PageRequest::first(20)));
        assert_eq!(
            listing.filter().ok(),
            Some(RunFilter::state(RunState::Failed))
        );

        let bad = Listing {
            limit: Some("many".into()),
            state: Some("finished".into()),
            ..Listing::default()
        };
        assert!(matches!(bad.page(), Err(Error::Validation { .. })));
        assert!(matches!(bad.filter(), Err(Error::Validation { .. })));
    }
}
