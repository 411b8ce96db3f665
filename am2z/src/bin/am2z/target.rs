//! `SESSION/RUN-ID`: how a run is named on the command line (a session id never holds `/`).

use std::fmt;
use std::str::FromStr;

use am2z::{Error, RunId, SessionId};

/// A run of a session.
#[derive(Debug, Clone)]
pub(crate) struct RunTarget {
    pub(crate) session: SessionId,
    pub(crate) run: RunId,
}

impl FromStr for RunTarget {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let (session, run) = text.split_once('/').ok_or_else(|| {
            Error::validation(
                "run",
                format!("`{}` is not SESSION/RUN-ID", text.escape_debug()),
            )
        })?;
        Ok(RunTarget {
            session: SessionId::new(session)?,
            run: run.parse()?,
        })
    }
}

impl fmt::Display for RunTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.session, self.run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_reads_back_what_it_writes() {
        let run = RunId::generate();
        let text = format!("tenant-1/{run}");
        let target: RunTarget = text.parse().expect("a valid target");
        assert_eq!(target.to_string(), text);
        assert!("tenant-1".parse::<RunTarget>().is_err());
        assert!("bad:id/0123".parse::<RunTarget>().is_err());
        assert!(format!("ok/{run}x").parse::<RunTarget>().is_err());
    }
}
