use am2z::LocalRuntime;

mod shipping {
    use am2z::{processor, workflow, Error};

    #[derive(Clone, Debug)]
    pub struct Parcel;
    #[derive(Clone, Debug)]
    pub struct Label;

    #[processor]
    pub async fn print_label(_: Parcel) -> Result<Label, Error> {
        Ok(Label)
    }

    // One mistake: a node `workflow!` does not know. The workflow's type is still emitted.
    workflow! {
        pub Shipping(Parcel) -> Label {
            sequence![print_label]
        }
    }
}

use shipping::*;

async fn ship(runtime: &LocalRuntime) -> Label {
    Shipping::run(runtime, Parcel).await.unwrap().output
}

fn main() {
    let _ = ship;
}
