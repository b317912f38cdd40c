//! RFC 7606 case by case, each with the exact bytes a peer sends and the
//! action the RFC gives: treat-as-withdraw (the session stays, what the
//! UPDATE announces is gone) or session reset (the NOTIFICATION named).
//! The AS_PATH checks that need the session's peer AS are in `crate::import`.

use super::tests::framed_update as update;
use super::*;
use crate::route::Prefix;

const EBGP: WireContext = WireContext { four_octet_as: true, extended_messages: false, ebgp: true };

/// ORIGIN IGP, AS_PATH [65000], and NEXT_HOP 192.0.2.1 when `next_hop`.
fn mandatory(next_hop: bool) -> Vec<u8> {
    let mut a = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8];
    if next_hop {
        a.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 1]);
    }
    a
}

/// MP_REACH_NLRI with `flags`, IPv6 unicast, next hop 2001:db8::1, 2001:db8::/32.
fn mp_reach_v6(flags: u8) -> Vec<u8> {
    let mut value = vec![0, 2, 1, 16, 0x20, 0x01, 0x0d, 0xb8];
    value.extend_from_slice(&[0; 11]);
    value.push(1);
    value.push(0); // reserved
    value.extend_from_slice(&[32, 0x20, 0x01, 0x0d, 0xb8]);
    let mut a = vec![flags, 14, value.len() as u8];
    a.extend_from_slice(&value);
    a
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Treat-as-withdraw, and these prefixes are the ones withdrawn.
    Withdraw(Vec<String>),
    /// Session reset with NOTIFICATION (code, subcode).
    Reset(u8, u8),
}

fn action(bytes: &[u8]) -> Action {
    match Message::decode(bytes, &EBGP) {
        Ok((Message::Update(u), malformed)) => {
            assert!(
                malformed.iter().any(|m| m.action == MalformedAction::TreatAsWithdraw),
                "accepted as it is: {u:?}"
            );
            let mut found: Vec<String> = u.announced().map(Prefix::to_string).collect();
            found.sort();
            Action::Withdraw(found)
        }
        Ok((other, _)) => panic!("decoded {other:?}"),
        Err(e) => Action::Reset(e.notification.code, e.notification.subcode),
    }
}

fn w(prefixes: &[&str]) -> Vec<String> {
    prefixes.iter().map(|p| p.to_string()).collect()
}

#[test]
fn each_case_gets_the_action_rfc_7606_gives_it() {
    use Action::*;
    let ten = [8u8, 10];
    let cases: Vec<(&str, Vec<u8>, Action)> = vec![
        (
            "§4: an attribute overruns the list, IPv4 NLRI found by the total length",
            update(&[], &cat(&[&mandatory(true), &[0xc0, 8, 200, 0, 0]]), &ten),
            Withdraw(w(&["10.0.0.0/8"])),
        ),
        (
            "§4: MP_REACH_NLRI parsed, then an attribute overruns",
            update(&[], &cat(&[&mp_reach_v6(0x80), &mandatory(false), &[0xc0, 8, 200, 0]]), &[]),
            Withdraw(w(&["2001:db8::/32"])),
        ),
        (
            "§4: MP_REACH_NLRI itself overruns the list",
            update(&[], &cat(&[&mandatory(false), &mp_reach_v6(0x80)[..20]]), &[]),
            Reset(3, 1),
        ),
        (
            "§4: an overrun before where an MP_REACH_NLRI may be, no IPv4 NLRI",
            update(&[], &cat(&[&[0x40, 1, 9, 0], &mp_reach_v6(0x80), &mandatory(false)]), &[]),
            Reset(3, 1),
        ),
        (
            "§4: fewer than 3 bytes left, no IPv4 NLRI",
            update(&[], &cat(&[&mandatory(false), &[0x40]]), &[]),
            Reset(3, 1),
        ),
        (
            "§3(c), §7.11: MP_REACH_NLRI flagged transitive",
            update(&[], &cat(&[&mp_reach_v6(0xc0), &mandatory(false)]), &[]),
            Reset(3, 4),
        ),
        (
            "§3(c), §7.11: MP_UNREACH_NLRI flagged well-known",
            update(&[], &[0x40, 15, 3, 0, 2, 1], &[]),
            Reset(3, 4),
        ),
        (
            "§7.11: IPv4 unicast with a 16-byte next hop, no Extended Next Hop",
            update(
                &[],
                &cat(&[
                    &[0x80, 14, 25, 0, 1, 1, 16, 0x20, 0x01, 0x0d, 0xb8],
                    &[0; 11],
                    &[2, 0, 8, 10],
                    &mandatory(false),
                ]),
                &[],
            ),
            Reset(3, 9),
        ),
        (
            "§7.11: IPv6 unicast with a 4-byte next hop",
            update(
                &[],
                &cat(&[
                    &[0x80, 14, 14, 0, 2, 1, 4, 192, 0, 2, 1, 0],
                    &[32, 0x20, 0x01, 0x0d, 0xb8],
                    &mandatory(false),
                ])[..],
                &[],
            ),
            Reset(3, 9),
        ),
        (
            "§7.1: ORIGIN of 2 bytes",
            update(&[], &cat(&[&[0x40, 1, 2, 0, 0], &mandatory(true)[4..]]), &ten),
            Withdraw(w(&["10.0.0.0/8"])),
        ),
        (
            "§7.2: AS_PATH segment runs past the attribute",
            update(&[], &[0x40, 1, 1, 0, 0x40, 2, 4, 2, 2, 0, 1, 0x40, 3, 4, 192, 0, 2, 1], &ten),
            Withdraw(w(&["10.0.0.0/8"])),
        ),
        (
            "§7.3: NEXT_HOP of 3 bytes",
            update(&[], &cat(&[&mandatory(false), &[0x40, 3, 3, 192, 0, 2]]), &ten),
            Withdraw(w(&["10.0.0.0/8"])),
        ),
        (
            "§3(d): no NEXT_HOP with IPv4 NLRI",
            update(&[], &mandatory(false), &ten),
            Withdraw(w(&["10.0.0.0/8"])),
        ),
        (
            "§5.3: MP_REACH_NLRI twice",
            update(&[], &cat(&[&mp_reach_v6(0x80), &mp_reach_v6(0x80), &mandatory(false)]), &[]),
            Reset(3, 1),
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(action(&bytes), expected, "{name}");
    }
}
