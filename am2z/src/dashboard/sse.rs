//! `GET /api/events`: the runtime's events as server-sent events, for the pages' live updates.
//!
//! Each event is a message whose data is the [`Event`] as JSON. A stream that fell behind
//! says so with an `event: lagged` message (its data: how many events it skipped), so a page
//! knows to reload what it shows. `?session=` keeps one session's events, `?run=` one run's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{self, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Dashboard;
use super::api::{ApiError, run_id, session_id};
use crate::runtime::Inspect;
use crate::{Event, EventStream, RunId};

/// Which events a stream carries.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Selection {
    session: Option<String>,
    run: Option<String>,
}

/// What one stream is reading.
struct Reading {
    events: EventStream,
    run: Option<RunId>,
    missed: u64,
    closing: CancellationToken,
    greeted: bool,
    /// An event read while reporting a lag, sent next.
    pending: Option<Event>,
}

/// `GET /api/events`
pub(super) async fn events<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
    Query(selection): Query<Selection>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let session = selection
        .session
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(session_id)
        .transpose()?;
    let run = selection
        .run
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(run_id)
        .transpose()?;
    let events = match &session {
        Some(session) => dashboard.runtime.subscribe_session(session),
        None => dashboard.runtime.subscribe(),
    };
    let reading = Reading {
        events,
        run,
        missed: 0,
        closing: dashboard.closing.clone(),
        greeted: false,
        pending: None,
    };
    let stream = futures::stream::unfold(reading, next_message);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn next_message(mut reading: Reading) -> Option<(Result<sse::Event, Infallible>, Reading)> {
    if !reading.greeted {
        // A first message right away: the page knows it is connected, and reloads once to
        // cover what happened between rendering it and subscribing.
        reading.greeted = true;
        let hello = sse::Event::default().event("hello").data("{}");
        return Some((Ok(hello), reading));
    }
    loop {
        let event = match reading.pending.take() {
            Some(event) => event,
            None => tokio::select! {
                () = reading.closing.cancelled() => return None,
                event = reading.events.next_event() => event?,
            },
        };
        if reading.events.missed() > reading.missed {
            let skipped = reading.events.missed() - reading.missed;
            reading.missed = reading.events.missed();
            reading.pending = Some(event);
            let lagged = sse::Event::default()
                .event("lagged")
                .data(skipped.to_string());
            return Some((Ok(lagged), reading));
        }
        if reading.run.is_some_and(|run| event.run_id != Some(run)) {
            continue;
        }
        return Some((Ok(message(&event)), reading));
    }
}

fn message(event: &Event) -> sse::Event {
    match serde_json::to_string(event) {
        Ok(json) => sse::Event::default().data(json),
        // An event is plain data; should one ever not serialise, the page still learns that
        // something happened.
        Err(error) => sse::Event::default()
            .event("unreadable")
            .data(error.to_string()),
    }
}
