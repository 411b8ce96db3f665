//! Each command: connect, ask the runtime, print.

use std::time::Duration;

use am2z::runtime::inspect::MAX_PAGE;
use am2z::runtime::{
    CancelOutcome, Cursor, Inspect, PageRequest, RetryOutcome, RunDetail, RunFilter, RunState,
    RunSummary,
};
use am2z::{Error, RedisConfig, RedisRuntime, Runtime, SessionId};

use crate::failure::Failure;
use crate::output::{Table, ago, cut, duration, maybe_time, print, print_json, shown, time};
use crate::target::RunTarget;
use crate::{Cli, Command, PageArgs};

/// The most sessions `dead` without a session looks through.
const MAX_SESSIONS_SEARCHED: usize = 20 * MAX_PAGE;

/// Runs the command of `cli`.
pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    // Arguments are checked before anything connects.
    let command = Checked::new(cli.command)?;
    let runtime = connect().await?;
    let outcome = command.run(&runtime, json).await;
    // A failure to stop cleanly does not hide the command's own outcome.
    let _ = runtime.stop().await;
    outcome
}

/// How long connecting keeps retrying while Redis refuses connections, unless
/// `AM2Z_START_TIMEOUT` says otherwise (a worker waits 30 s for its Redis; a person at a
/// terminal should hear sooner that it is not there).
const START_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of the deployment that `AM2Z_*` names: it executes nothing.
async fn connect() -> Result<RedisRuntime, Failure> {
    let config = RedisConfig::default()
        .start_timeout(START_TIMEOUT)
        .with_env()?
        .worker(false);
    let runtime = RedisRuntime::new(config);
    runtime.start().await?;
    Ok(runtime)
}

/// A command whose arguments were read and checked.
enum Checked {
    Sessions(PageRequest),
    Runs(SessionId, RunFilter, PageRequest),
    Run(RunTarget),
    Dead(Option<SessionId>, usize),
    Retry(RunTarget),
    Cancel(RunTarget),
    StopSession(SessionId),
    Workers,
    Watch(SessionId, bool),
    Dashboard(std::net::SocketAddr, bool),
}

fn page(args: PageArgs) -> PageRequest {
    PageRequest {
        after: args.after.map(Cursor::new),
        limit: args.limit,
    }
}

impl Checked {
    fn new(command: Command) -> Result<Self, Error> {
        Ok(match command {
            Command::Sessions(args) => Checked::Sessions(page(args)),
            Command::Runs {
                session,
                state,
                processor,
                page: args,
            } => {
                let filter = RunFilter {
                    state: state.as_deref().map(str::parse).transpose()?,
                    processor,
                };
                Checked::Runs(SessionId::new(session)?, filter, page(args))
            }
            Command::Run { run } => Checked::Run(run.parse()?),
            Command::Dead { session, limit } => {
                Checked::Dead(session.map(SessionId::new).transpose()?, limit)
            }
            Command::Retry { run } => Checked::Retry(run.parse()?),
            Command::Cancel { run } => Checked::Cancel(run.parse()?),
            Command::StopSession { session } => Checked::StopSession(SessionId::new(session)?),
            Command::Workers => Checked::Workers,
            Command::Watch {
                session,
                until_idle,
            } => Checked::Watch(SessionId::new(session)?, until_idle),
            Command::Dashboard {
                listen,
                allow_non_loopback,
            } => Checked::Dashboard(listen, allow_non_loopback),
        })
    }

    async fn run(self, runtime: &RedisRuntime, json: bool) -> Result<(), Failure> {
        match self {
            Checked::Sessions(page) => sessions(runtime, page, json).await,
            Checked::Runs(session, filter, page) => {
                runs(runtime, &session, &filter, page, json).await
            }
            Checked::Run(target) => run_detail(runtime, &target, json).await,
            Checked::Dead(session, limit) => dead(runtime, session, limit, json).await,
            Checked::Retry(target) => retry(runtime, &target, json).await,
            Checked::Cancel(target) => cancel(runtime, &target, json).await,
            Checked::StopSession(session) => stop_session(runtime, &session, json).await,
            Checked::Workers => workers(runtime, json).await,
            Checked::Watch(session, until_idle) => {
                crate::watch::watch(runtime, &session, until_idle, json).await
            }
            Checked::Dashboard(listen, allow_non_loopback) => {
                crate::dashboard::serve(runtime, listen, allow_non_loopback).await
            }
        }
    }
}

/// The line that tells how to get the next page.
fn next_page(next: Option<&Cursor>, command: &str) -> String {
    match next {
        Some(cursor) => format!("more: {command} --after {cursor}\n"),
        None => String::new(),
    }
}

async fn sessions(runtime: &RedisRuntime, page: PageRequest, json: bool) -> Result<(), Failure> {
    let sessions = runtime.sessions(page).await?;
    if json {
        return print_json(&sessions);
    }
    let mut table = Table::new(&["SESSION", "LIVE", "COMPLETED", "FAILED", "DEAD"]);
    for s in &sessions.items {
        table.row(vec![
            s.session.to_string(),
            s.live_runs.to_string(),
            s.completed.to_string(),
            s.failed.to_string(),
            s.dead_lettered.to_string(),
        ]);
    }
    let more = next_page(sessions.next.as_ref(), "am2z sessions");
    print(&format!("{}{more}", table.render()))
}

fn runs_table(runs: &[RunSummary], with_session: bool) -> Table {
    let mut header = vec![
        "RUN",
        "PROCESSOR",
        "STATE",
        "CREATED",
        "ENDED",
        "ATTEMPTS",
        "ERROR",
    ];
    if with_session {
        header.insert(0, "SESSION");
    }
    let mut table = Table::new(&header);
    for run in runs {
        let mut row = vec![
            run.run.to_string(),
            run.processor.clone(),
            run.state.to_string(),
            time(run.created_at),
            maybe_time(run.ended_at),
            run.attempts.to_string(),
            run.error
                .as_deref()
                .map_or_else(|| "-".to_owned(), |e| cut(e, 60)),
        ];
        if with_session {
            row.insert(0, run.session.to_string());
        }
        table.row(row);
    }
    table
}

async fn runs(
    runtime: &RedisRuntime,
    session: &SessionId,
    filter: &RunFilter,
    page: PageRequest,
    json: bool,
) -> Result<(), Failure> {
    let runs = runtime.runs(session, filter, page).await?;
    if json {
        return print_json(&runs);
    }
    let mut command = format!("am2z runs {session}");
    if let Some(state) = filter.state {
        command.push_str(&format!(" --state {state}"));
    }
    if let Some(processor) = &filter.processor {
        command.push_str(&format!(" --processor {processor}"));
    }
    let more = next_page(runs.next.as_ref(), &command);
    print(&format!(
        "{}{more}",
        runs_table(&runs.items, false).render()
    ))
}

/// The run, or `NotFound`.
async fn find_run(runtime: &RedisRuntime, target: &RunTarget) -> Result<RunDetail, Failure> {
    runtime
        .run(&target.session, target.run)
        .await?
        .ok_or_else(|| Failure::not_found(format!("run `{target}` not found")))
}

async fn run_detail(runtime: &RedisRuntime, target: &RunTarget, json: bool) -> Result<(), Failure> {
    let detail = find_run(runtime, target).await?;
    if json {
        return print_json(&detail);
    }
    let summary = &detail.summary;
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<11} {value}\n"));
    field("run", format!("{}/{}", summary.session, summary.run));
    field("processor", summary.processor.clone());
    field("state", summary.state.to_string());
    field("created", time(summary.created_at));
    field("ended", maybe_time(summary.ended_at));
    field("attempts", summary.attempts.to_string());
    if let Some(of) = detail.retry_of {
        field("retry of", format!("{}/{of}", summary.session));
    }
    if let Some(retried) = detail.retried_as {
        field("retried as", format!("{}/{retried}", summary.session));
    }
    field("input", shown(&detail.input, 100));
    field("output", shown(&detail.output, 100));
    if summary.state == RunState::Failed {
        field("state in", shown(&detail.state, 100));
    }
    if let Some(error) = &detail.error {
        field("error", cut(&error.error.to_string(), 200));
        for cause in error.chain.iter().skip(1) {
            field("  caused by", cut(cause, 200));
        }
    }
    out.push('\n');
    if detail.plan.is_none() {
        out.push_str(&format!(
            "plan: not shown (`{}` is not registered in this process; the steps below are what \
             the runtime recorded)\n",
            summary.processor
        ));
    }
    if detail.steps.is_empty() {
        out.push_str("steps: none recorded\n");
    } else {
        let mut steps = Table::new(&[
            "NODE",
            "PROCESSOR",
            "STATE",
            "ATTEMPTS",
            "STARTED",
            "DURATION",
            "ERROR",
        ]);
        for step in &detail.steps {
            steps.row(vec![
                step.node.to_string(),
                step.processor.clone(),
                json_name(&step.state),
                step.attempts.to_string(),
                maybe_time(step.started_at),
                step.duration.map_or_else(|| "-".to_owned(), duration),
                step.error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |e| cut(e, 60)),
            ]);
        }
        out.push_str(&steps.render());
    }
    out.push('\n');
    if detail.events.is_empty() {
        out.push_str("events: none kept\n");
    } else {
        let mut events = Table::new(&["AT", "EVENT", "PROCESSOR", "DETAIL"]);
        for event in &detail.events {
            let (kind, detail) = crate::watch::describe(&event.kind);
            events.row(vec![
                time(event.at),
                kind,
                event.processor.as_deref().unwrap_or("-").to_owned(),
                cut(&detail, 80),
            ]);
        }
        out.push_str(&events.render());
    }
    print(&out)
}

/// The name serde gives a unit variant (`"running"` for `StepState::Running`).
fn json_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => format!("{other:?}"),
    }
}

async fn dead(
    runtime: &RedisRuntime,
    session: Option<SessionId>,
    limit: usize,
    json: bool,
) -> Result<(), Failure> {
    let limit = limit.clamp(1, MAX_PAGE);
    let filter = RunFilter::state(RunState::DeadLettered);
    let mut found: Vec<RunSummary> = Vec::new();
    match &session {
        Some(session) => {
            found = runtime
                .runs(session, &filter, PageRequest::first(limit))
                .await?
                .items;
        }
        None => {
            // Sessions with dead letters, a page of sessions at a time, until `limit` runs.
            let mut page = PageRequest::first(MAX_PAGE);
            let mut searched = 0;
            'sessions: loop {
                let sessions = runtime.sessions(page.clone()).await?;
                for s in sessions.items.iter().filter(|s| s.dead_lettered > 0) {
                    let left = limit - found.len();
                    let runs = runtime
                        .runs(&s.session, &filter, PageRequest::first(left))
                        .await?;
                    found.extend(runs.items);
                    if found.len() >= limit {
                        break 'sessions;
                    }
                }
                searched += sessions.items.len();
                match sessions.next {
                    Some(next) if searched < MAX_SESSIONS_SEARCHED => {
                        page = PageRequest::after(next, MAX_PAGE);
                    }
                    _ => break,
                }
            }
        }
    }
    if json {
        return print_json(&found);
    }
    if found.is_empty() {
        return print("no dead letters\n");
    }
    print(&runs_table(&found, true).render())
}

async fn retry(runtime: &RedisRuntime, target: &RunTarget, json: bool) -> Result<(), Failure> {
    let outcome = runtime.retry_run(&target.session, target.run).await?;
    if json {
        return print_json(&outcome);
    }
    let session = &target.session;
    print(&match outcome {
        RetryOutcome::Retried { run } => format!("retried {target} as {session}/{run}\n"),
        RetryOutcome::AlreadyRetried { run } => {
            format!("{target} was retried already, as {session}/{run}\n")
        }
    })
}

async fn cancel(runtime: &RedisRuntime, target: &RunTarget, json: bool) -> Result<(), Failure> {
    let outcome = runtime.cancel_run(&target.session, target.run).await?;
    if json {
        return print_json(&outcome);
    }
    print(&match outcome {
        CancelOutcome::Cancelled => format!("cancelled {target}\n"),
        CancelOutcome::AlreadyEnded { state } => {
            format!("{target} had ended already ({state}); nothing changed\n")
        }
    })
}

async fn stop_session(
    runtime: &RedisRuntime,
    session: &SessionId,
    json: bool,
) -> Result<(), Failure> {
    runtime.stop_session(session).await?;
    if json {
        return print_json(&serde_json::json!({ "stopped": session }));
    }
    print(&format!("stopped session {session}\n"))
}

async fn workers(runtime: &RedisRuntime, json: bool) -> Result<(), Failure> {
    let workers = runtime.workers().await?;
    if json {
        return print_json(&workers);
    }
    if workers.is_empty() {
        return print("no live worker\n");
    }
    let mut table = Table::new(&["WORKER", "HOST", "PID", "LAST SEEN", "PROCESSORS"]);
    for worker in &workers {
        table.row(vec![
            worker.id.clone(),
            worker.host.clone().unwrap_or_else(|| "-".to_owned()),
            worker
                .pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            ago(worker.last_seen),
            worker.processors.join(","),
        ]);
    }
    print(&table.render())
}
