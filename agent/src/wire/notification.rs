//! NOTIFICATION messages (RFC 4271 §4.5), with the Cease subcodes of RFC 4486
//! and RFC 8538 and the shutdown communication of RFC 9003.
//!
//! Every error the codec finds turns into one of these through
//! [`Notification::from`]; nothing else assembles codes by hand.

use std::fmt;

/// Error codes (RFC 4271 §4.5).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Subcodes, by error code.
pub mod subcode {
    // Message Header Error
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
    // OPEN Message Error
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    // UPDATE Message Error
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
    // Cease (RFC 4486, RFC 8538)
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
    // Route-Refresh Message Error (RFC 7313)
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;
}

/// A NOTIFICATION: the last message of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self { code, subcode, data: data.into() }
    }

    /// Cease with an RFC 9003 shutdown communication (Administrative Shutdown
    /// or Reset). The message is cut at 255 bytes on a UTF-8 boundary.
    pub fn cease_with_message(subcode: u8, message: &str) -> Self {
        let mut end = message.len().min(255);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = Vec::with_capacity(end + 1);
        data.push(end as u8);
        data.extend_from_slice(&message.as_bytes()[..end]);
        Self::new(code::CEASE, subcode, data)
    }

    /// Cease/Hard Reset (RFC 8538): the receiver purges our routes even when
    /// the N-bit was negotiated. The data carries the inner Cease (code, subcode,
    /// data) that says why.
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = vec![inner.code, inner.subcode];
        data.extend_from_slice(&inner.data);
        Self::new(code::CEASE, subcode::HARD_RESET, data)
    }

    /// The RFC 9003 shutdown communication, when this Cease carries one.
    pub fn shutdown_message(&self) -> Option<&str> {
        let carries = self.code == code::CEASE
            && matches!(
                self.subcode,
                subcode::ADMINISTRATIVE_SHUTDOWN | subcode::ADMINISTRATIVE_RESET
            );
        let (&len, rest) = self.data.split_first().filter(|_| carries)?;
        std::str::from_utf8(rest.get(..usize::from(len))?).ok()
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, super::DecodeError> {
        match body {
            [code, subcode, data @ ..] => Ok(Self::new(*code, *subcode, data)),
            _ => Err(super::DecodeError::bad_length(body.len() + super::HEADER_LEN)),
        }
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(&self.data);
    }

    /// A short name for logs and metrics, e.g. "Cease/Administrative Shutdown".
    pub fn name(&self) -> String {
        let code_name = match self.code {
            code::MESSAGE_HEADER => "Message Header Error",
            code::OPEN => "OPEN Message Error",
            code::UPDATE => "UPDATE Message Error",
            code::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            code::FSM => "Finite State Machine Error",
            code::CEASE => "Cease",
            code::ROUTE_REFRESH => "ROUTE-REFRESH Message Error",
            _ => return format!("code {}/{}", self.code, self.subcode),
        };
        let sub = match (self.code, self.subcode) {
            (code::CEASE, subcode::MAX_PREFIXES) => "Maximum Number of Prefixes Reached",
            (code::CEASE, subcode::ADMINISTRATIVE_SHUTDOWN) => "Administrative Shutdown",
            (code::CEASE, subcode::PEER_DECONFIGURED) => "Peer De-configured",
            (code::CEASE, subcode::ADMINISTRATIVE_RESET) => "Administrative Reset",
            (code::CEASE, subcode::CONNECTION_REJECTED) => "Connection Rejected",
            (code::CEASE, subcode::OTHER_CONFIGURATION_CHANGE) => "Other Configuration Change",
            (code::CEASE, subcode::CONNECTION_COLLISION_RESOLUTION) => {
                "Connection Collision Resolution"
            }
            (code::CEASE, subcode::OUT_OF_RESOURCES) => "Out of Resources",
            (code::CEASE, subcode::HARD_RESET) => "Hard Reset",
            (code::MESSAGE_HEADER, subcode::CONNECTION_NOT_SYNCHRONIZED) => {
                "Connection Not Synchronized"
            }
            (code::MESSAGE_HEADER, subcode::BAD_MESSAGE_LENGTH) => "Bad Message Length",
            (code::MESSAGE_HEADER, subcode::BAD_MESSAGE_TYPE) => "Bad Message Type",
            (code::OPEN, subcode::UNSUPPORTED_VERSION) => "Unsupported Version Number",
            (code::OPEN, subcode::BAD_PEER_AS) => "Bad Peer AS",
            (code::OPEN, subcode::BAD_BGP_IDENTIFIER) => "Bad BGP Identifier",
            (code::OPEN, subcode::UNSUPPORTED_OPTIONAL_PARAMETER) => {
                "Unsupported Optional Parameter"
            }
            (code::OPEN, subcode::UNACCEPTABLE_HOLD_TIME) => "Unacceptable Hold Time",
            (code::OPEN, subcode::UNSUPPORTED_CAPABILITY) => "Unsupported Capability",
            (code::UPDATE, subcode::MALFORMED_ATTRIBUTE_LIST) => "Malformed Attribute List",
            (code::UPDATE, subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE) => {
                "Unrecognized Well-known Attribute"
            }
            (code::UPDATE, subcode::MISSING_WELL_KNOWN_ATTRIBUTE) => "Missing Well-known Attribute",
            (code::UPDATE, subcode::ATTRIBUTE_FLAGS_ERROR) => "Attribute Flags Error",
            (code::UPDATE, subcode::ATTRIBUTE_LENGTH_ERROR) => "Attribute Length Error",
            (code::UPDATE, subcode::INVALID_ORIGIN) => "Invalid ORIGIN Attribute",
            (code::UPDATE, subcode::INVALID_NEXT_HOP) => "Invalid NEXT_HOP Attribute",
            (code::UPDATE, subcode::OPTIONAL_ATTRIBUTE_ERROR) => "Optional Attribute Error",
            (code::UPDATE, subcode::INVALID_NETWORK_FIELD) => "Invalid Network Field",
            (code::UPDATE, subcode::MALFORMED_AS_PATH) => "Malformed AS_PATH",
            _ => return format!("{code_name}/{}", self.subcode),
        };
        format!("{code_name}/{sub}")
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}/{})", self.name(), self.code, self.subcode)?;
        if let Some(message) = self.shutdown_message() {
            write!(f, ": \"{message}\"")?;
        }
        // RFC 8538 §3: a Hard Reset carries the Cease it stands for.
        if self.code == code::CEASE
            && self.subcode == subcode::HARD_RESET
            && let [inner, data @ ..] = &self.data[..]
        {
            write!(f, " for {}", Notification::new(code::CEASE, *inner, data))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_read_with_their_names_message_and_what_a_hard_reset_stands_for() {
        let reset = |data: &[u8]| Notification::new(code::CEASE, subcode::HARD_RESET, data);
        let mut shutdown_data = vec![5];
        shutdown_data.extend(b"maint");
        for (n, shown) in [
            (
                Notification::new(code::CEASE, subcode::ADMINISTRATIVE_RESET, []),
                "Cease/Administrative Reset (6/4)",
            ),
            (reset(&[]), "Cease/Hard Reset (6/9)"),
            (
                reset(&[subcode::ADMINISTRATIVE_RESET]),
                "Cease/Hard Reset (6/9) for Cease/Administrative Reset (6/4)",
            ),
            (
                reset(&[&[subcode::ADMINISTRATIVE_SHUTDOWN][..], &shutdown_data].concat()),
                "Cease/Hard Reset (6/9) for Cease/Administrative Shutdown (6/2): \"maint\"",
            ),
        ] {
            assert_eq!(n.to_string(), shown);
        }
    }

    #[test]
    fn shutdown_communication_round_trips_and_is_cut_on_a_char_boundary() {
        let n = Notification::cease_with_message(
            subcode::ADMINISTRATIVE_SHUTDOWN,
            "nonstop: node drained",
        );
        assert_eq!(n.data[0] as usize, "nonstop: node drained".len());
        assert_eq!(n.shutdown_message(), Some("nonstop: node drained"));
        assert_eq!(n.to_string(), "Cease/Administrative Shutdown (6/2): \"nonstop: node drained\"");
        let long = "é".repeat(200); // 400 bytes
        let n = Notification::cease_with_message(subcode::ADMINISTRATIVE_RESET, &long);
        assert_eq!(n.data[0], 254);
        assert_eq!(n.shutdown_message().unwrap().chars().count(), 127);
    }

    #[test]
    fn hard_reset_wraps_the_reason() {
        let inner = Notification::cease_with_message(subcode::ADMINISTRATIVE_SHUTDOWN, "bye");
        let hard = Notification::hard_reset(&inner);
        assert_eq!((hard.code, hard.subcode), (6, 9));
        assert_eq!(hard.data, [6, 2, 3, b'b', b'y', b'e']);
        assert_eq!(hard.name(), "Cease/Hard Reset");
    }

    #[test]
    fn a_bad_shutdown_length_is_not_trusted() {
        let n = Notification::new(code::CEASE, subcode::ADMINISTRATIVE_SHUTDOWN, [10, b'x']);
        assert_eq!(n.shutdown_message(), None);
    }
}
