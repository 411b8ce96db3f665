use am2z::{processor, Error};

#[processor]
async fn shout(input: &str) -> Result<String, Error> {
    Ok(input.to_uppercase())
}

fn main() {}
