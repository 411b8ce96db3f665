//! The Lua scripts, one file each under `scripts/`, each prefixed with the helpers they share
//! (`scripts/lib.lua`), with fixed bodies: every value arrives through `KEYS`/`ARGV`. `redis::Script` runs `EVALSHA` and falls back to `EVAL` on
//! `NOSCRIPT`, so a `SCRIPT FLUSH` is survived without anyone noticing. `start` loads them
//! all up front, so no first call pays for the fallback.

use redis::aio::ConnectionManager;
use redis::{ErrorKind, FromRedisValue, RedisResult, Script, ScriptInvocation, ServerErrorKind};

/// `invoke_async` that also survives a `SCRIPT FLUSH` landing between redis-rs's reload of a
/// flushed script and its retry (which would otherwise reach the caller as `NOSCRIPT`).
pub(crate) trait InvokeReloading {
    async fn invoke_reloading<T: FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
    ) -> RedisResult<T>;

    /// [`invoke_reloading`](Self::invoke_reloading), tried once more on the re-established
    /// connection when the connection dropped with the call in flight (it may never have
    /// reached Redis). Only for scripts fenced by a token, which refuse a repetition: a commit
    /// lost that way would otherwise wait out its lease and run again.
    async fn invoke_fenced<T: FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
    ) -> RedisResult<T> {
        match self.invoke_reloading(conn).await {
            Err(error) if error.is_connection_dropped() => self.invoke_reloading(conn).await,
            result => result,
        }
    }
}

impl InvokeReloading for ScriptInvocation<'_> {
    async fn invoke_reloading<T: FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
    ) -> RedisResult<T> {
        let mut reloads = 0;
        loop {
            match self.invoke_async(conn).await {
                Err(error)
                    if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                        && reloads < 3 =>
                {
                    reloads += 1;
                }
                result => return result,
            }
        }
    }
}

/// Every script the runtime runs.
pub(crate) struct Scripts {
    pub(crate) submit: Script,
    pub(crate) claim: Script,
    pub(crate) renew: Script,
    pub(crate) commit: Script,
    pub(crate) advance: Script,
    pub(crate) park: Script,
    pub(crate) stage: Script,
    pub(crate) release: Script,
    pub(crate) sweep: Script,
    pub(crate) stop: Script,
    pub(crate) event: Script,
    pub(crate) pick: Script,
    pub(crate) enlist: Script,
    pub(crate) admit: Script,
    pub(crate) hold: Script,
    pub(crate) rate: Script,
    pub(crate) due: Script,
    pub(crate) promote: Script,
    pub(crate) heartbeat: Script,
    pub(crate) watch: Script,
    pub(crate) settle: Script,
    pub(crate) leases_due: Script,
}

impl Scripts {
    /// Every script, for loading them all at start.
    pub(crate) fn all(&self) -> [&Script; 22] {
        [
            &self.submit,
            &self.claim,
            &self.renew,
            &self.commit,
            &self.advance,
            &self.park,
            &self.stage,
            &self.release,
            &self.sweep,
            &self.stop,
            &self.event,
            &self.pick,
            &self.enlist,
            &self.admit,
            &self.hold,
            &self.rate,
            &self.due,
            &self.promote,
            &self.heartbeat,
            &self.watch,
            &self.settle,
            &self.leases_due,
        ]
    }

    pub(crate) fn new() -> Self {
        /// A script of `scripts/`, after the helpers they share (`scripts/lib.lua`).
        macro_rules! script {
            ($name:literal) => {
                Script::new(concat!(
                    include_str!("scripts/lib.lua"),
                    include_str!(concat!("scripts/", $name, ".lua"))
                ))
            };
        }
        Scripts {
            submit: script!("submit"),
            claim: script!("claim"),
            renew: script!("renew"),
            commit: script!("commit"),
            advance: script!("advance"),
            park: script!("park"),
            stage: script!("stage"),
            release: script!("release"),
            sweep: script!("sweep"),
            stop: script!("stop"),
            event: script!("event"),
            pick: script!("pick"),
            enlist: script!("enlist"),
            admit: script!("admit"),
            hold: script!("hold"),
            rate: script!("rate"),
            due: script!("due"),
            promote: script!("promote"),
            heartbeat: script!("heartbeat"),
            watch: script!("watch"),
            settle: script!("settle"),
            leases_due: script!("leases_due"),
        }
    }
}
