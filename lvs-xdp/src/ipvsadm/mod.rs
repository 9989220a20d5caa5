//! ipvsadm's words: its command line ([`parse`]) and its output ([`render`]), so that an LVS
//! operator drives a running lvs-xdp as they drove IPVS.
pub mod names;
pub mod parse;
pub mod render;
