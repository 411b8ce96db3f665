//! An AI pipeline: split a document into sections, summarise every section with a (simulated)
//! slow model call, all in parallel, printing progress events as they arrive; one section is a
//! straggler, and its per-step timeout cancels it while the others finish.
//!
//! ```text
//! cargo run -p examples --example ai_pipeline
//! ```

use std::time::Duration;

use am2z::{Ctx, Error, EventKind, LocalRuntime, Runtime, SessionId, processor, workflow};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// One section of a document, with how long the model takes on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Section {
    title: String,
    model_latency_ms: u64,
}

/// A model's summary of a section.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Summary {
    title: String,
    text: String,
}

/// The assembled report.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    summaries: Vec<Summary>,
    failed: Vec<String>,
}

/// Splits a document into sections (here: one per line, latency from the line's length).
#[processor]
async fn split_document(document: String) -> Result<Vec<Section>, Error> {
    Ok(document
        .lines()
        .map(|line| Section {
            title: line.to_owned(),
            model_latency_ms: 40 * line.len() as u64,
        })
        .collect())
}

/// Calls the (simulated) model, reporting progress in quarters. The 1 s timeout cancels a
/// straggler: its token fires and its sleep is abandoned.
#[processor(timeout = "1s", concurrency = 8)]
async fn summarize_section(section: Section, ctx: &Ctx) -> Result<Summary, Error> {
    let quarter = Duration::from_millis(section.model_latency_ms / 4);
    for done in 1..=4 {
        tokio::select! {
            () = tokio::time::sleep(quarter) => ctx.progress(done * 25),
            () = ctx.cancelled() => return Err(Error::Cancelled { reason: "timed out".into() }),
        }
    }
    Ok(Summary {
        text: format!("{} words of insight", section.title.len()),
        title: section.title,
    })
}

/// Keeps the summaries that arrived and names the sections that did not.
#[processor]
async fn assemble_report(results: Vec<Result<Summary, Error>>) -> Result<Report, Error> {
    let mut report = Report {
        summaries: Vec::new(),
        failed: Vec::new(),
    };
    for result in results {
        match result {
            Ok(summary) => report.summaries.push(summary),
            Err(error) => report.failed.push(error.to_string()),
        }
    }
    Ok(report)
}

workflow! {
    /// Split → summarise every section in parallel → assemble.
    SummarizeDocument(String) -> Report {
        timeout = "30s";
        chain![
            split_document,
            map![summarize_section, concurrency = 8],
            assemble_report,
        ]
    }
}

#[tokio::main]
#[allow(clippy::print_stdout)] // an example reports on stdout
async fn main() -> Result<(), Error> {
    let runtime = LocalRuntime::new();
    runtime.start().await?;
    let session = SessionId::new("doc-42")?;

    let mut events = runtime.subscribe_session(&session);
    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let processor = event.processor.as_deref().unwrap_or("-");
            match event.kind {
                EventKind::Progress { value } => println!("  progress  {processor}: {value}%"),
                EventKind::StepFailed { error, .. } => println!("  failed    {processor}: {error}"),
                EventKind::RunCompleted { execution_time } => {
                    println!("  run completed in {execution_time:?}");
                    break;
                }
                _ => {}
            }
        }
    });

    let document =
        "Intro\nMethods\nResults\nA very long appendix that the model chews on for ages".to_owned();
    let report = SummarizeDocument::run_in_session(&runtime, &session, document).await?;
    printer
        .await
        .map_err(|e| Error::execution("printer", e.to_string()))?;

    println!("summaries:");
    for summary in &report.output.summaries {
        println!("  {}: {}", summary.title, summary.text);
    }
    println!("failed sections: {:?}", report.output.failed);
    runtime.stop().await?;
    Ok(())
}
