//! Test support for lvs-xdp, usable without building the XDP object (xtask's lab uses it too):
//! network namespaces that remove themselves, the LVS-DR lab topology with real nginx, a packet
//! builder and a header-by-header frame comparison.
pub mod bins;
pub mod ecmp;
pub mod lab;
pub mod netns;
pub mod packet;
/// The programs the project executes (the list lives with `cargo xtask setup`, which installs them).
#[path = "../../xtask/src/programs.rs"]
pub mod programs;
pub mod signals;
pub mod xdp_pass;
