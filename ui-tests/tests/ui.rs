//! The compile-pass and compile-fail cases of `#[processor]` and `workflow!`.
//!
//! Compiler output changes between toolchains, so the `.stderr` files are tied to the rustc
//! they were blessed on (`BLESSED_TOOLCHAIN`). On another toolchain the test fails, saying how
//! to re-bless: it never compares against stale files, and never passes without running.
//! Re-bless with `TRYBUILD=overwrite cargo test -p am2z-ui-tests`, read every changed
//! `.stderr`, and update `BLESSED_TOOLCHAIN` with `rustc --version > ui-tests/BLESSED_TOOLCHAIN`.

use std::process::Command;

#[test]
fn ui() {
    let blessed = include_str!("../BLESSED_TOOLCHAIN").trim();
    let running = running_rustc().unwrap_or_else(|| "an unknown rustc".to_owned());
    assert!(
        running == blessed,
        "the UI tests' .stderr files were blessed on {blessed}, and this is {running}: run \
         `TRYBUILD=overwrite cargo test -p am2z-ui-tests`, review every changed .stderr, then \
         `rustc --version > ui-tests/BLESSED_TOOLCHAIN`"
    );
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}

/// `rustc --version` of the compiler cargo uses.
fn running_rustc() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    Some(version.trim().to_owned())
}
