//! lvs-xdp: an XDP direct-routing (LVS-DR) load balancer. This library holds the logic; the
//! `lvs-xdp` binary is a thin command line over it.
//!
//! - [`model`]: the director as ipvsadm sees it (services, real servers, operations), pure.
//! - [`config`]: a TOML file or command-line services, validated into a model state.
//! - [`director::Director`]: that state kept in the kernel's maps; every change is checked whole,
//!   then applied so that no packet sees half of it. [`director::Director::snapshot`] gives the
//!   counters as a [`listing::Snapshot`].
//! - [`balancer::Balancer`]: the loaded XDP program, its maps, attach and detach.
//! - [`iface`], [`neigh`]: interfaces and the kernel's neighbour table.
//!
//! The usual sequence: [`config::Config`] → [`iface::Interface::lookup`] →
//! [`director::Director::load`] → attach ([`director::Director::balancer_mut`]) →
//! [`director::Director::apply`] as operators change it → drop (or detach).
mod alloc;
pub mod announce;
pub mod balancer;
pub mod config;
pub mod control;
pub mod direct;
pub mod director;
pub mod flowtable;
pub mod hashtab;
pub mod health;
pub mod iface;
pub mod ipvsadm;
pub mod keep;
pub mod keepalived;
pub mod listing;
pub mod logger;
pub mod maglev;
mod mapped;
pub mod metrics;
pub mod model;
pub mod neigh;
pub mod netlink;
pub mod realserver;
pub mod wrr;

pub use balancer::{AttachMode, Balancer};
pub use config::Config;
pub use director::Director;

/// The benchmark programs' object (traffic generator, sink, bounce, pass, minimal LB), for the
/// tests and benchmarks only.
#[cfg(feature = "bench-object")]
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lvs-xdp-bench"));
