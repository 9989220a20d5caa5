//! The wire format, in one place: offsets, lengths and masks of the headers the program reads,
//! for the fast path and the general path alike.
//!
//! Byte order is in the name. A `_WIRE` constant is a field's value as it reads from the frame
//! into a native integer (`load::<u16>` of the bytes as they are): compare it with a field read
//! that way, without a conversion. A `_HOST` constant is for a field converted with
//! `from_be`. Offsets are from the start of their header; lengths are in bytes.
//!
//! Loads are word-sized (`load::<u32>`, `load::<u16>`), not byte arrays: LLVM's BPF backend
//! splits a load of unknown alignment into single bytes, while the JITs (x86-64, arm64) take
//! unaligned word loads from packet memory as they are.

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

/// Ethernet II, with at most one 802.1Q or 802.1ad tag after the source MAC.
pub mod eth {
    pub const LEN: usize = 14;
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const TYPE: usize = 12;
    pub const P_IPV4_WIRE: u16 = u16::from_ne_bytes([0x08, 0x00]);
    pub const P_IPV6_WIRE: u16 = u16::from_ne_bytes([0x86, 0xdd]);
    pub const P_8021Q_WIRE: u16 = u16::from_ne_bytes([0x81, 0x00]);
    pub const P_8021AD_WIRE: u16 = u16::from_ne_bytes([0x88, 0xa8]);
    /// A VLAN tag: TPID (at `TYPE`), TCI, then the inner ethertype at `TYPE + VLAN_LEN`.
    pub const VLAN_LEN: usize = 4;
    /// The TCI, after the TPID.
    pub const TCI: usize = TYPE + 2;
    /// The TCI's priority and drop-eligible bits (kept when the VID is replaced), as read from
    /// the wire.
    pub const TCI_PCP_DEI_WIRE: u16 = 0xf000u16.to_be();
}

/// IPv4 (RFC 791).
pub mod ipv4 {
    pub const MIN_LEN: usize = 20;
    /// Version (high nibble) and IHL in 32-bit words (low nibble).
    pub const VERSION_IHL: usize = 0;
    pub const TOT_LEN: usize = 2;
    /// Flags and fragment offset.
    pub const FRAG: usize = 6;
    pub const PROTO: usize = 9;
    pub const SADDR: usize = 12;
    pub const DADDR: usize = 16;
    /// More-fragments flag and fragment offset, of the field converted to host order; DF
    /// (0x4000) is not part of it.
    pub const FRAG_MASK_HOST: u16 = 0x3fff;
    /// The same mask for the field as read from the wire.
    pub const FRAG_MASK_WIRE: u16 = FRAG_MASK_HOST.to_be();
    /// Version 4 with IHL 5 (no options).
    pub const VERSION_IHL_NO_OPTIONS: u8 = 0x45;
}

/// IPv6 (RFC 8200) and the extension headers the program walks.
pub mod ipv6 {
    pub const LEN: usize = 40;
    /// Version (the high nibble of the first byte).
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const SADDR: usize = 8;
    pub const DADDR: usize = 24;
    /// Next-header values of extension headers.
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const DEST_OPTIONS: u8 = 60;
    /// An extension header: next header, then its length in 8-byte units after the first 8.
    pub const EXT_NEXT: usize = 0;
    pub const EXT_LEN: usize = 1;
    /// The fragment header: 8 bytes; its offset (13 bits) and M flag in the 16 bits at 2.
    pub const FRAG_LEN: usize = 8;
    pub const FRAG_OFFSET_M: usize = 2;
    /// Offset and M flag, of the field read from the wire (the reserved bits left out).
    pub const FRAG_MASK_WIRE: u16 = 0xfff9u16.to_be();
    /// Extension headers walked at most before the upper-layer header.
    pub const MAX_EXT: usize = 4;

    /// Whether `next` is an extension header (IANA's list: the four walked, AH, ESP, mobility,
    /// HIP, shim6 and the two experimental values), as opposed to an upper-layer protocol.
    #[inline(always)]
    pub fn is_extension(next: u8) -> bool {
        matches!(
            next,
            HOP_BY_HOP | ROUTING | FRAGMENT | DEST_OPTIONS | 50 | 51 | 135 | 139 | 140 | 253 | 254
        )
    }
}

/// TCP (RFC 9293).
pub mod tcp {
    pub const MIN_LEN: usize = 20;
    /// The flags byte (FIN, SYN, RST, PSH, ACK, ...).
    pub const FLAGS: usize = 13;
}

/// UDP (RFC 768).
pub mod udp {
    pub const LEN: usize = 8;
}

/// ICMP for IPv4 (RFC 792).
pub mod icmp {
    pub const PROTO: u8 = 1;
    /// Type, code, checksum, and four bytes that depend on the type; then, for an error, the
    /// IP header and at least the first 8 bytes of the datagram that caused it.
    pub const LEN: usize = 8;
    /// Type and code, as one 16-bit field.
    pub const TYPE_CODE: usize = 0;
    /// Destination unreachable (3), fragmentation needed and DF set (4).
    pub const FRAG_NEEDED_WIRE: u16 = u16::from_ne_bytes([3, 4]);
}

/// ICMPv6 (RFC 4443).
pub mod icmp6 {
    pub const PROTO: u8 = 58;
    /// Type, code, checksum, then the MTU (for "packet too big"), then the quoted packet.
    pub const LEN: usize = 8;
    pub const TYPE_CODE: usize = 0;
    /// Packet too big (2), code 0.
    pub const PACKET_TOO_BIG_WIRE: u16 = u16::from_ne_bytes([2, 0]);
}

/// Both TCP and UDP start with the source and destination ports: one 32-bit word, which the
/// flow key keeps as it reads from the wire.
pub const PORTS: usize = 0;

/// The minimum header of `proto` (TCP or UDP) after the IP header; `None` for any other.
#[inline(always)]
pub fn l4_min_len(proto: u8) -> Option<usize> {
    match proto {
        lvs_xdp_common::PROTO_TCP => Some(tcp::MIN_LEN),
        lvs_xdp_common::PROTO_UDP => Some(udp::LEN),
        _ => None,
    }
}

/// Non-zero when the destination MAC of the frame at `data` differs from the six bytes at
/// `mac`: one 32-bit and one 16-bit compare.
///
/// # Safety
/// `data` must have `eth::DST + 6` bytes of frame checked against `data_end`; `mac` must point
/// at six readable bytes (a map value's field).
#[inline(always)]
pub unsafe fn mac_differs(data: usize, mac: usize) -> u32 {
    // SAFETY: per the caller.
    unsafe {
        (load::<u32>(data + eth::DST) ^ load::<u32>(mac))
            | u32::from(load::<u16>(data + eth::DST + 4) ^ load::<u16>(mac + 4))
    }
}
