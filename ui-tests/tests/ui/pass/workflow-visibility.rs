//! Workflows of every visibility, and in a fn body, reach as far as they say, and warn of
//! nothing.

#![deny(warnings)]

mod outer {
    pub mod inner {
        use am2z::{processor, workflow, Error};

        #[processor]
        pub async fn add_one(x: u64) -> Result<u64, Error> {
            Ok(x + 1)
        }

        workflow! {
            /// Public.
            pub Everywhere(u64) -> u64 { chain![add_one] }

            /// The crate.
            pub(crate) InTheCrate(u64) -> u64 { chain![add_one] }

            /// `outer`.
            pub(super) InOuter(u64) -> u64 { chain![add_one] }

            /// `outer`, by path.
            pub(in crate::outer) InOuterByPath(u64) -> u64 { chain![add_one] }

            /// This module.
            Here(u64) -> u64 { chain![add_one, Everywhere] }
        }

        pub fn here() -> impl am2z::Processor {
            Here
        }
    }

    pub fn from_outer() -> (impl am2z::Processor, impl am2z::Processor) {
        (inner::InOuter, inner::InOuterByPath)
    }
}

fn main() {
    use am2z::{Processor, processor, workflow, Error};

    #[processor]
    async fn double(x: u64) -> Result<u64, Error> {
        Ok(x * 2)
    }

    workflow! {
        /// Declared in a fn body.
        Local(u64) -> u64 { chain![double, outer::inner::InTheCrate] }
    }

    let _ = (outer::inner::Everywhere, outer::inner::here(), outer::from_outer());
    assert_eq!(Local.name(), "Local");
}
