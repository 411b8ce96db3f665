//! Typed combinators: compose processors into workflows, with or without macros.
//!
//! Each combinator is an ordinary value and itself a [`Processor`](crate::Processor), so they
//! nest freely. Every compatibility rule (a step takes what the previous one returns, parallel
//! branches share an input, route arms share input and output, a merge fn takes the branch
//! outputs) is a trait bound whose diagnostic names the step and both types.

mod chain;
mod map;
mod named;
mod parallel;
mod route;

pub use chain::Chain;
pub use map::Map;
pub use named::Workflow;
pub use parallel::{AllOrNothing, CollectResults, Merge, MergeFn, Parallel};
pub use route::{Arm, Dispatch, Fallback, NoArms, Route, RouteArms};
