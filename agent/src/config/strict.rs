//! Reading the config and published sets strictly: a field the types do
//! not know is refused, named by its path, so a typo does not pass as a
//! default. The check is here, at the agent's doors, rather than
//! `deny_unknown_fields` on the types: the operator decodes the same types
//! from `BgpGateway` objects, where a field from a newer CRD (one the API
//! server fills in with its default) must be passed over, not fail the
//! decode of every gateway.

use serde::{Deserialize, Deserializer};

/// `T` from `input`; its error, or every field `T` has no place for,
/// each with its path: "unknown field `holdTme` at peers[0]".
pub fn read<'de, D, T>(input: D) -> Result<T, String>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut unknown = Vec::new();
    let value = serde_ignored::deserialize(input, |path| unknown.push(field(&path)))
        .map_err(|e| e.to_string())?;
    if unknown.is_empty() { Ok(value) } else { Err(unknown.join("; ")) }
}

/// "unknown field `name`", and where, in the spec's spelling of paths.
fn field(path: &serde_ignored::Path) -> String {
    match path {
        serde_ignored::Path::Map { parent, key } => match place(parent) {
            place if place.is_empty() => format!("unknown field `{key}`"),
            place => format!("unknown field `{key}` at {place}"),
        },
        other => format!("unknown value at {}", place(other)),
    }
}

/// A path as `peers[0].addressFrom`; empty at the root.
fn place(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", place(parent)),
        Path::Map { parent, key } => match place(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => place(parent),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        #[serde(default)]
        peers: Vec<Item>,
        #[serde(default)]
        one: Option<Item>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Item {
        hold_time: u16,
    }

    /// Each unknown field is named with its path; maps of free keys and
    /// known fields pass; a type error is serde's own message.
    #[test]
    fn unknown_fields_are_named_by_their_path() {
        let cases: &[(&str, Result<usize, &str>)] = &[
            ("peers: [{holdTime: 3}]\nlabels: {rack: a}", Ok(1)),
            ("colour: red", Err("unknown field `colour`")),
            (
                "peers: [{holdTime: 3}, {holdTime: 3, holdTme: 9}]",
                Err("unknown field `holdTme` at peers[1]"),
            ),
            ("one: {holdTime: 3, x: {y: 1}}", Err("unknown field `x` at one")),
            ("a: 1\nb: 2", Err("unknown field `a`; unknown field `b`")),
            ("peers: [{holdTime: many}]", Err("invalid type")),
        ];
        for (text, want) in cases {
            let got = super::read::<_, Doc>(serde_yaml_ng::Deserializer::from_str(text));
            match (got, want) {
                (Ok(doc), Ok(peers)) => assert_eq!(doc.peers.len(), *peers, "{text}"),
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
