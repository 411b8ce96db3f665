//! The expansion is warning-free, including for private, unused processors and workflows.

#![deny(warnings, missing_docs, unreachable_pub, rust_2018_idioms, unused)]
//! Crate docs.

use am2z::{processor, workflow, Ctx, Error};

#[processor(description = "private and never run", concurrency = 2, priority = 3)]
async fn private_step(x: u8, ctx: &Ctx) -> Result<u8, Error> {
    let _ = ctx.attempt();
    Ok(x)
}

/// A public processor.
#[processor(delay = "10ms", version = 3)]
pub async fn public_step(x: u8) -> Result<u8, Error> {
    Ok(x)
}

mod inner {
    use am2z::{processor, Error};

    #[processor]
    pub(crate) async fn crate_step(x: u8) -> Result<u8, Error> {
        Ok(x)
    }
}

workflow! {
    Private(u8) -> u8 {
        chain![private_step, public_step, inner::crate_step]
    }

    /// A public workflow.
    pub Public(Vec<u8>) -> Vec<Result<u8, Error>> {
        description = "maps";
        map![Private, concurrency = 2, name = "each"]
    }
}

fn main() {}
