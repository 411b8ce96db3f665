//! The lifecycle suite (the key-lifecycle invariants both runtimes share) on the local
//! runtime, on the real clock (the cancel grace is wall time).

use am2z::LocalRuntime;
use am2z_tests::lifecycle_suite::LifecycleHarness;

struct Local;

impl LifecycleHarness for Local {
    type Runtime = LocalRuntime;
    async fn runtime() -> LocalRuntime {
        LocalRuntime::new()
    }
    async fn one_step_at_a_time() -> LocalRuntime {
        LocalRuntime::builder().worker_slots(1).build()
    }
    async fn clean_up(_runtime: &LocalRuntime) {}
}

am2z_tests::lifecycle_suite!(Local);
