//! Session ids: the unit of isolation.
//!
//! A session is a tenant, a user request or a batch: every run happens in one, and a session
//! owns its runs, stats, events and (on Redis) keys. Ids are validated once, here, against a
//! strict allowlist, so no other module ever sees a hostile id.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// The longest session id accepted, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// The id of the session a run belongs to when none is given.
pub const DEFAULT_SESSION: &str = "default";

/// A validated session id: 1 to 128 characters from `A–Z a–z 0–9 _ - .`, not starting with
/// a dot.
///
/// Everything else (`*`, `?`, `[`, `{`, `}`, `:`, whitespace, NUL, non-ASCII) is refused, and
/// so are `.`, `..` and every id that starts with a dot (dangerous wherever an id becomes a
/// path), so an id can be placed inside a Redis key, a hash tag, a file name or a log line
/// without escaping. Cloning is cheap (a shared string).
///
/// ```
/// use am2z::SessionId;
///
/// let tenant = SessionId::new("tenant-42").unwrap();
/// assert_eq!(tenant.as_str(), "tenant-42");
/// assert!(SessionId::new("a:b").is_err());
/// assert!(SessionId::new("{x}").is_err());
/// assert!(SessionId::new("..").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// Validates `id` and wraps it.
    ///
    /// # Errors
    /// [`Error::Validation`] on field `session_id` naming the first offending character, or the
    /// length, when `id` is not in the allowlist.
    pub fn new(id: impl AsRef<str>) -> Result<Self, Error> {
        let id = id.as_ref();
        validate(id)?;
        Ok(SessionId(Arc::from(id)))
    }

    /// The session used when a run does not name one (`"default"`).
    pub fn default_session() -> Self {
        SessionId(Arc::from(DEFAULT_SESSION))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::validation("session_id", "must not be empty"));
    }
    if id.len() > MAX_SESSION_ID_LEN {
        return Err(Error::validation(
            "session_id",
            format!(
                "is {} bytes long; the limit is {MAX_SESSION_ID_LEN}",
                id.len()
            ),
        ));
    }
    if id.starts_with('.') {
        return Err(Error::validation(
            "session_id",
            "must not start with `.` (`.`, `..` and hidden names are refused)",
        ));
    }
    if let Some((at, bad)) = id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(Error::validation(
            "session_id",
            format!(
                "contains {bad:?} at byte {at}; only letters, digits, `_`, `-` and `.` are allowed"
            ),
        ));
    }
    Ok(())
}

impl Default for SessionId {
    fn default() -> Self {
        SessionId::default_session()
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;
    fn try_from(id: &str) -> Result<Self, Error> {
        SessionId::new(id)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(id: String) -> Result<Self, Error> {
        SessionId::new(id)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({:?})", &*self.0)
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        SessionId::new(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowlist() {
        for ok in ["a", "tenant-42", "A.b_c-9", &"x".repeat(MAX_SESSION_ID_LEN)] {
            assert_eq!(SessionId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_hostile_ids() {
        let long = "x".repeat(MAX_SESSION_ID_LEN + 1);
        for bad in [
            "", "a*", "a?", "[ab]", "{x}", "}", ":", "a:b", "a\0", "a\nb", "é", " ", ".", "..",
            ".a", "..x", &long,
        ] {
            let err = SessionId::new(bad).unwrap_err();
            assert!(
                matches!(&err, Error::Validation { field, .. } if field == "session_id"),
                "{bad:?} gave {err:?}"
            );
        }
    }

    /// The allowlist, written independently of `validate`, as the property's oracle.
    fn allowed(id: &str) -> bool {
        !id.is_empty()
            && !id.starts_with('.')
            && id.len() <= MAX_SESSION_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    }

    /// Property: over many generated strings, mostly allowlisted characters with hostile ones
    /// mixed in at every position and lengths around the limit, `SessionId::new` accepts
    /// exactly the allowlist, refuses the rest with a validation error on `session_id`, and
    /// an accepted id round-trips through `as_str`, `Display` and serde unchanged.
    #[test]
    fn accepts_exactly_the_allowlist() {
        let safe: Vec<char> = ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(['_', '-', '.'])
            .collect();
        let hostile = [
            '*', '?', '[', ']', '{', '}', ':', ' ', '\0', '\n', '\r', '\t', '/', '\\', '"', '\'',
            '%', '$', '#', '\u{7f}', '\u{e9}', '\u{202e}', '\u{200b}', '\u{ff41}', '\u{ff1a}',
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut accepted, mut refused) = (0, 0);
        for case in 0..20_000 {
            let len = match case % 4 {
                0 => (next() % 4) as usize,
                1 => MAX_SESSION_ID_LEN - 2 + (next() % 5) as usize,
                _ => (next() % 40) as usize,
            };
            let hostile_odds = 1 + next() % 64;
            let id: String = (0..len)
                .map(|_| {
                    let roll = next();
                    if roll % hostile_odds == 0 {
                        hostile[(roll >> 8) as usize % hostile.len()]
                    } else {
                        safe[(roll >> 8) as usize % safe.len()]
                    }
                })
                .collect();
            match SessionId::new(&id) {
                Ok(session) => {
                    assert!(allowed(&id), "{id:?} was accepted");
                    assert_eq!(session.as_str(), id);
                    assert_eq!(session.to_string(), id);
                    let json = serde_json::to_string(&session).unwrap();
                    assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), session);
                    accepted += 1;
                }
                Err(error) => {
                    assert!(!allowed(&id), "{id:?} was refused: {error}");
                    assert!(
                        matches!(&error, Error::Validation { field, .. } if field == "session_id"),
                        "{error:?}"
                    );
                    refused += 1;
                }
            }
        }
        assert!(
            accepted > 1_000 && refused > 1_000,
            "{accepted} / {refused}"
        );
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<SessionId>("\"a:b\"").is_err());
        let id: SessionId = serde_json::from_str("\"ok\"").unwrap();
        assert_eq!(id.as_str(), "ok");
    }
}
