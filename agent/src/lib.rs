//! nonstop-agent: the BGP speaker that runs on each gateway node.
//!
//! ```text
//!            config file (same fields as the BgpGateway spec)
//!                 │
//!   routers ◀──▶ session FSMs (sans-IO) ◀──▶ RIBs
//!                 │
//!      successor agent ◀── handoff socket (same node)
//! ```
//!
//! Sans-IO cores: the wire codec ([`wire`]), the session FSM ([`session`]),
//! the RIBs ([`rib`]), Graceful Restart decisions ([`graceful`]) and the
//! handoff protocol ([`handoff`]); the I/O edge is [`speaker`]. [`config`]
//! and [`route`] are shared with the operator's CRD, [`http`] (the bounded
//! HTTP doors) with its binary.

pub mod config;
pub mod graceful;
pub mod handoff;
pub mod http;
pub mod import;
pub mod prefix_map;
pub mod restart;
pub mod rib;
pub mod route;
pub mod session;
pub mod show;
pub mod speaker;
pub mod wire;

/// Logs to stderr, filtered by `NONSTOP_LOG` (default `info`), coloured only
/// on a terminal: the agent's and the operator's binaries both start here.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NONSTOP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
