//! What the commands print: aligned tables and key-value blocks for people, JSON for scripts.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use am2z::runtime::Shown;
use serde::Serialize;

use crate::failure::Failure;

/// Writes `text` to stdout. A reader that went away (`am2z runs s | head`) is not a failure.
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// Prints `value` as pretty JSON.
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)
}

/// Rows under a header, each column as wide as its widest cell.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, a line per row; the last column is not padded.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            for (i, cell) in row.iter().enumerate() {
                if i == last {
                    out.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// A time as UTC, to the second: `2026-12-03T05:20:00Z`.
pub(crate) fn time(at: SystemTime) -> String {
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX);
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// An optional time, `-` when absent.
pub(crate) fn maybe_time(at: Option<SystemTime>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

/// How long ago `at` was, coarsely: `3s ago`, `2m ago`, `5h ago`.
pub(crate) fn ago(at: SystemTime) -> String {
    let elapsed = SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs();
    match elapsed {
        0..60 => format!("{elapsed}s ago"),
        60..3600 => format!("{}m ago", elapsed / 60),
        3600..86_400 => format!("{}h ago", elapsed / 3600),
        _ => format!("{}d ago", elapsed / 86_400),
    }
}

/// A duration to the millisecond.
pub(crate) fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// A shown value: its JSON on one line (cut at `width` characters), or why it is not shown.
pub(crate) fn shown(value: &Shown, width: usize) -> String {
    match value {
        Shown::Value(json) => cut(&json.to_string(), width),
        Shown::Redacted => "(redacted)".to_owned(),
        Shown::Unavailable => "(not available)".to_owned(),
    }
}

/// `text` on one line, at most `width` characters (an ellipsis ends a cut one).
pub(crate) fn cut(text: &str, width: usize) -> String {
    let line = text.replace(['\n', '\r'], " ");
    if line.chars().count() <= width {
        return line;
    }
    let mut kept: String = line.chars().take(width.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(time(leap), "2000-02-29T01:02:03Z");
    }

    #[test]
    fn columns_are_aligned() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["wide cell".to_owned(), "x".to_owned()]);
        assert_eq!(table.render(), "A          LONGER\nwide cell  x\n");
    }

    #[test]
    fn long_text_is_cut_on_one_line() {
        assert_eq!(cut("ab\ncd", 10), "ab cd");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
