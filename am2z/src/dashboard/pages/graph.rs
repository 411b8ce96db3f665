//! A run's workflow drawn from its [`Plan`] as nested boxes: a chain is a row joined by arrows,
//! a parallel stacks its branches, a route labels each arm with its key, a map frames the step
//! it runs per item, and each step box shows its state, attempts and time.

use std::fmt::Write as _;

use super::run::step_badge;
use crate::dashboard::html::{Took, esc};
use crate::plan::{NodeId, NodeKind, ParallelPolicy, Plan};
use crate::runtime::{StepDetail, StepState};

/// Deeper than any plan written by hand; a corrupt plan stops here instead of overflowing.
const MAX_DEPTH: usize = 64;

/// The plan's graph, each step coloured by its detail in `steps`.
pub(super) fn render(plan: &Plan, steps: &[StepDetail]) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<div class=\"graph\" data-plan=\"{}\" data-fingerprint=\"{}\">",
        esc(&plan.name),
        plan.fingerprint
    );
    node(&mut out, plan, plan.root, steps, 0);
    out.push_str("</div>");
    out
}

fn children(plan: &Plan, id: NodeId) -> Vec<(NodeId, &str)> {
    plan.edges_from(id)
        .map(|edge| (edge.to, edge.label.as_str()))
        .collect()
}

fn node(out: &mut String, plan: &Plan, id: NodeId, steps: &[StepDetail], depth: usize) {
    let Some(this) = plan.node(id) else {
        let _ = write!(out, "<div class=\"node missing\">node {id} missing</div>");
        return;
    };
    if depth > MAX_DEPTH {
        out.push_str("<div class=\"node missing\">…</div>");
        return;
    }
    match &this.kind {
        NodeKind::Step {
            processor,
            max_attempts,
            timeout_ms,
            ..
        } => {
            let detail = steps.iter().find(|step| step.node == id);
            let state = detail.map_or(StepState::Pending, |step| step.state);
            let attempts = detail.map_or(0, |step| step.attempts);
            let _ = write!(
                out,
                "<a class=\"node step {}\" href=\"#step-{id}\" data-node=\"{id}\" title=\"{}\">\
                 <span class=\"name\">{}</span>{}<span class=\"meta\">attempts {attempts}/{max_attempts}{}</span></a>",
                step_class(state),
                esc(&format!(
                    "{processor}{}",
                    timeout_ms.map_or_else(String::new, |ms| format!(", timeout {ms} ms"))
                )),
                esc(processor),
                step_badge(state),
                detail
                    .and_then(|step| step.duration)
                    .map_or_else(String::new, |d| format!(" · {}", Took(d))),
            );
        }
        NodeKind::Chain { .. } => {
            out.push_str("<div class=\"chain\">");
            for (i, (child, _)) in children(plan, id).into_iter().enumerate() {
                if i > 0 {
                    out.push_str("<span class=\"arrow\" aria-hidden=\"true\">→</span>");
                }
                node(out, plan, child, steps, depth + 1);
            }
            out.push_str("</div>");
        }
        NodeKind::Parallel {
            name,
            policy,
            merge,
        } => {
            let policy = match policy {
                ParallelPolicy::AllOrNothing => "all or nothing",
                ParallelPolicy::CollectResults => "collect results",
            };
            let merge = merge
                .as_deref()
                .map_or_else(String::new, |m| format!(" · merge {m}"));
            group(
                out,
                "parallel",
                &format!("{} · {policy}{merge}", titled("parallel", name)),
            );
            out.push_str("<div class=\"branches\">");
            for (child, _) in children(plan, id) {
                out.push_str("<div class=\"branch\">");
                node(out, plan, child, steps, depth + 1);
                out.push_str("</div>");
            }
            out.push_str("</div></div>");
        }
        NodeKind::Route { name, fallback, .. } => {
            let all = children(plan, id);
            group(
                out,
                "route",
                &format!("{} · one arm by key", titled("route", name)),
            );
            out.push_str("<div class=\"branches\">");
            for (i, (child, label)) in all.iter().enumerate() {
                let label = if *fallback && i + 1 == all.len() {
                    "otherwise"
                } else {
                    label
                };
                let _ = write!(
                    out,
                    "<div class=\"branch\"><span class=\"arm\">{}</span>",
                    esc(label)
                );
                node(out, plan, *child, steps, depth + 1);
                out.push_str("</div>");
            }
            out.push_str("</div></div>");
        }
        NodeKind::Map { name, concurrency } => {
            group(
                out,
                "map",
                &format!("{} · per item, {concurrency} at once", titled("map", name)),
            );
            for (child, _) in children(plan, id) {
                node(out, plan, child, steps, depth + 1);
            }
            out.push_str("</div>");
        }
        NodeKind::Workflow { name, timeout_ms } => {
            let timeout = timeout_ms.map_or_else(String::new, |ms| format!(" · timeout {ms} ms"));
            group(out, "workflow", &format!("workflow {name}{timeout}"));
            for (child, _) in children(plan, id) {
                node(out, plan, child, steps, depth + 1);
            }
            out.push_str("</div>");
        }
    }
}

/// `kind`, followed by `name` unless the name is only the kind's default (an unnamed
/// `parallel!` is named "parallel").
fn titled(kind: &str, name: &str) -> String {
    if name == kind || name.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} {name}")
    }
}

/// Opens a framed group with its caption; the caller closes the `div`.
fn group(out: &mut String, class: &str, caption: &str) {
    let _ = write!(
        out,
        "<div class=\"group {class}\"><div class=\"caption\">{}</div>",
        esc(caption)
    );
}

fn step_class(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "step-pending",
        StepState::Running => "step-running",
        StepState::Retrying => "step-retrying",
        StepState::Completed => "step-completed",
        StepState::Failed => "step-failed",
    }
}
