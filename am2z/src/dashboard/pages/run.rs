//! `/sessions/{session}/runs/{run}`: one run: its workflow graph with each step's state, the
//! steps' attempts and timings, its values (or that they are redacted), its error chain and
//! its events.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::{Frame, Links, error_page, graph, page, short_run, state_badge, took};
use crate::dashboard::Dashboard;
use crate::dashboard::api::{run_id, session_id};
use crate::dashboard::html::{Took, UrlPart, esc, time};
use crate::runtime::{ErrorDetail, Inspect, RunDetail, RunState, Shown, StepDetail, StepState};
use crate::{Error, Event, EventKind, RunId, SessionId};

/// The most characters of one value shown inline; the API has the whole of it.
const VALUE_SHOWN: usize = 64 * 1024;

/// `GET /sessions/{session}/runs/{run}`
pub(in crate::dashboard) async fn run<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
    Path((session, run)): Path<(String, String)>,
) -> Response {
    let links = Links::new(&dashboard.prefix);
    let asked = session_id(&session).and_then(|session| Ok((session, run_id(&run)?)));
    let (session, run) = match asked {
        Ok(asked) => asked,
        Err(error) => return error_page(links, &error),
    };
    let detail = match dashboard.runtime.run(&session, run).await {
        Ok(Some(detail)) => detail,
        Ok(None) => {
            let error = Error::not_found(
                "run",
                format!("{run} in session {session}"),
                Vec::<String>::new(),
            );
            return error_page(links, &error);
        }
        Err(error) => return error_page(links, &error),
    };
    // The state of the run that retried this one, so the page can show it finish.
    let retried_state = match detail.retried_as {
        Some(next) => dashboard
            .runtime
            .run(&session, next)
            .await
            .ok()
            .flatten()
            .map(|d| d.summary.state),
        None => None,
    };
    let now = SystemTime::now();

    let mut body = String::with_capacity(32 * 1024);
    body.push_str("<div data-region=\"run\">");
    heading(&mut body, links, &detail, dashboard.actions_enabled());
    summary(&mut body, links, &detail, retried_state, now);

    body.push_str("<section class=\"panel\"><h2>Workflow</h2>");
    match &detail.plan {
        Some(plan) => body.push_str(&graph::render(plan, &detail.steps)),
        None => body.push_str(
            "<p class=\"muted\">No plan: the processor is not registered with this runtime.</p>",
        ),
    }
    body.push_str("</section>");
    steps(&mut body, &detail.steps, now);
    if let Some(error) = &detail.error {
        error_chain(&mut body, error);
    }
    values(&mut body, &detail);
    events(&mut body, &detail.events);
    body.push_str("</div>");

    let name = session.as_str();
    let frame = Frame {
        links,
        title: format!("run {}", detail.summary.run),
        trail: vec![
            ("Overview".to_owned(), links.overview()),
            (name.to_owned(), links.session(name)),
        ],
        events: format!("{}?session={}", links.api("/events"), UrlPart(name)),
        actions_enabled: dashboard.actions_enabled(),
    };
    page(&frame, &body).into_response()
}

fn heading(out: &mut String, links: Links<'_>, detail: &RunDetail, actions: bool) {
    let summary = &detail.summary;
    let _ = write!(
        out,
        "<div class=\"heading\"><h1>{} <code class=\"run-id\">{}</code> {}</h1>",
        esc(&summary.processor),
        summary.run,
        state_badge(summary.state)
    );
    if actions {
        let path = |what: &str| {
            links.api(format_args!(
                "/sessions/{}/runs/{}/{what}",
                UrlPart(summary.session.as_str()),
                summary.run
            ))
        };
        out.push_str("<div class=\"actions\">");
        let retryable = matches!(summary.state, RunState::Failed | RunState::DeadLettered);
        if retryable && detail.retried_as.is_none() {
            let _ = write!(
                out,
                "<button class=\"action\" id=\"retry\" data-action=\"retry\" data-url=\"{}\">Retry run</button>",
                esc(&path("retry"))
            );
        }
        if !summary.state.is_terminal() {
            let _ = write!(
                out,
                "<button class=\"action danger\" id=\"cancel\" data-action=\"cancel\" data-url=\"{}\" \
                 data-confirm=\"Cancel this run?\">Cancel run</button>",
                esc(&path("cancel"))
            );
        }
        out.push_str("</div>");
    }
    out.push_str("</div>");
}

fn summary(
    out: &mut String,
    links: Links<'_>,
    detail: &RunDetail,
    retried: Option<RunState>,
    now: SystemTime,
) {
    let summary = &detail.summary;
    let session = summary.session.as_str();
    let _ = write!(
        out,
        "<section class=\"panel\"><dl class=\"facts\">\
         <div><dt>Session</dt><dd><a href=\"{}\">{}</a></dd></div>\
         <div><dt>Submitted</dt><dd>{}</dd></div>\
         <div><dt>Ended</dt><dd>{}</dd></div>\
         <div><dt>Took</dt><dd>{}</dd></div>\
         <div><dt>Attempts</dt><dd>{}</dd></div>",
        esc(&links.session(session)),
        esc(session),
        time(summary.created_at, now),
        summary
            .ended_at
            .map_or_else(|| "—".to_owned(), |at| time(at, now)),
        match took(summary) {
            t if t.is_empty() => "—".to_owned(),
            t => t,
        },
        summary.attempts,
    );
    if let Some(previous) = detail.retry_of {
        let _ = write!(
            out,
            "<div><dt>Retry of</dt><dd id=\"retry-of\"><a href=\"{}\">{}</a></dd></div>",
            esc(&links.run(session, previous)),
            short_run(previous)
        );
    }
    if let Some(next) = detail.retried_as {
        retried_as(out, links, &summary.session, next, retried);
    }
    out.push_str("</dl></section>");
}

fn retried_as(
    out: &mut String,
    links: Links<'_>,
    session: &SessionId,
    next: RunId,
    state: Option<RunState>,
) {
    let _ = write!(
        out,
        "<div><dt>Retried as</dt><dd id=\"retried-as\" data-run=\"{}\"><a href=\"{}\">{}</a> {}</dd></div>",
        next,
        esc(&links.run(session.as_str(), next)),
        short_run(next),
        state.map_or_else(String::new, state_badge),
    );
}

fn step_state(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "pending",
        StepState::Running => "running",
        StepState::Retrying => "retrying",
        StepState::Completed => "completed",
        StepState::Failed => "failed",
    }
}

pub(super) fn step_badge(state: StepState) -> String {
    format!(
        "<span class=\"badge step-{0}\">{0}</span>",
        step_state(state)
    )
}

fn steps(out: &mut String, steps: &[StepDetail], now: SystemTime) {
    out.push_str("<section class=\"panel\"><h2>Steps</h2>");
    if steps.is_empty() {
        out.push_str("<p class=\"muted empty\">No step detail.</p></section>");
        return;
    }
    out.push_str(
        "<table class=\"steps\"><thead><tr><th>Node</th><th>Processor</th><th>State</th><th class=\"num\">Attempts</th>\
         <th>Started</th><th>Finished</th><th>Time in attempts</th><th>Last error</th></tr></thead><tbody>",
    );
    for step in steps {
        let _ = write!(
            out,
            "<tr id=\"step-{0}\" data-step-state=\"{1}\"><td>{0}</td><td>{2}</td><td>{3}</td><td class=\"num\">{4}</td>\
             <td>{5}</td><td>{6}</td><td>{7}</td><td class=\"error-cell\">{8}</td></tr>",
            step.node,
            step_state(step.state),
            esc(&step.processor),
            step_badge(step.state),
            step.attempts,
            step.started_at.map_or_else(String::new, |at| time(at, now)),
            step.finished_at
                .map_or_else(String::new, |at| time(at, now)),
            step.duration
                .map_or_else(String::new, |d| Took(d).to_string()),
            esc(step.error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></section>");
}

fn error_chain(out: &mut String, error: &ErrorDetail) {
    let root = error.error.root_cause();
    let _ = write!(
        out,
        "<section class=\"panel error\" id=\"error\"><h2>Error <span class=\"muted\">· {:?}, {:?}{}</span></h2><ol class=\"causes\">",
        root.category(),
        root.severity(),
        if root.is_retryable() {
            ", retryable"
        } else {
            ""
        }
    );
    for cause in &error.chain {
        let _ = write!(out, "<li>{}</li>", esc(cause));
    }
    out.push_str("</ol></section>");
}

fn values(out: &mut String, detail: &RunDetail) {
    out.push_str("<section class=\"values\">");
    value(out, "input", "Input", &detail.input);
    value(out, "output", "Output", &detail.output);
    value(
        out,
        "state",
        "State received by the failed step",
        &detail.state,
    );
    out.push_str("</section>");
}

fn value(out: &mut String, id: &str, title: &str, shown: &Shown) {
    let _ = write!(
        out,
        "<div class=\"panel value\" id=\"value-{id}\"><h2>{}</h2>",
        esc(title)
    );
    match shown {
        Shown::Value(json) => {
            let text = serde_json::to_string_pretty(json).unwrap_or_else(|error| error.to_string());
            let cut = text.char_indices().nth(VALUE_SHOWN).map(|(at, _)| at);
            let _ = write!(out, "<pre class=\"json\">{}</pre>", esc(&text[..cut.unwrap_or(text.len())]));
            if cut.is_some() {
                out.push_str("<p class=\"muted\">Cut at 64 KiB: the JSON API has the whole value.</p>");
            }
        }
        Shown::Redacted => out.push_str(
            "<p><span class=\"badge redacted\">redacted</span> <span class=\"muted\">the processor is \
             configured with <code>redact</code>: its values are never shown</span></p>",
        ),
        Shown::Unavailable => out.push_str("<p class=\"muted\">not available</p>"),
    }
    out.push_str("</div>");
}

fn describe(kind: &EventKind) -> (&'static str, String) {
    match kind {
        EventKind::SessionCreated => ("session", "session created".to_owned()),
        EventKind::SessionStopped => ("session", "session stopped".to_owned()),
        EventKind::RunStarted => ("run", "run started".to_owned()),
        EventKind::StepStarted { attempt } => ("step", format!("attempt {attempt} started")),
        EventKind::StepCompleted {
            attempt,
            execution_time,
        } => (
            "good",
            format!("attempt {attempt} completed in {}", Took(*execution_time)),
        ),
        EventKind::StepFailed { attempt, error } => (
            "bad",
            format!("failed for good on attempt {attempt}: {error}"),
        ),
        EventKind::StepRetrying {
            attempt,
            next_attempt,
            delay,
            error,
        } => (
            "warn",
            format!(
                "attempt {attempt} failed ({error}); attempt {next_attempt} in {}",
                Took(*delay)
            ),
        ),
        EventKind::Progress { value } => ("step", format!("progress {value}")),
        EventKind::Custom { name, payload } => ("custom", format!("{name} {payload}")),
        EventKind::RunCompleted { execution_time } => (
            "good",
            format!("run completed in {}", Took(*execution_time)),
        ),
        EventKind::RunFailed { error } => ("bad", format!("run failed: {error}")),
    }
}

fn events(out: &mut String, events: &[Event]) {
    out.push_str("<section class=\"panel\"><h2>Events</h2>");
    let Some(first) = events.first() else {
        out.push_str("<p class=\"muted empty\">No events kept.</p></section>");
        return;
    };
    out.push_str("<table class=\"events\"><thead><tr><th>At</th><th>Processor</th><th>What</th></tr></thead><tbody>");
    for event in events {
        let offset = event.at.duration_since(first.at).unwrap_or_default();
        let (class, what) = describe(&event.kind);
        let _ = write!(
            out,
            "<tr class=\"ev-{class}\"><td class=\"num\">+{}</td><td>{}</td><td>{}</td></tr>",
            Took(offset),
            esc(event.processor.as_deref().unwrap_or("")),
            esc(&what),
        );
    }
    out.push_str("</tbody></table></section>");
}
