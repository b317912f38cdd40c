//! Codec and Adj-RIB-In throughput on one core, in prefixes per second and
//! milliseconds per million prefixes. Run: `cargo bench -p nonstop-agent --bench codec`.
//!
//! Two tables of 1,000,000 IPv4 /24s: every prefix with one attribute set
//! (the best case for packing), and 250,000 attribute sets of 4 prefixes each
//! (closer to a real full table). Target: decode ≤ 120 ms per million.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use nonstop_agent::rib::AdjRibIn;
use nonstop_agent::route::{Community, Prefix};
use nonstop_agent::wire::{AsPath, Message, Origin, PathAttrs, UpdateBuilder, WireContext, frame};

const PREFIXES: u32 = 1_000_000;
const ROUNDS: usize = 5;

fn table(prefixes_per_set: u32) -> Vec<(PathAttrs, Vec<Prefix>)> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < PREFIXES {
        let n = prefixes_per_set.min(PREFIXES - i);
        let attrs = PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([
                65000,
                64512 + (i % 1000),
                3356,
                174 + (i / n) % 5000,
            ])),
            med: Some(i % 100),
            communities: vec![Community(0xFDE8_0000 | (i % 1000))],
            ..Default::default()
        };
        let prefixes = (i..i + n)
            .map(|k| Prefix::new(IpAddr::V4(Ipv4Addr::from((1 << 24) + (k << 8))), 24).unwrap())
            .collect();
        groups.push((attrs, prefixes));
        i += n;
    }
    groups
}

fn encode(groups: &[(PathAttrs, Vec<Prefix>)], ctx: WireContext) -> Vec<u8> {
    let builder = UpdateBuilder::new(ctx);
    let mut out = Vec::with_capacity(8 << 20);
    for (attrs, prefixes) in groups {
        builder.announce(attrs, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), prefixes, &mut out);
    }
    out
}

fn best_ms(mut f: impl FnMut()) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let ctx = WireContext { four_octet_as: true, extended_messages: false, ebgp: true };
    println!(
        "{:<34} {:>10} {:>14} {:>12}",
        "1,000,000 IPv4 /24s", "ms/million", "prefixes/s", "messages"
    );
    for (name, per_set) in [("one attribute set", PREFIXES), ("250k sets of 4 prefixes", 4)] {
        let groups = table(per_set);
        let stream = encode(&groups, ctx);
        let mut messages = 0usize;
        let mut rest = &stream[..];
        while let Some(h) = frame(rest, &ctx).unwrap() {
            messages += 1;
            rest = &rest[h.len..];
        }
        let report = |what: &str, ms: f64| {
            let per_second = f64::from(PREFIXES) / (ms / 1000.0);
            println!(
                "{:<34} {:>10.1} {:>14.0} {:>12}",
                format!("{what} ({name})"),
                ms,
                per_second,
                messages
            );
        };
        report(
            "encode",
            best_ms(|| {
                black_box(encode(&groups, ctx));
            }),
        );
        report(
            "decode",
            best_ms(|| {
                let mut rest = &stream[..];
                let mut n = 0;
                while let Some(h) = frame(rest, &ctx).unwrap() {
                    let (m, _) = Message::decode(&rest[..h.len], &ctx).unwrap();
                    if let Message::Update(u) = m {
                        n += u.nlri.len();
                    }
                    rest = &rest[h.len..];
                }
                assert_eq!(n, PREFIXES as usize);
            }),
        );
        report(
            "decode + Adj-RIB-In",
            best_ms(|| {
                let mut rib = AdjRibIn::default();
                let mut rest = &stream[..];
                while let Some(h) = frame(rest, &ctx).unwrap() {
                    if let (Message::Update(u), _) = Message::decode(&rest[..h.len], &ctx).unwrap()
                    {
                        rib.apply(u, false);
                    }
                    rest = &rest[h.len..];
                }
                assert_eq!(rib.len(), PREFIXES as usize);
            }),
        );
    }
}
