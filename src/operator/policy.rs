//! What cluster admins allow a BgpGateway to be. Whoever may create a
//! gateway decides what runs, with NET_BIND_SERVICE on the host network,
//! on the selected nodes, and what they announce to the routers: the
//! operator's flags (the chart's `policy` values) bound that.
//!
//! ```text
//!   --allowed-namespaces  edge,infra          gateways only in these namespaces
//!   --allowed-images      ghcr.io/nonstop-dev/ the agent image starts with one of these
//!   --allowed-prefixes    203.0.113.0/24       every announced prefix lies inside one
//! ```
//!
//! An empty list allows everything of its kind. A gateway that breaks a
//! rule is refused like an invalid spec: its Ready condition says
//! `PolicyViolation` and names the rule, and nothing on its nodes changes
//! (a running gateway keeps running as it was; deleting it still
//! decommissions its nodes). Pure: [`Policy::check`] is tested with tables.

use nonstop_agent::route::Prefix;

use crate::api::BgpGatewaySpec;

/// The cluster admins' rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub namespaces: Vec<String>,
    /// Image reference prefixes (a registry, a repository, or a whole name).
    pub images: Vec<String>,
    pub prefixes: Vec<Prefix>,
}

impl Policy {
    /// From the operator's flags; an error names the value it cannot read.
    pub fn new(
        namespaces: &[String],
        images: &[String],
        prefixes: &[String],
    ) -> Result<Policy, String> {
        let tidy = |list: &[String]| -> Vec<String> {
            list.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        };
        let prefixes = tidy(prefixes)
            .iter()
            .map(|p| p.parse::<Prefix>().map_err(|e| format!("--allowed-prefixes {p}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Policy { namespaces: tidy(namespaces), images: tidy(images), prefixes })
    }

    /// Every rule `spec` (in `namespace`, running `image`) breaks, one line
    /// each, naming the field, the value and the flag that forbids it.
    pub fn check(&self, namespace: &str, image: &str, spec: &BgpGatewaySpec) -> Vec<String> {
        let mut broken = Vec::new();
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            broken.push(format!(
                "namespace {namespace} may not hold gateways (--allowed-namespaces: {})",
                self.namespaces.join(", ")
            ));
        }
        if !self.images.is_empty() && !self.images.iter().any(|i| image.starts_with(i.as_str())) {
            broken.push(format!(
                "image {image} is not allowed (--allowed-images: {})",
                self.images.join(", ")
            ));
        }
        if !self.prefixes.is_empty() {
            for (i, a) in spec.announce.iter().enumerate() {
                if !self.prefixes.iter().any(|allowed| within(&a.prefix, allowed)) {
                    broken.push(format!(
                        "spec.announce[{i}].prefix {} is outside every allowed prefix (--allowed-prefixes: {})",
                        a.prefix,
                        self.prefixes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        broken
    }
}

/// `inner` lies inside `outer` (same family, at least as long, same bits).
fn within(inner: &Prefix, outer: &Prefix) -> bool {
    inner.is_ipv4() == outer.is_ipv4()
        && inner.len() >= outer.len()
        && Prefix::masked(inner.addr(), outer.len()).is_some_and(|p| p == *outer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prefixes: &[&str]) -> BgpGatewaySpec {
        let announce: Vec<String> =
            prefixes.iter().map(|p| format!("{{prefix: \"{p}\"}}")).collect();
        let yaml = format!(
            "asn: 65001\npeers: [{{address: 10.99.0.1, asn: 65000}}]\nannounce: [{}]\n",
            announce.join(", ")
        );
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    fn policy(namespaces: &[&str], images: &[&str], prefixes: &[&str]) -> Policy {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Policy::new(&own(namespaces), &own(images), &own(prefixes)).unwrap()
    }

    #[test]
    fn each_rule_allows_what_it_lists_and_names_what_it_refuses() {
        let open = Policy::default();
        let strict =
            policy(&["edge"], &["ghcr.io/nonstop-dev/"], &["203.0.113.0/24", "2001:db8::/32"]);
        let image = "ghcr.io/nonstop-dev/nonstop:0.2.0";
        // (case, policy, namespace, image, announced, what each refusal says)
        type Case<'a> = (&'a str, &'a Policy, &'a str, &'a str, Vec<&'a str>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("no policy allows anything", &open, "any", "x/y:z", vec!["0.0.0.0/0"], vec![]),
            (
                "all within",
                &strict,
                "edge",
                image,
                vec!["203.0.113.0/25", "2001:db8:1::/48"],
                vec![],
            ),
            ("the allowed prefix itself", &strict, "edge", image, vec!["203.0.113.0/24"], vec![]),
            (
                "other namespace",
                &strict,
                "dev",
                image,
                vec![],
                vec!["namespace dev may not hold gateways (--allowed-namespaces: edge)"],
            ),
            (
                "other registry",
                &strict,
                "edge",
                "evil.example/nonstop:1",
                vec![],
                vec!["image evil.example/nonstop:1 is not allowed"],
            ),
            (
                "a wider prefix",
                &strict,
                "edge",
                image,
                vec!["203.0.112.0/23"],
                vec!["spec.announce[0].prefix 203.0.112.0/23 is outside"],
            ),
            (
                "a neighbouring prefix",
                &strict,
                "edge",
                image,
                vec!["203.0.113.0/24", "198.51.100.0/24"],
                vec!["spec.announce[1].prefix 198.51.100.0/24"],
            ),
            (
                "another family",
                &strict,
                "edge",
                image,
                vec!["2001:db9::/32"],
                vec!["spec.announce[0].prefix 2001:db9::/32"],
            ),
        ];
        for (case, policy, namespace, image, prefixes, want) in cases {
            let broken = policy.check(namespace, image, &spec(&prefixes));
            assert_eq!(broken.len(), want.len(), "{case}: {broken:?}");
            for (line, want) in broken.iter().zip(want) {
                assert!(line.contains(want), "{case}: {line:?} should say {want:?}");
            }
        }
    }

    #[test]
    fn flags_it_cannot_read_are_named() {
        let err = Policy::new(&[], &[], &["203.0.113.0/33".into()]).unwrap_err();
        assert!(err.starts_with("--allowed-prefixes 203.0.113.0/33:"), "{err}");
        let blank = Policy::new(&[" ".into()], &["".into()], &[]).unwrap();
        assert_eq!(blank, Policy::default(), "empty values (a chart's empty list) allow all");
    }
}
