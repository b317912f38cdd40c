//! How decoding fails: a [`DecodeError`] resets the session with the
//! NOTIFICATION the RFCs prescribe; a [`Malformed`] attribute is handled
//! without a reset (RFC 7606). Shared by the attribute and UPDATE decoders,
//! so neither imports the other for them.

use std::fmt;

use super::{Notification, code, subcode};

/// A malformation that RFC 7606 handles without a session reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub attr: u8,
    pub action: MalformedAction,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedAction {
    /// Every prefix the UPDATE announces is handled as withdrawn (RFC 7606 §2).
    TreatAsWithdraw,
    /// The attribute is ignored; the rest of the UPDATE stands.
    AttributeDiscard,
}

/// A message that cannot be used, with the NOTIFICATION that RFC 4271 and
/// RFC 7606 prescribe for it, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub notification: Notification,
    pub detail: String,
}

impl DecodeError {
    pub fn new(notification: Notification, detail: impl Into<String>) -> Self {
        Self { notification, detail: detail.into() }
    }

    pub(crate) fn bad_length(len: usize) -> Self {
        let data = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        Self::new(
            Notification::new(code::MESSAGE_HEADER, subcode::BAD_MESSAGE_LENGTH, data),
            format!("bad message length {len}"),
        )
    }

    pub(crate) fn bad_type(kind: u8) -> Self {
        Self::new(
            Notification::new(code::MESSAGE_HEADER, subcode::BAD_MESSAGE_TYPE, [kind]),
            format!("unknown message type {kind}"),
        )
    }

    pub(crate) fn open(subcode: u8, data: impl Into<Vec<u8>>, detail: impl Into<String>) -> Self {
        Self::new(Notification::new(code::OPEN, subcode, data), detail)
    }

    pub(crate) fn update(subcode: u8, data: impl Into<Vec<u8>>, detail: impl Into<String>) -> Self {
        Self::new(Notification::new(code::UPDATE, subcode, data), detail)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (answered with {})", self.detail, self.notification)
    }
}

impl std::error::Error for DecodeError {}
