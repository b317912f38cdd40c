//! Counts every request the operator's Kubernetes client sends, by verb
//! and resource (`nonstop_operator_api_requests_total`): the measure of
//! what the operator costs the API server, at rest and in a rollout.
//!
//! A tower layer under kube's client: it sees each HTTP request before it
//! leaves, so watches, lists, writes and Events all count, whichever part
//! of the operator made them.

use std::task::{Context, Poll};

use http::{Method, Request};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::metrics::Request as Labels;

/// The layer: wrap the client's service with it.
#[derive(Debug, Clone)]
pub struct CountRequests {
    pub counters: Family<Labels, Counter>,
}

impl<S> tower::Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, counters: self.counters.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    counters: Family<Labels, Counter>,
}

impl<S, B> tower::Service<Request<B>> for Counted<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        let (verb, resource) = classify(request.method(), request.uri());
        self.counters.get_or_create(&Labels { verb, resource }).inc();
        self.inner.call(request)
    }
}

/// The Kubernetes verb and the resource of a request, from its method and
/// path (`/api/v1/namespaces/ns/pods/name/status` → `get`, `pods/status`).
pub fn classify(method: &Method, uri: &http::Uri) -> (&'static str, String) {
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/group/version/...
    let rest = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or(&[]),
        Some(&"apis") => parts.get(3..).unwrap_or(&[]),
        _ => return (verb(method, true, false), "other".into()),
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [kind] => (kind.to_string(), false),
        [kind, _name] => (kind.to_string(), true),
        [kind, _name, sub, ..] => (format!("{kind}/{sub}"), true),
    };
    let watch = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
    (verb(method, named, watch), resource)
}

fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_gets_its_verb_and_resource() {
        let cases = [
            ("GET", "/api/v1/nodes?watch=true&resourceVersion=1", ("watch", "nodes")),
            ("GET", "/api/v1/nodes?labelSelector=a", ("list", "nodes")),
            ("GET", "/api/v1/namespaces/ns/secrets/pw", ("get", "secrets")),
            ("POST", "/api/v1/namespaces/ns/pods", ("create", "pods")),
            ("DELETE", "/api/v1/namespaces/ns/pods/p", ("delete", "pods")),
            (
                "PATCH",
                "/apis/nonstop.dev/v1alpha1/namespaces/ns/bgpgateways/edge/status",
                ("patch", "bgpgateways/status"),
            ),
            ("GET", "/apis/nonstop.dev/v1alpha1/bgpgateways?watch=true", ("watch", "bgpgateways")),
            ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", ("update", "leases")),
            ("POST", "/apis/events.k8s.io/v1/namespaces/ns/events", ("create", "events")),
            ("GET", "/api/v1/namespaces/ns", ("get", "namespaces")),
            ("GET", "/version", ("get", "other")),
        ];
        for (method, uri, (verb, resource)) in cases {
            let got = classify(&method.parse().unwrap(), &uri.parse().unwrap());
            assert_eq!(got, (verb, resource.to_string()), "{method} {uri}");
        }
    }
}
