//! End-to-end tests of am2z: the conformance suite, written once and run on every runtime.
//!
//! [`suite`] holds one generic async fn per behaviour of `docs/behaviours.md`;
//! [`conformance_suite!`] turns them into `#[tokio::test]`s for a runtime's [`suite::Harness`].
//! `tests/local.rs` runs them on the local runtime.

pub mod fault;
pub mod flows;
pub mod inspect_suite;
pub mod layout;
pub mod lifecycle_suite;
pub mod probe;
pub mod processors;
pub mod resp;
pub mod suite;
