use am2z::{processor, Error};

#[processor]
async fn echo<T: Clone + Send + 'static>(input: T) -> Result<T, Error> {
    Ok(input)
}

fn main() {}
