use am2z::{processor, workflow, Error};

#[derive(Clone, Debug)]
pub struct Parcel;
#[derive(Clone, Debug)]
pub struct Label;

#[processor]
async fn print_label(_: Parcel) -> Result<Label, Error> {
    Ok(Label)
}

// `print_lable` for `print_label`: the error names what was written and suggests the fn.
workflow! {
    pub Shipping(Parcel) -> Label {
        chain![print_lable]
    }
}

fn main() {}
