//! Runnable am2z programs; see `examples/`.
