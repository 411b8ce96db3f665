//! Procedural macros for [am2z](https://docs.rs/am2z): `#[processor]` and `workflow!`.
//!
//! Use them through the `am2z` crate, which re-exports them.
