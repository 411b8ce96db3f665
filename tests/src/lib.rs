//! Shared support for the end-to-end tests (the conformance suite lives in `tests/`).
