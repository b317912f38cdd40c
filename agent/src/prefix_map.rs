//! A map keyed by prefix that stores each family under a key of its own
//! size. A [`Prefix`] is 18 bytes (an `IpAddr` and a length); an IPv4 key
//! here is 8. An Adj-RIB-In holds a full table, a million IPv4 routes, in
//! a hash table of two million slots: 10 bytes a slot less is 20 MB less
//! at rest and 30 MB less at the peak, while the table grows and both
//! generations are alive (`cargo bench --bench ingest` measures it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;

use crate::route::Prefix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct V4 {
    addr: u32,
    len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct V6 {
    addr: [u8; 16],
    len: u8,
}

enum Key {
    V4(V4),
    V6(V6),
}

fn key(prefix: &Prefix) -> Key {
    match prefix.addr() {
        IpAddr::V4(a) => Key::V4(V4 { addr: u32::from(a), len: prefix.len() }),
        IpAddr::V6(a) => Key::V6(V6 { addr: a.octets(), len: prefix.len() }),
    }
}

fn v4(k: &V4) -> Prefix {
    Prefix::masked(IpAddr::V4(Ipv4Addr::from(k.addr)), k.len).expect("stored from a prefix")
}

fn v6(k: &V6) -> Prefix {
    Prefix::masked(IpAddr::V6(Ipv6Addr::from(k.addr)), k.len).expect("stored from a prefix")
}

/// Prefix → `V`, IPv4 and IPv6 in separate tables.
#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    v4: HashMap<V4, V>,
    v6: HashMap<V6, V>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap { v4: HashMap::new(), v6: HashMap::new() }
    }
}

impl<V> PrefixMap<V> {
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

    pub fn insert(&mut self, prefix: Prefix, value: V) -> Option<V> {
        match key(&prefix) {
            Key::V4(k) => self.v4.insert(k, value),
            Key::V6(k) => self.v6.insert(k, value),
        }
    }

    pub fn remove(&mut self, prefix: &Prefix) -> Option<V> {
        match key(prefix) {
            Key::V4(k) => self.v4.remove(&k),
            Key::V6(k) => self.v6.remove(&k),
        }
    }

    pub fn get(&self, prefix: &Prefix) -> Option<&V> {
        match key(prefix) {
            Key::V4(k) => self.v4.get(&k),
            Key::V6(k) => self.v6.get(&k),
        }
    }

    pub fn contains_key(&self, prefix: &Prefix) -> bool {
        self.get(prefix).is_some()
    }

    /// Room for `additional` more entries of `prefix`'s family.
    pub fn reserve_like(&mut self, prefix: &Prefix, additional: usize) {
        match key(prefix) {
            Key::V4(_) => self.v4.reserve(additional),
            Key::V6(_) => self.v6.reserve(additional),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &V)> {
        let v4 = self.v4.iter().map(|(k, v)| (v4(k), v));
        v4.chain(self.v6.iter().map(|(k, v)| (v6(k), v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.v4.keys().map(v4).chain(self.v6.keys().map(v6))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.v4.values().chain(self.v6.values())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.v4.values_mut().chain(self.v6.values_mut())
    }

    /// Keeps the entries for which `keep(prefix, value)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(Prefix, &mut V) -> bool) {
        self.v4.retain(|k, v| keep(v4(k), v));
        self.v6.retain(|k, v| keep(v6(k), v));
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
    fn both_families_keep_their_entries_apart() {
        let mut map = PrefixMap::default();
        let prefixes =
            ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/16", "::/0", "2001:db8::/32", "2001:db8::/48"];
        for (i, s) in prefixes.iter().enumerate() {
            assert_eq!(map.insert(p(s), i), None, "{s}");
        }
        assert_eq!((map.len(), map.count(true), map.count(false)), (6, 3, 3));
        assert_eq!(map.insert(p("10.0.0.0/8"), 10), Some(1), "a second insert replaces");
        for (i, s) in prefixes.iter().enumerate() {
            let want = if *s == "10.0.0.0/8" { 10 } else { i };
            assert_eq!(map.get(&p(s)), Some(&want), "{s}");
        }
        assert_eq!(map.get(&p("10.0.0.0/24")), None);
        assert_eq!(map.get(&p("::/1")), None);

        let mut keys: Vec<String> = map.keys().map(|k| k.to_string()).collect();
        keys.sort();
        let mut want: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(keys, want, "keys come back as the prefixes they were");

        map.retain(|prefix, v| {
            *v += 1;
            !prefix.is_empty()
        });
        assert_eq!(map.len(), 4);
        assert!(!map.contains_key(&p("0.0.0.0/0")) && !map.contains_key(&p("::/0")));
        assert_eq!(map.remove(&p("2001:db8::/48")), Some(6));
        assert_eq!(map.remove(&p("2001:db8::/48")), None);
        assert_eq!(map.values().sum::<usize>(), 11 + 3 + 5);
        map.clear();
        assert!(map.is_empty());
    }
}
