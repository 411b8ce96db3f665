//! Runnable am2z programs; see `examples/`.

pub mod redis_flows;
