use am2z::LocalRuntime;

mod steps {
    use am2z::{processor, workflow, Error};

    #[derive(Clone, Debug)]
    pub struct Parcel;
    #[derive(Clone, Debug)]
    pub struct Label;

    // One mistake: `#[processor]` on a fn that is not `async`. The fn and its processor type
    // `PrintLabel` are still emitted, so the uses below, here and in other modules, report
    // nothing more.
    #[processor]
    pub fn print_label(_: Parcel) -> Result<Label, Error> {
        Ok(Label)
    }

    #[processor]
    pub async fn stamp(label: Label) -> Result<Label, Error> {
        Ok(label)
    }

    workflow! {
        pub Shipping(Parcel) -> Label {
            chain![print_label, stamp]
        }
    }
}

use steps::*;

async fn ship(runtime: &LocalRuntime) -> Label {
    let _ = print_label(Parcel);
    let _ = PrintLabel::run(runtime, Parcel).await;
    Shipping::run(runtime, Parcel).await.unwrap().output
}

fn main() {
    let _ = ship;
}
