use am2z::{processor, Error};

#[processor(rate = "100/fortnight")]
async fn charge(input: u64) -> Result<u64, Error> {
    Ok(input)
}

fn main() {}
