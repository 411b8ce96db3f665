//! Script replies, decoded by name.

use redis::Value;

use crate::Error;
use crate::runtime::redis::connection::ErrorMap;

/// A failed exchange with Redis: the call failed, or its reply was not what the script
/// promises (never read with a default).
#[derive(Debug)]
pub(crate) enum WireError {
    /// The command failed (connection, timeout, out of memory, ...).
    Redis(redis::RedisError),
    /// The reply of `script` did not have the shape its protocol module expects.
    Reply {
        script: &'static str,
        problem: String,
    },
    /// The runtime is not started (no connection).
    NotStarted,
    /// A durable write reached fewer replicas than asked within its timeout (`WAIT`); the
    /// write itself may be kept.
    NotReplicated { wanted: u32, acknowledged: u32 },
}

impl From<redis::RedisError> for WireError {
    fn from(error: redis::RedisError) -> Self {
        WireError::Redis(error)
    }
}

impl WireError {
    pub(crate) fn reply(script: &'static str, problem: impl Into<String>) -> Self {
        WireError::Reply {
            script,
            problem: problem.into(),
        }
    }

    /// The error users see: [`Error::Unavailable`] (or [`Error::Resource`] when Redis is out
    /// of memory), the password scrubbed.
    pub(crate) fn into_error(self, errors: &ErrorMap) -> Error {
        match self {
            WireError::Redis(error) => errors.unavailable(&error),
            WireError::Reply { script, problem } => Error::unavailable(
                "redis protocol",
                format!("`{script}.lua` answered unexpectedly: {problem}"),
            ),
            WireError::NotStarted => Error::configuration(
                "the Redis runtime is not started: call `start().await` before executing",
            ),
            WireError::NotReplicated {
                wanted,
                acknowledged,
            } => Error::unavailable(
                "redis replicas",
                format!(
                    "the write reached {acknowledged} of the {wanted} replicas durable writes \
                     ask for within the response timeout; it may still be kept"
                ),
            ),
        }
    }

    /// Whether the connection dropped with the call in flight (it may not have reached Redis).
    pub(crate) fn is_connection_dropped(&self) -> bool {
        matches!(self, WireError::Redis(error) if error.is_connection_dropped())
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Redis(error) => write!(f, "{error}"),
            WireError::Reply { script, problem } => write!(f, "`{script}.lua`: {problem}"),
            WireError::NotStarted => write!(f, "the runtime is not started"),
            WireError::NotReplicated {
                wanted,
                acknowledged,
            } => write!(f, "the write reached {acknowledged} of {wanted} replicas"),
        }
    }
}

/// A reply's fields, taken by name. Each must be taken once; [`finish`](Fields::finish)
/// refuses a reply with fields nobody read.
pub(crate) struct Fields {
    script: &'static str,
    entries: Vec<(String, Value)>,
}

impl Fields {
    /// Reads `value`, a flat list of `name, value` pairs, as `script`'s reply.
    pub(crate) fn parse(script: &'static str, value: Value) -> Result<Self, WireError> {
        let Value::Array(items) = value else {
            return Err(WireError::reply(
                script,
                format!("expected a list of fields, got {value:?}"),
            ));
        };
        if items.len() % 2 != 0 {
            return Err(WireError::reply(
                script,
                format!("{} items do not make name/value pairs", items.len()),
            ));
        }
        let mut entries = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(name), Some(value)) = (items.next(), items.next()) {
            let name = match name {
                Value::BulkString(bytes) => String::from_utf8(bytes)
                    .map_err(|_| WireError::reply(script, "a field name is not UTF-8"))?,
                Value::SimpleString(name) => name,
                other => {
                    return Err(WireError::reply(
                        script,
                        format!("a field name is {other:?}"),
                    ));
                }
            };
            entries.push((name, value));
        }
        Ok(Fields { script, entries })
    }

    fn take(&mut self, name: &str) -> Result<Value, WireError> {
        let at = self
            .entries
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| WireError::reply(self.script, format!("no field `{name}`")))?;
        Ok(self.entries.swap_remove(at).1)
    }

    fn wrong(&self, name: &str, expected: &str, value: &Value) -> WireError {
        WireError::reply(
            self.script,
            format!("field `{name}` should be {expected}, got {value:?}"),
        )
    }

    /// A whole number (Lua numbers arrive as integers).
    pub(crate) fn int(&mut self, name: &str) -> Result<i64, WireError> {
        match self.take(name)? {
            Value::Int(n) => Ok(n),
            Value::BulkString(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| self.wrong(name, "a number", &Value::BulkString(bytes))),
            other => Err(self.wrong(name, "a number", &other)),
        }
    }

    /// A whole number that cannot be negative.
    pub(crate) fn count(&mut self, name: &str) -> Result<u64, WireError> {
        let n = self.int(name)?;
        u64::try_from(n).map_err(|_| self.wrong(name, "a count", &Value::Int(n)))
    }

    /// `1` or `0`.
    pub(crate) fn flag(&mut self, name: &str) -> Result<bool, WireError> {
        match self.int(name)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(self.wrong(name, "0 or 1", &Value::Int(n))),
        }
    }

    /// Bytes, as Redis holds them (not necessarily UTF-8: a job's body is whatever is in
    /// Redis, and one bad job must not make a whole reply unreadable).
    pub(crate) fn bytes(&mut self, name: &str) -> Result<Vec<u8>, WireError> {
        match self.take(name)? {
            Value::BulkString(bytes) => Ok(bytes),
            Value::SimpleString(text) => Ok(text.into_bytes()),
            Value::Int(n) => Ok(n.to_string().into_bytes()),
            other => Err(self.wrong(name, "bytes", &other)),
        }
    }

    /// UTF-8 text.
    pub(crate) fn text(&mut self, name: &str) -> Result<String, WireError> {
        let bytes = self.bytes(name)?;
        String::from_utf8(bytes)
            .map_err(|e| WireError::reply(self.script, format!("field `{name}` is not UTF-8: {e}")))
    }

    /// A list of texts.
    pub(crate) fn texts(&mut self, name: &str) -> Result<Vec<String>, WireError> {
        self.list(name)?
            .into_iter()
            .map(|item| match item {
                Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|e| {
                    WireError::reply(self.script, format!("an item of `{name}`: {e}"))
                }),
                Value::SimpleString(text) => Ok(text),
                Value::Int(n) => Ok(n.to_string()),
                other => Err(self.wrong(name, "a list of texts", &other)),
            })
            .collect()
    }

    /// A list of records, each a list of fields.
    pub(crate) fn records(&mut self, name: &str) -> Result<Vec<Fields>, WireError> {
        let script = self.script;
        self.list(name)?
            .into_iter()
            .map(|item| Fields::parse(script, item))
            .collect()
    }

    /// A list of rows sent flat, `columns.len()` values per row in that order (a script's
    /// reply costs Redis per table in it, so small records go as one list), each row as
    /// fields named by `columns`.
    pub(crate) fn rows(&mut self, name: &str, columns: &[&str]) -> Result<Vec<Fields>, WireError> {
        let items = self.list(name)?;
        if columns.is_empty() || items.len() % columns.len() != 0 {
            return Err(WireError::reply(
                self.script,
                format!(
                    "field `{name}` holds {} values, not rows of {}",
                    items.len(),
                    columns.len()
                ),
            ));
        }
        let mut rows = Vec::with_capacity(items.len() / columns.len());
        let mut items = items.into_iter();
        while items.len() > 0 {
            let entries = columns
                .iter()
                .map(|column| (*column).to_owned())
                .zip(items.by_ref())
                .collect();
            rows.push(Fields {
                script: self.script,
                entries,
            });
        }
        Ok(rows)
    }

    fn list(&mut self, name: &str) -> Result<Vec<Value>, WireError> {
        match self.take(name)? {
            Value::Array(items) => Ok(items),
            // An empty Lua table arrives as an empty list; a missing one as nil.
            Value::Nil => Ok(Vec::new()),
            other => Err(self.wrong(name, "a list", &other)),
        }
    }

    /// Ends the decoding: a field nobody took means the script and this module disagree.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        match self.entries.first() {
            None => Ok(()),
            Some((name, _)) => Err(WireError::reply(
                self.script,
                format!("unexpected field `{name}`"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn fields_are_taken_by_name_in_any_order() {
        let reply = Value::Array(vec![
            bulk("status"),
            bulk("ok"),
            bulk("left"),
            Value::Int(3),
            bulk("jobs"),
            Value::Array(vec![Value::Array(vec![bulk("id"), bulk("x")])]),
        ]);
        let mut fields = Fields::parse("claim", reply).unwrap();
        assert_eq!(fields.count("left").unwrap(), 3);
        let mut jobs = fields.records("jobs").unwrap();
        assert_eq!(jobs[0].text("id").unwrap(), "x");
        assert_eq!(fields.text("status").unwrap(), "ok");
        fields.finish().unwrap();
    }

    #[test]
    fn flat_rows_are_named_by_position() {
        let reply = Value::Array(vec![
            bulk("jobs"),
            Value::Array(vec![bulk("a"), Value::Int(7), bulk("b"), Value::Int(8)]),
        ]);
        let mut fields = Fields::parse("claim", reply).unwrap();
        let rows = fields.rows("jobs", &["id", "deadline"]).unwrap();
        let read: Vec<(String, u64)> = rows
            .into_iter()
            .map(|mut row| {
                let read = (row.text("id").unwrap(), row.count("deadline").unwrap());
                row.finish().unwrap();
                read
            })
            .collect();
        assert_eq!(read, [("a".to_owned(), 7), ("b".to_owned(), 8)]);
        fields.finish().unwrap();
    }

    #[test]
    fn every_mismatch_is_a_typed_error() {
        let parse = |items: Vec<Value>| Fields::parse("t", Value::Array(items)).unwrap();
        let missing = parse(vec![bulk("a"), Value::Int(1)]).int("b").unwrap_err();
        assert!(missing.to_string().contains("no field `b`"), "{missing}");
        let shape = parse(vec![bulk("a"), bulk("x")]).int("a").unwrap_err();
        assert!(shape.to_string().contains("should be a number"), "{shape}");
        let negative = parse(vec![bulk("a"), Value::Int(-1)])
            .count("a")
            .unwrap_err();
        assert!(negative.to_string().contains("a count"), "{negative}");
        let Err(ragged) = parse(vec![
            bulk("r"),
            Value::Array(vec![bulk("x"), bulk("y"), bulk("z")]),
        ])
        .rows("r", &["one", "two"]) else {
            panic!("three values were read as rows of two");
        };
        assert!(ragged.to_string().contains("not rows of 2"), "{ragged}");
        let extra = parse(vec![bulk("a"), Value::Int(1)]).finish().unwrap_err();
        assert!(
            extra.to_string().contains("unexpected field `a`"),
            "{extra}"
        );
        assert!(Fields::parse("t", Value::Array(vec![bulk("odd")])).is_err());
        assert!(Fields::parse("t", Value::Int(1)).is_err());
        let flag = parse(vec![bulk("f"), Value::Int(2)]).flag("f").unwrap_err();
        assert!(flag.to_string().contains("0 or 1"), "{flag}");
    }
}
