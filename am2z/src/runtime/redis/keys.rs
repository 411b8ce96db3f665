//! The one place that knows the Redis key layout (see `docs/architecture.md`).
//!
//! Every key of a session is `<prefix>:{<session>}:<part>`: the hash tag puts all of a
//! session's keys on one Cluster slot, so every session script touches one slot. Session ids
//! are validated by [`SessionId`] (letters, digits, `_`, `-`, `.`) and prefixes by
//! [`validate_prefix`], so no id can smuggle `{`, `}` or `:` into a key. Global keys that a
//! script touches together share a hash tag that starts with `:`, which no session id can
//! (`{:registry}` for the session registry and schedule, `{:workers}` for the worker
//! registry), so they too live on one slot and never collide with a session's keys.

use crate::{Error, RunId, SessionId};

/// A job's id: its queue member and the end of its key. A run's entry job is named by the run
/// id; the later jobs of a run executed step by step by the run id and a hash of their
/// position in the run (`<run>.<16 hex digits>`), so recomputing a transition names the same
/// jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct JobId {
    pub(crate) run: RunId,
    pub(crate) position: Option<u64>,
}

impl JobId {
    /// The run's entry job (a whole run, or the first job of a run executed step by step).
    pub(crate) fn entry(run: RunId) -> Self {
        JobId {
            run,
            position: None,
        }
    }

    /// Parses a queue member (`None`: not one of ours).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (run, position) = match text.split_once('.') {
            Some((run, position)) if position.len() == 16 => {
                (run, Some(u64::from_str_radix(position, 16).ok()?))
            }
            Some(_) => return None,
            None => (text, None),
        };
        if run.len() != 32 {
            return None;
        }
        let run = RunId::from_u128(u128::from_str_radix(run, 16).ok()?);
        Some(JobId { run, position })
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            None => write!(f, "{}", self.run),
            Some(position) => write!(f, "{}.{position:016x}", self.run),
        }
    }
}

/// The longest queue prefix accepted.
pub(crate) const MAX_PREFIX_LEN: usize = 64;

/// Checks a queue prefix: 1..=64 of `[A-Za-z0-9_.-]`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), Error> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN || !prefix.chars().all(valid_char) {
        return Err(Error::configuration(format!(
            "queue prefix `{}` is invalid: use 1 to {MAX_PREFIX_LEN} letters, digits, `_`, `-` or `.`",
            prefix.escape_debug()
        )));
    }
    Ok(())
}

/// The fixed keys of a session, in the order every session script takes them (`KEYS[1..14]`,
/// declared by `scripts/include/session.lua`).
pub(crate) const SESSION_PARTS: [&str; 14] = [
    "meta",
    "jobs",
    "bodies",
    "queue",
    "delayed",
    "leases",
    "calls",
    "runs",
    "results",
    "completed",
    "failed",
    "dead",
    "events",
    "stats",
];

/// The runtime's pub/sub channels, as a message's channel names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Channel {
    Wake,
    Control,
    Done,
    Events,
}

/// The keys and channels of one prefix. On one node the channels are prefix-wide and
/// published with `PUBLISH`; on a cluster they are shard channels (`SPUBLISH`: their name
/// carries a hash tag, which is how a publisher tells), each on the slot of what publishes it: a session's `done` and `events` on the session's slot,
/// `wake` on the schedule's, `control` on its own (`docs/architecture.md`, "Redis
/// Cluster").
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    /// Keys under `prefix`, which must have passed [`validate_prefix`]; `cluster`: the
    /// channels of a Redis Cluster.
    pub(crate) fn new(prefix: &str, cluster: bool) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            cluster,
        }
    }

    /// Whether the channels are a cluster's shard channels.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The session registry (sorted set: session id → registration score).
    pub(crate) fn sessions(&self) -> String {
        format!("{}:{{:registry}}:sessions", self.prefix)
    }

    /// Sessions that have ready jobs, scored by the claims they were given.
    pub(crate) fn sched(&self) -> String {
        format!("{}:{{:registry}}:sched", self.prefix)
    }

    /// Session → the scheduling generation its entry in [`sched`](Keys::sched) stands for.
    pub(crate) fn gens(&self) -> String {
        format!("{}:{{:registry}}:gens", self.prefix)
    }

    /// Finished steps per processor, across sessions (`<name>:completed`, `<name>:failed`).
    pub(crate) fn stats(&self) -> String {
        format!("{}:{{:stats}}", self.prefix)
    }

    /// Sessions with delayed jobs, scored by their earliest due time (the promoter's timer).
    pub(crate) fn timers(&self) -> String {
        format!("{}:{{:timers}}", self.prefix)
    }

    /// Sessions with leases, scored by when the sweeper should look at them next.
    pub(crate) fn leasing(&self) -> String {
        format!("{}:{{:leasing}}", self.prefix)
    }

    /// Live workers, scored by when their heartbeat lapses.
    pub(crate) fn workers(&self) -> String {
        format!("{}:{{:workers}}", self.prefix)
    }

    /// The contract fingerprints one live worker serves (same slot as [`Keys::workers`]).
    pub(crate) fn worker_contracts(&self, worker: &str) -> String {
        format!("{}:{{:workers}}:{worker}", self.prefix)
    }

    /// What an operator sees of one live worker (`host`, `pid`, `processors`, `seen`;
    /// expires with its heartbeat; same slot as [`Keys::workers`]).
    pub(crate) fn worker_info(&self, worker: &str) -> String {
        format!("{}:{{:workers}}:{worker}:info", self.prefix)
    }

    /// Contract → when a live worker last served it; `since` → when the fleet last became
    /// non-empty (same slot as [`Keys::workers`]).
    pub(crate) fn served(&self) -> String {
        format!("{}:{{:workers}}:served", self.prefix)
    }

    /// The sweeper lock.
    pub(crate) fn sweeper_lock(&self) -> String {
        format!("{}:{{:sweeper}}", self.prefix)
    }

    /// A processor's cluster-wide concurrency permits. Processor names come from code, not
    /// from callers; `limit:` keeps these apart from session keys (`{` follows the prefix).
    pub(crate) fn permits(&self, processor: &str) -> String {
        format!("{}:limit:{processor}", self.prefix)
    }

    /// A processor's recent starts, for its cluster-wide rate limit.
    pub(crate) fn starts(&self, processor: &str) -> String {
        format!("{}:rate:{processor}", self.prefix)
    }

    /// Channel: a session got ready jobs (`Wake`; published by `enlist.lua`, so on a
    /// cluster on the schedule's slot).
    pub(crate) fn wake_channel(&self) -> String {
        match self.cluster {
            true => format!("{}:{{:registry}}:wake", self.prefix),
            false => format!("{}:wake", self.prefix),
        }
    }

    /// Channel: control messages (`Control`).
    pub(crate) fn control_channel(&self) -> String {
        match self.cluster {
            true => format!("{}:{{:control}}", self.prefix),
            false => format!("{}:control", self.prefix),
        }
    }

    /// Channel: runs of `session` ended (`Done` lines); on one node, every session's.
    pub(crate) fn done_channel(&self, session: &SessionId) -> String {
        match self.cluster {
            true => format!("{}:{{{}}}:done", self.prefix, session.as_str()),
            false => format!("{}:done", self.prefix),
        }
    }

    /// Channel: events of `session`, as JSON; on one node, every session's.
    pub(crate) fn events_channel(&self, session: &SessionId) -> String {
        match self.cluster {
            true => format!("{}:{{{}}}:events", self.prefix, session.as_str()),
            false => format!("{}:events", self.prefix),
        }
    }

    /// The channels this process listens on from its start: `wake` and `control`. The
    /// others are taken on demand: on one node the prefix's `events` and `done` while the
    /// process needs them ([`prefix_channels`](Keys::prefix_channels)), on a cluster a
    /// session's ([`session_channels`](Keys::session_channels)).
    pub(crate) fn standing_channels(&self) -> Vec<String> {
        vec![self.wake_channel(), self.control_channel()]
    }

    /// One node's `events` and `done` channels (they name no session).
    pub(crate) fn prefix_channels(&self) -> [String; 2] {
        let any = SessionId::default();
        [self.events_channel(&any), self.done_channel(&any)]
    }

    /// On a cluster, the channels of `session` a process follows while it awaits its runs
    /// or follows its events.
    pub(crate) fn session_channels(&self, session: &SessionId) -> [String; 2] {
        [self.done_channel(session), self.events_channel(session)]
    }

    /// Which of the runtime's channels `name` is (`None`: not one of this prefix's).
    pub(crate) fn channel(&self, name: &str) -> Option<Channel> {
        if name == self.wake_channel() {
            return Some(Channel::Wake);
        }
        if name == self.control_channel() {
            return Some(Channel::Control);
        }
        let rest = name.strip_prefix(self.prefix.as_str())?.strip_prefix(':')?;
        let part = match self.cluster {
            // `{<session>}:done`: the session id holds no `}`.
            true => rest.strip_prefix('{')?.split_once("}:")?.1,
            false => rest,
        };
        match part {
            "done" => Some(Channel::Done),
            "events" => Some(Channel::Events),
            _ => None,
        }
    }

    /// The keys of `session`.
    pub(crate) fn session(&self, session: &SessionId) -> SessionKeys {
        SessionKeys {
            base: format!("{}:{{{}}}:", self.prefix, session.as_str()),
        }
    }
}

/// The keys of one session: all share the hash tag `{<session>}`.
#[derive(Debug, Clone)]
pub(crate) struct SessionKeys {
    base: String,
}

impl SessionKeys {
    fn part(&self, part: &str) -> String {
        format!("{}{part}", self.base)
    }

    /// The session's fixed keys, in [`SESSION_PARTS`] order: what every session script takes
    /// first.
    pub(crate) fn fixed(&self) -> [String; 14] {
        SESSION_PARTS.map(|part| self.part(part))
    }

    /// The session's hash (`created_ms`, `seq`, `ready`, `generation`, `stopping`).
    pub(crate) fn meta(&self) -> String {
        self.part("meta")
    }

    /// The session's live runs, by creation time.
    pub(crate) fn runs(&self) -> String {
        self.part("runs")
    }

    /// Ended runs' outcomes.
    pub(crate) fn results(&self) -> String {
        self.part("results")
    }

    /// Leased jobs, by lease deadline.
    pub(crate) fn leases(&self) -> String {
        self.part("leases")
    }

    /// Leased jobs whose step waits on a `ctx.call`, by lease deadline.
    pub(crate) fn calls(&self) -> String {
        self.part("calls")
    }

    /// Finished steps per processor (`<name>:completed`, `<name>:failed`).
    pub(crate) fn stats(&self) -> String {
        self.part("stats")
    }

    /// Job headers (job id → header).
    pub(crate) fn jobs(&self) -> String {
        self.part("jobs")
    }

    /// Job bodies (job id → body).
    pub(crate) fn bodies(&self) -> String {
        self.part("bodies")
    }

    /// Jobs waiting out a delay, by due time.
    pub(crate) fn delayed(&self) -> String {
        self.part("delayed")
    }

    /// Ended runs that completed, by end time.
    pub(crate) fn completed(&self) -> String {
        self.part("completed")
    }

    /// Ended runs that failed (dead-lettered ones included), by end time.
    pub(crate) fn failed(&self) -> String {
        self.part("failed")
    }

    /// Dead-lettered runs, by when they were buried.
    pub(crate) fn dead(&self) -> String {
        self.part("dead")
    }

    /// The session's event stream.
    pub(crate) fn events(&self) -> String {
        self.part("events")
    }

    /// The hash of a run executed step by step, while the run is live.
    pub(crate) fn run(&self, run: RunId) -> String {
        format!("{}run:{run}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Redis Cluster's slot of a key: CRC16 of the hash tag (or the whole key).
    fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let tagged = key
            .find('{')
            .and_then(|open| {
                key[open + 1..]
                    .find('}')
                    .filter(|len| *len > 0)
                    .map(|len| &bytes[open + 1..open + 1 + len])
            })
            .unwrap_or(bytes);
        let mut crc: u16 = 0;
        for byte in tagged {
            crc ^= u16::from(*byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    fn all_keys(keys: &SessionKeys, run: RunId) -> Vec<String> {
        let mut all = keys.fixed().to_vec();
        all.push(keys.run(run));
        all
    }

    /// Many ids, including the awkward corners of the allowlist.
    fn sample_ids() -> Vec<SessionId> {
        let alphabet: Vec<char> = ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(['_', '-', '.'])
            .collect();
        let mut ids: Vec<String> = vec![
            "a".into(),
            "default".into(),
            "a.".into(),
            "a..b".into(),
            "-".into(),
            "x".repeat(crate::MAX_SESSION_ID_LEN),
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = 1 + (state % 24) as usize;
            let id: String = (0..len)
                .map(|i| alphabet[((state >> (i % 8 * 8)) as usize + i * 7) % alphabet.len()])
                .collect();
            if !id.starts_with('.') {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        ids.iter().map(|id| SessionId::new(id).unwrap()).collect()
    }

    #[test]
    fn every_key_of_a_session_is_on_the_session_slot() {
        let keys = Keys::new("am2z", false);
        let run = RunId::generate();
        for id in sample_ids() {
            let session = keys.session(&id);
            let expected = slot(&format!("{{{}}}", id.as_str()));
            for key in all_keys(&session, run) {
                assert_eq!(slot(&key), expected, "{key}");
                assert!(key.starts_with(&format!("am2z:{{{}}}:", id.as_str())));
            }
        }
    }

    #[test]
    fn a_clusters_channels_live_on_the_slot_of_what_publishes_them() {
        let keys = Keys::new("am2z", true);
        assert_eq!(slot(&keys.wake_channel()), slot(&keys.sched()));
        for id in sample_ids() {
            let session = keys.session(&id);
            for channel in keys.session_channels(&id) {
                assert_eq!(slot(&channel), slot(&session.meta()), "{channel}");
            }
            assert_eq!(keys.channel(&keys.done_channel(&id)), Some(Channel::Done));
            assert_eq!(
                keys.channel(&keys.events_channel(&id)),
                Some(Channel::Events)
            );
        }
        assert_eq!(keys.channel(&keys.wake_channel()), Some(Channel::Wake));
        assert_eq!(
            keys.channel(&keys.control_channel()),
            Some(Channel::Control)
        );
        for stranger in [
            "other:{s}:done",
            "am2z:{s}:jobs",
            "am2z:done",
            "am2z:{s}done",
        ] {
            assert_eq!(keys.channel(stranger), None, "{stranger}");
        }
        let node = Keys::new("am2z", false);
        assert_eq!(node.standing_channels().len(), 2);
        for channel in node.standing_channels() {
            assert!(node.channel(&channel).is_some(), "{channel}");
        }
        let [events, done] = node.prefix_channels();
        assert_eq!(node.channel(&events), Some(Channel::Events));
        assert_eq!(node.channel(&done), Some(Channel::Done));
        assert_eq!(node.channel("am2z:{s}:done"), None);
    }

    #[test]
    fn keys_are_injective_across_sessions_and_parts() {
        let keys = Keys::new("am2z", false);
        let runs = [RunId::generate(), RunId::generate()];
        let mut seen = HashSet::new();
        let globals = [
            keys.sessions(),
            keys.sched(),
            keys.gens(),
            keys.stats(),
            keys.timers(),
            keys.leasing(),
            keys.workers(),
            keys.worker_contracts("w1"),
            keys.worker_info("w1"),
            keys.served(),
            keys.sweeper_lock(),
            keys.permits("sessions"),
            keys.starts("sessions"),
        ];
        for key in &globals {
            assert!(seen.insert(key.clone()));
        }
        for id in sample_ids() {
            let session = keys.session(&id);
            for run in runs {
                for key in all_keys(&session, run) {
                    // The fixed keys repeat for the second run: only its run hash is new.
                    if key.contains(":run:") || run == runs[0] {
                        assert!(seen.insert(key.clone()), "{key} built twice");
                    }
                }
            }
        }
    }

    /// Property: every session key reads back as `<prefix>:{<id>}:<part>` with the id
    /// recoverable from the hash tag alone (ids cannot hold `}`), so the builder is injective
    /// for every valid id, not only the sampled ones; ids that are prefixes of each other
    /// (`a`, `a.`, `a.b`) included.
    #[test]
    fn the_session_is_recoverable_from_each_key() {
        let keys = Keys::new("am2z", false);
        let run = RunId::generate();
        let mut ids = sample_ids();
        for near in ["a", "a.", "a.b", "a-", "a_", "ab", "A", "-a", "_a"] {
            ids.push(SessionId::new(near).unwrap());
        }
        for id in ids {
            for key in all_keys(&keys.session(&id), run) {
                let tagged = key
                    .strip_prefix("am2z:{")
                    .expect("the prefix, then the tag");
                let (session, part) = tagged.split_once('}').expect("a closed hash tag");
                assert_eq!(session, id.as_str(), "{key}");
                assert!(part.starts_with(':') && !part[1..].is_empty(), "{key}");
                assert!(!part.contains(['{', '}']), "{key}: one hash tag only");
            }
        }
    }

    #[test]
    fn global_keys_used_together_share_a_slot() {
        let keys = Keys::new("am2z", false);
        assert_eq!(slot(&keys.sessions()), slot(&keys.sched()));
        assert_eq!(slot(&keys.sessions()), slot(&keys.gens()));
        assert_eq!(slot(&keys.workers()), slot(&keys.worker_contracts("w-1")));
        assert_eq!(slot(&keys.workers()), slot(&keys.worker_info("w-1")));
        assert_eq!(slot(&keys.workers()), slot(&keys.served()));
        // No session id can produce a registry key: `:` is not allowed in ids.
        assert!(SessionId::new(":registry").is_err());
    }

    #[test]
    fn prefixes_are_validated() {
        for ok in ["am2z", "a", "test-1.x_y", &"p".repeat(MAX_PREFIX_LEN)] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "{a}",
            "a:b",
            "a*",
            "a b",
            "a\n",
            &"p".repeat(MAX_PREFIX_LEN + 1),
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_do_not_collide() {
        let (a, b) = (Keys::new("a", false), Keys::new("a.b", false));
        let id = SessionId::new("s").unwrap();
        assert_ne!(a.session(&id).meta(), b.session(&id).meta());
        assert_ne!(a.sessions(), b.sessions());
    }
}
