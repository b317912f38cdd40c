//! The layer under both test harnesses: the agent's interop tests
//! (`agent/tests/support`, one router per test in namespaces it makes) and
//! the lab (`lab/`, one router in front of the cluster's nodes).
//!
//! ```text
//!   netns    a command inside a network namespace, and its output or why not
//!   tables   gobgpd's, BIRD's and FRR's routes and neighbours, read into
//!            one shape, whichever daemon printed them
//! ```
//!
//! How each harness sets its routers up stays its own (per-test configs
//! there, the lab's topology here); what a router says is read once, here.

pub mod netns;
pub mod tables;
