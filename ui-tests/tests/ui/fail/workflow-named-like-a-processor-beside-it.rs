use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Request;

#[processor]
async fn quote(_: Request) -> Result<u32, Error> {
    Ok(100)
}

#[processor]
async fn price(_: Request) -> Result<u32, Error> {
    Ok(90)
}

// `#[processor]` already names `quote`'s type `Quote` in this module, and the workflow does
// not use it: one error, naming the clash, and no conflicting impls.
workflow! {
    pub Quote(Request) -> u32 {
        chain![price]
    }
}

fn main() {}
