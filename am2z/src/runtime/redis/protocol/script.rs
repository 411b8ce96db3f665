//! Scripts: their sources (with the shared logic they include by name), the command
//! connection they run on, and how a call survives a `SCRIPT FLUSH` or a dropped connection.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use redis::{ErrorKind, ScriptInvocation, ServerErrorKind};

use super::reply::{Fields, WireError};
use crate::runtime::redis::connection::{Conn, ErrorMap};

/// The logic scripts share, included by name (`--- @include "name"`).
const INCLUDES: &[(&str, &str)] = &[
    ("time", include_str!("../scripts/include/time.lua")),
    ("session", include_str!("../scripts/include/session.lua")),
    ("header", include_str!("../scripts/include/header.lua")),
    ("ready", include_str!("../scripts/include/ready.lua")),
    ("end_run", include_str!("../scripts/include/end_run.lua")),
    ("lease", include_str!("../scripts/include/lease.lua")),
    ("publish", include_str!("../scripts/include/publish.lua")),
    ("count", include_str!("../scripts/include/count.lua")),
];

/// One Lua script: its file, and the names of the keys and arguments it declares at its top
/// (after those of its includes: the session's fixed keys for a session script).
pub(crate) struct ScriptDef {
    pub(crate) name: &'static str,
    pub(crate) source: &'static str,
    /// Its own `KEYS` (after the session's fixed keys, for a session script): what the
    /// protocol's tests check the script's declarations against.
    #[cfg_attr(not(test), allow(dead_code))]
    keys: &'static [&'static str],
    /// Its named `ARGV`, in order (a variable tail follows them, documented in the script).
    #[cfg_attr(not(test), allow(dead_code))]
    args: &'static [&'static str],
    script: OnceLock<redis::Script>,
}

impl ScriptDef {
    pub(crate) const fn new(
        name: &'static str,
        source: &'static str,
        keys: &'static [&'static str],
        args: &'static [&'static str],
    ) -> Self {
        ScriptDef {
            name,
            source,
            keys,
            args,
            script: OnceLock::new(),
        }
    }

    /// The script with its includes expanded (built once).
    pub(crate) fn script(&self) -> &redis::Script {
        self.script
            .get_or_init(|| redis::Script::new(&expand(self.source)))
    }
}

/// `source` with each `--- @include "name"` line replaced by that include.
fn expand(source: &str) -> String {
    let mut out = String::with_capacity(source.len() * 2);
    for line in source.lines() {
        let included = line
            .strip_prefix("--- @include \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .and_then(|name| INCLUDES.iter().find(|(n, _)| *n == name));
        match included {
            Some((_, body)) => out.push_str(body),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// How many times a call refused with `NOSCRIPT` is sent again after loading its script (a
/// `SCRIPT FLUSH` may land again between the load and the retry).
const RELOADS: usize = 3;

/// The command connection (one multiplexed, self-reconnecting connection per runtime) and
/// the calls made on it.
pub(crate) struct Redis {
    conn: Mutex<Option<Conn>>,
    pub(crate) errors: ErrorMap,
    /// Durable writes: how many replicas must hold a submission or a commit before it is
    /// acknowledged, and how long to wait for them (`WAIT`).
    pub(crate) durable: Option<(u32, Duration)>,
}

impl Redis {
    pub(crate) fn new(errors: ErrorMap, durable: Option<(u32, Duration)>) -> Self {
        Redis {
            conn: Mutex::new(None),
            errors,
            durable,
        }
    }

    /// Connected (at `start`) or not (at `stop`).
    pub(crate) fn set(&self, conn: Option<Conn>) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = conn;
    }

    /// The connection (a cheap clone of the multiplexed manager, or of the cluster's).
    pub(crate) fn conn(&self) -> Result<Conn, WireError> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(WireError::NotStarted)
    }

    /// Runs `call` (an invocation of `def`'s script) and reads its reply. After a `SCRIPT
    /// FLUSH` (`NOSCRIPT`) the script is loaded and the call sent again.
    pub(crate) async fn run(
        &self,
        def: &ScriptDef,
        call: &ScriptInvocation<'_>,
    ) -> Result<Fields, WireError> {
        let mut conn = self.conn()?;
        let mut reloads = 0;
        loop {
            match call.invoke_async::<redis::Value>(&mut conn).await {
                Err(error)
                    if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                        && reloads < RELOADS =>
                {
                    reloads += 1;
                }
                Err(error) => return Err(WireError::Redis(error)),
                Ok(value) => return Fields::parse(def.name, value),
            }
        }
    }

    /// [`run`](Self::run), acknowledged once the durable-write replicas hold its writes: the
    /// call and a `WAIT` go in one pipeline (so on one connection, to the slot's master).
    /// Without durable writes, [`run`](Self::run).
    ///
    /// # Errors
    /// [`WireError::NotReplicated`] when fewer replicas acknowledged within the timeout (the
    /// write may still be kept).
    pub(crate) async fn run_durable(
        &self,
        def: &ScriptDef,
        call: &ScriptInvocation<'_>,
    ) -> Result<Fields, WireError> {
        let Some((replicas, timeout)) = self.durable else {
            return self.run(def, call).await;
        };
        let mut conn = self.conn()?;
        let mut reloads = 0;
        loop {
            let mut pipe = redis::pipe();
            pipe.invoke_script(call)
                .cmd("WAIT")
                .arg(replicas)
                .arg(super::millis(timeout));
            match pipe.query_async::<(redis::Value, u32)>(&mut conn).await {
                Err(error)
                    if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                        && reloads < RELOADS =>
                {
                    reloads += 1;
                    self.load(&[def]).await?;
                }
                Err(error) => return Err(WireError::Redis(error)),
                Ok((_, acknowledged)) if acknowledged < replicas => {
                    return Err(WireError::NotReplicated {
                        wanted: replicas,
                        acknowledged,
                    });
                }
                Ok((value, _)) => return Fields::parse(def.name, value),
            }
        }
    }

    /// [`run`](Self::run), sent once more on the re-established connection when the
    /// connection dropped with the call in flight (it may never have reached Redis). Only for
    /// scripts fenced by a lease token, which refuse a repetition of a call that landed: a
    /// commit lost that way would otherwise wait out its lease and run again.
    pub(crate) async fn run_fenced(
        &self,
        def: &ScriptDef,
        call: &ScriptInvocation<'_>,
    ) -> Result<Fields, WireError> {
        match self.run(def, call).await {
            Err(error) if error.is_connection_dropped() => self.run(def, call).await,
            result => result,
        }
    }

    /// Loads `defs` (at start, and after a `SCRIPT FLUSH` reached a pipeline).
    pub(crate) async fn load(&self, defs: &[&ScriptDef]) -> Result<(), WireError> {
        let mut conn = self.conn()?;
        for def in defs {
            def.script().load_async(&mut conn).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::redis::protocol;

    /// Every script the runtime runs.
    fn all() -> Vec<&'static ScriptDef> {
        protocol::all_scripts()
    }

    /// `local <name> = ...KEYS[i]...` / `...ARGV[i]...` at the top level of `source`:
    /// (index, name) in declaration order.
    fn declared(source: &str, table: &str) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for line in source.lines() {
            let Some(rest) = line.strip_prefix("local ") else {
                continue;
            };
            let Some((name, value)) = rest.split_once(" = ") else {
                continue;
            };
            let pattern = format!("{table}[");
            let Some(at) = value.find(&pattern) else {
                continue;
            };
            let index = &value[at + pattern.len()..];
            let Some(end) = index.find(']') else { continue };
            if let Ok(index) = index[..end].parse::<usize>() {
                found.push((index, name.trim().to_owned()));
            }
        }
        found
    }

    #[test]
    fn every_script_declares_the_keys_and_arguments_its_module_sends() {
        for def in all() {
            let own = def.source;
            let keys = declared(own, "KEYS");
            let session_script = def.source.contains("--- @include \"session\"");
            let first_key = if session_script { 15 } else { 1 };
            let expected: Vec<(usize, String)> = def
                .keys
                .iter()
                .enumerate()
                .map(|(i, name)| (first_key + i, (*name).to_owned()))
                .collect();
            assert_eq!(keys, expected, "{}.lua's KEYS", def.name);
            let args = declared(own, "ARGV");
            let expected: Vec<(usize, String)> = def
                .args
                .iter()
                .enumerate()
                .map(|(i, name)| (i + 1, (*name).to_owned()))
                .collect();
            assert_eq!(args, expected, "{}.lua's ARGV", def.name);
        }
    }

    #[test]
    fn session_scripts_take_the_session_keys_in_the_order_the_key_module_gives_them() {
        let include = INCLUDES
            .iter()
            .find(|(n, _)| *n == "session")
            .map(|(_, body)| *body)
            .unwrap();
        let names: Vec<String> = declared(include, "KEYS")
            .into_iter()
            .enumerate()
            .map(|(i, (index, name))| {
                assert_eq!(index, i + 1);
                name
            })
            .collect();
        let parts: Vec<String> = crate::runtime::redis::keys::SESSION_PARTS
            .iter()
            .map(|part| format!("{part}_key"))
            .collect();
        assert_eq!(names, parts);
    }

    #[test]
    fn every_script_file_is_known_and_every_include_exists() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime/redis/scripts");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".lua").map(str::to_owned)
            })
            .collect();
        files.sort();
        let mut known: Vec<String> = all().iter().map(|d| d.name.to_owned()).collect();
        known.sort();
        assert_eq!(files, known);
        for def in all() {
            let expanded = expand(def.source);
            assert!(
                !expanded.contains("--- @include"),
                "{}: unknown include",
                def.name
            );
        }
    }
}
