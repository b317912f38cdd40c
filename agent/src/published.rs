//! Announcements published to a running agent (`PUT /announcements`): a
//! set that replaces the last one whole, announced beside the config's
//! `announce[]` to every peer. What a controller that follows the cluster
//! (Service addresses, say) or a script on a plain host uses to change what
//! the agent announces without a reload. Sans-IO: reading and checking a
//! set; the speaker applies it, keeps it in the state dir and hands it to
//! its successor.

use serde::{Deserialize, Serialize};

use crate::config::validate::{self, Problems};
use crate::config::{Announcement, strict};

/// The most announcements one set may hold.
pub const MAX_ANNOUNCEMENTS: usize = 100_000;

/// A published set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The publisher's name for this set (a generation, a hash), shown in
    /// the status so it can tell which set an agent has.
    #[serde(default)]
    pub version: String,
    /// The prefixes, with the same fields as the config's `announce[]`
    /// entries, except `check`.
    #[serde(default)]
    pub announce: Vec<Announcement>,
}

impl Published {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty()
    }
}

/// A set from the JSON of a request body, checked against every rule and
/// against the config's own `announce[]` (a prefix is announced from one
/// place only). Every problem is named with its field's path.
pub fn read(body: &[u8], configured: &[Announcement]) -> Result<Published, Problems> {
    let mut problems = Problems::default();
    let mut json = serde_json::Deserializer::from_slice(body);
    let read =
        strict::read(&mut json).and_then(|p| json.end().map(|()| p).map_err(|e| e.to_string()));
    let published: Published = match read {
        Ok(p) => p,
        Err(e) => {
            problems.push("(body)", format!("not a published set: {e}"));
            return Err(problems);
        }
    };
    check(&published, configured, &mut problems);
    problems.into_result().map(|()| published)
}

fn check(published: &Published, configured: &[Announcement], problems: &mut Problems) {
    if published.version.len() > 256 {
        problems.push("version", "at most 256 characters");
    }
    if published.announce.len() > MAX_ANNOUNCEMENTS {
        problems.push(
            "announce",
            format!(
                "{} entries, over the {MAX_ANNOUNCEMENTS} a set may hold",
                published.announce.len()
            ),
        );
        return;
    }
    validate::announcements(&published.announce, "", problems);
    for (i, a) in published.announce.iter().enumerate() {
        if a.check.is_some() {
            problems.push(
                format!("announce[{i}].check"),
                "a published prefix has no health check: put checked prefixes in the config",
            );
        }
        if configured.iter().any(|c| c.prefix == a.prefix) {
            problems.push(
                format!("announce[{i}].prefix"),
                format!("{} is in the config's announce[] already", a.prefix),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Vec<Announcement> {
        serde_json::from_str(r#"[{"prefix": "198.51.100.0/24"}]"#).unwrap()
    }

    /// A body, and the number of prefixes and version read, or a part of
    /// the problems as printed.
    type Case<'a> = (&'a str, Result<(usize, &'a str), &'a str>);

    #[test]
    fn a_set_is_read_or_every_problem_is_named() {
        let cases: &[Case] = &[
            (
                r#"{"version": "7", "announce": [{"prefix": "203.0.113.10/32"}, {"prefix": "2001:db8::10/128", "communities": ["65001:100"], "localPref": 200}]}"#,
                Ok((2, "7")),
            ),
            (r#"{"announce": []}"#, Ok((0, ""))),
            (r#"{}"#, Ok((0, ""))),
            (
                r#"{"announce": [{"prefix": "203.0.113.10/33"}]}"#,
                Err("(body): not a published set"),
            ),
            (
                r#"{"announce": [{"prefix": "203.0.113.10/32", "colour": "red"}]}"#,
                Err("unknown field `colour`"),
            ),
            (r#"{"version": 7}"#, Err("(body): not a published set: invalid type")),
            (r#"not json"#, Err("(body): not a published set: expected ident")),
            (
                r#"{"announce": [{"prefix": "203.0.113.10/32"}, {"prefix": "203.0.113.10/32"}]}"#,
                Err("  - announce[1].prefix: 203.0.113.10/32 is already announce[0]"),
            ),
            (
                r#"{"announce": [{"prefix": "198.51.100.0/24"}]}"#,
                Err(
                    "  - announce[0].prefix: 198.51.100.0/24 is in the config's announce[] already",
                ),
            ),
            (
                r#"{"announce": [{"prefix": "203.0.113.10/32", "check": {"tcp": "127.0.0.1:80"}}]}"#,
                Err("  - announce[0].check: a published prefix has no health check"),
            ),
            (
                r#"{"announce": [{"prefix": "203.0.113.10/32", "nextHop": "2001:db8::1"}]}"#,
                Err(
                    "  - announce[0].nextHop: 2001:db8::1 is not of the same family as the prefix 203.0.113.10/32",
                ),
            ),
        ];
        for (body, want) in cases {
            match (want, read(body.as_bytes(), &configured())) {
                (Ok((n, version)), Ok(set)) => {
                    assert_eq!(set.announce.len(), *n, "{body}");
                    assert_eq!(set.version, *version, "{body}");
                }
                (Err(part), Err(problems)) => {
                    let text = problems.to_string();
                    assert!(text.contains(part), "{body}: {text:?} lacks {part:?}");
                }
                (want, got) => panic!("{body}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_set_too_large_is_refused_whole() {
        let entries: Vec<String> = (0..=MAX_ANNOUNCEMENTS)
            .map(|i| format!(r#"{{"prefix": "10.{}.{}.{}/32"}}"#, i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let body = format!(r#"{{"announce": [{}]}}"#, entries.join(","));
        let problems = read(body.as_bytes(), &[]).unwrap_err();
        assert_eq!(
            problems.to_string(),
            "  - announce: 100001 entries, over the 100000 a set may hold"
        );
    }
}
