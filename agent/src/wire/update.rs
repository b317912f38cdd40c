//! UPDATE messages (RFC 4271 §4.3) with multiprotocol reachability (RFC 4760),
//! End-of-RIB markers (RFC 4724 §2), RFC 7606 error handling, and packing of
//! many prefixes per message.
//!
//! ```text
//!  body = withdrawn-len | withdrawn (IPv4) | attrs-len | attrs | NLRI (IPv4)
//!                                             └─ MP_REACH_NLRI / MP_UNREACH_NLRI
//!                                                carry IPv6 (and any AFI/SAFI)
//! ```

use std::net::{IpAddr, Ipv6Addr};

use super::attrs::{
    AttrDecoder, EXTENDED_LENGTH, OPTIONAL, TRANSITIVE, attr_code, attr_length_bytes, put_attr,
};
use super::{
    AfiSafi, DecodeError, Malformed, MalformedAction, PathAttrs, Reader, WireContext, begin,
    finish, message_type,
};
use crate::route::Prefix;

/// An UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// IPv4 unicast prefixes withdrawn (the classic field).
    pub withdrawn: Vec<Prefix>,
    pub attrs: PathAttrs,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// IPv4 unicast prefixes announced (the classic field).
    pub nlri: Vec<Prefix>,
}

/// MP_REACH_NLRI: prefixes of one family and their next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: AfiSafi,
    pub next_hop: IpAddr,
    /// An IPv6 next hop may come with a link-local one (RFC 2545).
    pub link_local: Option<Ipv6Addr>,
    pub nlri: Vec<Prefix>,
}

/// MP_UNREACH_NLRI: prefixes of one family withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: AfiSafi,
    pub withdrawn: Vec<Prefix>,
}

impl Update {
    /// The End-of-RIB marker for a family (RFC 4724 §2).
    pub fn end_of_rib(family: AfiSafi) -> Update {
        if family == AfiSafi::IPV4_UNICAST {
            Update::default()
        } else {
            Update {
                mp_unreach: Some(MpUnreach { family, withdrawn: vec![] }),
                ..Default::default()
            }
        }
    }

    /// The family this UPDATE marks the End-of-RIB of, if it is such a marker.
    pub fn as_end_of_rib(&self) -> Option<AfiSafi> {
        let bare = self.withdrawn.is_empty()
            && self.nlri.is_empty()
            && self.mp_reach.is_none()
            && self.attrs == PathAttrs::default();
        match &self.mp_unreach {
            _ if !bare => None,
            None => Some(AfiSafi::IPV4_UNICAST),
            Some(u) if u.withdrawn.is_empty() => Some(u.family),
            Some(_) => None,
        }
    }

    /// Every prefix announced, of every family.
    pub fn announced(&self) -> impl Iterator<Item = &Prefix> {
        self.nlri.iter().chain(self.mp_reach.iter().flat_map(|r| r.nlri.iter()))
    }

    /// Every prefix withdrawn, of every family.
    pub fn withdrawals(&self) -> impl Iterator<Item = &Prefix> {
        self.withdrawn.iter().chain(self.mp_unreach.iter().flat_map(|u| u.withdrawn.iter()))
    }

    pub(crate) fn decode(
        body: &[u8],
        ctx: &WireContext,
    ) -> Result<(Update, Vec<Malformed>), DecodeError> {
        let list_error = |detail: &str| {
            DecodeError::update(super::subcode::MALFORMED_ATTRIBUTE_LIST, [], detail.to_string())
        };
        let mut r = Reader::new(body);
        let withdrawn_len = r.u16().ok_or_else(|| list_error("no withdrawn routes length"))?;
        let withdrawn_bytes = r
            .take(usize::from(withdrawn_len))
            .ok_or_else(|| list_error("withdrawn routes run past the message"))?;
        let attrs_len = r.u16().ok_or_else(|| list_error("no path attribute length"))?;
        let attr_bytes = r
            .take(usize::from(attrs_len))
            .ok_or_else(|| list_error("path attributes run past the message"))?;
        let nlri_bytes = r.bytes;

        let mut update = Update::default();
        read_prefixes(withdrawn_bytes, true, &mut update.withdrawn)
            .map_err(|e| network_error("withdrawn routes", &e))?;
        read_prefixes(nlri_bytes, true, &mut update.nlri).map_err(|e| network_error("NLRI", &e))?;

        let mut malformed = Vec::new();
        let mut decoder = AttrDecoder::default();
        let mut r = Reader::new(attr_bytes);
        while !r.is_empty() {
            let header = (r.u8(), r.u8());
            let (Some(flags), Some(code)) = header else {
                malformed.push(overrun(&update, None, "fewer than 3 bytes left for an attribute")?);
                break;
            };
            let len = if flags & EXTENDED_LENGTH != 0 { r.u16() } else { r.u8().map(u16::from) };
            let Some(value) = len.and_then(|l| r.take(usize::from(l))) else {
                let reason = format!("attribute {code} runs past the attribute list");
                malformed.push(overrun(&update, Some(code), &reason)?);
                break;
            };
            let first = decoder.first_sighting(code);
            match code {
                attr_code::MP_REACH_NLRI | attr_code::MP_UNREACH_NLRI if !first => {
                    return Err(list_error(&format!("attribute {code} appears twice")));
                }
                attr_code::MP_REACH_NLRI => update.mp_reach = decode_mp_reach(flags, value)?,
                attr_code::MP_UNREACH_NLRI => update.mp_unreach = decode_mp_unreach(flags, value)?,
                _ if !first => {} // RFC 7606 §3(g): only the first one counts
                _ => decoder.decode(flags, code, value, ctx, &mut malformed)?,
            }
        }
        update.attrs = decoder.finish();

        // RFC 7606 §3(d): a missing well-known mandatory attribute withdraws.
        if update.announced().next().is_some() {
            let a = &update.attrs;
            let mut missing = vec![];
            if a.origin.is_none() {
                missing.push((attr_code::ORIGIN, "ORIGIN"));
            }
            if a.as_path.is_none() {
                missing.push((attr_code::AS_PATH, "AS_PATH"));
            }
            if !update.nlri.is_empty() && a.next_hop.is_none() {
                missing.push((attr_code::NEXT_HOP, "NEXT_HOP"));
            }
            for (attr, name) in missing {
                malformed.push(Malformed {
                    attr,
                    action: MalformedAction::TreatAsWithdraw,
                    reason: format!("missing well-known attribute {name}"),
                });
            }
        }
        Ok((update, malformed))
    }

    pub(crate) fn encode_body(&self, ctx: &WireContext, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        for p in &self.withdrawn {
            put_prefix(out, p);
        }
        let len = (out.len() - at - 2) as u16;
        out[at..at + 2].copy_from_slice(&len.to_be_bytes());

        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        if let Some(reach) = &self.mp_reach {
            put_mp_reach(out, reach.family, reach.next_hop, reach.link_local, &reach.nlri);
        }
        if let Some(unreach) = &self.mp_unreach {
            put_mp_unreach(out, unreach.family, &unreach.withdrawn);
        }
        self.attrs.encode(ctx, out);
        let len = (out.len() - at - 2) as u16;
        out[at..at + 2].copy_from_slice(&len.to_be_bytes());

        for p in &self.nlri {
            put_prefix(out, p);
        }
    }
}

/// RFC 7606 §4: an attribute list that cannot be parsed to its end. The
/// total attribute length still finds the IPv4 NLRI, so what it announces is
/// treated as withdrawn, as long as every prefix of the UPDATE is known: an
/// MP_REACH/MP_UNREACH_NLRI that overruns, or that may lie in the unparsed
/// rest, cannot be withdrawn, and the session is reset instead. Senders put
/// the MP attributes first (RFC 7606 §5.1), so an UPDATE with IPv4 NLRI and
/// no MP attribute before the overrun carries none after it either.
fn overrun(update: &Update, code: Option<u8>, reason: &str) -> Result<Malformed, DecodeError> {
    let mp = |c| c == attr_code::MP_REACH_NLRI || c == attr_code::MP_UNREACH_NLRI;
    let mp_seen = update.mp_reach.is_some() || update.mp_unreach.is_some();
    if code.is_some_and(mp) || (!mp_seen && update.nlri.is_empty() && update.withdrawn.is_empty()) {
        let detail = format!("{reason}: the prefixes it carries cannot be withdrawn");
        return Err(DecodeError::update(super::subcode::MALFORMED_ATTRIBUTE_LIST, [], detail));
    }
    Ok(Malformed { attr: 0, action: MalformedAction::TreatAsWithdraw, reason: reason.to_string() })
}

/// RFC 7606 §3(c), §7.11: MP_REACH/MP_UNREACH_NLRI are optional
/// non-transitive; other flags make the attribute malformed, and its
/// prefixes cannot be trusted to be withdrawn: the session is reset.
fn check_mp_flags(flags: u8, code: u8, value: &[u8]) -> Result<(), DecodeError> {
    if flags & (OPTIONAL | TRANSITIVE) == OPTIONAL {
        return Ok(());
    }
    let mut data = vec![flags, code];
    data.extend_from_slice(&attr_length_bytes(flags, value.len()));
    data.extend_from_slice(value);
    let name = if code == attr_code::MP_REACH_NLRI { "MP_REACH_NLRI" } else { "MP_UNREACH_NLRI" };
    Err(DecodeError::update(
        super::subcode::ATTRIBUTE_FLAGS_ERROR,
        data,
        format!("{name} has flags {flags:#04x}, not optional non-transitive"),
    ))
}

fn network_error(field: &str, reason: &str) -> DecodeError {
    DecodeError::update(super::subcode::INVALID_NETWORK_FIELD, [], format!("{field}: {reason}"))
}

fn optional_attribute_error(flags: u8, code: u8, value: &[u8], detail: String) -> DecodeError {
    let mut data = vec![flags, code];
    data.extend_from_slice(&attr_length_bytes(flags, value.len()));
    data.extend_from_slice(value);
    DecodeError::update(super::subcode::OPTIONAL_ATTRIBUTE_ERROR, data, detail)
}

/// RFC 7606 §7.11: a malformed MP_REACH_NLRI resets the session, since its
/// prefixes cannot be found to be withdrawn.
fn decode_mp_reach(flags: u8, value: &[u8]) -> Result<Option<MpReach>, DecodeError> {
    check_mp_flags(flags, attr_code::MP_REACH_NLRI, value)?;
    let bad =
        |what: &str| optional_attribute_error(flags, 14, value, format!("MP_REACH_NLRI: {what}"));
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(bad("shorter than its header"));
    };
    let family = AfiSafi { afi, safi };
    let nh = r.take(usize::from(nh_len)).ok_or_else(|| bad("next hop runs past the attribute"))?;
    r.u8().ok_or_else(|| bad("no reserved byte"))?;
    let v4 = match family {
        AfiSafi::IPV4_UNICAST => true,
        AfiSafi::IPV6_UNICAST => false,
        // A family that was not negotiated: nothing here is ours to use.
        _ => return Ok(None),
    };
    // RFC 7606 §7.11: a next hop length the family does not allow. IPv4
    // routes take a 4-byte next hop: an IPv6 one needs the Extended Next Hop
    // capability (RFC 8950), which we do not offer, so no route reaches the
    // Adj-RIB-In that a handoff could not carry.
    let (next_hop, link_local) = match (v4, nh.len()) {
        (true, 4) => (IpAddr::from(<[u8; 4]>::try_from(nh).expect("4 bytes")), None),
        (false, 16) => (IpAddr::from(<[u8; 16]>::try_from(nh).expect("16 bytes")), None),
        (false, 32) => (
            IpAddr::from(<[u8; 16]>::try_from(&nh[..16]).expect("16 bytes")),
            Some(Ipv6Addr::from(<[u8; 16]>::try_from(&nh[16..]).expect("16 bytes"))),
        ),
        (true, n) => {
            return Err(bad(&format!(
                "IPv4 unicast next hop of {n} bytes (4 expected; IPv6 next hops for IPv4 routes \
                 need the Extended Next Hop capability, not negotiated)"
            )));
        }
        (false, n) => {
            return Err(bad(&format!("IPv6 unicast next hop of {n} bytes (16 or 32 expected)")));
        }
    };
    let mut nlri = Vec::new();
    read_prefixes(r.bytes, v4, &mut nlri).map_err(|e| bad(&e))?;
    Ok(Some(MpReach { family, next_hop, link_local, nlri }))
}

fn decode_mp_unreach(flags: u8, value: &[u8]) -> Result<Option<MpUnreach>, DecodeError> {
    check_mp_flags(flags, attr_code::MP_UNREACH_NLRI, value)?;
    let bad =
        |what: &str| optional_attribute_error(flags, 15, value, format!("MP_UNREACH_NLRI: {what}"));
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(bad("shorter than its header"));
    };
    let family = AfiSafi { afi, safi };
    let v4 = match family {
        AfiSafi::IPV4_UNICAST => true,
        AfiSafi::IPV6_UNICAST => false,
        _ => return Ok(None),
    };
    let mut withdrawn = Vec::new();
    read_prefixes(r.bytes, v4, &mut withdrawn).map_err(|e| bad(&e))?;
    Ok(Some(MpUnreach { family, withdrawn }))
}

/// Reads length-prefixed prefixes (RFC 4271 §4.3) of one family.
pub(crate) fn read_prefixes(
    mut bytes: &[u8],
    v4: bool,
    out: &mut Vec<Prefix>,
) -> Result<(), String> {
    let width = if v4 { 32 } else { 128 };
    while let [len, rest @ ..] = bytes {
        let len = *len;
        if len > width {
            return Err(format!("prefix length {len} is longer than {width} bits"));
        }
        let n = usize::from(len).div_ceil(8);
        let Some(addr) = rest.get(..n) else {
            return Err(format!("a /{len} prefix needs {n} bytes, {} are left", rest.len()));
        };
        let ip = if v4 {
            let mut b = [0u8; 4];
            b[..n].copy_from_slice(addr);
            IpAddr::from(b)
        } else {
            let mut b = [0u8; 16];
            b[..n].copy_from_slice(addr);
            IpAddr::from(b)
        };
        out.push(Prefix::masked(ip, len).expect("length checked against the width"));
        bytes = &rest[n..];
    }
    Ok(())
}

/// The bytes a prefix takes in an NLRI field: its length octet and the
/// octets its length covers.
pub fn prefix_wire_len(p: &Prefix) -> usize {
    1 + usize::from(p.len()).div_ceil(8)
}

pub(crate) fn put_prefix(out: &mut Vec<u8>, p: &Prefix) {
    let n = usize::from(p.len()).div_ceil(8);
    out.push(p.len());
    match p.addr() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
    }
}

fn put_mp_reach(
    out: &mut Vec<u8>,
    family: AfiSafi,
    next_hop: IpAddr,
    link_local: Option<Ipv6Addr>,
    nlri: &[Prefix],
) {
    put_attr(out, OPTIONAL, attr_code::MP_REACH_NLRI, |o| {
        o.extend_from_slice(&family.afi.to_be_bytes());
        o.push(family.safi);
        match (next_hop, link_local) {
            (IpAddr::V4(a), _) => {
                o.push(4);
                o.extend_from_slice(&a.octets());
            }
            (IpAddr::V6(a), None) => {
                o.push(16);
                o.extend_from_slice(&a.octets());
            }
            (IpAddr::V6(a), Some(ll)) => {
                o.push(32);
                o.extend_from_slice(&a.octets());
                o.extend_from_slice(&ll.octets());
            }
        }
        o.push(0);
        for p in nlri {
            put_prefix(o, p);
        }
    });
}

fn put_mp_unreach(out: &mut Vec<u8>, family: AfiSafi, withdrawn: &[Prefix]) {
    put_attr(out, OPTIONAL, attr_code::MP_UNREACH_NLRI, |o| {
        o.extend_from_slice(&family.afi.to_be_bytes());
        o.push(family.safi);
        for p in withdrawn {
            put_prefix(o, p);
        }
    });
}

/// Writes framed UPDATEs that carry many prefixes each, as many as fit in the
/// session's maximum message size.
#[derive(Debug, Clone, Copy)]
pub struct UpdateBuilder {
    pub ctx: WireContext,
}

/// Fixed bytes of an UPDATE: header, withdrawn length, attribute length.
const UPDATE_OVERHEAD: usize = super::HEADER_LEN + 4;
/// MP_REACH_NLRI header with extended length, AFI, SAFI, next-hop length, reserved.
const MP_REACH_OVERHEAD: usize = 4 + 3 + 1 + 1;
const MP_UNREACH_OVERHEAD: usize = 4 + 3;

impl UpdateBuilder {
    pub fn new(ctx: WireContext) -> Self {
        Self { ctx }
    }

    /// The attributes as they go into an UPDATE of `prefixes`' family, and
    /// the bytes of a message before its first prefix.
    fn announce_head(
        &self,
        attrs: &PathAttrs,
        next_hop: IpAddr,
        classic: bool,
    ) -> (Vec<u8>, usize) {
        let mut encoded_attrs = Vec::with_capacity(128);
        let mut attrs = attrs.clone();
        if classic {
            attrs.next_hop = match next_hop {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => attrs.next_hop,
            };
        } else {
            attrs.next_hop = None;
        }
        attrs.encode(&self.ctx, &mut encoded_attrs);
        let nh_len = if next_hop.is_ipv4() { 4 } else { 16 };
        let fixed = UPDATE_OVERHEAD
            + encoded_attrs.len()
            + if classic { 0 } else { MP_REACH_OVERHEAD + nh_len };
        (encoded_attrs, fixed)
    }

    /// The size of an UPDATE announcing `prefix` alone with `attrs`; an
    /// announcement that cannot be sent at all is larger than the session's
    /// message size (4096 bytes without extended messages, RFC 8654).
    pub fn single_len(&self, attrs: &PathAttrs, next_hop: IpAddr, prefix: &Prefix) -> usize {
        self.head_len(attrs, next_hop, prefix.is_ipv4()) + prefix_wire_len(prefix)
    }

    /// [`Self::single_len`] without the prefix's own bytes, which
    /// [`prefix_wire_len`] gives.
    pub fn head_len(&self, attrs: &PathAttrs, next_hop: IpAddr, ipv4: bool) -> usize {
        self.announce_head(attrs, next_hop, ipv4).1
    }

    /// Appends UPDATEs announcing `prefixes` (one family) with `attrs`. IPv4
    /// goes in the classic NLRI field with `attrs.next_hop`; other families go
    /// in MP_REACH_NLRI with `next_hop`. Splits across as many UPDATEs as the
    /// session's message size needs, and never writes one larger: what
    /// cannot fit even alone (see [`Self::single_len`]) is not written.
    /// Returns how many messages were written.
    pub fn announce(
        &self,
        attrs: &PathAttrs,
        next_hop: IpAddr,
        prefixes: &[Prefix],
        out: &mut Vec<u8>,
    ) -> usize {
        let Some(first) = prefixes.first() else { return 0 };
        let max = self.ctx.max_message_len();
        let classic = first.is_ipv4();
        let (encoded_attrs, fixed) = self.announce_head(attrs, next_hop, classic);
        let family = if classic { AfiSafi::IPV4_UNICAST } else { AfiSafi::IPV6_UNICAST };
        let mut messages = 0;
        let mut rest = prefixes;
        while !rest.is_empty() {
            let n = fitting(rest, max.saturating_sub(fixed));
            if n == 0 {
                break; // the attributes leave no room for a prefix
            }
            let (chunk, tail) = rest.split_at(n);
            let start = begin(out);
            out.extend_from_slice(&[0, 0]); // no withdrawn routes
            let at = out.len();
            out.extend_from_slice(&[0, 0]);
            if !classic {
                put_mp_reach(out, family, next_hop, None, chunk);
            }
            out.extend_from_slice(&encoded_attrs);
            let attrs_len = (out.len() - at - 2) as u16;
            out[at..at + 2].copy_from_slice(&attrs_len.to_be_bytes());
            if classic {
                for p in chunk {
                    put_prefix(out, p);
                }
            }
            finish(out, start, message_type::UPDATE);
            messages += 1;
            rest = tail;
        }
        messages
    }

    /// Appends UPDATEs withdrawing `prefixes` (one family). Returns how many
    /// messages were written.
    pub fn withdraw(&self, prefixes: &[Prefix], out: &mut Vec<u8>) -> usize {
        let Some(first) = prefixes.first() else { return 0 };
        let max = self.ctx.max_message_len();
        let classic = first.is_ipv4();
        let mut messages = 0;
        let mut rest = prefixes;
        while !rest.is_empty() {
            let fixed = UPDATE_OVERHEAD + if classic { 0 } else { MP_UNREACH_OVERHEAD };
            // A withdrawal's fixed part is tens of bytes: a prefix always fits.
            let n = fitting(rest, max - fixed).max(1);
            let (chunk, tail) = rest.split_at(n);
            let start = begin(out);
            if classic {
                let len: usize = chunk.iter().map(prefix_wire_len).sum();
                out.extend_from_slice(&(len as u16).to_be_bytes());
                for p in chunk {
                    put_prefix(out, p);
                }
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&[0, 0]);
                let at = out.len();
                out.extend_from_slice(&[0, 0]);
                put_mp_unreach(out, AfiSafi::IPV6_UNICAST, chunk);
                let attrs_len = (out.len() - at - 2) as u16;
                out[at..at + 2].copy_from_slice(&attrs_len.to_be_bytes());
            }
            finish(out, start, message_type::UPDATE);
            messages += 1;
            rest = tail;
        }
        messages
    }
}

/// How many of `prefixes` fit in `budget` bytes (0 when not even one does).
fn fitting(prefixes: &[Prefix], budget: usize) -> usize {
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        used += prefix_wire_len(p);
        if used > budget {
            return i;
        }
    }
    prefixes.len()
}
