use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Request;

#[processor]
async fn quote(_: Request) -> Result<u32, Error> {
    Ok(100)
}

// `#[processor]` already names `quote`'s type `Quote`: one error, naming the clash.
workflow! {
    pub Quote(Request) -> u32 {
        chain![quote]
    }
}

fn main() {}
