//! What the bench reads beside the runtime: Redis' own counters (`INFO`, `CLIENT LIST`) and
//! a process's memory and sockets from `/proc`. Nothing here writes to Redis.

use std::collections::{BTreeMap, HashMap, HashSet};

use am2z::Error;
use redis::aio::MultiplexedConnection;

/// A connection of the bench's own, for counters only.
pub(crate) struct Observer {
    conn: MultiplexedConnection,
    /// This connection's `CLIENT ID`, left out of the bench process's connection count.
    own_id: u64,
}

/// One command's cumulative `INFO commandstats` figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Stat {
    /// Calls (a script's `redis.call`s are counted under their own command too).
    pub(crate) calls: u64,
    /// Microseconds spent executing them (a script's time includes its inner commands').
    pub(crate) usec: u64,
}

/// Redis' cumulative counters at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    /// `used_cpu_sys + used_cpu_user` of the server, in seconds.
    pub(crate) cpu_seconds: f64,
    /// `INFO commandstats` per command (commands run inside Lua scripts included).
    pub(crate) stats: BTreeMap<String, Stat>,
}

/// What Redis did between two [`Counters`] snapshots, the observer's own `INFO` left out.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delta {
    /// Server CPU (user + system), seconds.
    pub(crate) cpu_seconds: f64,
    /// Per command, calls and µs (only commands that ran).
    pub(crate) stats: BTreeMap<String, Stat>,
}

/// Commands that run a script: what "script calls" counts.
const SCRIPT_COMMANDS: &[&str] = &[
    "evalsha",
    "eval",
    "evalsha_ro",
    "eval_ro",
    "fcall",
    "fcall_ro",
];

impl Counters {
    /// What happened between `self` and `later`. Each snapshot is one `INFO` call, which
    /// commandstats counts only after it answered: the interval holds exactly one of the
    /// observer's own (the earlier snapshot's), taken out here.
    pub(crate) fn delta(&self, later: &Counters) -> Delta {
        let mut stats: BTreeMap<String, Stat> = later
            .stats
            .iter()
            .map(|(name, now)| {
                let was = self.stats.get(name).copied().unwrap_or_default();
                let calls = now.calls.saturating_sub(was.calls);
                let usec = now.usec.saturating_sub(was.usec);
                (name.clone(), Stat { calls, usec })
            })
            .collect();
        if let Some(info) = stats.get_mut("info") {
            info.calls = info.calls.saturating_sub(1);
            if info.calls == 0 {
                info.usec = 0;
            }
        }
        stats.retain(|_, s| s.calls > 0);
        Delta {
            cpu_seconds: later.cpu_seconds - self.cpu_seconds,
            stats,
        }
    }
}

impl Delta {
    /// All commands, Lua-internal ones included.
    pub(crate) fn calls(&self) -> u64 {
        self.stats.values().map(|s| s.calls).sum()
    }

    /// Script calls (`EVALSHA`, `EVAL`, `FCALL` and their read-only forms).
    pub(crate) fn script_calls(&self) -> u64 {
        SCRIPT_COMMANDS
            .iter()
            .filter_map(|c| self.stats.get(*c))
            .map(|s| s.calls)
            .sum()
    }

    /// Adds `other` (another interval) to this one.
    pub(crate) fn add(&mut self, other: &Delta) {
        self.cpu_seconds += other.cpu_seconds;
        for (name, s) in &other.stats {
            let mine = self.stats.entry(name.clone()).or_default();
            mine.calls += s.calls;
            mine.usec += s.usec;
        }
    }
}

fn unavailable(error: redis::RedisError) -> Error {
    Error::unavailable("redis (bench observer)", error.to_string())
}

impl Observer {
    pub(crate) async fn connect(url: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(unavailable)?;
        let own_id: u64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Observer { conn, own_id })
    }

    async fn info(&mut self, section: &str) -> Result<String, Error> {
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn)
            .await
            .map_err(unavailable)
    }

    /// The server's CPU time and per-command figures now: one `INFO cpu commandstats`
    /// (one call, so an interval between two snapshots holds exactly one of the observer's).
    pub(crate) async fn counters(&mut self) -> Result<Counters, Error> {
        let text: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await
            .map_err(unavailable)?;
        Ok(parse_counters(&text))
    }

    /// `used_memory` in bytes.
    pub(crate) async fn used_memory(&mut self) -> Result<u64, Error> {
        let memory = self.info("memory").await?;
        Ok(memory
            .lines()
            .find_map(|line| line.trim().strip_prefix("used_memory:")?.parse().ok())
            .unwrap_or(0))
    }

    /// How many of Redis' clients are connections of process `pid` (matched by the local
    /// port of each of its TCP sockets; this observer's own connection is left out).
    pub(crate) async fn connections_of(&mut self, pid: u32) -> Result<usize, Error> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut self.conn)
            .await
            .map_err(unavailable)?;
        let ports = local_ports(pid);
        Ok(list
            .lines()
            .filter(|line| {
                let field = |key: &str| {
                    line.split(' ')
                        .find_map(|kv| kv.strip_prefix(key))
                        .map(str::to_owned)
                };
                let is_own =
                    field("id=").and_then(|id| id.parse::<u64>().ok()) == Some(self.own_id);
                let port = field("addr=").and_then(|addr| {
                    addr.rsplit_once(':')
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                });
                !is_own && port.is_some_and(|p| ports.contains(&p))
            })
            .count())
    }
}

/// `used_cpu_*` and `cmdstat_*` lines of an `INFO` reply.
fn parse_counters(text: &str) -> Counters {
    let mut counters = Counters::default();
    for line in text.lines() {
        let Some((field, value)) = line.trim().split_once(':') else {
            continue;
        };
        if matches!(field, "used_cpu_sys" | "used_cpu_user") {
            counters.cpu_seconds += value.parse::<f64>().unwrap_or(0.0);
        } else if let Some(name) = field.strip_prefix("cmdstat_") {
            // `cmdstat_evalsha:calls=12,usec=345,usec_per_call=28.75,...`
            let number = |key: &str| {
                value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            let stat = Stat {
                calls: number("calls="),
                usec: number("usec="),
            };
            counters.stats.insert(name.to_owned(), stat);
        }
    }
    counters
}

/// Resident memory of process `pid` in bytes (`VmRSS`), 0 if it cannot be read.
pub(crate) fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kb = line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?;
                kb.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// The local TCP ports of process `pid`'s sockets (Linux: `/proc/<pid>/fd` socket inodes
/// matched against `/proc/net/tcp{,6}`).
fn local_ports(pid: u32) -> HashSet<u16> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut port_of: HashMap<u64, u16> = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            let port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if let (Some(port), Ok(inode)) = (port, inode.parse()) {
                port_of.insert(inode, port);
            }
        }
    }
    inodes
        .iter()
        .filter_map(|inode| port_of.get(inode).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_takes_out_the_observers_own_info() {
        let before = parse_counters(
            "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.0\r\n# Commandstats\r\n\
             cmdstat_info:calls=4,usec=40,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00\r\n",
        );
        let after = parse_counters(
            "used_cpu_sys:2.0\r\nused_cpu_user:2.5\r\n\
             cmdstat_info:calls=5,usec=50\r\n\
             cmdstat_evalsha:calls=13,usec=160\r\n\
             cmdstat_hget:calls=6,usec=6\r\n\
             cmdstat_client|id:calls=1,usec=1\r\n",
        );
        let delta = before.delta(&after);
        assert!((delta.cpu_seconds - 1.0).abs() < 1e-9);
        assert_eq!(delta.stats.get("info"), None);
        assert_eq!(
            delta.stats.get("evalsha"),
            Some(&Stat { calls: 3, usec: 60 })
        );
        assert_eq!(delta.calls(), 3 + 6 + 1);
        assert_eq!(delta.script_calls(), 3);
    }
}
