//! Why a handoff did not happen: one type for both sides, each variant a
//! step that can fail. Its text is what the logs, the handoff report's
//! `reason` and an ABORT to the other agent carry.

use std::path::PathBuf;
use std::time::Duration;

use crate::handoff::protocol::BadMessage;
use crate::handoff::transport::TransportError;

/// The other agent in the conversation, as an error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Other {
    /// The agent that serves the node now (seen from the successor).
    Running,
    /// The agent taking over (seen from the predecessor).
    Successor,
}

impl std::fmt::Display for Other {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Other::Running => "the running agent",
            Other::Successor => "the successor",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot reach the running agent at {path}: {source}")]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error("the running agent refused the handoff: {0}")]
    Refused(String),
    /// The other agent sent ABORT, with its reason.
    #[error("{0} gave up: {1}")]
    GaveUp(Other, String),
    #[error("the running agent rolled back: {0}")]
    RolledBack(String),
    #[error("sending {message}: {source}")]
    Sending { message: &'static str, source: TransportError },
    #[error("waiting for {what}: {source}")]
    Waiting { what: &'static str, source: TransportError },
    #[error("setting the handoff channel's send timeout: {0}")]
    Timeout(std::io::Error),
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: &'static str },
    #[error("{0} out of order")]
    OutOfOrder(&'static str),
    /// What the other agent sent does not add up (counts, peers).
    #[error("{0}")]
    Inconsistent(String),
    /// A session's or a RIB's state that cannot be taken up.
    #[error("peer {peer}: {source}")]
    BadState { peer: String, source: BadMessage },
    #[error("the running agent closed the handoff{} and keeps serving", if *.after_commit { " after COMMIT" } else { "" })]
    ClosedKeepsServing { after_commit: bool },
    #[error("the pause the hold times allow ran out before {0}")]
    PauseSpent(&'static str),
    #[error("no COMMIT within the pause the hold times allow")]
    NoCommit,
    #[error("COMMIT came after the pause the hold times allow")]
    LateCommit,
    #[error("cannot move the control socket aside: {0}")]
    ControlSocket(std::io::Error),
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("agent pid {holder} still holds {path} after {waited:?}")]
    LockHeld { holder: String, path: PathBuf, waited: Duration },
}

impl HandoffError {
    pub(super) fn sending(message: &'static str) -> impl FnOnce(TransportError) -> Self {
        move |source| HandoffError::Sending { message, source }
    }

    pub(super) fn waiting(what: &'static str) -> impl FnOnce(TransportError) -> Self {
        move |source| HandoffError::Waiting { what, source }
    }
}
