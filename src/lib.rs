//! nonstop: a Kubernetes operator for BGP gateways whose upgrades never
//! withdraw a route.
//!
//! ```text
//!   BgpGateway (api) ──▶ controller ──▶ rollout planner ──▶ pods per node
//!                          (observe, plan, apply: [`operator`])
//! ```
//!
//! The API types ([`api`]), the CRD they generate ([`crd`]) and the
//! controller ([`operator`]).

pub mod api;
pub mod crd;
pub mod operator;
