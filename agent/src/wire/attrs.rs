//! Path attributes (RFC 4271 §5, RFC 1997, RFC 6793, RFC 8092) other than the
//! multiprotocol ones, which [`super::update`] handles with the NLRI.
//!
//! Decoding applies RFC 7606 per attribute: a malformed ORIGIN, AS_PATH,
//! NEXT_HOP, MED, LOCAL_PREF or (large) communities turns the UPDATE into a
//! withdrawal; a malformed ATOMIC_AGGREGATE, AGGREGATOR, AS4_PATH or
//! AS4_AGGREGATOR is dropped; an unknown well-known attribute resets the
//! session. Unknown optional transitive attributes are kept and passed on with
//! the Partial bit set (RFC 4271 §5).

use std::net::Ipv4Addr;

use super::{DecodeError, Malformed, MalformedAction, Reader, WireContext, subcode};
use crate::route::{Community, LargeCommunity};

/// Attribute type codes.
pub mod attr_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

pub(crate) const OPTIONAL: u8 = 0x80;
pub(crate) const TRANSITIVE: u8 = 0x40;
pub(crate) const PARTIAL: u8 = 0x20;
pub(crate) const EXTENDED_LENGTH: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    Set(Vec<u32>),
    Sequence(Vec<u32>),
    ConfedSequence(Vec<u32>),
    ConfedSet(Vec<u32>),
}

impl AsSegment {
    fn kind(&self) -> u8 {
        match self {
            AsSegment::Set(_) => 1,
            AsSegment::Sequence(_) => 2,
            AsSegment::ConfedSequence(_) => 3,
            AsSegment::ConfedSet(_) => 4,
        }
    }

    pub fn asns(&self) -> &[u32] {
        match self {
            AsSegment::Set(a)
            | AsSegment::Sequence(a)
            | AsSegment::ConfedSequence(a)
            | AsSegment::ConfedSet(a) => a,
        }
    }

    /// Path length contribution for best-path selection (RFC 4271 §9.1.2.2).
    fn length(&self) -> usize {
        match self {
            AsSegment::Sequence(a) => a.len(),
            AsSegment::Set(_) => 1,
            AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => 0,
        }
    }
}

/// An AS_PATH, always held with 4-octet AS numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath(pub Vec<AsSegment>);

impl AsPath {
    /// A path of one AS_SEQUENCE.
    pub fn sequence(asns: impl Into<Vec<u32>>) -> Self {
        let asns = asns.into();
        if asns.is_empty() { AsPath::default() } else { AsPath(vec![AsSegment::Sequence(asns)]) }
    }

    pub fn length(&self) -> usize {
        self.0.iter().map(AsSegment::length).sum()
    }

    /// The AS a route was learnt from: the first AS of a leading AS_SEQUENCE.
    pub fn first(&self) -> Option<u32> {
        match self.0.first() {
            Some(AsSegment::Sequence(a)) => a.first().copied(),
            _ => None,
        }
    }

    /// The path with `asn` prepended (RFC 4271 §5.1.2).
    pub fn prepend(&self, asn: u32) -> AsPath {
        let mut segments = self.0.clone();
        match segments.first_mut() {
            Some(AsSegment::Sequence(a)) if a.len() < 255 => a.insert(0, asn),
            _ => segments.insert(0, AsSegment::Sequence(vec![asn])),
        }
        AsPath(segments)
    }

    fn decode(value: &[u8], four_octet: bool) -> Option<AsPath> {
        let width = if four_octet { 4 } else { 2 };
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = r.u8()?;
            let count = usize::from(r.u8()?);
            if count == 0 {
                return None;
            }
            let raw = r.take(count * width)?;
            let asns: Vec<u32> = raw
                .chunks_exact(width)
                .map(|c| match c {
                    [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                    _ => unreachable!("chunks of the width"),
                })
                .collect();
            segments.push(match kind {
                1 => AsSegment::Set(asns),
                2 => AsSegment::Sequence(asns),
                3 => AsSegment::ConfedSequence(asns),
                4 => AsSegment::ConfedSet(asns),
                _ => return None,
            });
        }
        Some(AsPath(segments))
    }

    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for segment in &self.0 {
            for chunk in segment.asns().chunks(255) {
                out.push(segment.kind());
                out.push(chunk.len() as u8);
                for asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        let two = u16::try_from(*asn).unwrap_or(super::open::AS_TRANS);
                        out.extend_from_slice(&two.to_be_bytes());
                    }
                }
            }
        }
    }

    fn needs_as4_path(&self) -> bool {
        self.0.iter().any(|s| s.asns().iter().any(|a| *a > 0xffff))
    }

    /// RFC 6793 §4.2.3: rebuild the true path from AS_PATH and AS4_PATH.
    fn merge_as4(self, as4: AsPath) -> AsPath {
        let (len, len4) = (self.length(), as4.length());
        if len4 > len {
            return self;
        }
        let mut keep = len - len4;
        let mut merged = Vec::new();
        for segment in self.0 {
            if keep == 0 {
                break;
            }
            match segment {
                AsSegment::Sequence(mut a) if a.len() > keep => {
                    a.truncate(keep);
                    keep = 0;
                    merged.push(AsSegment::Sequence(a));
                }
                s => {
                    keep = keep.saturating_sub(s.length());
                    merged.push(s);
                }
            }
        }
        merged.extend(as4.0);
        AsPath(merged)
    }
}

/// An attribute kept as bytes: unknown optional transitive ones, passed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttr {
    pub flags: u8,
    pub code: u8,
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE, minus MP_REACH_NLRI and MP_UNREACH_NLRI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PathAttrs {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(u32, Ipv4Addr)>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    pub other: Vec<RawAttr>,
}

/// The (optional, transitive) bits each known attribute must carry.
fn expected_flags(code: u8) -> Option<u8> {
    use attr_code::*;
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => TRANSITIVE,
        MED | MP_REACH_NLRI | MP_UNREACH_NLRI => OPTIONAL,
        AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITIES => {
            OPTIONAL | TRANSITIVE
        }
        _ => return None,
    })
}

/// The attribute's flags against what its type requires. Err: an
/// unrecognized well-known attribute (the session ends); Some: a complaint
/// that makes the attribute malformed (RFC 7606 §3 c).
fn check_flags(flags: u8, code: u8, value: &[u8]) -> Result<Option<String>, DecodeError> {
    match expected_flags(code) {
        Some(expected) if flags & (OPTIONAL | TRANSITIVE) != expected => {
            Ok(Some(format!("attribute {code} has flags {flags:#04x}")))
        }
        None if flags & OPTIONAL == 0 => {
            let mut data = vec![flags, code];
            data.extend_from_slice(&attr_length_bytes(flags, value.len()));
            data.extend_from_slice(value);
            Err(DecodeError::update(
                subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                data,
                format!("unrecognized well-known attribute {code}"),
            ))
        }
        _ => Ok(None),
    }
}

/// Attributes whose malformation only drops the attribute (RFC 7606 §7, RFC 6793 §6).
fn discardable(code: u8) -> bool {
    use attr_code::*;
    matches!(code, ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR)
}

/// State of one UPDATE's attribute decoding, carried across attributes.
#[derive(Debug, Default)]
pub(crate) struct AttrDecoder {
    pub attrs: PathAttrs,
    as4_path: Option<AsPath>,
    as4_aggregator: Option<(u32, Ipv4Addr)>,
    seen: [u64; 4],
}

impl AttrDecoder {
    /// True the first time `code` is seen; RFC 7606 §3(g) keeps only the first.
    pub fn first_sighting(&mut self, code: u8) -> bool {
        let (word, bit) = (usize::from(code / 64), code % 64);
        let first = self.seen[word] & (1 << bit) == 0;
        self.seen[word] |= 1 << bit;
        first
    }

    /// Decodes one non-MP attribute into the set. A well-formed UPDATE
    /// with a bad attribute is not an error: the attribute is noted in
    /// `malformed` with the RFC 7606 action it calls for.
    pub fn decode(
        &mut self,
        flags: u8,
        code: u8,
        value: &[u8],
        ctx: &WireContext,
        malformed: &mut Vec<Malformed>,
    ) -> Result<(), DecodeError> {
        let complaint = match check_flags(flags, code, value)? {
            Some(complaint) => Some(complaint),
            None => self.take(flags, code, value, ctx).err(),
        };
        if let Some(reason) = complaint {
            let action = if discardable(code) {
                MalformedAction::AttributeDiscard
            } else {
                MalformedAction::TreatAsWithdraw
            };
            malformed.push(Malformed { attr: code, action, reason });
        }
        Ok(())
    }

    /// Takes one attribute's value; Err says what is wrong with it.
    fn take(&mut self, flags: u8, code: u8, value: &[u8], ctx: &WireContext) -> Result<(), String> {
        use attr_code::*;
        let a = &mut self.attrs;
        let u32_of = |v: &[u8]| <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes);
        let bytes = |name: &str| format!("{name} of {} bytes", value.len());
        match code {
            ORIGIN => match value {
                [0] => a.origin = Some(Origin::Igp),
                [1] => a.origin = Some(Origin::Egp),
                [2] => a.origin = Some(Origin::Incomplete),
                _ => return Err(format!("ORIGIN {value:?} is not 0, 1 or 2")),
            },
            AS_PATH => {
                let path = AsPath::decode(value, ctx.four_octet_as).ok_or("malformed AS_PATH")?;
                a.as_path = Some(path);
            }
            NEXT_HOP => {
                a.next_hop = Some(Ipv4Addr::from(u32_of(value).ok_or_else(|| bytes("NEXT_HOP"))?))
            }
            MED => a.med = Some(u32_of(value).ok_or_else(|| bytes("MULTI_EXIT_DISC"))?),
            // RFC 7606 §7.5: LOCAL_PREF from an external peer is discarded.
            LOCAL_PREF if ctx.ebgp => {}
            LOCAL_PREF => a.local_pref = Some(u32_of(value).ok_or_else(|| bytes("LOCAL_PREF"))?),
            ATOMIC_AGGREGATE if value.is_empty() => a.atomic_aggregate = true,
            ATOMIC_AGGREGATE => return Err("ATOMIC_AGGREGATE with a value".into()),
            AGGREGATOR => {
                let agg = decode_aggregator(value, ctx.four_octet_as)
                    .ok_or_else(|| bytes("AGGREGATOR"))?;
                a.aggregator = Some(agg);
            }
            COMMUNITIES if !value.is_empty() && value.len().is_multiple_of(4) => {
                a.communities = value
                    .chunks_exact(4)
                    .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect();
            }
            COMMUNITIES => return Err(bytes("COMMUNITIES")),
            LARGE_COMMUNITIES if !value.is_empty() && value.len().is_multiple_of(12) => {
                a.large_communities = value
                    .chunks_exact(12)
                    .map(|c| {
                        let n = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                        LargeCommunity(n(0), n(4), n(8))
                    })
                    .collect();
            }
            LARGE_COMMUNITIES => return Err(bytes("LARGE_COMMUNITY")),
            // RFC 6793 §4.2.2: only meaningful from a 2-octet speaker.
            AS4_PATH if ctx.four_octet_as => {}
            AS4_PATH => {
                self.as4_path = Some(AsPath::decode(value, true).ok_or("malformed AS4_PATH")?)
            }
            AS4_AGGREGATOR if ctx.four_octet_as => {}
            AS4_AGGREGATOR => {
                let agg = decode_aggregator(value, true).ok_or_else(|| bytes("AS4_AGGREGATOR"))?;
                self.as4_aggregator = Some(agg);
            }
            // Unknown optional: transitive ones go on with Partial set,
            // non-transitive ones are dropped quietly (RFC 4271 §9).
            _ if flags & TRANSITIVE != 0 => a.other.push(RawAttr {
                flags: (flags | PARTIAL) & !EXTENDED_LENGTH,
                code,
                value: value.to_vec(),
            }),
            _ => {}
        }
        Ok(())
    }

    /// The attributes, with AS4_PATH / AS4_AGGREGATOR folded in (RFC 6793 §4.2.3).
    pub fn finish(mut self) -> PathAttrs {
        let aggregator_is_trans = matches!(self.attrs.aggregator, Some((23456, _)));
        match (self.as4_aggregator, aggregator_is_trans) {
            (Some(agg4), true) => self.attrs.aggregator = Some(agg4),
            // An AS4_AGGREGATOR beside a real 2-octet AGGREGATOR means the
            // AS4_PATH is not to be trusted either.
            (Some(_), false) if self.attrs.aggregator.is_some() => self.as4_path = None,
            _ => {}
        }
        if let Some(as4) = self.as4_path
            && let Some(path) = self.attrs.as_path.take()
        {
            self.attrs.as_path = Some(path.merge_as4(as4));
        }
        self.attrs
    }
}

fn decode_aggregator(value: &[u8], four_octet: bool) -> Option<(u32, Ipv4Addr)> {
    match (value, four_octet) {
        ([a, b, ip @ ..], false) if ip.len() == 4 => Some((
            u32::from(u16::from_be_bytes([*a, *b])),
            Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        )),
        ([a, b, c, d, ip @ ..], true) if ip.len() == 4 => {
            Some((u32::from_be_bytes([*a, *b, *c, *d]), Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])))
        }
        _ => None,
    }
}

pub(crate) fn attr_length_bytes(flags: u8, len: usize) -> Vec<u8> {
    if flags & EXTENDED_LENGTH != 0 { (len as u16).to_be_bytes().to_vec() } else { vec![len as u8] }
}

/// Appends one attribute, with the extended length bit when the value needs it.
pub(crate) fn put_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[flags | EXTENDED_LENGTH, code, 0, 0]);
    value(out);
    let len = out.len() - start - 4;
    if len <= 255 {
        // Short form: drop one length byte.
        out[start] &= !EXTENDED_LENGTH;
        out[start + 2] = len as u8;
        out.remove(start + 3);
    } else {
        out[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
    }
}

impl PathAttrs {
    /// Appends the attributes in type-code order (RFC 4271 §5 recommends it).
    pub(crate) fn encode(&self, ctx: &WireContext, out: &mut Vec<u8>) {
        use attr_code::*;
        if let Some(origin) = self.origin {
            put_attr(out, TRANSITIVE, ORIGIN, |o| o.push(origin as u8));
        }
        let as_path = self.as_path.clone().unwrap_or_default();
        if self.as_path.is_some() {
            put_attr(out, TRANSITIVE, AS_PATH, |o| as_path.encode(ctx.four_octet_as, o));
        }
        if let Some(nh) = self.next_hop {
            put_attr(out, TRANSITIVE, NEXT_HOP, |o| o.extend_from_slice(&nh.octets()));
        }
        if let Some(med) = self.med {
            put_attr(out, OPTIONAL, MED, |o| o.extend_from_slice(&med.to_be_bytes()));
        }
        if let (Some(lp), false) = (self.local_pref, ctx.ebgp) {
            put_attr(out, TRANSITIVE, LOCAL_PREF, |o| o.extend_from_slice(&lp.to_be_bytes()));
        }
        if self.atomic_aggregate {
            put_attr(out, TRANSITIVE, ATOMIC_AGGREGATE, |_| {});
        }
        if let Some((asn, ip)) = self.aggregator {
            put_attr(out, OPTIONAL | TRANSITIVE, AGGREGATOR, |o| {
                if ctx.four_octet_as {
                    o.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let two = u16::try_from(asn).unwrap_or(super::open::AS_TRANS);
                    o.extend_from_slice(&two.to_be_bytes());
                }
                o.extend_from_slice(&ip.octets());
            });
        }
        if !self.communities.is_empty() {
            put_attr(out, OPTIONAL | TRANSITIVE, COMMUNITIES, |o| {
                for c in &self.communities {
                    o.extend_from_slice(&c.0.to_be_bytes());
                }
            });
        }
        if !ctx.four_octet_as && as_path.needs_as4_path() {
            put_attr(out, OPTIONAL | TRANSITIVE, AS4_PATH, |o| as_path.encode(true, o));
        }
        if let (Some((asn, ip)), false) = (self.aggregator, ctx.four_octet_as)
            && asn > 0xffff
        {
            put_attr(out, OPTIONAL | TRANSITIVE, AS4_AGGREGATOR, |o| {
                o.extend_from_slice(&asn.to_be_bytes());
                o.extend_from_slice(&ip.octets());
            });
        }
        if !self.large_communities.is_empty() {
            put_attr(out, OPTIONAL | TRANSITIVE, LARGE_COMMUNITIES, |o| {
                for c in &self.large_communities {
                    for n in [c.0, c.1, c.2] {
                        o.extend_from_slice(&n.to_be_bytes());
                    }
                }
            });
        }
        for raw in &self.other {
            put_attr(out, raw.flags & !EXTENDED_LENGTH, raw.code, |o| {
                o.extend_from_slice(&raw.value)
            });
        }
    }
}
