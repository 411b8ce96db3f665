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

    #[processor]
    pub async fn stamp(label: Label) -> Result<Label, Error> {
        Ok(label)
    }

    // One mistake in `Shipping`'s body (a missing comma). `Shipping` is still a type, so
    // `Outer`, which nests it, and the code that runs it elsewhere report nothing more.
    workflow! {
        pub Shipping(Parcel) -> Label {
            chain![print_label stamp]
        }

        pub Outer(Parcel) -> Label {
            chain![Shipping, stamp]
        }
    }
}

use shipping::*;

async fn ship(runtime: &LocalRuntime) -> Label {
    let _ = Outer::run(runtime, Parcel).await;
    Shipping::run(runtime, Parcel).await.unwrap().output
}

fn main() {
    let _ = ship;
}
