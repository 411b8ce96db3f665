use am2z::{processor, Ctx, Error};

#[processor]
async fn charge(amount: u64, ctx: &Ctx, currency: String) -> Result<u64, Error> {
    let _ = (ctx, currency);
    Ok(amount)
}

fn main() {}
