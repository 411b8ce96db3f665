//! Compile-pass and compile-fail cases for am2z's macros; see `tests/ui.rs`.
