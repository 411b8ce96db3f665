use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Invoice;

#[processor]
async fn count_lines(_: Invoice) -> Result<u32, Error> {
    Ok(1)
}

#[processor]
async fn customer_name(_: Invoice) -> Result<String, Error> {
    Ok("Ada".into())
}

// Two branches, a closure of one parameter.
workflow! {
    pub Summary(Invoice) -> u32 {
        parallel![count_lines, customer_name] => |lines| lines
    }
}

fn main() {}
