//! Real-server MACs from the kernel's neighbour table, over rtnetlink.
//!
//! For each address: dump the table; if the interface has no usable entry, ask the kernel to
//! resolve it (RTM_NEWNEIGH with NTF_USE, which makes it send an ARP request exactly as if a packet
//! were waiting), then poll until an entry appears or the deadline passes.
use std::{
    collections::HashMap,
    io,
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::config::Mac;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NTF_USE: u8 = 0x01;
/// States whose link-layer address can be used: REACHABLE, STALE, DELAY, PROBE, PERMANENT.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;
const POLL: Duration = Duration::from_millis(50);
/// Ask again this often while waiting (the kernel gives up after its own probe count).
const RETRIGGER: Duration = Duration::from_millis(1000);

#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct NdMsg {
    family: u8,
    pad1: u8,
    pad2: u16,
    ifindex: i32,
    state: u16,
    flags: u8,
    kind: u8,
}

/// One neighbour entry of the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub address: Ipv4Addr,
    pub mac: Option<Mac>,
    pub state: u16,
}

impl Neighbour {
    fn usable_mac(&self) -> Option<Mac> {
        if self.state & NUD_USABLE != 0 {
            self.mac.filter(Mac::is_unicast)
        } else {
            None
        }
    }
}

struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); ownership goes to OwnedFd at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: valid fd and option value of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Netlink { fd, seq: 0 })
    }

    fn send(
        &mut self,
        kind: u16,
        flags: u16,
        ndm: NdMsg,
        attrs: &[(u16, &[u8])],
    ) -> io::Result<u32> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(64);
        msg.extend_from_slice(&[0u8; size_of::<NlMsgHdr>()]);
        msg.extend_from_slice(as_bytes(&ndm));
        for (kind, data) in attrs {
            let len = (4 + data.len()) as u16;
            msg.extend_from_slice(&len.to_ne_bytes());
            msg.extend_from_slice(&kind.to_ne_bytes());
            msg.extend_from_slice(data);
            msg.resize(msg.len().next_multiple_of(4), 0);
        }
        let hdr = NlMsgHdr {
            len: msg.len() as u32,
            kind,
            flags,
            seq: self.seq,
            pid: 0,
        };
        msg[..size_of::<NlMsgHdr>()].copy_from_slice(as_bytes(&hdr));
        // SAFETY: msg is a valid buffer of msg.len() bytes; the kernel is the default destination.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Reads replies to `seq` until DONE (dump) or an ACK/error; returns the neighbour entries.
    fn receive(&mut self, seq: u32) -> io::Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is writable for buf.len() bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= size_of::<NlMsgHdr>() {
                let hdr: NlMsgHdr = from_bytes(rest);
                let len = hdr.len as usize;
                if len < size_of::<NlMsgHdr>() || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad netlink message",
                    ));
                }
                let body = &rest[size_of::<NlMsgHdr>()..len];
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                if hdr.seq != seq {
                    continue;
                }
                match hdr.kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = if body.len() >= 4 {
                            i32::from_ne_bytes(body[..4].try_into().unwrap())
                        } else {
                            0
                        };
                        return if errno == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-errno))
                        };
                    }
                    RTM_NEWNEIGH => out.extend(parse_neighbour(body)),
                    _ => {}
                }
            }
        }
    }

    fn dump(&mut self) -> io::Result<Vec<Neighbour>> {
        let seq = self.send(
            RTM_GETNEIGH,
            NLM_F_REQUEST | NLM_F_DUMP,
            ndmsg(0, 0, 0),
            &[],
        )?;
        self.receive(seq)
    }

    /// Asks the kernel to resolve `address` on `ifindex` (creating the entry if needed).
    fn trigger(&mut self, ifindex: u32, address: Ipv4Addr) -> io::Result<()> {
        let seq = self.send(
            RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            ndmsg(ifindex, 0, NTF_USE),
            &[(NDA_DST, &address.octets())],
        )?;
        self.receive(seq).map(drop)
    }
}

fn ndmsg(ifindex: u32, state: u16, flags: u8) -> NdMsg {
    NdMsg {
        family: libc::AF_INET as u8,
        pad1: 0,
        pad2: 0,
        ifindex: ifindex as i32,
        state,
        flags,
        kind: 0,
    }
}

fn parse_neighbour(body: &[u8]) -> Option<Neighbour> {
    if body.len() < size_of::<NdMsg>() {
        return None;
    }
    let ndm: NdMsg = from_bytes(body);
    if ndm.family != libc::AF_INET as u8 {
        return None;
    }
    let mut address = None;
    let mut mac = None;
    let mut attrs = &body[size_of::<NdMsg>()..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match (kind, data.len()) {
            (NDA_DST, 4) => address = Some(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (NDA_LLADDR, 6) => mac = Some(Mac(data.try_into().unwrap())),
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    Some(Neighbour {
        ifindex: ndm.ifindex as u32,
        address: address?,
        mac,
        state: ndm.state,
    })
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is one of the #[repr(C)] netlink headers above, without padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast(), size_of::<T>()) }
}

fn from_bytes<T: Copy>(b: &[u8]) -> T {
    assert!(b.len() >= size_of::<T>());
    // SAFETY: length checked; the headers are plain integers, any bit pattern is valid.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) }
}

/// The neighbour table of the current network namespace (IPv4).
pub fn dump() -> Result<Vec<Neighbour>> {
    Ok(Netlink::open()?.dump()?)
}

/// Resolves each address to a MAC on interface `ifindex` (`ifname` for messages), triggering ARP
/// for missing entries and waiting at most `timeout` in all. Fails naming the first address that
/// could not be resolved.
pub fn resolve(
    ifindex: u32,
    ifname: &str,
    addresses: &[Ipv4Addr],
    timeout: Duration,
) -> Result<HashMap<Ipv4Addr, Mac>> {
    let mut nl = Netlink::open()?;
    let deadline = Instant::now() + timeout;
    let mut found = HashMap::new();
    let mut last_trigger: Option<Instant> = None;
    loop {
        for n in nl.dump()? {
            if n.ifindex == ifindex
                && addresses.contains(&n.address)
                && let Some(mac) = n.usable_mac()
            {
                found.insert(n.address, mac);
            }
        }
        let missing: Vec<Ipv4Addr> = addresses
            .iter()
            .copied()
            .filter(|a| !found.contains_key(a))
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            bail!(
                "real server {} did not resolve to a MAC on {ifname} within {:.1}s (is it up and on the same L2 segment? give its MAC to skip resolution: `mac` in the config, --mac on the command line)",
                missing[0],
                timeout.as_secs_f64()
            );
        }
        if last_trigger.is_none_or(|t| t.elapsed() >= RETRIGGER) {
            for address in &missing {
                nl.trigger(ifindex, *address).map_err(|e| {
                    anyhow::anyhow!("cannot ask the kernel to resolve {address} on {ifname}: {e}")
                })?;
            }
            last_trigger = Some(Instant::now());
        }
        thread::sleep(POLL);
    }
}
