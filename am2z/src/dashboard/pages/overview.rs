//! `/`: the runtime at a glance: counters, the last minutes' throughput and failures, the
//! sessions (paged) and the live workers.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::{Frame, Links, error_page, page};
use crate::Error;
use crate::dashboard::Dashboard;
use crate::dashboard::activity::{ActivitySnapshot, WINDOW_MINUTES};
use crate::dashboard::api::Listing;
use crate::dashboard::html::{Took, UrlPart, Utc, esc, time};
use crate::runtime::{Inspect, Page, RuntimeStats, SessionSummary, WorkerInfo};

/// `GET /`
pub(in crate::dashboard) async fn overview<R: Inspect>(
    State(dashboard): State<Arc<Dashboard<R>>>,
    Query(listing): Query<Listing>,
) -> Response {
    dashboard.start_watching();
    let links = Links::new(&dashboard.prefix);
    let request = match listing.page() {
        Ok(request) => request,
        Err(error) => return error_page(links, &error),
    };
    let runtime = &dashboard.runtime;
    let (stats, sessions, workers) = futures::join!(
        runtime.stats(),
        runtime.sessions(request.clone()),
        runtime.workers()
    );
    if let Err(error @ Error::Validation { .. }) = &sessions {
        // A cursor or limit the runtime refused: the request is wrong, not the runtime.
        return error_page(links, error);
    }
    let now = SystemTime::now();
    let activity = dashboard.activity.snapshot(now);

    let mut body = String::with_capacity(16 * 1024);
    body.push_str("<div data-region=\"overview\">");
    tiles(&mut body, stats.as_ref(), &activity);
    chart(&mut body, &activity);
    body.push_str("<div class=\"columns\">");
    sessions_table(
        &mut body,
        links,
        sessions,
        request.after.is_some(),
        |session| dashboard.activity.session_totals(session, now),
    );
    workers_table(&mut body, workers, now);
    body.push_str("</div></div>");

    let frame = Frame {
        links,
        title: "Overview".to_owned(),
        trail: Vec::new(),
        events: links.api("/events"),
        actions_enabled: dashboard.actions_enabled(),
    };
    page(&frame, &body).into_response()
}

fn tiles(out: &mut String, stats: Result<&RuntimeStats, &Error>, activity: &ActivitySnapshot) {
    let stats = match stats {
        Ok(stats) => stats,
        Err(error) => {
            let _ = write!(
                out,
                "<p class=\"panel error\">Runtime stats unavailable: {}</p>",
                esc(&error.to_string())
            );
            return;
        }
    };
    let (completed, failed) = activity.totals();
    let tile = |out: &mut String, id: &str, label: &str, value: String, class: &str| {
        let _ = write!(
            out,
            "<div class=\"tile {class}\" id=\"tile-{id}\"><span class=\"value\">{}</span><span class=\"label\">{}</span></div>",
            esc(&value),
            esc(label)
        );
    };
    out.push_str("<section class=\"tiles\">");
    tile(
        out,
        "sessions",
        "active sessions",
        stats.active_sessions.to_string(),
        "",
    );
    tile(
        out,
        "running",
        "steps running",
        stats.running.to_string(),
        "",
    );
    tile(
        out,
        "recent-completed",
        &format!("runs completed, last {WINDOW_MINUTES} min"),
        completed.to_string(),
        "good",
    );
    tile(
        out,
        "recent-failed",
        &format!("runs failed, last {WINDOW_MINUTES} min"),
        failed.to_string(),
        if failed > 0 { "bad" } else { "" },
    );
    tile(
        out,
        "steps",
        "steps completed / failed since start",
        format!("{} / {}", stats.completed, stats.failed),
        "",
    );
    tile(
        out,
        "uptime",
        &format!("up · {} processors", stats.registered),
        Took(Duration::from_secs(stats.uptime.as_secs())).to_string(),
        "",
    );
    out.push_str("</section>");
}

/// Bars per minute: completed runs up, failed runs down from the middle line.
fn chart(out: &mut String, activity: &ActivitySnapshot) {
    const BAR: u64 = 28;
    const HALF: u64 = 56;
    let width = BAR * WINDOW_MINUTES;
    let peak = activity
        .minutes
        .iter()
        .map(|m| m.completed.max(m.failed))
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: u64| n * (HALF - 4) / peak + u64::from(n > 0);
    let (completed, failed) = activity.totals();
    let retried: u64 = activity.minutes.iter().map(|m| m.retried).sum();
    let _ = write!(
        out,
        "<section class=\"panel\"><h2>Last {WINDOW_MINUTES} minutes</h2>\
         <p class=\"muted\"><span class=\"key good\"></span>{completed} completed \
         <span class=\"key bad\"></span>{failed} failed · {retried} attempts retried"
    );
    let since = UNIX_EPOCH + Duration::from_secs(activity.counting_since);
    if activity
        .minutes
        .first()
        .is_some_and(|m| m.minute_start < activity.counting_since)
    {
        let _ = write!(out, " · counting since {}", Utc(since));
    }
    if activity.missed_events > 0 {
        let _ = write!(
            out,
            " · {} events missed (the dashboard fell behind)",
            activity.missed_events
        );
    }
    let _ = write!(
        out,
        "</p><svg class=\"chart\" viewBox=\"0 0 {width} {}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"runs completed and failed per minute\">\
         <line x1=\"0\" y1=\"{HALF}\" x2=\"{width}\" y2=\"{HALF}\" class=\"axis\"/>",
        HALF * 2
    );
    for (i, minute) in (0u64..).zip(&activity.minutes) {
        let x = i * BAR + 4;
        let up = scale(minute.completed);
        let down = scale(minute.failed);
        let label = Utc(UNIX_EPOCH + Duration::from_secs(minute.minute_start)).to_string();
        let _ = write!(
            out,
            "<g><title>{} — {} completed, {} failed, {} retried</title>\
             <rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{up}\" class=\"good\"/>\
             <rect x=\"{x}\" y=\"{HALF}\" width=\"{}\" height=\"{down}\" class=\"bad\"/>\
             <rect x=\"{}\" y=\"0\" width=\"{BAR}\" height=\"{}\" class=\"hit\"/></g>",
            label.get(11..16).unwrap_or(&label),
            minute.completed,
            minute.failed,
            minute.retried,
            HALF - up,
            BAR - 8,
            BAR - 8,
            x - 4,
            HALF * 2,
        );
    }
    let _ = write!(
        out,
        "</svg><div class=\"chart-axis\"><span>−{WINDOW_MINUTES} min</span><span>now</span></div></section>"
    );
}

fn sessions_table(
    out: &mut String,
    links: Links<'_>,
    sessions: Result<Page<SessionSummary>, Error>,
    not_first: bool,
    recent: impl Fn(&crate::SessionId) -> (u64, u64),
) {
    out.push_str("<section class=\"panel grow\"><h2>Sessions</h2>");
    let page = match sessions {
        Ok(page) => page,
        Err(error) => {
            let _ = write!(
                out,
                "<p class=\"error\">{}</p></section>",
                esc(&error.to_string())
            );
            return;
        }
    };
    if page.items.is_empty() {
        out.push_str("<p class=\"muted empty\">No sessions yet.</p>");
    } else {
        let _ = write!(
            out,
            "<table class=\"sessions\"><thead><tr><th>Session</th><th class=\"num\">Live</th>\
             <th class=\"num\">Completed</th><th class=\"num\">Failed</th><th class=\"num\">Dead</th>\
             <th class=\"num\" title=\"runs completed / failed in the last {WINDOW_MINUTES} minutes\">Last {WINDOW_MINUTES} min</th></tr></thead><tbody>"
        );
        for summary in &page.items {
            let (done, failed) = recent(&summary.session);
            let _ = write!(
                out,
                "<tr data-session=\"{0}\"><td><a href=\"{1}\">{0}</a></td><td class=\"num\">{2}</td>\
                 <td class=\"num\">{3}</td><td class=\"num {6}\">{4}</td><td class=\"num {7}\">{5}</td>\
                 <td class=\"num\"><span class=\"good-text\">{8}</span> / <span class=\"{9}\">{10}</span></td></tr>",
                esc(summary.session.as_str()),
                esc(&links.session(summary.session.as_str())),
                summary.live_runs,
                summary.completed,
                summary.failed,
                summary.dead_lettered,
                if summary.failed > 0 { "bad-text" } else { "" },
                if summary.dead_lettered > 0 {
                    "bad-text"
                } else {
                    ""
                },
                done,
                if failed > 0 { "bad-text" } else { "" },
                failed,
            );
        }
        out.push_str("</tbody></table>");
    }
    pager(
        out,
        &links.overview(),
        "",
        page.next.as_ref().map(|c| c.as_str()),
        not_first,
    );
    out.push_str("</section>");
}

/// "First page" and "Next page" links; `query` is the rest of the query, already encoded.
pub(super) fn pager(
    out: &mut String,
    base: &str,
    query: &str,
    next: Option<&str>,
    not_first: bool,
) {
    out.push_str("<nav class=\"pager\">");
    if not_first {
        let _ = write!(
            out,
            "<a href=\"{}?{}\" rel=\"first\">« First page</a>",
            esc(base),
            esc(query)
        );
    }
    if let Some(next) = next {
        let _ = write!(
            out,
            "<a href=\"{}?{}{}after={}\" rel=\"next\" id=\"next-page\">Next page »</a>",
            esc(base),
            esc(query),
            if query.is_empty() { "" } else { "&" },
            UrlPart(next),
        );
    }
    out.push_str("</nav>");
}

fn workers_table(out: &mut String, workers: Result<Vec<WorkerInfo>, Error>, now: SystemTime) {
    out.push_str("<section class=\"panel\"><h2>Workers</h2>");
    match workers {
        Err(error) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", esc(&error.to_string()));
        }
        Ok(workers) if workers.is_empty() => {
            out.push_str("<p class=\"muted empty\">No live worker.</p>");
        }
        Ok(workers) => {
            out.push_str("<ul class=\"workers\">");
            for worker in &workers {
                let _ = write!(
                    out,
                    "<li class=\"worker\"><div><code>{}</code>{}</div><div class=\"muted\">{}{} · seen {}</div><div class=\"chips\">",
                    esc(&worker.id),
                    if worker.this_process {
                        " <span class=\"badge st-active\">this process</span>"
                    } else {
                        ""
                    },
                    esc(worker.host.as_deref().unwrap_or("unknown host")),
                    worker
                        .pid
                        .map_or_else(String::new, |pid| format!(" · pid {pid}")),
                    time(worker.last_seen, now),
                );
                for processor in &worker.processors {
                    let _ = write!(out, "<span class=\"chip\">{}</span>", esc(processor));
                }
                out.push_str("</div></li>");
            }
            out.push_str("</ul>");
        }
    }
    out.push_str("</section>");
}
