//! Inspection of the local runtime: the inspection suite on tokio's paused clock, and what
//! only the local runtime does (its history bound, a session of 100 000 runs).

use std::time::Duration;

use am2z::LocalRuntime;
use am2z_tests::suite::Harness;

struct Local;

impl Harness for Local {
    type Runtime = LocalRuntime;
    const SLACK: Duration = Duration::ZERO;
    async fn runtime() -> LocalRuntime {
        LocalRuntime::new()
    }
}

am2z_tests::inspect_suite!(Local, paused = true);
