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

/// Redis' cumulative counters at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    /// `used_cpu_sys + used_cpu_user` of the server, in seconds.
    pub(crate) cpu_seconds: f64,
    /// `INFO commandstats` calls per command (commands run inside Lua scripts included).
    pub(crate) calls: BTreeMap<String, u64>,
}

impl Counters {
    /// What happened between `self` and `later`: CPU seconds and calls per command.
    pub(crate) fn delta(&self, later: &Counters) -> (f64, BTreeMap<String, u64>) {
        let calls = later
            .calls
            .iter()
            .map(|(name, &n)| {
                (
                    name.clone(),
                    n.saturating_sub(self.calls.get(name).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        (later.cpu_seconds - self.cpu_seconds, calls)
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

    /// The server's CPU time and per-command call counts now.
    pub(crate) async fn counters(&mut self) -> Result<Counters, Error> {
        let cpu = self.info("cpu").await?;
        let cpu_seconds = cpu
            .lines()
            .filter_map(|line| {
                let (field, value) = line.trim().split_once(':')?;
                matches!(field, "used_cpu_sys" | "used_cpu_user")
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum();
        let stats = self.info("commandstats").await?;
        // `cmdstat_evalsha:calls=12,usec=...`
        let calls = stats
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect();
        Ok(Counters { cpu_seconds, calls })
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
