//! The compile-pass and compile-fail cases of `#[processor]` and `workflow!`.
//!
//! Compiler output changes between toolchains, so the `.stderr` files are tied to the rustc
//! they were blessed on (`BLESSED_TOOLCHAIN`). On another toolchain the test says it skipped
//! and why, on stderr even when output is captured; it never compares against stale files.
//! Re-bless with `TRYBUILD=overwrite cargo test -p am2z-ui-tests`, read every changed
//! `.stderr`, and update `BLESSED_TOOLCHAIN` with `rustc --version > ui-tests/BLESSED_TOOLCHAIN`.

use std::io::Write;
use std::process::Command;

#[test]
fn ui() {
    let blessed = include_str!("../BLESSED_TOOLCHAIN").trim();
    let running = running_rustc();
    if running.as_deref() != Some(blessed) {
        let running = running.unwrap_or_else(|| "an unknown rustc".to_owned());
        // Written to the stderr handle directly: libtest captures `eprintln!`, and a skip must
        // not look like a silent pass.
        let _ = writeln!(
            std::io::stderr(),
            "\nui: skipped: the .stderr files were blessed on {blessed}, this is {running}; \
             run `TRYBUILD=overwrite cargo test -p am2z-ui-tests`, review the diffs, and \
             `rustc --version > ui-tests/BLESSED_TOOLCHAIN` to re-bless\n"
        );
        return;
    }
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
