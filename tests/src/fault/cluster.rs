//! A Redis Cluster of a test's own: by default 3 masters with 1 replica each, every node a
//! [`RedisServer`] (a private `redis-server` on a free loopback port with its own directory),
//! joined with `redis-cli --cluster create`, and fault injection on top: slot migration (whole,
//! or stopped half-way so traffic runs *during* it), `kill -9` of a master and the wait for its
//! replica's promotion, restart of a node on its own data and `nodes.conf`, freeze and thaw.
//! Every server is stopped by its pid and its directory removed when the cluster is dropped,
//! whatever the test did to it.
//!
//! Each node's cluster bus port is a free port of its own, given with `--cluster-port` (Redis
//! 7.0): the usual `port + 10000` would overflow for the high ports a free loopback port often
//! is.
//!
//! The harness inspects nodes through its own connections, with timeouts, so a dead node is a
//! "no answer", never a hang; a frozen node is left out of every check until it is thawed.
//!
//! Every method takes `&self`: a test may share the cluster (`Arc<RedisCluster>`) between a
//! thread that injects faults and one that checks. Every method blocks (its waits poll with
//! `std::thread::sleep`): from an async test, call it in `tokio::task::spawn_blocking` or on
//! a multi-thread runtime.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::server::{RedisServer, ServerSpec, free_port};
use crate::resp::Reply;

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// How long one command to one node may take before the harness calls the node silent.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How many keys one `MIGRATE` moves.
const MIGRATE_BATCH: usize = 100;
/// The `MIGRATE` timeout (ms) and the wait for its reply.
const MIGRATE_TIMEOUT_MS: u64 = 10_000;
/// How often the waits poll.
const POLL: Duration = Duration::from_millis(25);

/// How to start a [`RedisCluster`]. The defaults: 3 masters, 1 replica each, a node timeout
/// of 2 s (a killed master's replica is promoted in about 4 s), every node with
/// [`ServerSpec::default`]'s settings (append-only file with `appendfsync always`,
/// `noeviction`, `DEBUG` from loopback), `cluster-allow-replica-migration no` (replicas stay
/// where they were put), `repl-diskless-sync-delay 0` (a replica's full sync starts at once,
/// not 5 s later), and 60 s for every wait before it panics.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    masters: usize,
    replicas: usize,
    node_timeout: Duration,
    deadline: Duration,
    args: Vec<(String, String)>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            masters: 3,
            replicas: 1,
            node_timeout: Duration::from_millis(2_000),
            deadline: Duration::from_secs(60),
            args: vec![
                ("cluster-allow-replica-migration".into(), "no".into()),
                ("repl-diskless-sync-delay".into(), "0".into()),
            ],
        }
    }
}

impl ClusterSpec {
    /// The number of masters (at least 3: `redis-cli --cluster create` wants 3).
    #[must_use]
    pub fn masters(mut self, masters: usize) -> Self {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        self.masters = masters;
        self
    }

    /// The number of replicas of each master.
    #[must_use]
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// `cluster-node-timeout`: how long a node may be silent before it is suspected. A master
    /// killed is failed over about twice this later.
    #[must_use]
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// The `appendfsync` policy of every node (`always` by default; `everysec`, `no`).
    #[must_use]
    pub fn appendfsync(self, policy: &str) -> Self {
        self.arg("appendfsync", policy)
    }

    /// One more `--name value` directive for every node; a later directive overrides an
    /// earlier one (and the defaults).
    #[must_use]
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push((name.to_owned(), value.to_owned()));
        self
    }

    /// How long every wait of the harness (the cluster forming, a failover, a restart, a
    /// migration settling) may take before it panics with the nodes' state and log tails.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Starts the nodes, joins them with `redis-cli --cluster create … --cluster-replicas N
    /// --cluster-yes`, and waits until the cluster is healthy (see
    /// [`RedisCluster::wait_healthy`]). Panics, with the nodes' log tails, if it does not get
    /// there within the deadline.
    pub fn start(self) -> RedisCluster {
        let count = self.masters * (1 + self.replicas);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let bus_port = free_port();
            let mut spec = ServerSpec::default()
                .arg("cluster-enabled", "yes")
                .arg("cluster-config-file", "nodes.conf")
                .arg("cluster-port", &bus_port.to_string())
                .arg(
                    "cluster-node-timeout",
                    &self.node_timeout.as_millis().to_string(),
                )
                .arg("logfile", "redis.log");
            for (name, value) in &self.args {
                spec = spec.arg(name, value);
            }
            let server = spec.start();
            nodes.push(Node {
                port: server.port(),
                dir: server.dir().to_owned(),
                server: Mutex::new(server),
                bus_port,
                id: String::new(),
                frozen: AtomicBool::new(false),
            });
        }
        let mut cluster = RedisCluster {
            spec: self,
            nodes,
            connections: Mutex::new(HashMap::new()),
            killed: Mutex::new(HashMap::new()),
        };
        for index in 0..cluster.nodes.len() {
            let port = cluster.nodes[index].port;
            let id = cluster.command(port, &["CLUSTER", "MYID"]).text();
            cluster.nodes[index].id = id.unwrap_or_else(|| panic!("node {port} has an id"));
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create
            .args(["--cluster-replicas", &cluster.spec.replicas.to_string()])
            .arg("--cluster-yes");
        let output = create.output().expect("redis-cli runs");
        if !output.status.success() {
            panic!(
                "redis-cli --cluster create failed:\n{}{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                cluster.diagnosis()
            );
        }
        cluster.wait_healthy();
        cluster
    }
}

/// What a node is now, as it sees itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A master (with or without slots).
    Master,
    /// A replica of the master on this port.
    Replica {
        /// The port of its master.
        master: u16,
    },
    /// Not running (killed), frozen, or not answering.
    Down,
}

/// One node of the cluster, as [`RedisCluster::nodes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The port clients use.
    pub port: u16,
    /// The cluster bus port (`--cluster-port`).
    pub bus_port: u16,
    /// The node id (`CLUSTER MYID`; it never changes, restarts included).
    pub id: String,
    /// The process id (`None` while the node is killed).
    pub pid: Option<u32>,
    /// What the node says it is.
    pub role: Role,
    /// The slots it serves, as it sees them: inclusive ranges, ascending.
    pub slots: Vec<(u16, u16)>,
}

/// A slot migration under way (see [`RedisCluster::begin_migration`]): the slot is
/// `MIGRATING` on `from` and `IMPORTING` on `to` until [`RedisCluster::finish_migration`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a migration left open keeps its slot in MIGRATING/IMPORTING state"]
pub struct Migration {
    /// The slot.
    pub slot: u16,
    /// The port of the master that owned it.
    pub from: u16,
    /// The port of the master that is taking it.
    pub to: u16,
}

/// A running Redis Cluster of this test's (see the module docs).
#[derive(Debug)]
pub struct RedisCluster {
    spec: ClusterSpec,
    nodes: Vec<Node>,
    connections: Mutex<HashMap<u16, BufReader<TcpStream>>>,
    /// What a killed or frozen master served, and who replicated it, by its port.
    killed: Mutex<HashMap<u16, Killed>>,
}

#[derive(Debug)]
struct Node {
    server: Mutex<RedisServer>,
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    id: String,
    frozen: AtomicBool,
}

impl Node {
    fn server(&self) -> MutexGuard<'_, RedisServer> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pid(&self) -> Option<u32> {
        self.server().pid()
    }

    fn frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

/// Each live node's master (its id; `None` for a master), by port, as one node sees them.
type Roles = BTreeMap<u16, Option<String>>;

#[derive(Debug, Clone)]
struct Killed {
    slots: Vec<(u16, u16)>,
    replicas: Vec<u16>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct Entry {
    port: u16,
    myself: bool,
    master: bool,
    failing: bool,
    master_id: Option<String>,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// A cluster with the default [`ClusterSpec`]: 3 masters, 1 replica each.
    pub fn start() -> RedisCluster {
        ClusterSpec::default().start()
    }

    // -----------------------------------------------------------------------------------------
    // Topology.

    /// `redis://127.0.0.1:<port>` of every live master, by port: the seeds a cluster client
    /// starts from. After a failover the promoted replica is among them and the dead master
    /// is not.
    pub fn seeds(&self) -> Vec<String> {
        self.masters()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The ports of the live masters (as each sees itself), ascending.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = self
            .nodes()
            .into_iter()
            .filter(|n| n.role == Role::Master)
            .map(|n| n.port)
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The ports of the live replicas of the master on `master` (as each sees itself).
    pub fn replicas_of(&self, master: u16) -> Vec<u16> {
        self.nodes()
            .into_iter()
            .filter(|n| n.role == Role::Replica { master })
            .map(|n| n.port)
            .collect()
    }

    /// Every node this cluster started, live or not, in start order; role and slots as each
    /// node sees itself now.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|node| {
                let port = node.port;
                let me = if self.live(node) {
                    self.view(port)
                        .ok()
                        .and_then(|view| view.into_iter().find(|e| e.myself))
                } else {
                    None
                };
                let (role, slots) = match me {
                    None => (Role::Down, Vec::new()),
                    Some(e) if e.master => (Role::Master, e.slots),
                    Some(e) => {
                        let master = e
                            .master_id
                            .and_then(|id| self.port_of(&id))
                            .unwrap_or_else(|| panic!("node {port} replicates a known node"));
                        (Role::Replica { master }, Vec::new())
                    }
                };
                NodeInfo {
                    port,
                    bus_port: node.bus_port,
                    id: node.id.clone(),
                    pid: node.pid(),
                    role,
                    slots,
                }
            })
            .collect()
    }

    /// The process ids of every node running now.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }

    /// The process id of the node on `port` (`None` while it is killed).
    pub fn pid(&self, port: u16) -> Option<u32> {
        self.node_ref(port).pid()
    }

    /// The data directory of the node on `port`: its `nodes.conf`, its append-only files,
    /// its log (`redis.log`).
    pub fn dir(&self, port: u16) -> &Path {
        &self.node_ref(port).dir
    }

    /// Every key matching `pattern` on the node on `port` alone (`SCAN`), sorted; on a
    /// replica, what it has replicated.
    pub fn keys(&self, port: u16, pattern: &str) -> Vec<String> {
        self.scan(port, pattern)
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        let port = self.any_live_port();
        let reply = self.command(port, &["CLUSTER", "KEYSLOT", key]);
        reply
            .int()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or_else(|| panic!("CLUSTER KEYSLOT {key} replied {reply:?}"))
    }

    /// The port of the master that owns `slot`, once every live node agrees on it (waits for
    /// that, up to the deadline). During a migration that is still the source; after a master
    /// is killed and before its replica is promoted, it is the dead master.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        self.wait_for(
            &format!("the live nodes agree on the owner of slot {slot}"),
            || self.agreed_owner(slot),
        )
    }

    /// The port of the master that owns `key`'s slot (see
    /// [`master_of_slot`](Self::master_of_slot)).
    pub fn master_of_key(&self, key: &str) -> u16 {
        self.master_of_slot(self.keyslot(key))
    }

    /// The keys matching `pattern` on each live master (by `SCAN` on that master alone), by
    /// master port; every live master has an entry, empty or not. A key `MIGRATE` is moving
    /// at that instant may show on both ends.
    pub fn keys_per_master(&self, pattern: &str) -> BTreeMap<u16, Vec<String>> {
        self.masters()
            .into_iter()
            .map(|port| (port, self.scan(port, pattern)))
            .collect()
    }

    /// The keys of `slot` held by the node on `port` (`CLUSTER GETKEYSINSLOT`), sorted.
    pub fn keys_in_slot(&self, port: u16, slot: u16) -> Vec<String> {
        let mut keys: Vec<String> = self
            .raw_keys_in_slot(port, slot, usize::MAX)
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.sort();
        keys
    }

    // -----------------------------------------------------------------------------------------
    // Commands.

    /// Runs one command with `redis-cli` against the node on `port` and returns its output,
    /// trimmed (an error reply is output too, e.g. `MOVED 866 127.0.0.1:40001`; empty if the
    /// node does not answer). Hangs on a frozen node, like `redis-cli`.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        self.node_ref(port).server().cli(args)
    }

    /// Runs one command with `redis-cli -c` (following `MOVED` and `ASK`) against a live
    /// master, and returns its output, trimmed.
    pub fn cli_cluster(&self, args: &[&str]) -> String {
        let port = self
            .masters()
            .into_iter()
            .next()
            .expect("a live master to start from");
        let output = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        let output = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = output
            .lines()
            .filter(|l| !l.starts_with("-> Redirected to "))
            .collect();
        lines.join("\n").trim().to_owned()
    }

    /// Runs many commands in one `redis-cli -c` process (fed on its stdin, `MOVED` and `ASK`
    /// followed) and returns its output lines without its `-> Redirected to …` notices: one
    /// line per reply for commands whose reply is one line (`GET`, `SET`, `INCR`, …; a nil
    /// is an empty line). One process for hundreds of commands, where one each costs ~15 ms.
    pub fn cli_cluster_batch<C, A>(&self, commands: C) -> Vec<String>
    where
        C: IntoIterator<Item = A>,
        A: IntoIterator,
        A::Item: AsRef<str>,
    {
        let mut input = String::new();
        for command in commands {
            for arg in command {
                input.push('"');
                for c in arg.as_ref().chars() {
                    match c {
                        '"' | '\\' => {
                            input.push('\\');
                            input.push(c);
                        }
                        c if c.is_ascii_control() => {
                            let _ = write!(input, "\\x{:02x}", u32::from(c));
                        }
                        c => input.push(c),
                    }
                }
                input.push_str("\" ");
            }
            input.push('\n');
        }
        let port = self
            .masters()
            .into_iter()
            .next()
            .expect("a live master to start from");
        let mut child = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli runs");
        let mut stdin = child.stdin.take().expect("redis-cli's stdin");
        let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let output = child.wait_with_output().expect("redis-cli runs");
        let fed = feeder.join().expect("the feeder thread");
        fed.expect("redis-cli reads its commands");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.starts_with("-> Redirected to "))
            .map(str::to_owned)
            .collect()
    }

    /// Sends one command to the node on `port` and returns its reply (an error reply is
    /// `Reply::Error`, e.g. `MOVED …`, `ASK …`, `TRYAGAIN …`); panics if the node does not
    /// answer within 5 s.
    pub fn command(&self, port: u16, args: &[&str]) -> Reply {
        self.try_command(port, args)
            .unwrap_or_else(|e| panic!("node {port} did not answer {args:?}: {e}"))
    }

    /// [`command`](Self::command), with "the node did not answer within 5 s" as an error.
    pub fn try_command(&self, port: u16, args: &[&str]) -> io::Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(port, &args, COMMAND_TIMEOUT)
    }

    // -----------------------------------------------------------------------------------------
    // Slot migration.

    /// Moves `slot` to the master on `to`, the whole manual procedure: `IMPORTING` on `to`,
    /// `MIGRATING` on the owner, its keys moved with `MIGRATE … KEYS …` in batches of 100,
    /// `SETSLOT <slot> NODE <to>` on every master, then a wait until every live node agrees.
    pub fn migrate_slot(&self, slot: u16, to: u16) {
        let migration = self.begin_migration(slot, to);
        self.finish_migration(migration);
    }

    /// Starts moving `slot` to the master on `to` and stops there: the slot is `IMPORTING` on
    /// `to` and `MIGRATING` on its owner, no key has moved. From now on the owner serves a
    /// command whose keys it all has, answers `ASK` (to `to`) for one whose keys it has none
    /// of (so new keys land on `to`), and `TRYAGAIN` for one it has some of: a multi-key
    /// command or script whose keys are split, *or one that names an existing key and a key
    /// not created yet*, is refused whole until the migration ends, moved keys or not. Move
    /// some keys with [`move_keys`](Self::move_keys), finish with
    /// [`finish_migration`](Self::finish_migration).
    pub fn begin_migration(&self, slot: u16, to: u16) -> Migration {
        let from = self.master_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let target = self.node_ref(to);
        let source = self.node_ref(from);
        self.expect_ok(
            to,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot.to_string(),
                "IMPORTING",
                &source.id,
            ],
        );
        self.expect_ok(
            from,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot.to_string(),
                "MIGRATING",
                &target.id,
            ],
        );
        Migration { slot, from, to }
    }

    /// Moves up to `max` of the migration's keys still on its source to its target (`MIGRATE
    /// … KEYS …`, 100 at a time) and returns how many it asked `MIGRATE` to move (a key
    /// deleted meanwhile counts). Each `MIGRATE` is atomic on the source: a key is on one side
    /// or the other.
    pub fn move_keys(&self, migration: &Migration, max: usize) -> usize {
        let mut moved = 0;
        while moved < max {
            let batch = MIGRATE_BATCH.min(max - moved);
            let keys = self.raw_keys_in_slot(migration.from, migration.slot, batch);
            if keys.is_empty() {
                break;
            }
            let to = migration.to.to_string();
            let timeout = MIGRATE_TIMEOUT_MS.to_string();
            let mut args: Vec<&[u8]> = vec![
                b"MIGRATE",
                b"127.0.0.1",
                to.as_bytes(),
                b"",
                b"0",
                timeout.as_bytes(),
                b"KEYS",
            ];
            args.extend(keys.iter().map(Vec::as_slice));
            let wait = Duration::from_millis(MIGRATE_TIMEOUT_MS) + COMMAND_TIMEOUT;
            let reply = self
                .call(migration.from, &args, wait)
                .unwrap_or_else(|e| panic!("MIGRATE on {} did not answer: {e}", migration.from));
            match reply {
                Reply::Simple(ok) if ok == "OK" || ok == "NOKEY" => {}
                other => panic!(
                    "MIGRATE of {} keys of slot {} from {} to {} replied {other:?}",
                    keys.len(),
                    migration.slot,
                    migration.from,
                    migration.to
                ),
            }
            moved += keys.len();
        }
        moved
    }

    /// Ends a migration: moves the keys left, `CLUSTER SETSLOT <slot> NODE <to>` on the target,
    /// then the source, then the other live masters, and waits until every live node agrees
    /// the target owns the slot and the cluster is healthy.
    pub fn finish_migration(&self, migration: Migration) {
        self.move_keys(&migration, usize::MAX);
        let target = self.node_ref(migration.to).id.clone();
        let slot = migration.slot.to_string();
        let setslot = ["CLUSTER", "SETSLOT", &slot, "NODE", &target];
        self.expect_ok(migration.to, &setslot);
        self.expect_ok(migration.from, &setslot);
        for port in self.masters() {
            if port != migration.to && port != migration.from {
                self.expect_ok(port, &setslot);
            }
        }
        self.wait_for(&format!("slot {slot} settled on {}", migration.to), || {
            for port in self.live_ports() {
                let view = self.view(port).map_err(|e| format!("node {port}: {e}"))?;
                let owner = view
                    .iter()
                    .find(|e| e.master && covers(&e.slots, migration.slot));
                if owner.map(|e| e.port) != Some(migration.to) {
                    return Err(format!("node {port} sees slot {slot} elsewhere"));
                }
            }
            self.health()
        });
    }

    // -----------------------------------------------------------------------------------------
    // Faults.

    /// `kill -9` of the master on `port` (panics if it is not a live master). What it served
    /// and who replicated it are remembered for [`wait_failover`](Self::wait_failover).
    pub fn kill_master(&self, port: u16) {
        assert!(
            self.remember_master(port),
            "node {port} is not a live master"
        );
        self.kill_node(port);
    }

    /// Remembers what the node on `port` serves and who replicates it, if it is a live master,
    /// for [`wait_failover`](Self::wait_failover); whether it was one.
    fn remember_master(&self, port: u16) -> bool {
        let me = self.nodes().into_iter().find(|n| n.port == port);
        let Some(NodeInfo {
            role: Role::Master,
            slots,
            ..
        }) = me
        else {
            return false;
        };
        let replicas = self.replicas_of(port);
        self.killed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port, Killed { slots, replicas });
        true
    }

    /// `kill -9` of any node on `port` (master or replica): no shutdown, nothing written
    /// beyond what `appendfsync` already did.
    pub fn kill_node(&self, port: u16) {
        self.forget_connection(port);
        let node = self.node_ref(port);
        let mut server = node.server();
        server.thaw();
        server.kill_9();
        node.frozen.store(false, Ordering::SeqCst);
    }

    /// Waits until one of the replicas the master on `old_master` had when
    /// [`kill_master`](Self::kill_master) killed it (or [`freeze`](Self::freeze) froze it) is
    /// a master, every live node sees it own
    /// every slot the old master served, and the cluster is healthy again; returns its port.
    pub fn wait_failover(&self, old_master: u16) -> u16 {
        let killed = self
            .killed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&old_master)
            .cloned()
            .unwrap_or_else(|| panic!("node {old_master} was not a master killed or frozen"));
        assert!(
            !killed.replicas.is_empty(),
            "node {old_master} had no replica to promote"
        );
        let slot = killed
            .slots
            .first()
            .map(|range| range.0)
            .unwrap_or_else(|| panic!("node {old_master} served no slot"));
        self.wait_for(&format!("a replica of {old_master} promoted"), || {
            let owner = self.agreed_owner(slot)?;
            if !killed.replicas.contains(&owner) {
                return Err(format!("slot {slot} is on {owner}, not on a replica"));
            }
            for port in self.live_ports() {
                let view = self.view(port).map_err(|e| format!("node {port}: {e}"))?;
                let Some(entry) = view.iter().find(|e| e.port == owner) else {
                    return Err(format!("node {port} does not know {owner}"));
                };
                if !killed.slots.iter().all(|r| contains(&entry.slots, *r)) {
                    return Err(format!("node {port} does not see all the slots on {owner}"));
                }
            }
            self.health()?;
            Ok(owner)
        })
    }

    /// Starts the node on `port` again, on the same port, directory, append-only file and
    /// `nodes.conf` (so it rejoins as the node it was; a master failed over comes back as a
    /// replica of its successor), and waits until the cluster is healthy with it: no live
    /// node flags it failing and, if it is a replica, its link to its master is up (it has
    /// synced).
    pub fn restart_node(&self, port: u16) {
        self.forget_connection(port);
        let node = self.node_ref(port);
        node.server().restart();
        node.frozen.store(false, Ordering::SeqCst);
        self.wait_healthy();
    }

    /// Freezes the node on `port` (`kill -STOP`): it keeps its connections and answers
    /// nothing, so the others fail it over after the node timeout (a frozen master's
    /// promoted replica is what [`wait_failover`](Self::wait_failover) returns; thawed, the
    /// old master finds itself demoted to a replica of it). The harness leaves it out of every
    /// check until [`thaw`](Self::thaw).
    pub fn freeze(&self, port: u16) {
        self.remember_master(port);
        self.forget_connection(port);
        let node = self.node_ref(port);
        node.frozen.store(true, Ordering::SeqCst);
        node.server().freeze();
    }

    /// Thaws a frozen node (`kill -CONT`); it does not wait for anything.
    pub fn thaw(&self, port: u16) {
        let node = self.node_ref(port);
        node.server().thaw();
        node.frozen.store(false, Ordering::SeqCst);
    }

    // -----------------------------------------------------------------------------------------
    // Waits.

    /// Waits until the cluster is healthy (panics with the nodes' state and log tails at the
    /// deadline): every live node says `cluster_state:ok`, knows every node, and sees all 16384
    /// slots assigned; all live nodes agree on the owner of every slot, and every owner is a
    /// live master; no live node is flagged failing by another; every live replica's link
    /// to its master is up. Killed and frozen nodes are left out.
    pub fn wait_healthy(&self) {
        self.wait_for("the cluster healthy", || self.health());
    }

    /// Waits until every live replica has applied everything its master had written when
    /// this was called (its `slave_repl_offset` reached the master's `master_repl_offset`),
    /// so a write acknowledged before survives `kill -9` of its master.
    pub fn wait_replicated(&self) {
        let mut targets = Vec::new();
        for info in self.nodes() {
            if let Role::Replica { master } = info.role {
                let offset = self
                    .info_field(master, "replication", "master_repl_offset")
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or_else(|| panic!("master {master} reports its offset"));
                targets.push((info.port, master, offset));
            }
        }
        for (replica, master, offset) in targets {
            self.wait_for(&format!("replica {replica} at offset {offset}"), || {
                let field = |name| self.info_field(replica, "replication", name);
                let link = field("master_link_status");
                let applied = field("slave_repl_offset").and_then(|v| v.parse::<i64>().ok());
                match (link.as_deref(), applied) {
                    (Some("up"), Some(n)) if n >= offset => Ok(()),
                    _ => Err(format!(
                        "replica {replica} of {master}: link {link:?}, offset {applied:?}"
                    )),
                }
            });
        }
    }

    /// The last `lines` lines of the log of the node on `port`.
    pub fn log_tail(&self, port: u16, lines: usize) -> String {
        let path = self.dir(port).join("redis.log");
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    // -----------------------------------------------------------------------------------------
    // Inner workings.

    /// Polls `check` until it answers `Ok`, or panics at the deadline with its last complaint
    /// and the nodes' state.
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
        let begin = Instant::now();
        loop {
            match check() {
                Ok(value) => return value,
                Err(why) if begin.elapsed() > self.spec.deadline => panic!(
                    "waited {:?} for {what}; last: {why}\n{}",
                    self.spec.deadline,
                    self.diagnosis()
                ),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// `Ok` when the cluster is healthy (see [`wait_healthy`](Self::wait_healthy)), else why not.
    fn health(&self) -> Result<(), String> {
        let live = self.live_ports();
        // The first live node's view: the owner of each slot, and each live node's master.
        let mut reference: Option<(u16, Vec<Option<u16>>, Roles)> = None;
        for &port in &live {
            let info = self
                .try_command(port, &["CLUSTER", "INFO"])
                .map_err(|e| format!("node {port}: {e}"))?
                .text()
                .unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned()
            };
            if field("cluster_state") != "ok" {
                return Err(format!(
                    "node {port}: cluster_state {}",
                    field("cluster_state")
                ));
            }
            if field("cluster_slots_assigned") != SLOTS.to_string() {
                return Err(format!(
                    "node {port}: {} slots",
                    field("cluster_slots_assigned")
                ));
            }
            if field("cluster_known_nodes") != self.nodes.len().to_string() {
                return Err(format!(
                    "node {port} knows {}",
                    field("cluster_known_nodes")
                ));
            }
            let view = self.view(port).map_err(|e| format!("node {port}: {e}"))?;
            if let Some(e) = view.iter().find(|e| e.failing && live.contains(&e.port)) {
                return Err(format!("node {port} flags live node {} failing", e.port));
            }
            let mut owners = vec![None; usize::from(SLOTS)];
            for entry in view.iter().filter(|e| e.master) {
                for &(a, b) in &entry.slots {
                    for slot in a..=b {
                        owners[usize::from(slot)] = Some(entry.port);
                    }
                }
            }
            let roles: Roles = view
                .iter()
                .filter(|e| live.contains(&e.port))
                .map(|e| (e.port, (!e.master).then(|| e.master_id.clone()).flatten()))
                .collect();
            if let Some((first, expected_owners, expected_roles)) = &reference {
                if let Some(slot) = (0..owners.len()).find(|&s| owners[s] != expected_owners[s]) {
                    return Err(format!("nodes {first} and {port} disagree on slot {slot}"));
                }
                if roles != *expected_roles {
                    return Err(format!(
                        "nodes {first} and {port} disagree on roles: {expected_roles:?} {roles:?}"
                    ));
                }
            } else {
                if let Some(owner) = owners.iter().flatten().find(|o| !live.contains(o)) {
                    return Err(format!("node {port} sees slots on {owner}, not live"));
                }
                reference = Some((port, owners, roles));
            }
            let me = view.iter().find(|e| e.myself);
            if me.is_some_and(|e| !e.master) {
                let link = self.info_field(port, "replication", "master_link_status");
                if link.as_deref() != Some("up") {
                    return Err(format!("replica {port}: master link {link:?}"));
                }
            }
        }
        if reference.is_none() {
            return Err("no live node".to_owned());
        }
        Ok(())
    }

    /// The owner of `slot` if every live node agrees on it.
    fn agreed_owner(&self, slot: u16) -> Result<u16, String> {
        let mut owner = None;
        for port in self.live_ports() {
            let view = self.view(port).map_err(|e| format!("node {port}: {e}"))?;
            let this = view
                .iter()
                .find(|e| e.master && covers(&e.slots, slot))
                .map(|e| e.port);
            match (owner, this) {
                (_, None) => return Err(format!("node {port} sees no owner of slot {slot}")),
                (None, Some(p)) => owner = Some(p),
                (Some(a), Some(b)) if a != b => {
                    return Err(format!("owners {a} and {b} of slot {slot}"));
                }
                _ => {}
            }
        }
        owner.ok_or_else(|| "no live node".to_owned())
    }

    /// Everything that helps read a failed wait: each node's pid, role, view, and log tail.
    fn diagnosis(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let port = node.port;
            let _ = writeln!(
                out,
                "--- node {port} (bus {}, id {}, pid {:?}{}) ---",
                node.bus_port,
                node.id,
                node.pid(),
                if node.frozen() { ", frozen" } else { "" }
            );
            if self.live(node)
                && let Ok(reply) = self.try_command(port, &["CLUSTER", "NODES"])
            {
                let _ = writeln!(out, "{}", reply.text().unwrap_or_default().trim_end());
            }
            let _ = writeln!(out, "log tail:\n{}", self.log_tail(port, 15));
        }
        out
    }

    fn live(&self, node: &Node) -> bool {
        !node.frozen() && node.pid().is_some()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| self.live(n))
            .map(|n| n.port)
            .collect()
    }

    fn any_live_port(&self) -> u16 {
        self.live_ports()
            .into_iter()
            .next()
            .expect("a live node in the cluster")
    }

    fn node_ref(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of this cluster on port {port}"))
    }

    fn port_of(&self, id: &str) -> Option<u16> {
        self.nodes.iter().find(|n| n.id == id).map(|n| n.port)
    }

    fn expect_ok(&self, port: u16, args: &[&str]) {
        let reply = self.command(port, args);
        assert_eq!(reply, Reply::Simple("OK".into()), "{args:?} on node {port}");
    }

    fn info_field(&self, port: u16, section: &str, field: &str) -> Option<String> {
        let info = self.try_command(port, &["INFO", section]).ok()?.text()?;
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    /// The node on `port`'s `CLUSTER NODES`.
    fn view(&self, port: u16) -> io::Result<Vec<Entry>> {
        let reply = self.try_command(port, &["CLUSTER", "NODES"])?;
        let Some(text) = reply.text() else {
            return Err(io::Error::other(format!("CLUSTER NODES replied {reply:?}")));
        };
        Ok(text.lines().filter_map(parse_entry).collect())
    }

    fn raw_keys_in_slot(&self, port: u16, slot: u16, max: usize) -> Vec<Vec<u8>> {
        let count = max.min(1_000_000_000).to_string();
        let reply = self.command(
            port,
            &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), &count],
        );
        let Reply::Array(Some(keys)) = reply else {
            panic!("CLUSTER GETKEYSINSLOT {slot} on {port} replied {reply:?}");
        };
        keys.into_iter()
            .filter_map(|k| match k {
                Reply::Bulk(Some(bytes)) => Some(bytes),
                _ => None,
            })
            .collect()
    }

    fn scan(&self, port: u16, pattern: &str) -> Vec<String> {
        let mut cursor = "0".to_owned();
        let mut keys = Vec::new();
        loop {
            let reply = self.command(port, &["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]);
            let Reply::Array(Some(parts)) = &reply else {
                panic!("SCAN on {port} replied {reply:?}");
            };
            cursor = parts[0].text().expect("a cursor");
            if let Reply::Array(Some(found)) = &parts[1] {
                keys.extend(found.iter().filter_map(Reply::text));
            }
            if cursor == "0" {
                keys.sort();
                keys.dedup();
                return keys;
            }
        }
    }

    fn forget_connection(&self, port: u16) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&port);
    }

    /// One command on a kept connection to the node on `port` (a fresh one if the kept one
    /// fails: the node may have restarted).
    fn call(&self, port: u16, args: &[&[u8]], timeout: Duration) -> io::Result<Reply> {
        let kept = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&port);
        let reply = match kept {
            Some(mut connection) => match exchange(&mut connection, args, timeout) {
                Ok(reply) => Ok((connection, reply)),
                // A kept connection the node closed (it restarted): the command never ran.
                // A timeout is not retried: the command may have run.
                Err(e) if closed(&e) => connect_and_send(port, args, timeout),
                Err(e) => Err(e),
            },
            None => connect_and_send(port, args, timeout),
        };
        let (connection, reply) = reply?;
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port, connection);
        Ok(reply)
    }
}

/// Whether `error` says the other end closed the connection.
fn closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// One command on a new connection to the node on `port`; the connection, to keep, and the
/// reply.
fn connect_and_send(
    port: u16,
    args: &[&[u8]],
    timeout: Duration,
) -> io::Result<(BufReader<TcpStream>, Reply)> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&address, COMMAND_TIMEOUT)?;
    stream.set_nodelay(true)?;
    let mut connection = BufReader::new(stream);
    let reply = exchange(&mut connection, args, timeout)?;
    Ok((connection, reply))
}

/// Sends one command on `connection` and reads its reply within `timeout`.
fn exchange(
    connection: &mut BufReader<TcpStream>,
    args: &[&[u8]],
    timeout: Duration,
) -> io::Result<Reply> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    let stream = connection.get_mut();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&out)?;
    read_reply(connection)
}

/// Reads one RESP2 reply; a closed connection or a malformed reply is an error.
fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the node closed the connection",
        ));
    }
    line.truncate(line.len() - 2);
    let text = String::from_utf8_lossy(&line[1..]).into_owned();
    let number = || {
        text.parse::<i64>()
            .map_err(|_| io::Error::other(format!("not a number: {text:?}")))
    };
    Ok(match line[0] {
        b'+' => Reply::Simple(text),
        b'-' => Reply::Error(text),
        b':' => Reply::Int(number()?),
        b'$' => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data)?;
                data.truncate(len);
                Reply::Bulk(Some(data))
            }
        },
        b'*' => match usize::try_from(number()?) {
            Err(_) => Reply::Array(None),
            Ok(len) => Reply::Array(Some(
                (0..len)
                    .map(|_| read_reply(reader))
                    .collect::<io::Result<_>>()?,
            )),
        },
        other => {
            return Err(io::Error::other(format!(
                "unexpected RESP type {:?}",
                char::from(other)
            )));
        }
    })
}

/// One line of `CLUSTER NODES`: `<id> <ip:port@cport[,host]> <flags> <master> <ping> <pong>
/// <epoch> <link> <slot>…`; open-slot markers (`[slot->-id]`, `[slot-<-id]`) are skipped.
fn parse_entry(line: &str) -> Option<Entry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let address = fields[1].split(['@', ',']).next()?;
    let port = address.rsplit_once(':')?.1.parse().ok()?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    let slots = fields[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect();
    Some(Entry {
        port,
        myself: flags.contains(&"myself"),
        master: flags.contains(&"master"),
        failing: flags.contains(&"fail") || flags.contains(&"fail?"),
        master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
        slots,
    })
}

fn covers(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
}

fn contains(ranges: &[(u16, u16)], range: (u16, u16)) -> bool {
    (range.0..=range.1).all(|slot| covers(ranges, slot))
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Each node is a `RedisServer`: dropping it thaws it, kills it by its pid, waits for it
        // to exit, and removes its directory.
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.nodes.clear();
    }
}
