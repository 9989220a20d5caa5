//! lvs-xdp: an XDP direct-routing (LVS-DR) load balancer. This library holds the logic; the
//! `lvs-xdp` binary is a thin command line over it.
//!
//! The usual sequence: [`config::Config`] (from TOML or flags) → [`iface::Interface::lookup`] →
//! [`neigh::resolve`] the real servers' MACs → [`layout::Layout::build`] →
//! [`balancer::Balancer::load`] → [`balancer::Balancer::attach`] → [`balancer::Balancer::snapshot`]
//! for counters → drop (or `detach`).
pub mod balancer;
pub mod bench;
pub mod config;
pub mod iface;
pub mod layout;
pub mod logger;
pub mod neigh;
pub mod run;
pub mod stats;

pub use balancer::{AttachMode, Balancer};
pub use config::Config;
