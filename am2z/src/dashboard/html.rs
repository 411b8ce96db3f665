//! Writing HTML safely: every value that reaches a page goes through [`Escaped`] (or a
//! formatter here that only writes digits and fixed words).

use std::fmt::{self, Display, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Text escaped for an HTML element or a quoted attribute.
pub(super) struct Escaped<'a>(pub(super) &'a str);

/// Escapes `text` for HTML.
pub(super) fn esc(text: &str) -> Escaped<'_> {
    Escaped(text)
}

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// Text percent-encoded for a URL's query value or path segment (everything but unreserved
/// characters), then escaped for an attribute by construction (nothing special is left).
pub(super) struct UrlPart<'a>(pub(super) &'a str);

impl Display for UrlPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                f.write_char(char::from(byte))?;
            } else {
                write!(f, "%{byte:02X}")?;
            }
        }
        Ok(())
    }
}

/// A wall-clock time as `2026-12-03 05:20:01Z` (UTC, second precision).
pub(super) struct Utc(pub(super) SystemTime);

impl Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (year, month, day) = civil_from_days(secs / 86_400);
        let rest = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        )
    }
}

/// The date of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`, for days
/// after the epoch only).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A duration as people read it: `850 µs`, `12.3 ms`, `4.20 s`, `3 min 12 s`, `2 h 5 min`.
pub(super) struct Took(pub(super) Duration);

impl Display for Took {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if d < Duration::from_millis(1) {
            write!(f, "{} µs", d.as_micros())
        } else if d < Duration::from_secs(1) {
            write!(f, "{:.1} ms", d.as_secs_f64() * 1000.0)
        } else if secs < 60 {
            write!(f, "{:.2} s", d.as_secs_f64())
        } else if secs < 3600 {
            write!(f, "{} min {} s", secs / 60, secs % 60)
        } else {
            write!(f, "{} h {} min", secs / 3600, secs % 3600 / 60)
        }
    }
}

/// How long ago `at` was, relative to `now`, such as `5 s ago` (`just now` under a second).
pub(super) struct Ago {
    pub(super) at: SystemTime,
    pub(super) now: SystemTime,
}

impl Display for Ago {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.now.duration_since(self.at).map_or(0, |d| d.as_secs());
        match secs {
            0 => f.write_str("just now"),
            1..60 => write!(f, "{secs} s ago"),
            60..3600 => write!(f, "{} min ago", secs / 60),
            3600..86_400 => write!(f, "{} h ago", secs / 3600),
            _ => write!(f, "{} d ago", secs / 86_400),
        }
    }
}

/// A `<time>` element: the UTC time, with how long ago as its tooltip.
pub(super) fn time(at: SystemTime, now: SystemTime) -> String {
    format!("<time title=\"{}\">{}</time>", Ago { at, now }, Utc(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        let text = esc("<script>alert('x') & \"y\"</script>").to_string();
        assert_eq!(
            text,
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(UrlPart("a b/c?d=é").to_string(), "a%20b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(UrlPart("tenant-7.x_y~").to_string(), "tenant-7.x_y~");
    }

    #[test]
    fn times_are_utc_dates() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_929_601); // 2026-11-29 05:20:01 UTC
        assert_eq!(Utc(at).to_string(), "2026-11-29 05:20:01Z");
        assert_eq!(Utc(UNIX_EPOCH).to_string(), "1970-01-01 00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(Utc(leap).to_string(), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(Took(Duration::from_micros(850)).to_string(), "850 µs");
        assert_eq!(Took(Duration::from_micros(12_340)).to_string(), "12.3 ms");
        assert_eq!(Took(Duration::from_millis(4200)).to_string(), "4.20 s");
        assert_eq!(Took(Duration::from_secs(192)).to_string(), "3 min 12 s");
        assert_eq!(Took(Duration::from_secs(7500)).to_string(), "2 h 5 min");
    }
}
