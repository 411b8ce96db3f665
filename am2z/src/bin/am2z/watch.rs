//! `watch`: a session's runs live, a line per run with a progress bar, redrawn in place on a
//! terminal (plain ANSI) and printed as they change otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use am2z::runtime::inspect::MAX_PAGE;
use am2z::runtime::{Inspect, PageRequest, RunFilter, RunState};
use am2z::{Event, EventKind, RedisRuntime, RunId, Runtime, SessionId};

use crate::failure::Failure;
use crate::output::{cut, duration, print};

/// The most runs shown at once; the oldest ended ones leave first.
const MAX_LINES: usize = 20;

/// How often `--until-idle` asks whether the session is idle when no event says so.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// The width of a progress bar, in cells.
const BAR: usize = 20;

/// What a line shows of one run.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    processor: String,
    /// The step that ran last.
    step: String,
    state: String,
    /// The last `ctx.progress` value (a percentage by convention).
    progress: Option<u32>,
    ended: bool,
    detail: String,
}

impl Line {
    fn new(processor: String, state: RunState) -> Self {
        Line {
            processor,
            step: String::new(),
            state: state.to_string(),
            progress: None,
            ended: state.is_terminal(),
            detail: String::new(),
        }
    }

    fn render(&self, run: RunId) -> String {
        let percent = match (self.ended, self.state.as_str(), self.progress) {
            (true, "completed", _) => 100,
            (_, _, Some(value)) => value.min(100),
            _ => 0,
        };
        let filled = percent as usize * BAR / 100;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR - filled));
        let run = run.to_string();
        format!(
            "{}  {:<20} [{bar}] {percent:>3}%  {:<10} {}",
            &run[..12],
            cut(&self.processor, 20),
            self.state,
            cut(format!("{} {}", self.step, self.detail).trim(), 60),
        )
    }
}

/// The runs on screen, oldest first.
#[derive(Default)]
struct Board {
    lines: BTreeMap<RunId, Line>,
    order: Vec<RunId>,
}

impl Board {
    fn line(&mut self, run: RunId, processor: &str) -> &mut Line {
        if !self.lines.contains_key(&run) {
            self.order.push(run);
            self.lines
                .insert(run, Line::new(processor.to_owned(), RunState::Active));
            self.trim();
        }
        self.lines
            .entry(run)
            .or_insert_with(|| Line::new(processor.to_owned(), RunState::Active))
    }

    /// Drops the oldest ended runs (then the oldest) past [`MAX_LINES`].
    fn trim(&mut self) {
        while self.order.len() > MAX_LINES {
            let at = self
                .order
                .iter()
                .position(|run| self.lines.get(run).is_some_and(|l| l.ended))
                .unwrap_or(0);
            let run = self.order.remove(at);
            self.lines.remove(&run);
        }
    }

    /// Applies `event`; returns whether a line changed.
    fn apply(&mut self, event: &Event) -> bool {
        let Some(run) = event.run_id else {
            return false;
        };
        let processor = event.processor.as_deref().unwrap_or("");
        let before = self.lines.get(&run).cloned();
        let line = self.line(run, processor);
        match &event.kind {
            EventKind::RunStarted => {
                line.processor = processor.to_owned();
                line.state = "active".to_owned();
                line.detail = "started".to_owned();
            }
            EventKind::StepStarted { attempt } => {
                line.step = processor.to_owned();
                line.state = "active".to_owned();
                line.detail = if *attempt > 1 {
                    format!("attempt {attempt}")
                } else {
                    String::new()
                };
            }
            EventKind::StepCompleted { execution_time, .. } => {
                line.step = processor.to_owned();
                line.detail = format!("done in {}", duration(*execution_time));
            }
            EventKind::StepRetrying {
                next_attempt,
                delay,
                error,
                ..
            } => {
                line.state = "delayed".to_owned();
                line.detail = format!("retry {next_attempt} in {}: {error}", duration(*delay));
            }
            EventKind::StepFailed { error, .. } => line.detail = error.to_string(),
            EventKind::Progress { value } => line.progress = Some(*value),
            EventKind::RunCompleted { execution_time } => {
                line.processor = processor.to_owned();
                line.state = "completed".to_owned();
                line.ended = true;
                line.detail = format!("in {}", duration(*execution_time));
            }
            EventKind::RunFailed { error } => {
                line.processor = processor.to_owned();
                line.state = "failed".to_owned();
                line.ended = true;
                line.detail = error.to_string();
            }
            _ => {}
        }
        before.as_ref() != self.lines.get(&run)
    }

    fn render(&self) -> Vec<String> {
        self.order
            .iter()
            .filter_map(|run| Some(self.lines.get(run)?.render(*run)))
            .collect()
    }
}

/// What an event says, as a name and a detail (the `run` command's events table too).
pub(crate) fn describe(kind: &EventKind) -> (String, String) {
    match kind {
        EventKind::SessionCreated => ("session_created".into(), String::new()),
        EventKind::SessionStopped => ("session_stopped".into(), String::new()),
        EventKind::RunStarted => ("run_started".into(), String::new()),
        EventKind::StepStarted { attempt } => ("step_started".into(), format!("attempt {attempt}")),
        EventKind::StepCompleted {
            attempt,
            execution_time,
        } => (
            "step_completed".into(),
            format!("attempt {attempt}, {}", duration(*execution_time)),
        ),
        EventKind::StepFailed { attempt, error } => {
            ("step_failed".into(), format!("attempt {attempt}: {error}"))
        }
        EventKind::StepRetrying {
            attempt,
            delay,
            error,
            ..
        } => (
            "step_retrying".into(),
            format!(
                "attempt {attempt} failed, retry in {}: {error}",
                duration(*delay)
            ),
        ),
        EventKind::Progress { value } => ("progress".into(), format!("{value}")),
        EventKind::Custom { name, payload } => ("custom".into(), format!("{name} {payload}")),
        EventKind::RunCompleted { execution_time } => (
            "run_completed".into(),
            format!("in {}", duration(*execution_time)),
        ),
        EventKind::RunFailed { error } => ("run_failed".into(), error.to_string()),
        other => ("other".into(), format!("{other:?}")),
    }
}

/// Whether `session` has no live run (queued, active or delayed).
async fn idle(runtime: &RedisRuntime, session: &SessionId) -> Result<bool, Failure> {
    for state in [RunState::Queued, RunState::Active, RunState::Delayed] {
        let live = runtime
            .runs(session, &RunFilter::state(state), PageRequest::first(1))
            .await?;
        if !live.items.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Follows `session` until ctrl-c (or, with `until_idle`, until it has no live run).
pub(crate) async fn watch(
    runtime: &RedisRuntime,
    session: &SessionId,
    until_idle: bool,
    json: bool,
) -> Result<(), Failure> {
    // Subscribed before the first read, so nothing between them is missed.
    let mut events = runtime.subscribe_session(session);
    let mut board = Board::default();
    let live = runtime
        .runs(
            session,
            &RunFilter::all(),
            PageRequest::first(MAX_PAGE.min(MAX_LINES)),
        )
        .await?;
    // Newest first: the board lists the oldest first.
    for run in live.items.iter().rev().filter(|r| !r.state.is_terminal()) {
        board.order.push(run.run);
        board
            .lines
            .insert(run.run, Line::new(run.processor.clone(), run.state));
    }
    let terminal = std::io::stdout().is_terminal() && !json;
    let mut drawn = 0;
    if !json {
        drawn = draw(&board, 0, terminal, None)?;
    }
    let mut check = tokio::time::interval(IDLE_CHECK);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.next_event() => {
                let Some(event) = event else { break };
                let ended = matches!(event.kind, EventKind::RunCompleted { .. } | EventKind::RunFailed { .. });
                if json {
                    print(&format!("{}\n", serde_json::to_string(&event)?))?;
                } else if board.apply(&event) {
                    let changed = event.run_id.and_then(|run| Some(board.lines.get(&run)?.render(run)));
                    drawn = draw(&board, drawn, terminal, changed)?;
                }
                if until_idle && ended && idle(runtime, session).await? {
                    break;
                }
            }
            _ = check.tick(), if until_idle => {
                if idle(runtime, session).await? {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Draws the board: on a terminal, over the `drawn` lines drawn last; elsewhere, the line
/// that changed. Returns how many lines are on screen.
fn draw(
    board: &Board,
    drawn: usize,
    terminal: bool,
    changed: Option<String>,
) -> Result<usize, Failure> {
    if !terminal {
        match changed {
            Some(line) => print(&format!("{line}\n"))?,
            None => {
                for line in board.render() {
                    print(&format!("{line}\n"))?;
                }
            }
        }
        return Ok(0);
    }
    let mut out = String::new();
    if drawn > 0 {
        // Up to the first line drawn, then each line cleared and written again.
        out.push_str(&format!("\x1b[{drawn}A"));
    }
    let lines = board.render();
    for line in &lines {
        out.push_str("\x1b[2K");
        out.push_str(line);
        out.push('\n');
    }
    // Lines of runs that left the board.
    for _ in lines.len()..drawn {
        out.push_str("\x1b[2K\n");
    }
    print(&out)?;
    Ok(lines.len().max(drawn))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn event(run: RunId, processor: &str, kind: EventKind) -> Event {
        Event {
            session: SessionId::default_session(),
            run_id: Some(run),
            processor: Some(processor.to_owned().into()),
            at: SystemTime::now(),
            kind,
        }
    }

    #[test]
    fn a_line_follows_its_run_to_the_end() {
        let mut board = Board::default();
        let run = RunId::generate();
        assert!(board.apply(&event(run, "resize", EventKind::StepStarted { attempt: 1 })));
        assert!(board.apply(&event(run, "resize", EventKind::Progress { value: 50 })));
        assert!(board.render()[0].contains("[##########----------]  50%"));
        board.apply(&event(
            run,
            "Pipeline",
            EventKind::RunCompleted {
                execution_time: Duration::from_millis(5),
            },
        ));
        let line = &board.render()[0];
        assert!(line.contains("100%") && line.contains("completed") && line.contains("Pipeline"));
    }

    #[test]
    fn a_started_run_shows_as_started_under_its_processor() {
        let mut board = Board::default();
        let run = RunId::generate();
        assert!(board.apply(&event(run, "Pipeline", EventKind::RunStarted)));
        let line = &board.render()[0];
        assert!(
            line.contains("Pipeline") && line.contains("active") && line.contains("started"),
            "{line}"
        );
        assert!(board.apply(&event(run, "resize", EventKind::StepStarted { attempt: 1 })));
        let line = &board.render()[0];
        assert!(
            line.contains("Pipeline") && line.contains("resize"),
            "{line}"
        );
        assert_eq!(describe(&EventKind::RunStarted).0, "run_started");
    }

    #[test]
    fn the_board_keeps_at_most_its_lines_dropping_ended_runs_first() {
        let mut board = Board::default();
        let first = RunId::generate();
        board.apply(&event(first, "p", EventKind::StepStarted { attempt: 1 }));
        let ended = RunId::generate();
        board.apply(&event(
            ended,
            "p",
            EventKind::RunFailed {
                error: am2z::Error::validation("x", "bad"),
            },
        ));
        for _ in 0..MAX_LINES - 1 {
            board.apply(&event(
                RunId::generate(),
                "p",
                EventKind::StepStarted { attempt: 1 },
            ));
        }
        assert_eq!(board.render().len(), MAX_LINES);
        assert!(board.lines.contains_key(&first), "the live run stays");
        assert!(
            !board.lines.contains_key(&ended),
            "the ended run left first"
        );
    }
}
