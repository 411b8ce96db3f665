//! The fault harness of RELIABILITY.md: Redis servers of a test's own, real worker
//! processes, fault injection, and the checker that judges what happened.

pub mod server;

pub use server::{RedisServer, ServerSpec, TlsFiles, free_port};
