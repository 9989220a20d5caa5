//! Header parsing. Every read is bounds-checked against `data_end` first; anything short or
//! invalid is `Err(DROP_MALFORMED)`. Fields are read as integers at fixed offsets and compared as
//! integers: nothing is ever read from the packet as an enum.
//!
//! Loads are word-sized (`load::<u32>`, `load::<u16>`), not byte arrays: LLVM's BPF backend
//! splits a load of unknown alignment into single bytes, while the JITs (x86-64, arm64) take
//! unaligned word loads from packet memory as they are. Values stay in network byte order
//! except where a field is compared with a number.
use lvs_xdp_common::{FlowKeyV4, PROTO_TCP, PROTO_UDP, reason};

/// Ethertypes and VLAN TPIDs as they read from the wire into a native u16.
const ETH_P_IPV4: u16 = u16::from_ne_bytes([0x08, 0x00]);
const ETH_P_IPV6: u16 = u16::from_ne_bytes([0x86, 0xdd]);
const ETH_P_8021Q: u16 = u16::from_ne_bytes([0x81, 0x00]);
const ETH_P_8021AD: u16 = u16::from_ne_bytes([0x88, 0xa8]);
const ETH_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const IPV4_MIN_LEN: usize = 20;
const TCP_MIN_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Offset of the flags byte (FIN, SYN, RST, PSH, ACK, ...) in the TCP header.
pub const TCP_FLAGS: usize = 13;
/// More-fragments flag and fragment offset (host order); DF (0x4000) is not part of it.
const IP_FRAGMENT_MASK: u16 = 0x3fff;

/// Reads a `T` at `addr`. Callers have checked `addr + size_of::<T>() <= data_end`.
///
/// # Safety
/// `addr` must be inside the packet (or a map value) for `size_of::<T>()` bytes.
#[inline(always)]
pub unsafe fn load<T: Copy>(addr: usize) -> T {
    // SAFETY: per the caller; BPF JITs allow unaligned loads (see the module comment).
    unsafe { *(addr as *const T) }
}

/// Writes a `T` at `addr`, under the same rules as `load`.
///
/// # Safety
/// As for `load`.
#[inline(always)]
pub unsafe fn store<T>(addr: usize, value: T) {
    // SAFETY: per the caller.
    unsafe { *(addr as *mut T) = value }
}

/// `x`, with everything the optimizer knew about it forgotten (a register move in asm).
#[inline(always)]
pub fn opaque(mut x: usize) -> usize {
    // SAFETY: one move of a register to itself.
    unsafe {
        core::arch::asm!("{0} = {0}", inout(reg) x, options(nomem, nostack, preserves_flags))
    };
    x
}

/// What the parser found.
pub enum Parsed {
    /// Not for the load balancer: pass to the host with this reason.
    Pass(u32),
    /// An IPv4 fragment: no ports to match on.
    FragmentV4 { daddr: u32, proto: u8 },
    /// A complete IPv4 TCP/UDP header, as a flow key, and the TCP flags (0 for UDP).
    V4(FlowKeyV4, u8),
}

/// Parses the frame at `data..end`. `own_mac` points at the receiving interface's MAC (six
/// bytes in a map value): frames for any other destination are passed untouched, so a frame
/// flooded to this port is never forwarded twice.
#[inline(always)]
pub fn parse(data: usize, end: usize, own_mac: usize) -> Result<Parsed, u32> {
    if data + ETH_LEN > end {
        return Err(reason::DROP_MALFORMED);
    }
    // SAFETY: the Ethernet header is inside the frame; own_mac is a 6-byte map value field.
    let (local, mut ethertype) = unsafe {
        let hi = load::<u32>(data) ^ load::<u32>(own_mac);
        let lo = load::<u16>(data + 4) ^ load::<u16>(own_mac + 4);
        (hi | lo as u32 == 0, load::<u16>(data + 12))
    };
    if !local {
        return Ok(Parsed::Pass(reason::PASS_NOT_LOCAL));
    }
    let mut l3 = data + ETH_LEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if l3 + VLAN_LEN > end {
            return Err(reason::DROP_MALFORMED);
        }
        // SAFETY: bounds checked just above.
        ethertype = unsafe { load::<u16>(l3 + 2) };
        l3 += VLAN_LEN;
    }
    if ethertype != ETH_P_IPV4 {
        let why = if ethertype == ETH_P_IPV6 {
            reason::PASS_IPV6
        } else {
            reason::PASS_NOT_IP
        };
        return Ok(Parsed::Pass(why));
    }
    if l3 + IPV4_MIN_LEN > end {
        return Err(reason::DROP_MALFORMED);
    }
    // SAFETY: the 20-byte fixed IPv4 header is inside the frame.
    let (version_ihl, tot_len, frag, proto, saddr, daddr) = unsafe {
        (
            load::<u8>(l3),
            u16::from_be(load::<u16>(l3 + 2)) as usize,
            u16::from_be(load::<u16>(l3 + 6)),
            load::<u8>(l3 + 9),
            load::<u32>(l3 + 12),
            load::<u32>(l3 + 16),
        )
    };
    if version_ihl >> 4 != 4 {
        return Err(reason::DROP_MALFORMED);
    }
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    // Options are allowed (IHL up to 15 words); the datagram must fit in the frame (padding after
    // it is fine: short frames are padded to 60 bytes).
    if ihl < IPV4_MIN_LEN || tot_len < ihl || l3 + tot_len > end {
        return Err(reason::DROP_MALFORMED);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Ok(Parsed::Pass(reason::PASS_OTHER_PROTO));
    }
    if frag & IP_FRAGMENT_MASK != 0 {
        return Ok(Parsed::FragmentV4 { daddr, proto });
    }
    let l4_min = if proto == PROTO_TCP {
        TCP_MIN_LEN
    } else {
        UDP_LEN
    };
    if tot_len < ihl + l4_min {
        return Err(reason::DROP_MALFORMED);
    }
    // The verifier needs the checks below on the variable-offset pointer itself. The checks
    // above already imply them, and LLVM would drop them: `opaque` hides that.
    let l4 = opaque(l3 + ihl);
    let (ports, flags) = if proto == PROTO_TCP {
        if l4 + TCP_FLAGS + 1 > end {
            return Err(reason::DROP_MALFORMED);
        }
        // SAFETY: bounds checked just above.
        unsafe { (load::<u32>(l4), load::<u8>(l4 + TCP_FLAGS)) }
    } else {
        if l4 + 4 > end {
            return Err(reason::DROP_MALFORMED);
        }
        // SAFETY: bounds checked just above.
        (unsafe { load::<u32>(l4) }, 0)
    };
    Ok(Parsed::V4(
        FlowKeyV4 {
            saddr,
            daddr,
            ports,
            proto: proto as u32,
        },
        flags,
    ))
}
