//! Finished steps, counted by the script call that commits the job that finished them
//! (`commit.lua`'s run ends, `advance.lua`'s step commits; `include/count.lua`): a step is
//! counted in its session's stats once, atomically with the commit that carries its outcome.
//! A job whose commit never lands (its worker died, gave it back, or lost its lease) counts
//! nothing; the execution that commits it counts its steps.

use std::collections::HashMap;

/// A step one job finished for good: its processor, and `"completed"` or `"failed"` (the
/// stats field is `<processor>:<outcome>`).
pub(crate) type FinishedStep = (&'static str, &'static str);

/// A call's stats fields, each once, and per commit its finished steps as 1-based indices
/// into them, comma-separated (`"1"`, `"1,2"`, `""` for none). Indices rather than names:
/// a processor's name is free text, and the usual commit repeats one short index string,
/// which the script tallies as one table key.
pub(crate) fn indexed<'a>(
    commits: impl IntoIterator<Item = &'a [FinishedStep]>,
) -> (Vec<String>, Vec<String>) {
    let mut index: HashMap<FinishedStep, usize> = HashMap::new();
    let mut fields = Vec::new();
    let per_commit = commits
        .into_iter()
        .map(|steps| {
            let mut list = String::new();
            for &step in steps {
                let at = *index.entry(step).or_insert_with(|| {
                    fields.push(format!("{}:{}", step.0, step.1));
                    fields.len()
                });
                if !list.is_empty() {
                    list.push(',');
                }
                list.push_str(&at.to_string());
            }
            list
        })
        .collect();
    (fields, per_commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_is_named_once_and_commits_point_at_theirs() {
        let a: &[FinishedStep] = &[("fetch", "completed")];
        let b: &[FinishedStep] = &[];
        let c: &[FinishedStep] = &[("parse", "failed"), ("fetch", "completed")];
        let (fields, per_commit) = indexed([a, b, c, a]);
        assert_eq!(fields, ["fetch:completed", "parse:failed"]);
        assert_eq!(per_commit, ["1", "", "2,1", "1"]);
    }
}
