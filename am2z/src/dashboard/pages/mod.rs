//! The HTML pages, rendered on the server from [`Inspect`](crate::runtime::Inspect) alone: they
//! read without script, and `assets/app.js` adds live updates and the action buttons.
//!
//! Every value from the runtime is escaped ([`esc`]) or percent-encoded ([`UrlPart`]) on its
//! way into the markup.

mod graph;
mod overview;
mod run;
mod session;

use std::fmt::{Display, Write as _};
use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

pub(super) use overview::overview;
pub(super) use run::run;
pub(super) use session::session;

use super::api::status_of;
use super::html::{Took, UrlPart, Utc, esc};
use crate::Error;
use crate::runtime::{RunState, RunSummary};

/// Where each page and API call lives, under the dashboard's base path.
#[derive(Clone, Copy)]
pub(super) struct Links<'a> {
    prefix: &'a str,
}

impl<'a> Links<'a> {
    pub(super) fn new(prefix: &'a str) -> Self {
        Links { prefix }
    }

    pub(super) fn overview(self) -> String {
        if self.prefix.is_empty() {
            "/".to_owned()
        } else {
            self.prefix.to_owned()
        }
    }

    pub(super) fn session(self, session: &str) -> String {
        format!("{}/sessions/{}", self.prefix, UrlPart(session))
    }

    pub(super) fn run(self, session: &str, run: impl Display) -> String {
        format!("{}/sessions/{}/runs/{run}", self.prefix, UrlPart(session))
    }

    pub(super) fn api(self, path: impl Display) -> String {
        format!("{}/api{path}", self.prefix)
    }

    fn asset(self, file: &str) -> String {
        format!("{}/assets/{file}", self.prefix)
    }
}

/// What the layout around a page needs.
pub(super) struct Frame<'a> {
    pub(super) links: Links<'a>,
    /// The `<title>`, and the last breadcrumb.
    pub(super) title: String,
    /// Breadcrumbs before the title: (text, link).
    pub(super) trail: Vec<(String, String)>,
    /// The event stream the page follows for live updates.
    pub(super) events: String,
    pub(super) actions_enabled: bool,
}

/// A whole page: the layout around `body`.
pub(super) fn page(frame: &Frame<'_>, body: &str) -> Html<String> {
    let Frame {
        links,
        title,
        trail,
        events,
        actions_enabled,
    } = frame;
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · am2z</title>\
         <link rel=\"stylesheet\" href=\"{}\"><link rel=\"icon\" href=\"{}\">\
         <script src=\"{}\" defer></script></head>\n\
         <body data-events=\"{}\" data-actions=\"{}\">\n<header class=\"top\">\
         <a class=\"brand\" href=\"{}\"><span class=\"logo\">am2z</span> dashboard</a><nav class=\"trail\">",
        esc(title),
        links.asset("style.css"),
        links.asset("favicon.svg"),
        links.asset("app.js"),
        esc(events),
        if *actions_enabled { "on" } else { "off" },
        esc(&links.overview()),
    );
    for (text, href) in trail {
        let _ = write!(
            out,
            "<a href=\"{}\">{}</a><span class=\"sep\">/</span>",
            esc(href),
            esc(text)
        );
    }
    let _ = write!(out, "<span class=\"here\">{}</span></nav>", esc(title));
    out.push_str("<span id=\"live\" class=\"live\" title=\"live updates (server-sent events)\">offline</span>");
    if *actions_enabled {
        out.push_str(
            "<form id=\"token-form\" class=\"token\" autocomplete=\"off\">\
             <input type=\"password\" id=\"token\" name=\"token\" placeholder=\"actions token\" \
             aria-label=\"actions token\" autocomplete=\"off\">\
             <button type=\"submit\" id=\"unlock\">Unlock actions</button>\
             <button type=\"button\" id=\"lock\" hidden>Lock actions</button></form>",
        );
    } else {
        out.push_str("<span class=\"token off\" title=\"start the dashboard with an actions token to enable retry, cancel and stop\">read-only</span>");
    }
    out.push_str(
        "</header>\n<div id=\"flash\" role=\"status\" hidden></div>\n<main id=\"content\">\n",
    );
    out.push_str(body);
    let _ = write!(
        out,
        "\n</main>\n<footer>am2z · rendered <span id=\"rendered\">{}</span></footer>\n</body></html>\n",
        Utc(SystemTime::now())
    );
    Html(out)
}

/// A page saying what went wrong, with the status the error calls for.
pub(super) fn error_page(links: Links<'_>, error: &Error) -> Response {
    let frame = Frame {
        links,
        title: "Error".to_owned(),
        trail: Vec::new(),
        events: String::new(),
        actions_enabled: false,
    };
    let body = format!(
        "<section class=\"panel error\"><h1>{}</h1><p>{}</p><p><a href=\"{}\">Back to the overview</a></p></section>",
        status_of(error).as_u16(),
        esc(&error.to_string()),
        esc(&links.overview()),
    );
    (status_of(error), page(&frame, &body)).into_response()
}

/// The answer for a path the dashboard does not have.
pub(super) async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><title>Not found · am2z</title><p>No such page.</p>\n"),
    )
}

/// A run state as a coloured badge.
pub(super) fn state_badge(state: RunState) -> String {
    format!(
        "<span class=\"badge st-{0}\" data-state=\"{0}\">{1}</span>",
        state.as_str(),
        state.as_str().replace('_', " ")
    )
}

/// The first characters of a run id, the whole of it as the tooltip.
pub(super) fn short_run(run: impl Display) -> String {
    let full = run.to_string();
    format!(
        "<code title=\"{0}\">{1}…</code>",
        esc(&full),
        esc(full.get(..8).unwrap_or(&full))
    )
}

/// How long a run took, once ended.
pub(super) fn took(summary: &RunSummary) -> String {
    summary
        .ended_at
        .and_then(|end| end.duration_since(summary.created_at).ok())
        .map_or_else(String::new, |d| Took(d).to_string())
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub(super) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
