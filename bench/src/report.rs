//! `RESULT` lines, in the format of the BullMQ peer script (`bench-bullmq.js`), so
//! one script tabulates am2z and its peers alike:
//!
//! ```text
//! RESULT <name> median=<m> min=<a> max=<b> unit=<u> runs=[<r1>,<r2>,...]
//! ```
//!
//! `CMDS` and `CMDSTAT` lines (see [`commands`]) say what Redis did, by command.
//!
//! For latencies each run yields its p50 and p99 over its samples, and the line gives the
//! median, min and max of those per-run values.

use std::time::Duration;

use crate::observe::{Delta, Stat};

/// The value at quantile `q` of `sorted` (nearest rank, as the peer script computes it).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// p50 and p99 of `samples`, in milliseconds.
pub(crate) fn p50_p99(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    (quantile(&ms, 0.5), quantile(&ms, 0.99))
}

/// Prints one `RESULT` line for `runs` (one value per run).
#[allow(clippy::print_stdout)] // the bench reports on stdout
pub(crate) fn result(name: &str, unit: &str, runs: &[f64]) {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let list: Vec<String> = runs.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "RESULT am2z.{name} median={:.3} min={:.3} max={:.3} unit={unit} runs=[{}]",
        quantile(&sorted, 0.5),
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
        list.join(","),
    );
}

/// Prints a line of context (`# ...`): ignored by the table, kept in the raw log.
#[allow(clippy::print_stdout)] // the bench reports on stdout
pub(crate) fn note(text: &str) {
    println!("# {text}");
}

/// Prints what Redis did per `unit` over an interval: a `CMDS` line (calls per unit by
/// command, largest first, Lua-internal calls included) and one `CMDSTAT` line per command
/// with its calls and µs per unit (`INFO commandstats`; a script's µs include those of the
/// commands it runs, which are listed under their own names as well).
///
/// ```text
/// CMDS am2z.<name> evalsha=2.00 hget=1.00 ...
/// CMDSTAT am2z.<name> <command> calls=<per unit> usec=<per unit>
/// ```
#[allow(clippy::print_stdout)] // the bench reports on stdout
pub(crate) fn commands(name: &str, delta: &Delta, units: f64) {
    let mut by_count: Vec<(&String, &Stat)> = delta.stats.iter().collect();
    by_count.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(b.0)));
    let list: Vec<String> = by_count
        .iter()
        .filter(|(_, s)| s.calls as f64 / units >= 0.05)
        .map(|(cmd, s)| format!("{cmd}={:.2}", s.calls as f64 / units))
        .collect();
    println!("CMDS am2z.{name} {}", list.join(" "));
    for (cmd, s) in by_count {
        if s.calls as f64 / units >= 0.001 {
            println!(
                "CMDSTAT am2z.{name} {cmd} calls={:.4} usec={:.3}",
                s.calls as f64 / units,
                s.usec as f64 / units
            );
        }
    }
}
