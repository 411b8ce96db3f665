//! Generated code names only `::core`, `::std` and `::am2z::__private`, so shadowing the
//! prelude's `Result`, `Option`, `Box` (and friends) does not break it.

#![allow(dead_code)]

use am2z::{processor, workflow, Error};

type Result<T> = ::core::result::Result<T, Error>;
struct Option;
struct Box;
struct Vec;
struct Clone;
struct Send;
struct Default;
struct Into;

#[processor(timeout = "1s", retries = 2)]
async fn double(x: u64) -> Result<u64> {
    Ok(x * 2)
}

#[processor]
async fn describe(x: u64) -> Result<String> {
    Ok(x.to_string())
}

workflow! {
    pub Shadowed(u64) -> String {
        timeout = "1m";
        chain![double, route!(|x: &u64| *x > 10, { true => describe, _ => describe })]
    }
}

fn main() {
    let _ = (Option, Box, Vec, Clone, Send, Default, Into);
}
