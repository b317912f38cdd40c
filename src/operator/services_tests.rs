//! What a pass writes to a Service: only what changed, and never another
//! controller's conditions.

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use super::status_patch;
use crate::operator::ipam::{Address, Family, Outcome, Refusal};

fn service(status: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop", "generation": 2},
        "spec": {"type": "LoadBalancer"},
        "status": status,
    }))
    .unwrap()
}

fn assigned(ip: &str) -> Outcome {
    Ok(vec![Address { ip: ip.parse().unwrap(), pool: "lab".into() }])
}

fn condition(status: &str, reason: &str, message: &str, since: &str) -> Value {
    json!({"type": "nonstop.dev/AddressAssigned", "status": status, "reason": reason,
           "message": message, "lastTransitionTime": since, "observedGeneration": 2})
}

/// What is shown, the status now, the outcome, the patch's ingress and
/// condition status and reason (None: no write), and whether the
/// condition keeps its transition time.
type PatchCase<'a> = (&'a str, Value, Option<Outcome>, Option<(Value, &'a str, &'a str)>, bool);

#[test]
fn a_pass_writes_what_changed_and_only_that() {
    let since = "2026-12-01T10:00:00Z";
    let assigned_cond =
        condition("True", "AddressAssigned", "198.51.100.1 from BgpAddressPool lab", since);
    let holding = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}, "conditions": [assigned_cond]});
    let exhausted = Err(Refusal::Exhausted { family: Family::V4, pools: vec!["lab".into()] });
    let cases: Vec<PatchCase> = vec![
        ("already says so", holding.clone(), Some(assigned("198.51.100.1")), None, true),
        (
            "a new Service",
            json!({}),
            Some(assigned("198.51.100.1")),
            Some((json!([{"ip": "198.51.100.1"}]), "True", "AddressAssigned")),
            false,
        ),
        (
            "moved to another address: still True, same transition time",
            holding.clone(),
            Some(assigned("198.51.100.2")),
            Some((json!([{"ip": "198.51.100.2"}]), "True", "AddressAssigned")),
            true,
        ),
        (
            "lost its address",
            holding.clone(),
            Some(exhausted),
            Some((Value::Null, "False", "AddressPoolExhausted")),
            false,
        ),
        (
            "another controller's condition is left alone",
            json!({"conditions": [{"type": "Other", "status": "True", "reason": "X", "message": "",
                                   "lastTransitionTime": since}]}),
            Some(assigned("198.51.100.1")),
            Some((json!([{"ip": "198.51.100.1"}]), "True", "AddressAssigned")),
            false,
        ),
    ];
    for (name, status, outcome, want, keeps_time) in cases {
        let patch = status_patch(&service(status), outcome.as_ref(), None);
        let Some((ingress, cond_status, reason)) = want else {
            assert_eq!(patch, None, "{name}");
            continue;
        };
        let patch = patch.unwrap_or_else(|| panic!("{name}: no patch"));
        assert_eq!(patch["status"]["loadBalancer"]["ingress"], ingress, "{name}");
        let conditions = patch["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "{name}: only our own condition: {patch}");
        assert_eq!(conditions[0]["type"], "nonstop.dev/AddressAssigned", "{name}");
        assert_eq!(conditions[0]["status"], cond_status, "{name}");
        assert_eq!(conditions[0]["reason"], reason, "{name}");
        assert_eq!(conditions[0]["observedGeneration"], 2, "{name}");
        assert_eq!(conditions[0]["lastTransitionTime"] == since, keeps_time, "{name}: {patch}");
    }
}

#[test]
fn a_service_that_is_no_longer_ours_loses_its_address_and_condition() {
    let patch = status_patch(&service(json!({})), None, None).unwrap();
    assert_eq!(patch["status"]["loadBalancer"]["ingress"], Value::Null);
    assert_eq!(
        patch["status"]["conditions"],
        json!([{"type": "nonstop.dev/AddressAssigned", "$patch": "delete"}])
    );
}

#[test]
fn an_annotation_the_service_gets_wrong_is_named_and_its_address_kept() {
    let problem = "nonstop.dev/bgp-communities ignored: \"lots\": not a community";
    let patch = status_patch(&service(json!({})), Some(&assigned("198.51.100.1")), Some(problem));
    let patch = patch.unwrap();
    assert_eq!(patch["status"]["loadBalancer"]["ingress"], json!([{"ip": "198.51.100.1"}]));
    let condition = &patch["status"]["conditions"][0];
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["message"], format!("198.51.100.1 from BgpAddressPool lab; {problem}"));
}
