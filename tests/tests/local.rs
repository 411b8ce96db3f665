//! The conformance suite on the local runtime, on tokio's paused clock: timeouts and backoff
//! are measured exactly.

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

am2z_tests::conformance_suite!(Local, paused = true);
