//! `crate = ::renamed` for am2z reached under another name.
//!
//! Cargo refuses one package depending on the same crate under two names, so here the rename
//! is done with `extern crate ... as`, which puts `renamed` in the extern prelude exactly as a
//! renamed Cargo dependency does (`::am2z` still resolves, though). The crate
//! `ui-tests/renamed-dep` has am2z as a real renamed dependency and nothing named `am2z` in
//! scope, so it is what proves the generated code never names `::am2z`.

extern crate am2z as renamed;

use renamed::{processor, workflow, Error, Processor};

#[processor(crate = ::renamed, retries = 2)]
async fn add_one(x: u64) -> Result<u64, Error> {
    Ok(x + 1)
}

workflow! {
    pub Renamed(u64) -> u64 {
        crate = ::renamed;
        chain![add_one, add_one]
    }
}

fn main() {
    assert_eq!(AddOne.name(), "add_one");
    assert_eq!(Renamed.name(), "Renamed");
}
