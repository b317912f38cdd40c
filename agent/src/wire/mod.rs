//! The BGP wire codec: bytes ⇄ messages, no I/O.
//!
//! ```text
//!  TCP stream ─▶ frame() ─▶ Header ─▶ Message::decode_framed(header, body, ctx)
//!                  │                                 │
//!                  └─ header errors                  ├─ Open / Update / Notification /
//!                     (1/x NOTIFICATION)             │  Keepalive / RouteRefresh
//!                                                    └─ DecodeError ⇒ its NOTIFICATION
//!  Message::decode(bytes, ctx) does both for one whole message.
//!  Message::encode(ctx, &mut Vec<u8>) appends one framed message.
//! ```
//!
//! UPDATE decoding follows RFC 7606: most malformed attributes do not reset the
//! session but are reported next to the decoded message as [`Malformed`] with
//! the action to take (treat-as-withdraw or attribute-discard). Only what makes
//! the rest of the message unreadable is a [`DecodeError`], which already holds
//! the NOTIFICATION to send.
//!
//! [`WireContext`] carries what the negotiated capabilities change about the
//! encoding (4-octet AS numbers, extended message length, eBGP or iBGP).

mod attrs;
mod error;
mod notification;
pub mod open;
mod update;

pub use attrs::{AsPath, AsSegment, Origin, PathAttrs, RawAttr, attr_code};
pub use error::{DecodeError, Malformed, MalformedAction};
pub use notification::{Notification, code, subcode};
pub use open::{
    AfiSafi, Capability, GrFamily, GracefulRestartCap, LlgrFamily, Open, capability_code,
};
pub use update::{MpReach, MpUnreach, Update, UpdateBuilder, prefix_wire_len};

/// Length of the fixed header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// Largest message without RFC 8654 extended messages.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message with RFC 8654 extended messages.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// Message type codes.
pub mod message_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// What the capabilities of a session change about its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireContext {
    /// Both sides sent the 4-octet AS capability (RFC 6793): AS_PATH carries
    /// 4-byte numbers and AS4_PATH is not used.
    pub four_octet_as: bool,
    /// Both sides sent the extended message capability (RFC 8654).
    pub extended_messages: bool,
    /// The peer is in another AS: LOCAL_PREF from it is discarded.
    pub ebgp: bool,
}

impl WireContext {
    /// What is assumed before the OPENs are exchanged (RFC 4271 defaults).
    pub const BEFORE_OPEN: WireContext =
        WireContext { four_octet_as: false, extended_messages: false, ebgp: false };

    pub fn max_message_len(&self) -> usize {
        if self.extended_messages { MAX_EXTENDED_MESSAGE_LEN } else { MAX_MESSAGE_LEN }
    }
}

/// A BGP message.
// UPDATE is nearly all of the traffic: boxing it to shrink the rare others
// would cost an allocation per UPDATE.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The name RFC 4271 uses, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Open(_) => "open",
            Message::Update(_) => "update",
            Message::Notification(_) => "notification",
            Message::Keepalive => "keepalive",
            Message::RouteRefresh(_) => "route_refresh",
        }
    }

    /// Decodes one whole message (header included), as delimited by [`frame`].
    /// UPDATE problems that RFC 7606 handles without a reset come back in the
    /// second element.
    pub fn decode(
        bytes: &[u8],
        ctx: &WireContext,
    ) -> Result<(Message, Vec<Malformed>), DecodeError> {
        let Some(header) = frame(bytes, ctx)? else {
            return Err(DecodeError::bad_length(bytes.len()));
        };
        if header.len != bytes.len() {
            return Err(DecodeError::bad_length(bytes.len()));
        }
        Self::decode_framed(header, &bytes[HEADER_LEN..], ctx)
    }

    /// Decodes the body of a message whose `header` [`frame`] has read and
    /// checked already: a stream reader frames each message once.
    pub fn decode_framed(
        header: Header,
        body: &[u8],
        ctx: &WireContext,
    ) -> Result<(Message, Vec<Malformed>), DecodeError> {
        debug_assert_eq!(header.len, body.len() + HEADER_LEN);
        let message = match header.kind {
            message_type::OPEN => Message::Open(Open::decode(body)?),
            message_type::UPDATE => {
                let (update, malformed) = Update::decode(body, ctx)?;
                return Ok((Message::Update(update), malformed));
            }
            message_type::NOTIFICATION => Message::Notification(Notification::decode(body)?),
            message_type::KEEPALIVE => Message::Keepalive,
            message_type::ROUTE_REFRESH => Message::RouteRefresh(RouteRefresh::decode(body)?),
            other => return Err(DecodeError::bad_type(other)),
        };
        Ok((message, Vec::new()))
    }

    /// Appends the framed message to `out`.
    pub fn encode(&self, ctx: &WireContext, out: &mut Vec<u8>) {
        let start = begin(out);
        let kind = match self {
            Message::Open(open) => {
                open.encode_body(out);
                message_type::OPEN
            }
            Message::Update(update) => {
                update.encode_body(ctx, out);
                message_type::UPDATE
            }
            Message::Notification(n) => {
                n.encode_body(out);
                message_type::NOTIFICATION
            }
            Message::Keepalive => message_type::KEEPALIVE,
            Message::RouteRefresh(rr) => {
                rr.encode_body(out);
                message_type::ROUTE_REFRESH
            }
        };
        finish(out, start, kind);
    }

    /// The framed message as a new buffer.
    pub fn to_bytes(&self, ctx: &WireContext) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(ctx, &mut out);
        out
    }
}

/// Writes a header with a placeholder length; returns where the message starts.
pub(crate) fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0, 0]);
    start
}

/// Fills in the length and type of the message started at `start`.
pub(crate) fn finish(out: &mut [u8], start: usize, kind: u8) {
    let len = out.len() - start;
    debug_assert!(len <= MAX_EXTENDED_MESSAGE_LEN, "message of {len} bytes");
    out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
    out[start + 18] = kind;
}

/// The header of the next message in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    /// Length of the whole message, header included.
    pub len: usize,
}

/// Reads the header at the front of `buf`: `Ok(None)` until 19 bytes are
/// there, then the message's type and length, or the header error
/// (RFC 4271 §6.1) that ends the session.
pub fn frame(buf: &[u8], ctx: &WireContext) -> Result<Option<Header>, DecodeError> {
    let Some(head) = buf.get(..HEADER_LEN) else { return Ok(None) };
    if head[..16].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::new(
            Notification::new(code::MESSAGE_HEADER, subcode::CONNECTION_NOT_SYNCHRONIZED, []),
            "the marker is not all ones",
        ));
    }
    let len = usize::from(u16::from_be_bytes([head[16], head[17]]));
    let kind = head[18];
    let (min, max) = match kind {
        message_type::OPEN => (29, MAX_MESSAGE_LEN),
        message_type::UPDATE => (23, ctx.max_message_len()),
        message_type::NOTIFICATION => (21, ctx.max_message_len()),
        message_type::KEEPALIVE => (HEADER_LEN, HEADER_LEN),
        message_type::ROUTE_REFRESH => (23, ctx.max_message_len()),
        other => return Err(DecodeError::bad_type(other)),
    };
    if len < min || len > max {
        return Err(DecodeError::bad_length(len));
    }
    Ok(Some(Header { kind, len }))
}

/// ROUTE-REFRESH (RFC 2918), with the subtypes of enhanced route refresh (RFC 7313).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: AfiSafi,
    pub subtype: RefreshSubtype,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshSubtype {
    /// A request to send the Adj-RIB-Out again.
    Request,
    /// Beginning of a route refresh (RFC 7313).
    Begin,
    /// End of a route refresh (RFC 7313).
    End,
    /// Reserved values are ignored by receivers (RFC 7313 §5).
    Reserved(u8),
}

impl RouteRefresh {
    pub fn request(family: AfiSafi) -> Self {
        Self { family, subtype: RefreshSubtype::Request }
    }

    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let [a, b, subtype, safi] = body else {
            return Err(DecodeError::new(
                Notification::new(
                    code::ROUTE_REFRESH,
                    subcode::INVALID_MESSAGE_LENGTH,
                    body.to_vec(),
                ),
                format!("ROUTE-REFRESH body of {} bytes, expected 4", body.len()),
            ));
        };
        let subtype = match subtype {
            0 => RefreshSubtype::Request,
            1 => RefreshSubtype::Begin,
            2 => RefreshSubtype::End,
            other => RefreshSubtype::Reserved(*other),
        };
        Ok(Self { family: AfiSafi { afi: u16::from_be_bytes([*a, *b]), safi: *safi }, subtype })
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        let subtype = match self.subtype {
            RefreshSubtype::Request => 0,
            RefreshSubtype::Begin => 1,
            RefreshSubtype::End => 2,
            RefreshSubtype::Reserved(v) => v,
        };
        out.extend_from_slice(&self.family.afi.to_be_bytes());
        out.push(subtype);
        out.push(self.family.safi);
    }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod rfc7606_tests;
#[cfg(test)]
mod tests;
