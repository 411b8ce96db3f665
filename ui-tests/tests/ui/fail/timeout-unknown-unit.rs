use am2z::{processor, Error};

#[processor(timeout = "30x")]
async fn charge(input: u64) -> Result<u64, Error> {
    Ok(input)
}

fn main() {}
