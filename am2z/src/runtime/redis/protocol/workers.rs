//! The worker registry (global keys under `{:workers}`): `heartbeat.lua` and `contracts.lua`.

use std::time::Duration;

use super::{Redis, ScriptDef, WireError, millis};
use crate::runtime::redis::keys::Keys;

pub(crate) static HEARTBEAT: ScriptDef = ScriptDef::new(
    "heartbeat",
    include_str!("../scripts/heartbeat.lua"),
    &["workers_key", "contracts_key", "served_key", "info_key"],
    &["worker", "ttl", "host", "pid", "processors"],
);

pub(crate) static CONTRACTS: ScriptDef = ScriptDef::new(
    "contracts",
    include_str!("../scripts/contracts.lua"),
    &["workers_key", "served_key"],
    &["grace_ms"],
);

/// What a worker tells the registry of itself, beside its contracts (what an operator sees).
pub(crate) struct WorkerCard<'a> {
    pub(crate) host: &'a str,
    pub(crate) pid: u32,
    /// The names of the processors it serves.
    pub(crate) processors: &'a [String],
}

/// Tells every process that `worker` is alive for `ttl` and serves `contracts`.
pub(crate) async fn heartbeat(
    redis: &Redis,
    keys: &Keys,
    worker: &str,
    ttl: Duration,
    card: &WorkerCard<'_>,
    contracts: &[String],
) -> Result<(), WireError> {
    let mut call = HEARTBEAT.script().prepare_invoke();
    call.key(keys.workers())
        .key(keys.worker_contracts(worker))
        .key(keys.served())
        .key(keys.worker_info(worker))
        .arg(worker)
        .arg(millis(ttl).max(1))
        .arg(card.host)
        .arg(card.pid)
        .arg(card.processors.join("\n"))
        .arg(contracts);
    let mut fields = redis.run(&HEARTBEAT, &call).await?;
    fields.count("now")?;
    fields.finish()
}

/// What the unserved rule knows of the fleet.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fleet {
    /// Live workers have existed for the whole grace.
    pub(crate) ready: bool,
    /// The contracts some live worker served within the grace.
    pub(crate) served: Vec<String>,
}

/// The fleet as the unserved rule with `grace` sees it.
pub(crate) async fn fleet(redis: &Redis, keys: &Keys, grace: Duration) -> Result<Fleet, WireError> {
    let mut call = CONTRACTS.script().prepare_invoke();
    call.key(keys.workers())
        .key(keys.served())
        .arg(millis(grace));
    let mut fields = redis.run(&CONTRACTS, &call).await?;
    let fleet = Fleet {
        ready: fields.flag("fleet_ready")?,
        served: fields.texts("served")?,
    };
    fields.finish()?;
    Ok(fleet)
}
