//! Every list, string and map in the spec has a size bound, and the CEL
//! rules are priced against the API server's budget.
//!
//! An API server with CEL (1.25+) estimates each rule's worst-case cost from
//! the largest lists and strings the schema allows, and refuses a CRD whose
//! rules could cost more than its limits; without `maxItems`/`maxLength` it
//! assumes lists as long as a whole request can hold. Our own fields carry
//! bounds chosen for the domain (1,000 peers, 4,096 announcements, a
//! thousand communities — what an UPDATE holds); the Kubernetes types we
//! embed (tolerations, resources, the node selector) get generous generic
//! bounds here, since their own schemas have none.

use schemars::Schema;
use serde_json::{Map, Value};

/// Items of a Kubernetes-typed list, entries of a map.
pub const KUBERNETES_ITEMS: u64 = 64;
/// Characters of a Kubernetes-typed string (a label key with its prefix is
/// at most 317).
pub const KUBERNETES_STRING: u64 = 1024;

/// Bounds what a Kubernetes type's schema leaves unbounded.
pub fn kubernetes(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        bound(object);
    }
}

fn bound(node: &mut Map<String, Value>) {
    let kind = node.get("type").and_then(Value::as_str).map(str::to_owned);
    match kind.as_deref() {
        Some("array") => {
            node.entry("maxItems").or_insert(KUBERNETES_ITEMS.into());
        }
        Some("string") if !node.contains_key("enum") => {
            node.entry("maxLength").or_insert(KUBERNETES_STRING.into());
        }
        Some("object") if node.get("additionalProperties").is_some_and(Value::is_object) => {
            node.entry("maxProperties").or_insert(KUBERNETES_ITEMS.into());
        }
        _ => {}
    }
    for child in children(node) {
        bound(child);
    }
}

/// The subschemas of a schema node: properties, items, map values, and the
/// branches of allOf/anyOf/oneOf.
pub fn children(node: &mut Map<String, Value>) -> Vec<&mut Map<String, Value>> {
    let mut out = Vec::new();
    for (key, value) in node.iter_mut() {
        match (key.as_str(), value) {
            ("properties", Value::Object(props)) => {
                out.extend(props.values_mut().filter_map(Value::as_object_mut));
            }
            ("items" | "additionalProperties", Value::Object(child)) => out.push(child),
            ("allOf" | "anyOf" | "oneOf", Value::Array(branches)) => {
                out.extend(branches.iter_mut().filter_map(Value::as_object_mut));
            }
            _ => {}
        }
    }
    out
}
