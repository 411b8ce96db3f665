//! The fault harness of docs/faults.md: Redis servers of a test's own, real worker
//! processes, fault injection, and the checker that judges what happened.

pub mod checker;
pub mod cluster;
pub mod ledger;
pub mod server;
pub mod work;
pub mod worker;

pub use checker::{Checker, CommitWatch, Outcome, Report, Submission};
pub use cluster::{ClusterSpec, Migration, NodeInfo, RedisCluster, Role};
pub use ledger::{Execution, Ledger};
pub use server::{RedisServer, ServerSpec, TlsFiles, free_port, redis_cli, scan_keys};
pub use worker::{Counts, Fleet, Knobs, Submitter, WorkerProcess, faketime_env};

/// Whether the long profile of the fault scenarios was asked for (`AM2Z_FAULT_PROFILE=long`):
/// bigger counts and longer chaos, for runs outside plain `cargo test`.
pub fn long_profile() -> bool {
    std::env::var("AM2Z_FAULT_PROFILE").is_ok_and(|p| p == "long")
}
