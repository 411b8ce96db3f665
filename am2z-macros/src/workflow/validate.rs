//! Reads the options of workflows and nodes, and checks the graph's shape.

use syn::{Expr, LitStr, Path};

use super::parse::{ArmKey, Node, Selector, WorkflowDef};
use crate::errors::Errors;
use crate::options::{
    KeySet, KeyValue, Millis, closest, read_duration, read_name, read_path, read_str, read_u32,
};

/// The options a workflow takes, before its body.
pub(crate) const WORKFLOW_KEYS: &[&str] = &["name", "description", "timeout", "version", "crate"];

#[derive(Default)]
pub(crate) struct WorkflowOptions {
    pub(crate) name: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
    pub(crate) timeout: Option<Millis>,
    pub(crate) version: Option<u32>,
    pub(crate) crate_path: Option<Path>,
}

pub(crate) fn workflow_options(options: &[KeyValue], errors: &mut Errors) -> WorkflowOptions {
    let mut out = WorkflowOptions::default();
    let mut keys = KeySet::new(WORKFLOW_KEYS);
    for kv in options {
        let Some(key) = keys.admit(&kv.key, errors) else {
            continue;
        };
        let value = &kv.value;
        match key.as_str() {
            "name" => out.name = read_name(&key, value, errors),
            "description" => out.description = read_str(&key, value, errors),
            "timeout" => {
                out.timeout = read_duration(&key, value, errors);
                if let Some(t) = out.timeout.filter(|t| t.ms == 0) {
                    errors.at_span(
                        t.span,
                        "a timeout of zero would fail every run: leave `timeout` out for no limit",
                    );
                    out.timeout = None;
                }
            }
            "version" => {
                out.version = read_u32(&key, value, 1, "contract versions start at 1", errors)
            }
            _ => out.crate_path = read_path(&key, value, "::am2z", errors),
        }
    }
    out
}

/// The options a combinator takes (which ones depends on the combinator).
#[derive(Default)]
pub(crate) struct NodeOptions {
    pub(crate) name: Option<LitStr>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) policy: Policy,
}

/// How a `parallel!` treats a failing branch (`Parallel::new` or `Parallel::collect`).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Policy {
    /// The first failure fails the parallel and cancels the other branches.
    #[default]
    AllOrNothing,
    /// Every branch runs to its end; the output is the tuple of their `Result`s.
    Collect,
}

/// The values `policy = ..` takes, as written.
const POLICIES: &[&str] = &["all_or_nothing", "collect"];

/// A `policy = ..` value; `None` (reported when `errors` is given) when it is not one.
fn read_policy(value: &Expr, errors: Option<&mut Errors>) -> Option<Policy> {
    let name = match value {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            path.path.get_ident().map(ToString::to_string)
        }
        _ => None,
    };
    match name.as_deref() {
        Some("all_or_nothing") => return Some(Policy::AllOrNothing),
        Some("collect") => return Some(Policy::Collect),
        _ => {}
    }
    if let Some(errors) = errors {
        let hint = name
            .as_deref()
            .and_then(|name| closest(name, POLICIES))
            .map(|p| format!("; did you mean `{p}`?"))
            .unwrap_or_default();
        let what = match &name {
            Some(name) => format!("unknown parallel policy `{name}`{hint}"),
            None => "`policy` takes a policy's name, e.g. `policy = collect`".to_owned(),
        };
        errors.at(
            value,
            format_args!(
                "{what}\nvalid policies: `all_or_nothing` (the default: the first failure fails \
                 the parallel and cancels the other branches), `collect` (every branch runs to \
                 its end; the output is the tuple of their `Result`s)"
            ),
        );
    }
    None
}

pub(crate) fn node_options(node: &Node, errors: &mut Errors) -> NodeOptions {
    let (valid, options): (&'static [&'static str], &[KeyValue]) = match node {
        Node::Step(_) => return NodeOptions::default(),
        Node::Chain { options, .. } | Node::Route { options, .. } => (&["name"], options),
        Node::Parallel { options, .. } => (&["name", "policy"], options),
        Node::Map { options, .. } => (&["name", "concurrency"], options),
    };
    let mut out = NodeOptions::default();
    let mut keys = KeySet::new(valid);
    for kv in options {
        let Some(key) = keys.admit(&kv.key, errors) else {
            continue;
        };
        match key.as_str() {
            "name" => out.name = read_name(&key, &kv.value, errors),
            // Reported by `check`, which stops the expansion: a guessed policy would change
            // the output type and cascade.
            "policy" => out.policy = read_policy(&kv.value, None).unwrap_or_default(),
            _ => {
                out.concurrency = read_u32(
                    &key,
                    &kv.value,
                    1,
                    "it is the most items in flight at once",
                    errors,
                );
            }
        }
    }
    out
}

/// The most branches a `parallel!` takes (the tuple arities `Parallel` implements).
pub(crate) const MAX_BRANCHES: usize = 8;

/// Checks the shape of the graph; returns whether it can be expanded.
pub(crate) fn check(node: &Node, errors: &mut Errors) -> bool {
    match node {
        Node::Step(_) => true,
        Node::Chain { span, nodes, .. } => {
            let mut ok = true;
            if nodes.is_empty() {
                errors.at_span(
                    *span,
                    "`chain!` needs at least one step: `chain![first_step, second_step]`",
                );
                ok = false;
            }
            nodes.iter().fold(ok, |ok, n| check(n, errors) && ok)
        }
        Node::Parallel {
            span,
            branches,
            options,
            merge,
            ..
        } => {
            let mut ok = true;
            if branches.len() < 2 || branches.len() > MAX_BRANCHES {
                errors.at_span(*span, format_args!("`parallel!` takes 2 to {MAX_BRANCHES} branches, found {}; nest a `parallel!` in a branch for more", branches.len()));
                ok = false;
            }
            let mut collect = false;
            for kv in options.iter().filter(|kv| kv.key == "policy") {
                match read_policy(&kv.value, Some(errors)) {
                    Some(policy) => collect |= policy == Policy::Collect,
                    None => ok = false,
                }
            }
            if let Some(syn::Expr::Closure(closure)) = merge
                && closure.inputs.len() != branches.len()
            {
                let plural = |n: usize, one: &str, many: &str| {
                    format!("{n} {}", if n == 1 { one } else { many })
                };
                errors.at(
                    closure,
                    format_args!(
                        "this merge closure takes {}, but its `parallel!` has {}: a merge fn takes \
                         one parameter per branch, in branch order",
                        plural(closure.inputs.len(), "parameter", "parameters"),
                        plural(branches.len(), "branch", "branches"),
                    ),
                );
                ok = false;
            }
            if collect && let Some(merge) = merge {
                errors.at(
                    merge,
                    "a merge fn takes the branch outputs, but `policy = collect` keeps each \
                     branch's `Result`: drop `=> merge` and take the tuple of `Result`s, or leave \
                     the policy out to merge",
                );
                ok = false;
            }
            branches.iter().fold(ok, |ok, n| check(n, errors) && ok)
        }
        Node::Map { step, .. } => check(step, errors),
        Node::Route {
            span,
            selector,
            arms,
            ..
        } => {
            let mut ok = true;
            if arms.is_empty() {
                errors.at_span(*span, "`route!` needs at least one arm");
                ok = false;
            }
            let keyed = matches!(selector, Selector::Keyed(_));
            let mut fallback_seen = false;
            for (i, arm) in arms.iter().enumerate() {
                if let ArmKey::Fallback(underscore) = &arm.key {
                    if !keyed {
                        continue;
                    }
                    if fallback_seen {
                        errors.at(underscore, "a route has at most one fallback `_ =>` arm");
                        ok = false;
                    } else if i + 1 != arms.len() {
                        errors.at(
                            underscore,
                            "the fallback `_ =>` arm comes last: arms after it could never run",
                        );
                        ok = false;
                    }
                    fallback_seen = true;
                }
                ok = check(&arm.step, errors) && ok;
            }
            ok
        }
    }
}

/// Whether a step of `body` is a processor fn whose type has the workflow's name (a fn `quote`
/// beside a workflow `Quote`); records the error that says so.
pub(crate) fn clashes_with_a_step(def: &WorkflowDef, body: &Node, errors: &mut Errors) -> bool {
    let mut steps = Vec::new();
    collect_steps(body, &mut steps);
    let Some(fn_name) = steps.into_iter().find_map(|path| {
        let in_this_module = path.segments.len() == 1
            || (path.segments.len() == 2 && path.segments[0].ident == "self");
        let last = &path.segments.last()?.ident;
        let ty = crate::naming::type_name_of(last);
        (in_this_module && ty == def.ident && ty != *last).then(|| last.clone())
    }) else {
        return false;
    };
    let ident = &def.ident;
    errors.at(
        ident,
        format_args!(
            "workflow `{ident}` has the name `#[processor]` gives the type of its step \
             `{fn_name}`: the processor type of `async fn {fn_name}` is `{ident}` already; \
             rename the workflow, for example to `{ident}Workflow`"
        ),
    );
    true
}

fn collect_steps<'a>(node: &'a Node, steps: &mut Vec<&'a Path>) {
    match node {
        Node::Step(path) => steps.push(path),
        Node::Chain { nodes, .. } => nodes.iter().for_each(|n| collect_steps(n, steps)),
        Node::Parallel { branches, .. } => branches.iter().for_each(|n| collect_steps(n, steps)),
        Node::Route { arms, .. } => arms.iter().for_each(|arm| collect_steps(&arm.step, steps)),
        Node::Map { step, .. } => collect_steps(step, steps),
    }
}
