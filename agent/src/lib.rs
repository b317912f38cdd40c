//! nonstop-agent: the BGP speaker that runs on each gateway node.
//!
//! ```text
//!            config file (same fields as the BgpGateway spec)
//!                 │
//!   routers ◀──▶ session FSMs (sans-IO) ◀──▶ RIBs     ← later issues
//!                 │
//!      successor agent ◀── handoff socket (same node) ← later issues
//! ```
//!
//! Today the crate owns the configuration ([`config`]) and the route value
//! types shared by the config, the CRD and the wire ([`route`]).

pub mod config;
pub mod graceful;
pub mod handoff;
pub mod restart;
pub mod rib;
pub mod route;
pub mod session;
pub mod speaker;
pub mod wire;
