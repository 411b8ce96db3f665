use am2z::{processor, Error};

#[processor(timeout = "soon", retries = 0, colour = "red", rate = "100/fortnight")]
async fn charge(input: u64) -> Result<u64, Error> {
    Ok(input)
}

fn main() {}
