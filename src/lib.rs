//! nonstop: a Kubernetes operator for BGP gateways whose upgrades never
//! withdraw a route.
//!
//! ```text
//!   BgpGateway (api) ──▶ controller ──▶ rollout planner ──▶ pods per node
//!                          (observe, plan, apply: [`operator`])
//! ```
//!
//! The API types ([`api`]), the CRDs they generate ([`crd`]), the
//! controller ([`operator`]) and what the `kubectl nonstop` plugin prints
//! ([`kubectl`]).

pub mod api;
pub mod crd;
pub mod kubectl;
pub mod operator;
