//! nonstop: a Kubernetes operator for BGP gateways whose upgrades never
//! withdraw a route.
//!
//! ```text
//!   BgpGateway (api) ──▶ controller ──▶ rollout planner ──▶ pods per node
//!                          (later issues: observe, plan, apply)
//! ```
//!
//! Today the crate owns the API types ([`api`]) and the CRD they generate ([`crd`]).

pub mod api;
pub mod crd;
