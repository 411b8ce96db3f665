use am2z::{processor, Error};

#[processor]
async fn tick() -> Result<u64, Error> {
    Ok(1)
}

fn main() {}
