//! A job as this process holds it: what its claim (or a commit's hand-off) gave, in which
//! session, and when the claim was asked for.

use std::time::Instant;

use super::keys::JobId;
use super::protocol::Token;
use super::protocol::claim::LeasedJob;
use crate::{RunId, SessionId};

/// A job this process holds a lease on.
#[derive(Debug)]
pub(crate) struct ClaimedJob {
    pub(crate) session: SessionId,
    pub(crate) leased: LeasedJob,
    /// When this process sent the claim (a stop heard since may predate the claim; Redis'
    /// clock at the claim is the lease deadline less the lease).
    pub(crate) asked: Instant,
}

impl ClaimedJob {
    pub(crate) fn id(&self) -> JobId {
        self.leased.id
    }

    pub(crate) fn run(&self) -> RunId {
        self.leased.id.run
    }

    pub(crate) fn token(&self) -> Token {
        self.leased.token
    }

    /// Whether this is its run's entry job (a whole run, or the first job of one executed
    /// step by step).
    pub(crate) fn is_entry(&self) -> bool {
        self.leased.id.position.is_none()
    }
}
