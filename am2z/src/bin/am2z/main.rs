//! `am2z`: inspect and control the runs of a Redis deployment from a terminal.
//!
//! It connects like any runtime of the deployment (`RedisConfig::from_env`), as a client that
//! executes nothing (`worker(false)`), and answers through the inspection contract
//! (`am2z::runtime::Inspect`). `docs/cli.md` describes every command.

mod commands;
mod dashboard;
mod failure;
mod output;
mod target;
mod watch;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::failure::Failure;

const AFTER_HELP: &str = "\
Environment (as every am2z runtime reads it):
  AM2Z_REDIS_URL       the Redis server (else REDIS_URL; default redis://127.0.0.1:6379;
                       rediss:// for TLS)
  AM2Z_REDIS_CLUSTER   a Redis Cluster's seed URLs, comma-separated
  AM2Z_REDIS_TLS_CA    a PEM file of the CA that signed the server's certificate
  AM2Z_QUEUE_PREFIX    the deployment's key prefix (default am2z)
  AM2Z_REDIS_TIMEOUT   how long to wait for a Redis reply (default 5s)
  AM2Z_START_TIMEOUT   how long to keep trying while Redis refuses connections (default 2s
                       here; 30s for a worker)
  AM2Z_DASHBOARD_TOKEN `dashboard`: the token its actions need (none: read-only)

Exit codes:
  0  done
  1  any other failure
  2  usage: a command or an argument is wrong
  3  not found: no such run (or processor)
  4  Redis unreachable
  5  refused or invalid: a bad session or run id, a cursor this did not write, a run that
     cannot be retried (live or completed)";

/// Inspect and control the runs of an am2z deployment on Redis.
#[derive(Debug, Parser)]
#[command(name = "am2z", version, after_help = AFTER_HELP)]
struct Cli {
    /// Print JSON for scripts instead of tables (one document; `watch`: one event a line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The sessions that exist, with their runs by state.
    Sessions(PageArgs),
    /// The runs of a session, newest first.
    Runs {
        /// The session.
        session: String,
        /// Only runs in this state: queued, active, delayed, completed, failed, dead_lettered.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only runs of this processor or workflow.
        #[arg(long, value_name = "NAME")]
        processor: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One run in detail: steps, input, output, error and its recent events.
    Run {
        /// The run, as SESSION/RUN-ID.
        #[arg(value_name = "SESSION/RUN-ID")]
        run: String,
    },
    /// Dead letters: runs that could not be run (poisoned, or served by no worker).
    Dead {
        /// Only this session's (default: every session's).
        session: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Submits a failed or dead-lettered run again, as a new run of its session.
    Retry {
        /// The run, as SESSION/RUN-ID.
        #[arg(value_name = "SESSION/RUN-ID")]
        run: String,
    },
    /// Cancels a live run (an ended run is left as it is).
    Cancel {
        /// The run, as SESSION/RUN-ID.
        #[arg(value_name = "SESSION/RUN-ID")]
        run: String,
    },
    /// Stops a session: its live runs end, and every key it holds is deleted.
    StopSession {
        /// The session.
        session: String,
    },
    /// The live workers and the processors they serve.
    Workers,
    /// Follows a session's runs live, a line per run with its progress (ctrl-c ends it).
    Watch {
        /// The session.
        session: String,
        /// Exit once the session has no live run.
        #[arg(long)]
        until_idle: bool,
    },
    /// Serves the web dashboard (and Prometheus metrics on /metrics) until ctrl-c. Read-only
    /// unless AM2Z_DASHBOARD_TOKEN holds a token: then retry, cancel and stop-session work
    /// from the page with that token.
    Dashboard {
        /// The address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7480")]
        listen: std::net::SocketAddr,
        /// Listen on an address that is not loopback (anyone who reaches it reads your runs).
        #[arg(long)]
        allow_non_loopback: bool,
    },
}

/// Which page of a listing.
#[derive(Debug, Args)]
struct PageArgs {
    /// At most this many items (1 to 500).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// The page after this cursor (printed under the previous page).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::other(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(commands::run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
