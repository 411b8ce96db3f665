//! The messages of the runtime's pub/sub channels, each a type with `Display` (what is
//! published) and `FromStr` (what is read): nothing else formats or parses a message.

use std::fmt;
use std::str::FromStr;

use crate::{RunId, SessionId};

/// A message that does not read as its channel's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadMessage(pub(crate) String);

impl fmt::Display for BadMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable channel message: {}", self.0)
    }
}

fn session(text: &str) -> Result<SessionId, BadMessage> {
    SessionId::new(text).map_err(|_| BadMessage(format!("bad session id `{text}`")))
}

fn run(text: &str) -> Result<RunId, BadMessage> {
    text.parse()
        .map_err(|_| BadMessage(format!("bad run id `{text}`")))
}

/// `wake`: a session got ready jobs (`<session>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wake {
    pub(crate) session: SessionId,
}

impl fmt::Display for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.session)
    }
}

impl FromStr for Wake {
    type Err = BadMessage;
    fn from_str(text: &str) -> Result<Self, BadMessage> {
        Ok(Wake {
            session: session(text)?,
        })
    }
}

/// `done`: a run ended (`<session> <run>`, then its stored outcome when it is small, so a
/// waiter elsewhere needs no read). Matched by session and run. One message may carry
/// several, one per line (the ends one commit stored): read it with [`Done::read_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    pub(crate) session: SessionId,
    pub(crate) run: RunId,
    pub(crate) outcome: Option<String>,
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.session, self.run)?;
        if let Some(outcome) = &self.outcome {
            write!(f, " {outcome}")?;
        }
        Ok(())
    }
}

impl Done {
    /// The largest outcome (bytes) a `done` line carries: every process receives every
    /// `done` message, so larger ones are only named and read by their waiters.
    pub(crate) const INLINE: usize = 4096;

    /// The `done` line of a run that ended with `outcome` (its stored JSON), carried when
    /// it is small and on one line.
    pub(crate) fn new(session: &SessionId, run: RunId, outcome: &str) -> Done {
        let inline = outcome.len() <= Done::INLINE && !outcome.contains('\n');
        Done {
            session: session.clone(),
            run,
            outcome: inline.then(|| outcome.to_owned()),
        }
    }

    /// The `done` lines of one message, each read on its own (one bad line spoils no other).
    pub(crate) fn read_all(payload: &str) -> impl Iterator<Item = Result<Done, BadMessage>> + '_ {
        payload.split('\n').map(str::parse)
    }
}

impl FromStr for Done {
    type Err = BadMessage;
    fn from_str(text: &str) -> Result<Self, BadMessage> {
        let mut parts = text.splitn(3, ' ');
        let (Some(s), Some(r)) = (parts.next(), parts.next()) else {
            return Err(BadMessage(format!("`{text}` is not `<session> <run>`")));
        };
        Ok(Done {
            session: session(s)?,
            run: run(r)?,
            outcome: parts.next().map(str::to_owned),
        })
    }
}

/// `control`: what every process must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// `stop <session> [<nonce>]`: fire the session's runs, end its waiters, and answer
    /// `Stopped` with the nonce (a stop announced by the sweeper has none and awaits no answer).
    Stop {
        session: SessionId,
        nonce: Option<String>,
    },
    /// `stopped <nonce>`: a process acted on the stop announced with `nonce`.
    Stopped { nonce: String },
    /// `expired <session>`: the session expired (idle past its TTL) and was forgotten: drop
    /// what is kept for it, unless a new session under the id is under way here.
    Expired { session: SessionId },
    /// `cancel <session> <run> [<instance>]`: a run ended (or one of its fail-fast fan-outs
    /// failed): cancel its jobs running here (under that fan-out).
    Cancel {
        session: SessionId,
        run: RunId,
        instance: Option<String>,
    },
    /// `abort <session> <run>`: an operator cancelled the run (`cancel_run`): cancel all its
    /// jobs running here, its entry job included.
    Abort { session: SessionId, run: RunId },
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Control::Stop { session, nonce } => {
                write!(f, "stop {session}")?;
                if let Some(nonce) = nonce {
                    write!(f, " {nonce}")?;
                }
                Ok(())
            }
            Control::Stopped { nonce } => write!(f, "stopped {nonce}"),
            Control::Expired { session } => write!(f, "expired {session}"),
            Control::Abort { session, run } => write!(f, "abort {session} {run}"),
            Control::Cancel {
                session,
                run,
                instance,
            } => {
                write!(f, "cancel {session} {run}")?;
                if let Some(instance) = instance {
                    write!(f, " {instance}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Control {
    type Err = BadMessage;
    fn from_str(text: &str) -> Result<Self, BadMessage> {
        let words: Vec<&str> = text.split(' ').collect();
        let word = |i: usize| words.get(i).copied().filter(|w| !w.is_empty());
        let bad = || BadMessage(format!("`{text}` is not a control message"));
        match (words.first().copied(), words.len()) {
            (Some("stop"), 2 | 3) => Ok(Control::Stop {
                session: session(word(1).ok_or_else(bad)?)?,
                nonce: word(2).map(str::to_owned),
            }),
            (Some("stopped"), 2) => Ok(Control::Stopped {
                nonce: word(1).ok_or_else(bad)?.to_owned(),
            }),
            (Some("expired"), 2) => Ok(Control::Expired {
                session: session(word(1).ok_or_else(bad)?)?,
            }),
            (Some("abort"), 3) => Ok(Control::Abort {
                session: session(word(1).ok_or_else(bad)?)?,
                run: run(word(2).ok_or_else(bad)?)?,
            }),
            (Some("cancel"), 3 | 4) => Ok(Control::Cancel {
                session: session(word(1).ok_or_else(bad)?)?,
                run: run(word(2).ok_or_else(bad)?)?,
                instance: word(3).map(str::to_owned),
            }),
            _ => Err(bad()),
        }
    }
}

/// Publishes `message` on `channel`; returns how many subscribers heard it.
pub(crate) async fn publish(
    redis: &super::Redis,
    channel: &str,
    message: &impl fmt::Display,
) -> Result<usize, super::WireError> {
    let mut conn = redis.conn()?;
    Ok(publish_command(channel, message.to_string())
        .query_async(&mut conn)
        .await?)
}

/// The command publishing `message` on `channel`: a cluster's shard channels carry a hash
/// tag (`keys.rs`), and `SPUBLISH` reaches the node of their slot only.
pub(crate) fn publish_command(channel: &str, message: impl redis::ToRedisArgs) -> redis::Cmd {
    let command = if channel.contains('{') {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    let mut publish = redis::cmd(command);
    publish.arg(channel).arg(message);
    publish
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str) -> SessionId {
        SessionId::new(id).unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let run = RunId::generate();
        let dones = [
            Done {
                session: s("t-1"),
                run,
                outcome: None,
            },
            Done {
                session: s("a.b"),
                run,
                outcome: Some(r#"{"Ok":{"output":"a b"}}"#.to_owned()),
            },
        ];
        for done in dones {
            assert_eq!(done.to_string().parse::<Done>().unwrap(), done);
        }
        let controls = [
            Control::Stop {
                session: s("x"),
                nonce: None,
            },
            Control::Stop {
                session: s("x"),
                nonce: Some("n1".to_owned()),
            },
            Control::Stopped {
                nonce: "n1".to_owned(),
            },
            Control::Expired { session: s("x") },
            Control::Cancel {
                session: s("x"),
                run,
                instance: None,
            },
            Control::Cancel {
                session: s("x"),
                run,
                instance: Some("3.1/2".to_owned()),
            },
            Control::Abort {
                session: s("x"),
                run,
            },
        ];
        for control in controls {
            assert_eq!(control.to_string().parse::<Control>().unwrap(), control);
        }
        let message = [
            Done::new(&s("a"), run, r#"{"Ok":1}"#).to_string(),
            Done::new(&s("b"), run, "x".repeat(Done::INLINE + 1).as_str()).to_string(),
            "junk".to_owned(),
            Done::new(&s("c"), run, "two\nlines").to_string(),
        ]
        .join("\n");
        let read: Vec<_> = Done::read_all(&message).collect();
        assert_eq!(read.len(), 4);
        assert_eq!(
            read[0].as_ref().unwrap().outcome.as_deref(),
            Some(r#"{"Ok":1}"#)
        );
        assert_eq!(
            read[1].as_ref().unwrap().outcome,
            None,
            "too large to carry"
        );
        assert!(read[2].is_err());
        assert_eq!(read[3].as_ref().unwrap().session, s("c"));
        assert_eq!(read[3].as_ref().unwrap().outcome, None, "would span lines");
        let wake = Wake { session: s("w") };
        assert_eq!(wake.to_string().parse::<Wake>().unwrap(), wake);
    }

    #[test]
    fn hostile_messages_are_refused() {
        for bad in [
            "",
            "stop",
            "stop a:b",
            "stopped",
            "cancel x",
            "cancel x notarun",
            "restart x",
            "stop x n extra",
        ] {
            assert!(bad.parse::<Control>().is_err(), "{bad:?}");
        }
        for bad in ["", "x", "x y", "{x} 00"] {
            assert!(bad.parse::<Done>().is_err(), "{bad:?}");
        }
        assert!("a b".parse::<Wake>().is_err());
    }
}
