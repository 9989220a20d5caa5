//! A two-instruction XDP program that passes every frame, attached to a veth inside a namespace.
//!
//! Frames an XDP program sends with XDP_TX out of a veth reach the peer only if the peer runs
//! XDP too: the lab puts this on the bridge's end of the load balancer's veth. Loaded with raw
//! bpf(2) calls so that the test library needs no eBPF toolchain; attached with a bpf_link,
//! which detaches when the guard (its file descriptor) is dropped.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context as _, Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// An attached pass program; dropping it detaches.
pub struct XdpPass {
    _link: OwnedFd,
    _prog: OwnedFd,
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<OwnedFd> {
    // SAFETY: attr is a zero-initialised bpf_attr-sized buffer with the fields for `cmd` set.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put(attr: &mut [u8; 128], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Attaches the pass program (native mode) to `ifname` inside network namespace `netns`.
pub fn attach(netns: &str, ifname: &str) -> Result<XdpPass> {
    crate::netns::in_netns(netns, || attach_here(netns, ifname))
}

fn attach_here(netns: &str, ifname: &str) -> Result<XdpPass> {
    let c_name = CString::new(ifname)?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if ifindex == 0 {
        bail!("interface {ifname} not found in {netns}");
    }
    // r0 = XDP_PASS (2); exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
    put(&mut attr, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, b"xdp_pass");
    put(&mut attr, 68, &BPF_XDP.to_ne_bytes());
    let prog = bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD (xdp pass)")?;
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &ifindex.to_ne_bytes());
    put(&mut attr, 8, &BPF_XDP.to_ne_bytes());
    put(&mut attr, 12, &XDP_FLAGS_DRV_MODE.to_ne_bytes());
    let link = bpf(BPF_LINK_CREATE, &mut attr)
        .with_context(|| format!("attach xdp pass to {ifname} in {netns}"))?;
    Ok(XdpPass {
        _link: link,
        _prog: prog,
    })
}
