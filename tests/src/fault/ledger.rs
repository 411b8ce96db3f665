//! The execution ledger: every processor execution in a fault worker appends one line
//! `run step attempt pid nanos` to its process's file (one `write` of a whole line on a file
//! opened for appending, so concurrent steps never interleave), and the checker reads every
//! file of a scene back to count executions and measure recovery.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use am2z::{Ctx, Error};

/// The variable naming a worker process's ledger file.
pub const LEDGER_VAR: &str = "AM2Z_FAULT_LEDGER";

/// Appends this execution to the process's ledger (nothing without [`LEDGER_VAR`]).
///
/// # Errors
/// [`Error::Execution`] when the ledger cannot be written: a run the ledger does not see
/// would make the checker's counts lie.
pub fn record(ctx: &Ctx) -> Result<(), Error> {
    static FILE: OnceLock<Option<File>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::env::var_os(LEDGER_VAR)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let Some(mut file) = file.as_ref() else {
        return match std::env::var_os(LEDGER_VAR) {
            Some(_) => Err(Error::execution(
                ctx.processor(),
                "the ledger cannot be opened",
            )),
            None => Ok(()),
        };
    };
    let line = format!(
        "{} {} {} {} {}\n",
        ctx.run_id(),
        ctx.processor(),
        ctx.attempt(),
        std::process::id(),
        unix_nanos(SystemTime::now()),
    );
    file.write_all(line.as_bytes())
        .map_err(|e| Error::execution(ctx.processor(), format!("the ledger: {e}")))
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// One processor execution.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Execution {
    /// When it started (ns since the Unix epoch, on the worker's clock).
    pub at: u128,
    /// The run id (32 hex digits).
    pub run: String,
    /// The processor (step) name.
    pub step: String,
    /// The step's attempt within the run (retries by policy count up).
    pub attempt: u32,
    /// The process that executed it.
    pub pid: u32,
}

/// Every execution of a scene, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    executions: Vec<Execution>,
}

impl Ledger {
    /// Reads every ledger file in `dir`.
    pub fn read(dir: &Path) -> Ledger {
        let mut executions = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            // A line cut by `kill -9` mid-write is not an execution the checker can use.
            executions.extend(text.lines().filter_map(parse));
        }
        executions.sort();
        Ledger { executions }
    }

    /// Every execution, oldest first.
    pub fn executions(&self) -> &[Execution] {
        &self.executions
    }

    /// How many executions there are.
    pub fn len(&self) -> usize {
        self.executions.len()
    }

    /// Whether nothing executed.
    pub fn is_empty(&self) -> bool {
        self.executions.is_empty()
    }

    /// The executions of one run, oldest first.
    pub fn of_run<'a>(&'a self, run: &'a str) -> impl Iterator<Item = &'a Execution> + 'a {
        self.executions.iter().filter(move |e| e.run == run)
    }

    /// How many executions process `pid` started.
    pub fn count_by(&self, pid: u32) -> usize {
        self.executions.iter().filter(|e| e.pid == pid).count()
    }

    /// The runs process `pid` executed a step of.
    pub fn runs_by(&self, pid: u32) -> BTreeSet<String> {
        self.executions
            .iter()
            .filter(|e| e.pid == pid)
            .map(|e| e.run.clone())
            .collect()
    }

    /// Step attempts executed more than once (same run, step and attempt): the at-least-once
    /// re-executions after a fault. Retries by policy are new attempts, not duplicates.
    pub fn duplicates(&self) -> BTreeMap<(String, String, u32), Vec<Execution>> {
        let mut by_attempt: BTreeMap<(String, String, u32), Vec<Execution>> = BTreeMap::new();
        for e in &self.executions {
            by_attempt
                .entry((e.run.clone(), e.step.clone(), e.attempt))
                .or_default()
                .push(e.clone());
        }
        by_attempt.retain(|_, runs| runs.len() > 1);
        by_attempt
    }

    /// The runs with a duplicate execution.
    pub fn duplicated_runs(&self) -> BTreeSet<String> {
        self.duplicates()
            .into_keys()
            .map(|(run, _, _)| run)
            .collect()
    }

    /// The runs a fault at `fault` to the processes in `victims` orphaned: a victim had
    /// started them before the fault, and another process started them again after it.
    pub fn orphaned(&self, victims: &[u32], fault: SystemTime) -> BTreeSet<String> {
        self.relet(victims, fault, false).into_keys().collect()
    }

    /// Recovery after a fault at `fault` to the processes in `victims`: the time from the
    /// fault to the last orphaned run started again by another process (`None`: no orphan).
    pub fn recovery(&self, victims: &[u32], fault: SystemTime) -> Option<Duration> {
        self.relet(victims, fault, false).into_values().max()
    }

    /// As [`recovery`](Self::recovery), for the runs the fault orphaned on their first
    /// delivery only (no other process had started them before): the ones the sweeper
    /// re-queues at once. Later redeliveries add the documented redelivery backoff.
    pub fn first_delivery_recovery(&self, victims: &[u32], fault: SystemTime) -> Option<Duration> {
        self.relet(victims, fault, true).into_values().max()
    }

    /// Orphaned runs → time from the fault to their first start by another process.
    fn relet(
        &self,
        victims: &[u32],
        fault: SystemTime,
        first_delivery_only: bool,
    ) -> BTreeMap<String, Duration> {
        let fault = unix_nanos(fault);
        let held: BTreeSet<&str> = self
            .executions
            .iter()
            .filter(|e| victims.contains(&e.pid) && e.at < fault)
            .map(|e| e.run.as_str())
            .collect();
        held.into_iter()
            .filter(|run| {
                !first_delivery_only
                    || self
                        .of_run(run)
                        .all(|e| e.at >= fault || victims.contains(&e.pid))
            })
            .filter_map(|run| {
                let again = self
                    .of_run(run)
                    .find(|e| e.at >= fault && !victims.contains(&e.pid))?;
                let after = u64::try_from(again.at - fault).unwrap_or(u64::MAX);
                Some((run.to_owned(), Duration::from_nanos(after)))
            })
            .collect()
    }

    /// The first execution by a process not in `victims` started after `fault`: the time to the
    /// first work taken over (or just taken) by another worker.
    pub fn first_after(&self, victims: &[u32], fault: SystemTime) -> Option<Duration> {
        let fault = unix_nanos(fault);
        self.executions
            .iter()
            .find(|e| e.at >= fault && !victims.contains(&e.pid))
            .map(|e| Duration::from_nanos(u64::try_from(e.at - fault).unwrap_or(u64::MAX)))
    }
}

fn parse(line: &str) -> Option<Execution> {
    let mut fields = line.split(' ');
    let run = fields.next()?.to_owned();
    let step = fields.next()?.to_owned();
    let attempt = fields.next()?.parse().ok()?;
    let pid = fields.next()?.parse().ok()?;
    let at = fields.next()?.parse().ok()?;
    (run.len() == 32 && fields.next().is_none()).then_some(Execution {
        at,
        run,
        step,
        attempt,
        pid,
    })
}
