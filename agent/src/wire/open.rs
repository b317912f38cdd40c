//! OPEN messages (RFC 4271 §4.2) and the capabilities they carry (RFC 5492):
//! multiprotocol (RFC 4760), route refresh (RFC 2918) and enhanced route
//! refresh (RFC 7313), extended messages (RFC 8654), graceful restart
//! (RFC 4724, N-bit of RFC 8538), 4-octet AS (RFC 6793) and long-lived
//! graceful restart (RFC 9494). Unknown capabilities are kept as bytes.
//! Extended optional parameters (RFC 9072) are read, and written when needed.

use std::net::Ipv4Addr;

use super::{DecodeError, Reader, subcode};
use crate::config::Family;

/// AS_TRANS (RFC 6793): the 2-octet stand-in for a 4-octet AS.
pub const AS_TRANS: u16 = 23456;

/// An address family as numbered on the wire (AFI, SAFI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    pub afi: u16,
    pub safi: u8,
}

impl AfiSafi {
    pub const IPV4_UNICAST: AfiSafi = AfiSafi { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: AfiSafi = AfiSafi { afi: 2, safi: 1 };

    /// The configured family this is, if the agent carries it.
    pub fn family(self) -> Option<Family> {
        match self {
            Self::IPV4_UNICAST => Some(Family::Ipv4Unicast),
            Self::IPV6_UNICAST => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }
}

impl From<Family> for AfiSafi {
    fn from(f: Family) -> Self {
        match f {
            Family::Ipv4Unicast => Self::IPV4_UNICAST,
            Family::Ipv6Unicast => Self::IPV6_UNICAST,
        }
    }
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for 4-octet ASNs).
    pub my_as: u16,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

/// Capability codes.
pub mod capability_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const LONG_LIVED_GRACEFUL_RESTART: u8 = 71;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol(AfiSafi),
    RouteRefresh,
    EnhancedRouteRefresh,
    ExtendedMessage,
    GracefulRestart(GracefulRestartCap),
    FourOctetAs(u32),
    LongLivedGracefulRestart(Vec<LlgrFamily>),
    Unknown { code: u8, value: Vec<u8> },
}

/// The Graceful Restart capability (RFC 4724 §3, N-bit from RFC 8538).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GracefulRestartCap {
    /// R: the sender has restarted and is within its restart time.
    pub restarting: bool,
    /// N: the sender handles NOTIFICATIONs as graceful restarts (RFC 8538).
    pub notification: bool,
    /// Seconds (12 bits).
    pub restart_time: u16,
    pub families: Vec<GrFamily>,
}

/// A family under Graceful Restart, with its F (forwarding state kept) bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrFamily {
    pub family: AfiSafi,
    pub forwarding: bool,
}

/// A family under Long-Lived Graceful Restart (RFC 9494 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlgrFamily {
    pub family: AfiSafi,
    pub forwarding: bool,
    /// Seconds (24 bits).
    pub stale_time: u32,
}

impl Open {
    /// An OPEN for `asn`, putting AS_TRANS in the 2-octet field when needed.
    /// Add the 4-octet AS capability to `capabilities` yourself.
    pub fn new(
        asn: u32,
        hold_time: u16,
        router_id: Ipv4Addr,
        capabilities: Vec<Capability>,
    ) -> Self {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
        Self { version: 4, my_as, hold_time, router_id, capabilities }
    }

    /// The sender's AS: from the 4-octet AS capability, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or_else(|| u32::from(self.my_as))
    }

    pub fn has(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestartCap> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    pub fn long_lived_graceful_restart(&self) -> Option<&[LlgrFamily]> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::LongLivedGracefulRestart(f) => Some(f.as_slice()),
            _ => None,
        })
    }

    /// Families offered with the multiprotocol capability; plain IPv4 unicast
    /// when the sender offers none (RFC 4760 §8).
    pub fn families(&self) -> Vec<AfiSafi> {
        let mp: Vec<AfiSafi> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if mp.is_empty() { vec![AfiSafi::IPV4_UNICAST] } else { mp }
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let short = || DecodeError::bad_length(body.len() + super::HEADER_LEN);
        let mut r = Reader::new(body);
        let version = r.u8().ok_or_else(short)?;
        if version != 4 {
            return Err(DecodeError::open(
                subcode::UNSUPPORTED_VERSION,
                4u16.to_be_bytes(),
                format!("BGP version {version}; only 4 is spoken"),
            ));
        }
        let my_as = r.u16().ok_or_else(short)?;
        let hold_time = r.u16().ok_or_else(short)?;
        let router_id = Ipv4Addr::from(r.u32().ok_or_else(short)?);
        let mut params_len = usize::from(r.u8().ok_or_else(short)?);
        // RFC 9072: a non-extended length of 255 with parameter type 255 marks
        // the extended format, with 2-octet lengths.
        let extended = params_len == 255 && r.bytes.first() == Some(&255);
        if extended {
            r.u8();
            params_len = usize::from(r.u16().ok_or_else(short)?);
        }
        if params_len != r.bytes.len() {
            return Err(DecodeError::bad_length(body.len() + super::HEADER_LEN));
        }
        let mut capabilities = Vec::new();
        while !r.is_empty() {
            let kind = r.u8().ok_or_else(short)?;
            let len = if extended { r.u16() } else { r.u8().map(u16::from) };
            let value = len.and_then(|l| r.take(usize::from(l))).ok_or_else(|| {
                DecodeError::open(0, [], "an optional parameter runs past the OPEN message")
            })?;
            if kind != 2 {
                return Err(DecodeError::open(
                    subcode::UNSUPPORTED_OPTIONAL_PARAMETER,
                    [],
                    format!("optional parameter type {kind}; only capabilities (2) are known"),
                ));
            }
            decode_capabilities(value, &mut capabilities)?;
        }
        Ok(Self { version, my_as, hold_time, router_id, capabilities })
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.router_id.octets());
        let mut caps = Vec::new();
        for c in &self.capabilities {
            c.encode(&mut caps);
        }
        // One capabilities parameter; RFC 9072 format only when it must be.
        if caps.len() + 2 <= 255 {
            out.push((caps.len() + 2) as u8);
            out.push(2);
            out.push(caps.len() as u8);
        } else {
            out.extend_from_slice(&[255, 255]);
            out.extend_from_slice(&((caps.len() + 3) as u16).to_be_bytes());
            out.push(2);
            out.extend_from_slice(&(caps.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&caps);
    }
}

fn decode_capabilities(bytes: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let bad = |what: &str| DecodeError::open(0, [], format!("malformed capability: {what}"));
        let code = r.u8().ok_or_else(|| bad("truncated"))?;
        let len = r.u8().ok_or_else(|| bad("truncated"))?;
        let value = r.take(usize::from(len)).ok_or_else(|| bad("value runs past its parameter"))?;
        out.push(Capability::decode(code, value).map_err(|what| {
            DecodeError::open(0, [], format!("malformed capability {code}: {what}"))
        })?);
    }
    Ok(())
}

impl Capability {
    pub fn code(&self) -> u8 {
        use capability_code::*;
        match self {
            Capability::Multiprotocol(_) => MULTIPROTOCOL,
            Capability::RouteRefresh => ROUTE_REFRESH,
            Capability::EnhancedRouteRefresh => ENHANCED_ROUTE_REFRESH,
            Capability::ExtendedMessage => EXTENDED_MESSAGE,
            Capability::GracefulRestart(_) => GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => FOUR_OCTET_AS,
            Capability::LongLivedGracefulRestart(_) => LONG_LIVED_GRACEFUL_RESTART,
            Capability::Unknown { code, .. } => *code,
        }
    }

    fn decode(code: u8, value: &[u8]) -> Result<Capability, &'static str> {
        use capability_code::*;
        let mut r = Reader::new(value);
        let cap = match code {
            MULTIPROTOCOL => {
                let [a, b, _reserved, safi] = value else { return Err("length is not 4") };
                Capability::Multiprotocol(AfiSafi {
                    afi: u16::from_be_bytes([*a, *b]),
                    safi: *safi,
                })
            }
            ROUTE_REFRESH if value.is_empty() => Capability::RouteRefresh,
            ENHANCED_ROUTE_REFRESH if value.is_empty() => Capability::EnhancedRouteRefresh,
            EXTENDED_MESSAGE if value.is_empty() => Capability::ExtendedMessage,
            ROUTE_REFRESH | ENHANCED_ROUTE_REFRESH | EXTENDED_MESSAGE => {
                return Err("length is not 0");
            }
            FOUR_OCTET_AS => {
                let asn = r.u32().filter(|_| r.is_empty()).ok_or("length is not 4")?;
                Capability::FourOctetAs(asn)
            }
            GRACEFUL_RESTART => {
                let head = r.u16().ok_or("shorter than 2 bytes")?;
                if !r.bytes.len().is_multiple_of(4) {
                    return Err("family list is not a multiple of 4 bytes");
                }
                let mut families = Vec::new();
                while let (Some(afi), Some(safi), Some(flags)) = (r.u16(), r.u8(), r.u8()) {
                    families.push(GrFamily {
                        family: AfiSafi { afi, safi },
                        forwarding: flags & 0x80 != 0,
                    });
                }
                Capability::GracefulRestart(GracefulRestartCap {
                    restarting: head & 0x8000 != 0,
                    notification: head & 0x4000 != 0,
                    restart_time: head & 0x0fff,
                    families,
                })
            }
            LONG_LIVED_GRACEFUL_RESTART => {
                if !value.len().is_multiple_of(7) {
                    return Err("family list is not a multiple of 7 bytes");
                }
                let mut families = Vec::new();
                while let (Some(afi), Some(safi), Some(flags), Some(t)) =
                    (r.u16(), r.u8(), r.u8(), r.take(3))
                {
                    families.push(LlgrFamily {
                        family: AfiSafi { afi, safi },
                        forwarding: flags & 0x80 != 0,
                        stale_time: u32::from_be_bytes([0, t[0], t[1], t[2]]),
                    });
                }
                Capability::LongLivedGracefulRestart(families)
            }
            _ => Capability::Unknown { code, value: value.to_vec() },
        };
        Ok(cap)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[self.code(), 0]);
        match self {
            Capability::Multiprotocol(f) => {
                out.extend_from_slice(&f.afi.to_be_bytes());
                out.extend_from_slice(&[0, f.safi]);
            }
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => {}
            Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::GracefulRestart(gr) => {
                let head = (u16::from(gr.restarting) << 15)
                    | (u16::from(gr.notification) << 14)
                    | (gr.restart_time & 0x0fff);
                out.extend_from_slice(&head.to_be_bytes());
                for f in &gr.families {
                    out.extend_from_slice(&f.family.afi.to_be_bytes());
                    out.extend_from_slice(&[f.family.safi, if f.forwarding { 0x80 } else { 0 }]);
                }
            }
            Capability::LongLivedGracefulRestart(families) => {
                for f in families {
                    out.extend_from_slice(&f.family.afi.to_be_bytes());
                    out.extend_from_slice(&[f.family.safi, if f.forwarding { 0x80 } else { 0 }]);
                    out.extend_from_slice(&(f.stale_time & 0xff_ffff).to_be_bytes()[1..]);
                }
            }
            Capability::Unknown { value, .. } => out.extend_from_slice(value),
        }
        out[start + 1] = (out.len() - start - 2) as u8;
    }
}
