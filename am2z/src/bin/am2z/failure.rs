//! What went wrong, as one line on stderr and an exit code per kind of failure.

use std::process::ExitCode;

use am2z::Error;

/// A failure of a command: its exit code and the line that explains it.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

/// Exit code: anything else.
pub(crate) const OTHER: u8 = 1;
/// Exit code: no such run (or processor, or session).
pub(crate) const NOT_FOUND: u8 = 3;
/// Exit code: Redis cannot be reached.
pub(crate) const UNREACHABLE: u8 = 4;
/// Exit code: refused or invalid (a bad id, a run that cannot be retried, ...).
pub(crate) const REFUSED: u8 = 5;

impl Failure {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Failure {
            code: OTHER,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Failure {
            code: NOT_FOUND,
            message: message.into(),
        }
    }

    /// Prints the line and gives the exit code.
    pub(crate) fn report(self) -> ExitCode {
        eprintln!("am2z: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::NotFound { .. } => NOT_FOUND,
            Error::Unavailable { .. } => UNREACHABLE,
            Error::Validation { .. } | Error::Business { .. } => REFUSED,
            _ => OTHER,
        };
        let message = match &error {
            Error::Unavailable { .. } => {
                format!("{error}; check that Redis runs and AM2Z_REDIS_URL names it")
            }
            _ => error.to_string(),
        };
        Failure {
            code,
            // One line, whatever the error carried.
            message: message.replace('\n', " "),
        }
    }
}

impl From<serde_json::Error> for Failure {
    fn from(error: serde_json::Error) -> Self {
        Failure::other(format!("cannot write JSON: {error}"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::other(format!("cannot write the output: {error}"))
    }
}
