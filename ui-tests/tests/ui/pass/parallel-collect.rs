//! `policy = collect`: every branch runs to its end and each `Result` is kept; the default
//! policy, spelled out, is all-or-nothing.

use am2z::{processor, workflow, Error, LocalRuntime, Processor, Runtime};

#[processor]
async fn halve(x: u32) -> Result<u32, Error> {
    if x % 2 == 0 { Ok(x / 2) } else { Err(Error::execution("halve", "odd")) }
}

#[processor]
async fn describe(x: u32) -> Result<String, Error> {
    Ok(format!("#{x}"))
}

workflow! {
    /// Both results, whichever fail.
    pub Both(u32) -> (Result<u32, Error>, Result<String, Error>) {
        parallel![halve, describe, policy = collect, name = "both"]
    }

    /// The first failure fails the whole parallel.
    pub Strict(u32) -> (u32, String) {
        parallel![halve, describe, policy = all_or_nothing]
    }

    /// A collecting parallel inside a chain.
    pub Counted(u32) -> usize {
        chain![parallel![halve, describe, policy = collect], count_ok]
    }
}

#[processor]
async fn count_ok(results: (Result<u32, Error>, Result<String, Error>)) -> Result<usize, Error> {
    Ok(usize::from(results.0.is_ok()) + usize::from(results.1.is_ok()))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let runtime = LocalRuntime::new();
        runtime.start().await.unwrap();

        let (halved, described) = Both::run(&runtime, 3).await.unwrap().output;
        assert!(halved.is_err());
        assert_eq!(described.unwrap(), "#3");
        let (halved, described) = Both::run(&runtime, 4).await.unwrap().output;
        assert_eq!((halved.unwrap(), described.unwrap().as_str()), (2, "#4"));

        assert!(Strict::run(&runtime, 3).await.is_err());
        assert_eq!(Strict::run(&runtime, 4).await.unwrap().output, (2, "#4".to_owned()));

        assert_eq!(Counted::run(&runtime, 3).await.unwrap().output, 1);
        assert_eq!(Both.plan().step_names(), ["halve", "describe"]);
    });
}
