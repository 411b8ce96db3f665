//! Compile-time parsers for the string literals the attributes take: durations and rates.
//!
//! They return plain `Result<_, String>` so they can be unit-tested without spans; callers turn
//! the message into a `syn::Error` on the literal.

/// The duration units, as listed in error messages.
pub(crate) const DURATION_UNITS: &str =
    "`ms` (milliseconds), `s` (seconds), `m` (minutes), `h` (hours)";

/// The rate periods, as listed in error messages.
pub(crate) const RATE_PERIODS: &str =
    "`s`/`sec`/`second`, `m`/`min`/`minute`, `h`/`hour`, or a duration such as `10s`";

/// Parses `"1500ms"`, `"30s"`, `"2m"`, `"1h"` into milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number = number.replace('_', "");
    if number.is_empty() {
        return Err(format!(
            "expected a duration such as \"30s\" or \"1500ms\": a whole number followed by a unit, one of {DURATION_UNITS}"
        ));
    }
    let unit = unit.trim();
    let per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => {
            return Err(format!(
                "`{text}` has no unit: write it as e.g. \"{number}s\"; the units are {DURATION_UNITS}"
            ));
        }
        other => {
            return Err(format!(
                "unknown duration unit `{other}`; the units are {DURATION_UNITS}"
            ));
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{number}` is too large for a duration"))?;
    value
        .checked_mul(per_unit)
        .ok_or_else(|| format!("`{text}` is too large for a duration"))
}

/// A rate: at most `max` starts per `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) max: u32,
    pub(crate) per_ms: u64,
}

/// Parses `"100/min"`, `"5/s"`, `"1000/h"` or `"10/30s"`.
pub(crate) fn parse_rate(text: &str) -> Result<Rate, String> {
    let Some((count, period)) = text.split_once('/') else {
        return Err(format!(
            "expected a rate such as \"100/min\": a count, `/`, and a period, one of {RATE_PERIODS}"
        ));
    };
    let count = count.trim().replace('_', "");
    let max: u32 = count.parse().map_err(|_| {
        format!("`{count}` is not a count of starts: expected a whole number such as \"100/min\"")
    })?;
    if max == 0 {
        return Err("a rate of 0 would never start anything: the count must be at least 1".into());
    }
    let period = period.trim();
    let per_ms = match period {
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        other if other.starts_with(|c: char| c.is_ascii_digit()) => parse_duration_ms(other)?,
        other => {
            return Err(format!(
                "unknown rate period `{other}`; the periods are {RATE_PERIODS}"
            ));
        }
    };
    if per_ms == 0 {
        return Err("the rate's period must be longer than zero".into());
    }
    Ok(Rate { max, per_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(result: Result<T, String>) -> String {
        result.expect_err("expected an error")
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration_ms("1500ms"), Ok(1_500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration_ms("1_000ms"), Ok(1_000));
        assert_eq!(parse_duration_ms(" 5 s "), Ok(5_000));
    }

    #[test]
    fn duration_errors_name_the_units() {
        let unknown = err(parse_duration_ms("30x"));
        assert!(unknown.contains("unknown duration unit `x`"), "{unknown}");
        assert!(
            unknown.contains("`ms`") && unknown.contains("`h`"),
            "{unknown}"
        );
        assert!(err(parse_duration_ms("30")).contains("has no unit"));
        assert!(err(parse_duration_ms("s")).contains("whole number"));
        assert!(parse_duration_ms("1.5s").is_err());
        assert!(parse_duration_ms("-1s").is_err());
        assert!(parse_duration_ms("99999999999999999999s").is_err());
        assert!(parse_duration_ms("18446744073709551615h").is_err());
    }

    #[test]
    fn rates_in_every_spelling() {
        let per = |max, per_ms| Ok(Rate { max, per_ms });
        assert_eq!(parse_rate("100/min"), per(100, 60_000));
        assert_eq!(parse_rate("100/m"), per(100, 60_000));
        assert_eq!(parse_rate("100/minute"), per(100, 60_000));
        assert_eq!(parse_rate("5/s"), per(5, 1_000));
        assert_eq!(parse_rate("5/sec"), per(5, 1_000));
        assert_eq!(parse_rate("5/second"), per(5, 1_000));
        assert_eq!(parse_rate("1000/h"), per(1_000, 3_600_000));
        assert_eq!(parse_rate("1000/hour"), per(1_000, 3_600_000));
        assert_eq!(parse_rate("10/30s"), per(10, 30_000));
        assert_eq!(parse_rate(" 10 / s "), per(10, 1_000));
    }

    #[test]
    fn rate_errors_explain() {
        assert!(err(parse_rate("100")).contains("expected a rate"));
        assert!(err(parse_rate("100/fortnight")).contains("unknown rate period `fortnight`"));
        assert!(err(parse_rate("x/s")).contains("not a count"));
        assert!(err(parse_rate("0/s")).contains("at least 1"));
        assert!(err(parse_rate("1/0s")).contains("longer than zero"));
        assert!(err(parse_rate("1/30x")).contains("unknown duration unit"));
    }
}
