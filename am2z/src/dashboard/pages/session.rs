//! `/sessions/{session}`: one session's runs, filtered by state and processor, a page at a
//! time (the runtime's cursors), with its per-processor stats.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};

use super::overview::pager;
use super::{Frame, Links, clip, error_page, page, short_run, state_badge, took};
use crate::dashboard::Dashboard;
use crate::dashboard::api::{Listing, session_id};
use crate::dashboard::html::{UrlPart, esc, time};
use crate::runtime::{Inspect, RunFilter, RunState, SessionStats};
use crate::{Error, SessionId};

/// `GET /sessions/{session}`
pub(in crate::dashboard) async fn session<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
    Path(session): Path<String>,
    Query(listing): Query<Listing>,
) -> Response {
    let links = Links::new(&dashboard.prefix);
    let asked =
        session_id(&session).and_then(|session| Ok((session, listing.filter()?, listing.page()?)));
    let (session, filter, request) = match asked {
        Ok(asked) => asked,
        Err(error) => return error_page(links, &error),
    };
    let runtime = &dashboard.runtime;
    let (runs, stats) = futures::join!(
        runtime.runs(&session, &filter, request.clone()),
        runtime.session_stats(&session)
    );
    let runs = match runs {
        Ok(runs) => runs,
        Err(error) => return error_page(links, &error),
    };
    let now = SystemTime::now();
    let name = session.as_str();

    let mut body = String::with_capacity(16 * 1024);
    let _ = write!(
        body,
        "<div class=\"heading\"><h1>Session <code>{}</code></h1>",
        esc(name)
    );
    if dashboard.actions_enabled() {
        let _ = write!(
            body,
            "<div class=\"actions\"><button class=\"action danger\" data-action=\"stop\" data-url=\"{}\" \
             data-confirm=\"Stop session {}? Its live runs end with SessionStopped.\">Stop session</button></div>",
            esc(&links.api(format_args!("/sessions/{}/stop", UrlPart(name)))),
            esc(name),
        );
    }
    body.push_str("</div>");

    filters(
        &mut body,
        links,
        &session,
        &filter,
        &dashboard.runtime.registered(),
    );

    body.push_str("<div data-region=\"session\">");
    stats_table(&mut body, stats);
    body.push_str("<section class=\"panel\"><h2>Runs</h2>");
    if runs.items.is_empty() {
        body.push_str("<p class=\"muted empty\">No runs match.</p>");
    } else {
        body.push_str(
            "<table class=\"runs\"><thead><tr><th>Run</th><th>Processor</th><th>State</th>\
             <th>Submitted</th><th>Took</th><th class=\"num\">Attempts</th><th>Error</th></tr></thead><tbody>",
        );
        for run in &runs.items {
            let _ = write!(
                body,
                "<tr data-run=\"{}\" data-state=\"{}\"><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"error-cell\" title=\"{}\">{}</td></tr>",
                run.run,
                run.state.as_str(),
                esc(&links.run(name, run.run)),
                short_run(run.run),
                esc(&run.processor),
                state_badge(run.state),
                time(run.created_at, now),
                took(run),
                run.attempts,
                esc(run.error.as_deref().unwrap_or("")),
                esc(&clip(run.error.as_deref().unwrap_or(""), 90)),
            );
        }
        body.push_str("</tbody></table>");
    }
    pager(
        &mut body,
        &links.session(name),
        &filter_query(&filter),
        runs.next.as_ref().map(|c| c.as_str()),
        request.after.is_some(),
    );
    body.push_str("</section></div>");

    let frame = Frame {
        links,
        title: name.to_owned(),
        trail: vec![("Overview".to_owned(), links.overview())],
        events: format!("{}?session={}", links.api("/events"), UrlPart(name)),
        actions_enabled: dashboard.actions_enabled(),
    };
    page(&frame, &body).into_response()
}

/// The filter as a query string, percent-encoded.
fn filter_query(filter: &RunFilter) -> String {
    let mut query = Vec::new();
    if let Some(state) = filter.state {
        query.push(format!("state={}", state.as_str()));
    }
    if let Some(processor) = &filter.processor {
        query.push(format!("processor={}", UrlPart(processor)));
    }
    query.join("&")
}

/// Quick links per state, and a form for state and processor together.
fn filters(
    out: &mut String,
    links: Links<'_>,
    session: &SessionId,
    filter: &RunFilter,
    registered: &[String],
) {
    let base = links.session(session.as_str());
    let processor_query = filter
        .processor
        .as_ref()
        .map_or_else(String::new, |p| format!("processor={}", UrlPart(p)));
    out.push_str("<nav class=\"states\" aria-label=\"filter by state\">");
    let all_href = if processor_query.is_empty() {
        base.clone()
    } else {
        format!("{base}?{processor_query}")
    };
    let _ = write!(
        out,
        "<a class=\"chip{}\" href=\"{}\">all</a>",
        if filter.state.is_none() { " on" } else { "" },
        esc(&all_href)
    );
    for state in RunState::ALL {
        let sep = if processor_query.is_empty() { "" } else { "&" };
        let _ = write!(
            out,
            "<a class=\"chip st-{0}{1}\" href=\"{2}?state={0}{3}{4}\">{5}</a>",
            state.as_str(),
            if filter.state == Some(state) {
                " on"
            } else {
                ""
            },
            esc(&base),
            sep,
            esc(&processor_query),
            state.as_str().replace('_', " "),
        );
    }
    out.push_str("</nav>");

    let _ = write!(
        out,
        "<form class=\"filters\" method=\"get\" action=\"{}\"><label>State <select name=\"state\"><option value=\"\">any</option>",
        esc(&base)
    );
    for state in RunState::ALL {
        let _ = write!(
            out,
            "<option value=\"{0}\"{1}>{2}</option>",
            state.as_str(),
            if filter.state == Some(state) {
                " selected"
            } else {
                ""
            },
            state.as_str().replace('_', " ")
        );
    }
    out.push_str("</select></label><label>Processor <select name=\"processor\"><option value=\"\">any</option>");
    let mut names: Vec<&str> = registered.iter().map(String::as_str).collect();
    if let Some(current) = filter.processor.as_deref()
        && !names.contains(&current)
    {
        names.push(current);
    }
    for name in names {
        let _ = write!(
            out,
            "<option value=\"{0}\"{1}>{0}</option>",
            esc(name),
            if filter.processor.as_deref() == Some(name) {
                " selected"
            } else {
                ""
            },
        );
    }
    out.push_str("</select></label><button type=\"submit\">Filter</button></form>");
}

fn stats_table(out: &mut String, stats: Result<SessionStats, Error>) {
    let stats = match stats {
        Ok(stats) => stats,
        Err(error) => {
            let _ = write!(
                out,
                "<p class=\"panel error\">Session stats unavailable: {}</p>",
                esc(&error.to_string())
            );
            return;
        }
    };
    let _ = write!(
        out,
        "<section class=\"panel\"><h2>Processors <span class=\"muted\">· {} runs in flight</span></h2>",
        stats.running_runs
    );
    if stats.processors.is_empty() {
        out.push_str(
            "<p class=\"muted empty\">No processor has run in this session.</p></section>",
        );
        return;
    }
    out.push_str(
        "<table class=\"stats\"><thead><tr><th>Processor</th><th class=\"num\">Waiting</th><th class=\"num\">Active</th>\
         <th class=\"num\">Delayed</th><th class=\"num\">Completed</th><th class=\"num\">Failed</th></tr></thead><tbody>",
    );
    for (name, queue) in &stats.processors {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num{}\">{}</td></tr>",
            esc(name),
            queue.waiting,
            queue.active,
            queue.delayed,
            queue.completed,
            if queue.failed > 0 { " bad-text" } else { "" },
            queue.failed,
        );
    }
    out.push_str("</tbody></table></section>");
}
