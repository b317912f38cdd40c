//! A map keyed by prefix that stores each family in a table of its own,
//! each entry flat: the address, the length, a one-byte mark of the
//! caller's and the value, in 16 bytes for IPv4 with an `Arc` value. An
//! Adj-RIB-In holds a full table, a million IPv4 routes, in a hash table
//! of two million slots, so each byte of a slot is 2 MB at rest and 3 MB
//! at the peak, while the table grows and both generations are alive. A
//! `Prefix` key (18 bytes) and a value struct with its own padding made
//! slots of 40, then 24 bytes (`cargo bench --bench ingest` measures it).

use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::route::Prefix;

/// One entry: its key fields, the caller's mark and the value, side by
/// side so the mark sits where the key's padding would be.
#[derive(Debug, Clone)]
struct Slot<A, M, V> {
    addr: A,
    len: u8,
    mark: M,
    value: V,
}

impl<A: Copy, M, V> Slot<A, M, V> {
    fn key(&self) -> (A, u8) {
        (self.addr, self.len)
    }
}

type Table<A, M, V> = HashTable<Slot<A, M, V>>;

/// Prefix → (`M`, `V`), IPv4 and IPv6 in separate tables. `M` is a small
/// `Copy` mark kept beside each value (a route's staleness).
#[derive(Debug, Clone)]
pub struct PrefixMap<M, V> {
    v4: Table<u32, M, V>,
    v6: Table<[u8; 16], M, V>,
    hasher: DefaultHashBuilder,
}

impl<M, V> Default for PrefixMap<M, V> {
    fn default() -> Self {
        PrefixMap { v4: HashTable::new(), v6: HashTable::new(), hasher: Default::default() }
    }
}

fn v4(addr: u32, len: u8) -> Prefix {
    Prefix::masked(IpAddr::V4(Ipv4Addr::from(addr)), len).expect("stored from a prefix")
}

fn v6(addr: [u8; 16], len: u8) -> Prefix {
    Prefix::masked(IpAddr::V6(Ipv6Addr::from(addr)), len).expect("stored from a prefix")
}

fn insert<A: Copy + Eq + Hash, M, V>(
    table: &mut Table<A, M, V>,
    hasher: &DefaultHashBuilder,
    slot: Slot<A, M, V>,
) -> Option<(M, V)> {
    let key = slot.key();
    match table.entry(hasher.hash_one(key), |s| s.key() == key, |s| hasher.hash_one(s.key())) {
        Entry::Occupied(mut e) => {
            let old = std::mem::replace(e.get_mut(), slot);
            Some((old.mark, old.value))
        }
        Entry::Vacant(e) => {
            e.insert(slot);
            None
        }
    }
}

fn remove<A: Copy + Eq + Hash, M, V>(
    table: &mut Table<A, M, V>,
    hasher: &DefaultHashBuilder,
    key: (A, u8),
) -> Option<(M, V)> {
    let entry = table.find_entry(hasher.hash_one(key), |s| s.key() == key).ok()?;
    let (slot, _) = entry.remove();
    Some((slot.mark, slot.value))
}

fn get<'a, A: Copy + Eq + Hash, M, V>(
    table: &'a Table<A, M, V>,
    hasher: &DefaultHashBuilder,
    key: (A, u8),
) -> Option<&'a Slot<A, M, V>> {
    table.find(hasher.hash_one(key), |s| s.key() == key)
}

impl<M: Copy, V> PrefixMap<M, V> {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Entries of one family: IPv4 or not.
    pub fn count(&self, ipv4: bool) -> usize {
        if ipv4 { self.v4.len() } else { self.v6.len() }
    }

    /// Sets `prefix`'s mark and value; what it had before, if anything.
    pub fn insert(&mut self, prefix: Prefix, mark: M, value: V) -> Option<(M, V)> {
        let len = prefix.len();
        match prefix.addr() {
            IpAddr::V4(a) => {
                insert(&mut self.v4, &self.hasher, Slot { addr: a.to_bits(), len, mark, value })
            }
            IpAddr::V6(a) => {
                insert(&mut self.v6, &self.hasher, Slot { addr: a.octets(), len, mark, value })
            }
        }
    }

    pub fn remove(&mut self, prefix: &Prefix) -> Option<(M, V)> {
        match prefix.addr() {
            IpAddr::V4(a) => remove(&mut self.v4, &self.hasher, (a.to_bits(), prefix.len())),
            IpAddr::V6(a) => remove(&mut self.v6, &self.hasher, (a.octets(), prefix.len())),
        }
    }

    pub fn get(&self, prefix: &Prefix) -> Option<(M, &V)> {
        match prefix.addr() {
            IpAddr::V4(a) => {
                get(&self.v4, &self.hasher, (a.to_bits(), prefix.len())).map(|s| (s.mark, &s.value))
            }
            IpAddr::V6(a) => {
                get(&self.v6, &self.hasher, (a.octets(), prefix.len())).map(|s| (s.mark, &s.value))
            }
        }
    }

    pub fn contains_key(&self, prefix: &Prefix) -> bool {
        self.get(prefix).is_some()
    }

    /// Room for `additional` more entries of `prefix`'s family.
    pub fn reserve_like(&mut self, prefix: &Prefix, additional: usize) {
        let h = &self.hasher;
        if prefix.is_ipv4() {
            self.v4.reserve(additional, |s| h.hash_one(s.key()));
        } else {
            self.v6.reserve(additional, |s| h.hash_one(s.key()));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Prefix, M, &V)> {
        let four = self.v4.iter().map(|s| (v4(s.addr, s.len), s.mark, &s.value));
        four.chain(self.v6.iter().map(|s| (v6(s.addr, s.len), s.mark, &s.value)))
    }

    pub fn keys(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.iter().map(|(p, _, _)| p)
    }

    pub fn values(&self) -> impl Iterator<Item = (M, &V)> {
        self.iter().map(|(_, m, v)| (m, v))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = (&mut M, &mut V)> {
        let four = self.v4.iter_mut().map(|s| (&mut s.mark, &mut s.value));
        four.chain(self.v6.iter_mut().map(|s| (&mut s.mark, &mut s.value)))
    }

    /// Keeps the entries for which `keep(prefix, mark, value)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(Prefix, M, &V) -> bool) {
        self.v4.retain(|s| keep(v4(s.addr, s.len), s.mark, &s.value));
        self.v6.retain(|s| keep(v6(s.addr, s.len), s.mark, &s.value));
    }

    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::PrefixMap;
    use crate::route::Prefix;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv4_entry_with_a_mark_and_an_arc_takes_16_bytes() {
        use std::sync::Arc;
        let size = std::mem::size_of::<super::Slot<u32, u8, Arc<()>>>();
        assert_eq!(size, 16, "the mark no longer fits in the key's padding");
    }

    #[test]
    fn both_families_keep_their_entries_apart() {
        let mut map = PrefixMap::default();
        let prefixes =
            ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/16", "::/0", "2001:db8::/32", "2001:db8::/48"];
        for (i, s) in prefixes.iter().enumerate() {
            assert_eq!(map.insert(p(s), s.len() as u8, i), None, "{s}");
        }
        assert_eq!((map.len(), map.count(true), map.count(false)), (6, 3, 3));
        assert_eq!(map.insert(p("10.0.0.0/8"), 0, 10), Some((10, 1)), "a second insert replaces");
        for (i, s) in prefixes.iter().enumerate() {
            let want = if *s == "10.0.0.0/8" { (0, 10) } else { (s.len() as u8, i) };
            assert_eq!(map.get(&p(s)), Some((want.0, &want.1)), "{s}");
        }
        assert_eq!(map.get(&p("10.0.0.0/24")), None);
        assert_eq!(map.get(&p("::/1")), None);

        let mut keys: Vec<String> = map.keys().map(|k| k.to_string()).collect();
        keys.sort();
        let mut want: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(keys, want, "keys come back as the prefixes they were");

        for (mark, v) in map.values_mut() {
            (*mark, *v) = (*mark + 1, *v + 1);
        }
        map.retain(|prefix, _, _| !prefix.is_empty());
        assert_eq!(map.len(), 4);
        assert!(!map.contains_key(&p("0.0.0.0/0")) && !map.contains_key(&p("::/0")));
        assert_eq!(map.remove(&p("2001:db8::/48")), Some((14, 6)));
        assert_eq!(map.remove(&p("2001:db8::/48")), None);
        assert_eq!(map.values().map(|(_, v)| v).sum::<usize>(), 11 + 3 + 5);
        assert_eq!(map.get(&p("10.0.0.0/8")), Some((1, &11)), "marks change with values");
        map.clear();
        assert!(map.is_empty());
    }
}
