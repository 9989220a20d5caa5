//! The kernel/user contract of lvs-xdp: every map's name, key and value, and every constant that
//! both the XDP program and the loader read. All types are `#[repr(C)]` plain data without padding
//! holes (the `user` feature derives `bytemuck::Pod`, which refuses any).
//!
//! Byte order: addresses and ports are kept exactly as they appear on the wire (network order),
//! so the data plane never swaps bytes. Userspace converts with the helpers below.
#![no_std]

/// Map names, as the loader finds them in the object.
pub mod map {
    /// `HashMap<ServiceKey, Service>`: virtual services (and per-address fragment markers).
    pub const SERVICES: &str = "SERVICES";
    /// `Array<RealServer>`: every real server of every service, indexed by real-server slot.
    pub const REALS: &str = "REALS";
    /// `Array<u32>`: scheduling slots; a service owns `[sched_start, sched_start + sched_len)`,
    /// each holding a real-server slot.
    pub const SCHED: &str = "SCHED";
    /// `Array<FlowBucketV4>` (mmapable, so buckets are cache-line aligned): the IPv4
    /// connection table proper; see [`crate::flow_table`].
    pub const FLOW_CACHE_V4: &str = "FLOW_CACHE_V4";
    /// `HashMap<FlowKeyV4, Flow>` (not preallocated): the IPv4 overflow table, for established
    /// flows pushed out of their two buckets in `FLOW_CACHE_V4`. It never evicts: when it is
    /// full, a new flow is not remembered instead (see [`crate::flow_table`]).
    pub const FLOWS_V4: &str = "FLOWS_V4";
    /// `Array<FlowBucketV6>` (mmapable): the IPv6 flow table's buckets, as `FLOW_CACHE_V4`.
    pub const FLOW_CACHE_V6: &str = "FLOW_CACHE_V6";
    /// `ProgramArray`, one slot: the IPv6 program, for the main program's tail call.
    pub const PROGRAMS: &str = "PROGRAMS";
    pub const PROGRAM_V6_SLOT: u32 = 0;
    /// `HashMap<FlowKeyV6, Flow>` (not preallocated): the IPv6 overflow table, as `FLOWS_V4`.
    pub const FLOWS_V6: &str = "FLOWS_V6";
    /// `Array<Clock>`, one entry: the idle clock and the timeouts, written by userspace.
    pub const CLOCK: &str = "CLOCK";
    /// `Array<ConnCount>` (mmapable), indexed by real-server slot: its connections now, kept
    /// by the data plane with atomic adds on every change of state, and by the sweep when it
    /// frees expired flows. What the connection-based schedulers read.
    pub const REAL_CONNS: &str = "REAL_CONNS";
    /// `HashMap<PersistKey, Persist>` (not preallocated): persistence templates, a client
    /// network's real server per persistent service.
    pub const PERSIST: &str = "PERSIST";
    /// `Array<MaglevBlock>` (mmapable): Maglev lookup tables of `MAGLEV_TABLE_SIZE` entries
    /// each, [`crate::maglev::BLOCK`] to a value; an `mh` service uses table
    /// [`crate::Service::table`], from value `table * blocks(MAGLEV_TABLE_SIZE)` on.
    pub const MAGLEV: &str = "MAGLEV";
    /// `Array<MaglevBlock>` (mmapable), laid out as `MAGLEV`: the former real server of each
    /// pinned entry. Read only by the general path.
    pub const MAGLEV_PREV: &str = "MAGLEV_PREV";
    /// `Array<DirectService>`, [`crate::maglev::DIRECT_SLOTS`] entries: the IPv4 `mh`
    /// services whose known flows are forwarded straight from their Maglev table (see
    /// [`crate::maglev`]), at [`crate::maglev::direct_index`] of their VIP and port.
    pub const DIRECT: &str = "DIRECT";
    /// `PerCpuArray<u32>`, one entry: packets until the direct path next sends one through
    /// the flow table (see [`crate::maglev::SAMPLE_GAP`]).
    pub const SAMPLE: &str = "SAMPLE";
    /// `Array<Iface>`, indexed by ifindex: the interfaces the program serves and their MACs.
    pub const IFACES: &str = "IFACES";
    /// `PerCpuArray<u32>`, indexed by service id: round-robin position.
    pub const RR: &str = "RR";
    /// `PerCpuArray<Counters>`, indexed by service id: new connections dropped for want of a
    /// real server (their packets, bytes and `drops`). Forwarded traffic is counted per real
    /// server only; a service's totals are the sum over its real servers plus these.
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    /// `PerCpuArray<Counters>`, indexed by real-server slot: every forwarded packet, once.
    pub const REAL_STATS: &str = "REAL_STATS";
    /// `PerCpuArray<Counters>`, indexed by [`crate::reason`]: one entry per verdict and reason,
    /// except `FORWARDED`, which is the sum of `REAL_STATS` (one counter update per forwarded
    /// packet instead of three).
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
}

/// The XDP program's name in the object.
pub const PROGRAM: &str = "lvs_xdp";
/// The IPv6 program: the main one tail-calls it (slot [`map::PROGRAM_V6_SLOT`] of
/// `map::PROGRAMS`) for every IPv6 frame addressed to the interface, so that each is verified
/// on its own.
pub const PROGRAM_V6: &str = "lvs_xdp_v6";

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Scheduler ids in [`Service::scheduler`].
pub mod scheduler {
    /// Round-robin over the service's slots, from a per-CPU position.
    pub const RR: u16 = 0;
    /// Maglev consistent hashing of the client's address, over the service's table in
    /// `MAGLEV` (IPVS's `mh`).
    pub const MH: u16 = 1;
    /// The connection-based ones (IPVS's `ip_vs_lc.c` and siblings), over the service's
    /// scheduling range and `REAL_CONNS`: least connections (overhead = active x 256 +
    /// inactive),
    pub const LC: u16 = 2;
    /// weighted least connections (overhead / weight),
    pub const WLC: u16 = 3;
    /// shortest expected delay ((active + 1) / weight),
    pub const SED: u16 = 4;
    /// never queue (an idle real server first, else as `SED`),
    pub const NQ: u16 = 5;
    /// weighted failover (the highest weight),
    pub const FO: u16 = 6;
    /// weighted overflow (the highest weight whose active connections do not exceed its weight).
    pub const OVF: u16 = 7;
    /// Real servers a connection-based scheduler compares at most (the first of the range).
    pub const MAX_SCAN: u32 = 256;
    /// Source hashing (IPVS's `sh`): the service's scheduling range is a table of
    /// `HASH_BUCKETS` buckets, looked up by the client's address (and port, with `SH_PORT`).
    pub const SH: u16 = 8;
    /// Destination hashing (IPVS's `dh`): the same table, looked up by the destination address.
    pub const DH: u16 = 9;
    /// Weighted random two choices (IPVS's `twos`): two real servers drawn at random by
    /// weight, the one of lower overhead / weight taken. The service's `table` holds the sum
    /// of the weights in its range.
    pub const TWOS: u16 = 10;
    /// Buckets of an `sh` or `dh` table, as IPVS's (`IP_VS_SH_TAB_BITS` 8).
    pub const HASH_BUCKETS: u32 = 256;

    /// IPVS's bucket of a (host-order) address plus port: the top 8 bits of their sum times
    /// 2^32 / phi (its `hash_32`).
    #[inline(always)]
    pub fn bucket(addr: u32, port: u16) -> u32 {
        addr.wrapping_add(u32::from(port)).wrapping_mul(0x61C8_8647) >> 24
    }
}

/// Maglev hashing (`mh`): what the data plane and userspace share.
///
/// **The direct path.** Known flows of an IPv4 `mh` service (without persistence) are forwarded
/// straight from the service's Maglev table, without the flow table, whose lookups miss the
/// caches once it holds many flows. This holds while a flow's entry still names the real
/// server it was scheduled to. So each entry is *pinned* when its real server changes
/// (`MAGLEV_PREV` names the one it had): packets of a pinned entry go through the flow
/// table, where the flows scheduled before the change keep their real server, and a flow found
/// nowhere is taken to its former real server and remembered there (it was served directly
/// by it). Userspace unpins an entry once no live flow of the table sits on it with another real
/// server, and at least the established timeout after it was pinned. New connections are still
/// scheduled and remembered by the flow table; the packets of an entry that saw one in the
/// last second or two ([`SYN_WINDOW`]), and about one packet in [`SAMPLE_GAP`]` / 2`, go through it
/// too, so that connection states and idle times are tracked.
pub mod maglev {
    /// Entries of a lookup table unless configured otherwise: a prime, so that every skip
    /// visits every entry.
    pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
    /// The smallest and largest sizes accepted (both primes). The paper asks for a size well
    /// above 100 times the real servers of a service, for shares within 1% of their weights.
    pub const MIN_TABLE_SIZE: u32 = 251;
    pub const MAX_TABLE_SIZE: u32 = 4_194_301;
    /// Name of the program's read-only global holding the size of every table, set by the
    /// loader.
    pub const TABLE_SIZE_GLOBAL: &str = "MAGLEV_TABLE_SIZE";

    /// Packets of direct services go straight from the Maglev table, but one in about
    /// `SAMPLE_GAP / 2` (a random gap below `SAMPLE_GAP`, per CPU) goes through the flow table,
    /// refreshing its flow's idle time and state.
    pub const SAMPLE_GAP: u32 = 128;
    /// Entries of the `DIRECT` map (a power of two).
    pub const DIRECT_SLOTS: u32 = 256;
    /// Entries of a table in a value of `MAGLEV` (a 64-byte cache line).
    pub const BLOCK: u32 = 16;
    /// Values of `MAGLEV` a table of `size` entries takes.
    pub const fn blocks(size: u32) -> u32 {
        size.div_ceil(BLOCK)
    }
    /// An entry's bit: pinned (see above).
    pub const PINNED: u32 = 1 << 31;
    /// Where an entry keeps, above the slot, when it last saw a new connection (11 bits of
    /// [`syn_stamp`], never 0; written by the data plane).
    pub const SYN_SHIFT: u32 = crate::flow_table::SLOT_BITS;
    pub const SYN_MASK: u32 = 0x7ff << SYN_SHIFT;
    /// Seconds of the idle clock ([`crate::Clock::now`], advanced by userspace once a second)
    /// after a new connection during which its entry's packets go through the flow table, so
    /// that the ACK completing the handshake is tracked: the second of the connection and the
    /// next one (one to two seconds).
    pub const SYN_WINDOW: u32 = 1;

    /// The `DIRECT` entry of a service at (VIP, port), both as on the wire.
    #[inline(always)]
    pub fn direct_index(daddr: u32, port: u16) -> u32 {
        (daddr ^ u32::from(port).rotate_left(16)).wrapping_mul(0x9E37_79B1) >> 24
    }

    /// The stamp of clock second `now`: its low 11 bits (0, which means none, taken as 2047).
    #[inline(always)]
    pub fn syn_stamp(now: u32) -> u32 {
        let s = now & 0x7ff;
        if s == 0 { 0x7ff } else { s }
    }

    /// Whether entry word `word` has a stamp within [`SYN_WINDOW`] seconds of clock second `now`.
    #[inline(always)]
    pub fn syn_recent(word: u32, now: u32) -> bool {
        let stamp = (word & SYN_MASK) >> SYN_SHIFT;
        stamp != 0 && now.wrapping_sub(stamp) & 0x7ff <= SYN_WINDOW
    }

    /// The entry of a flow in a table of `size` entries: by its client's address, and its
    /// source port with `port` (`mh-port`).
    #[inline(always)]
    pub fn entry(port: bool, key: &crate::FlowKeyV4, size: u32) -> u32 {
        let hash = if port {
            client_port_hash(key.saddr, key.ports)
        } else {
            client_hash(key.saddr)
        };
        // The hash scaled to [0, size): a multiply, not a division.
        ((u64::from(hash) * u64::from(size)) >> 32) as u32
    }

    /// The hash of a client's address and source port (`mh-port`): `ports` is a flow key's
    /// ports word (the source port in its first two bytes).
    #[inline(always)]
    pub fn client_port_hash(saddr: u32, ports: u32) -> u32 {
        client_hash(saddr ^ (ports & 0xffff).wrapping_mul(0x2545_F491).rotate_left(16))
    }

    /// The hash of a client address (as on the wire) that picks its table entry. Unseeded:
    /// every director, whatever its CPU or node, computes the same one.
    #[inline(always)]
    pub fn client_hash(saddr: u32) -> u32 {
        let mut h = saddr.wrapping_mul(0x9E37_79B1);
        h ^= h >> 16;
        h = h.wrapping_mul(0x85EB_CA6B);
        h ^= h >> 13;
        h = h.wrapping_mul(0xC2B2_AE35);
        h ^= h >> 16;
        h
    }
}

/// Flags in [`Service::flags`].
pub mod service_flags {
    /// A marker entry keyed by (VIP, port 0, protocol): the address is a VIP for that protocol.
    /// Used only to classify IP fragments, which carry no port.
    pub const ADDRESS_MARKER: u16 = 1;
    /// `mh-port`, `sh-port`: the hash takes the client's port with its address.
    pub const MH_PORT: u16 = 2;
    /// `sh-fallback`: when the bucket's real server has weight 0, the next bucket's.
    pub const SH_FALLBACK: u16 = 4;
}

/// Index into `GLOBAL_STATS`. Every packet the program sees is counted under exactly one
/// verdict reason (`FORWARDED` .. `DROP_FLOW_BUSY`), so those entries add up to the
/// total; the entries after them count events, not packets' fates.
pub mod reason {
    /// XDP_TX to a real server.
    pub const FORWARDED: u32 = 0;
    /// XDP_PASS: the frame is not addressed to this interface's MAC (another host's unicast,
    /// multicast, broadcast).
    pub const PASS_NOT_LOCAL: u32 = 1;
    /// XDP_PASS: the interface is not configured in `IFACES`.
    pub const PASS_UNKNOWN_IFACE: u32 = 2;
    /// XDP_PASS: neither IPv4 nor IPv6 (ARP, LLDP, a second VLAN tag, ...).
    pub const PASS_NOT_IP: u32 = 3;
    /// XDP_PASS: IPv6 with an extension header the program does not walk (AH, ESP, mobility,
    /// ...) or a chain of more than four before the upper-layer header.
    pub const PASS_IPV6_EXT: u32 = 4;
    /// XDP_PASS: IPv4 but neither TCP nor UDP (ICMP other than the "fragmentation needed" that
    /// `EVENT_ICMP_TOO_BIG_FORWARDED` counts, ...).
    pub const PASS_OTHER_PROTO: u32 = 5;
    /// XDP_PASS: TCP/UDP not addressed to a virtual service.
    pub const PASS_NO_SERVICE: u32 = 6;
    /// XDP_PASS: an IP fragment not addressed to a VIP.
    pub const PASS_FRAGMENT: u32 = 7;
    /// XDP_DROP: truncated or invalid header (Ethernet, VLAN, IPv4, IPv6 and its extension
    /// headers, TCP, UDP).
    pub const DROP_MALFORMED: u32 = 8;
    /// XDP_DROP: an IP fragment addressed to a VIP (its ports cannot be known).
    pub const DROP_FRAGMENT: u32 = 9;
    /// XDP_DROP: the service has no real server to send a new connection to.
    pub const DROP_NO_REAL_SERVER: u32 = 10;
    /// XDP_DROP: the flow's buckets were being written by other CPUs through every retry, so
    /// its real server could not be read safely (the sender retransmits).
    pub const DROP_FLOW_BUSY: u32 = 11;
    /// Number of verdict reasons (they partition all packets).
    pub const VERDICTS: u32 = 12;

    /// Event: a remembered flow pointed at a real server that was removed or replaced; the flow
    /// was scheduled again.
    pub const EVENT_FLOW_RESCHEDULED: u32 = 12;
    /// Event: two CPUs scheduled the same new flow at once; the first choice was kept.
    pub const EVENT_FLOW_RACE: u32 = 13;
    /// Event: a new flow could not be remembered (its buckets held only live established
    /// flows and the overflow hash was full, or another CPU was writing its buckets). It went
    /// where the flow hash says, as `EVENT_FLOW_MISS_NONSYN` describes.
    pub const EVENT_FLOW_INSERT_FAILED: u32 = 14;
    /// Event: a TCP packet without SYN matched no remembered flow (a flow forgotten, or
    /// spoofed). It is not remembered: it goes to the real server that an unseeded hash of its
    /// 5-tuple picks in the service's scheduling range, the same for every packet of it.
    pub const EVENT_FLOW_MISS_NONSYN: u32 = 15;
    /// Event: a new flow took the place of a closed, expired or half-open one.
    pub const EVENT_FLOW_RECLAIMED: u32 = 16;
    /// Event: an established flow moved from its bucket to the overflow hash to make room.
    pub const EVENT_FLOW_MOVED: u32 = 17;
    /// Event: an ICMP "fragmentation needed" about a connection of a virtual service was sent
    /// to the real server that owns the connection (its flow's, or where the flow hash says),
    /// so that path-MTU discovery works through the director.
    pub const EVENT_ICMP_TOO_BIG_FORWARDED: u32 = 18;
    /// Event: an ICMP "fragmentation needed" that names no connection of a virtual service (the
    /// quoted packet truncated or invalid, not TCP/UDP, or not from a VIP:port): left to the
    /// host (verdict `PASS_OTHER_PROTO`).
    pub const EVENT_ICMP_TOO_BIG_UNMATCHED: u32 = 19;
    /// Event: a TCP packet without SYN matched no remembered flow, on a pinned entry of an `mh`
    /// service's Maglev table (see [`crate::maglev`]): the connection was served directly by
    /// the entry's former real server, so it was sent there and remembered (also counted as
    /// `EVENT_FLOW_MISS_NONSYN`).
    pub const EVENT_FLOW_PINNED: u32 = 20;
    /// Number of `GLOBAL_STATS` entries.
    pub const COUNT: u32 = 21;

    /// Short names, index-aligned with the constants above.
    pub const NAMES: [&str; COUNT as usize] = [
        "forwarded",
        "pass_not_local",
        "pass_unknown_iface",
        "pass_not_ip",
        "pass_ipv6_ext",
        "pass_other_proto",
        "pass_no_service",
        "pass_fragment",
        "drop_malformed",
        "drop_fragment",
        "drop_no_real_server",
        "drop_flow_busy",
        "flow_rescheduled",
        "flow_race",
        "flow_insert_failed",
        "flow_miss_nonsyn",
        "flow_reclaimed",
        "flow_moved",
        "icmp_too_big_forwarded",
        "icmp_too_big_unmatched",
        "flow_pinned",
    ];
}

/// Key of `SERVICES`. The address's bytes as on the wire, in 32-bit words (an IPv4 address is
/// `addr[0]`, the rest zero); the port as on the wire (`u16::from_ne_bytes(port.to_be_bytes())`).
/// Words rather than byte arrays: the data plane then loads and compares whole words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of `SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Service {
    /// Index into `SERVICE_STATS` and `RR`.
    pub id: u32,
    /// First slot in `SCHED`.
    pub sched_start: u32,
    /// Number of slots in `SCHED`; 0: no real server, new connections are dropped.
    pub sched_len: u32,
    /// `mh`: the index of its lookup table in `MAGLEV`.
    pub table: u32,
    pub scheduler: u16,
    pub flags: u16,
    /// Persistence (`-p`): seconds a client keeps its real server after its last new
    /// connection; 0: none.
    pub persist_timeout: u32,
    /// Persistence's client network mask (`-M`), as on the wire, in `ServiceKey::addr`'s
    /// layout (IPv4: the first word, the rest zero).
    pub persist_mask: [u32; 4],
}

/// Value of `REALS`: one real server of one service ("destination" in IPVS).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RealServer {
    pub mac: [u8; 6],
    /// Its weight (1 to 65 535; real servers of weight 0 are in no scheduling range).
    pub weight: u16,
    /// The owning service's id (for its counters).
    pub service: u32,
    /// The slot's generation (1 to `flow_table::GENERATION_MASK`) while the slot is in use; the
    /// next one each time the slot is given to another real server, so a flow remembering an
    /// older generation is scheduled again. A retired slot keeps its last generation with
    /// [`RealServer::RETIRED`] set (no flow matches it); a slot never used is 0.
    pub generation: u32,
    /// The 802.1Q VLAN the real server is reached on (1 to 4094): frames to it leave with that
    /// tag (pushed onto an untagged frame, the VID of a tagged one replaced). 0: frames leave
    /// as they came, tag or none.
    pub vlan: u16,
    /// [`RealServer::DOWN`] or 0.
    pub flags: u16,
}

impl RealServer {
    pub const RETIRED: u32 = 1 << 31;
    /// In `flags`: the real server failed its health check (it has weight 0 while it does). A
    /// SYN on a half-open connection to it is scheduled again (see [`conn::restarts`]).
    pub const DOWN: u16 = 1;
}

/// Value of `MAGLEV` and `MAGLEV_PREV`: [`maglev::BLOCK`] consecutive entries of a Maglev
/// table, one cache line. In `MAGLEV` each word is an entry: the real-server slot of the
/// clients hashed there (low `SLOT_BITS`), the stamp of its last new connection
/// ([`maglev::SYN_SHIFT`], written by the data plane) and [`maglev::PINNED`]. In `MAGLEV_PREV`
/// the word of a pinned entry is the target (slot and generation, as [`Flow::target`]) of the
/// real server it had before it changed (see [`maglev`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MaglevBlock {
    pub words: [u32; maglev::BLOCK as usize],
}

/// Value of `DIRECT`: an `mh` service whose known flows take the direct path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct DirectService {
    /// The VIP, as on the wire.
    pub daddr: u32,
    /// The port, as on the wire.
    pub port: u16,
    /// `PROTO_TCP`; 0 in an empty entry.
    pub proto: u8,
    /// [`service_flags::MH_PORT`] or 0.
    pub flags: u8,
    /// The first entry of the service's Maglev table in `MAGLEV`.
    pub base: u32,
    pub _pad: u32,
}

/// Key of `FLOWS_V4`: the 5-tuple, each field holding its bytes as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKeyV4 {
    pub saddr: u32,
    pub daddr: u32,
    /// Source and destination port, the four bytes as on the wire.
    pub ports: u32,
    /// The IP protocol number. A whole word: a padding array would cost the data plane a call
    /// to memset on every packet.
    pub proto: u32,
}

/// Key of `FLOWS_V6`: the IPv6 5-tuple, each field holding its bytes as on the wire (an
/// address as four words).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKeyV6 {
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    /// Source and destination port, the four bytes as on the wire.
    pub ports: u32,
    /// The IP protocol number (the upper-layer header after any extension headers).
    pub proto: u32,
}

/// Value of the overflow hash, and the second half of a [`FlowEntryV4`]: where a flow goes and
/// the state of its connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Flow {
    /// The real-server slot in `REALS` (low `SLOT_BITS`) and its generation when the flow was
    /// scheduled (the high bits, never 0).
    pub target: u32,
    /// The IP protocol; 0 in a free way.
    pub proto: u8,
    /// The connection's state ([`conn`]).
    pub state: u8,
    /// [`Clock::now`] (its low 16 bits) when the flow last saw a packet.
    pub stamp: u16,
}

impl Flow {
    #[inline(always)]
    pub fn new(slot: u32, generation: u32, proto: u8, state: u8, stamp: u16) -> Flow {
        Flow {
            target: slot | generation << flow_table::SLOT_BITS,
            proto,
            state,
            stamp,
        }
    }

    #[inline(always)]
    pub fn slot(&self) -> u32 {
        self.target & flow_table::SLOT_MASK
    }

    #[inline(always)]
    pub fn generation(&self) -> u32 {
        self.target >> flow_table::SLOT_BITS
    }
}

/// One remembered IPv4 flow in a [`FlowBucketV4`]: the 5-tuple and the [`Flow`]. A way is free
/// when `flow.proto` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowEntryV4 {
    pub saddr: u32,
    pub daddr: u32,
    pub ports: u32,
    pub flow: Flow,
}

impl FlowEntryV4 {
    #[inline(always)]
    pub fn new(key: &FlowKeyV4, flow: Flow) -> FlowEntryV4 {
        FlowEntryV4 {
            saddr: key.saddr,
            daddr: key.daddr,
            ports: key.ports,
            flow,
        }
    }

    #[inline(always)]
    pub fn is_free(&self) -> bool {
        self.flow.proto == 0
    }

    #[inline(always)]
    pub fn key(&self) -> FlowKeyV4 {
        FlowKeyV4 {
            saddr: self.saddr,
            daddr: self.daddr,
            ports: self.ports,
            proto: u32::from(self.flow.proto),
        }
    }
}

/// One remembered IPv6 flow in a [`FlowBucketV6`]: the 5-tuple and the [`Flow`]. A way is free
/// when `flow.proto` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowEntryV6 {
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    pub ports: u32,
    pub flow: Flow,
}

impl FlowEntryV6 {
    #[inline(always)]
    pub fn is_free(&self) -> bool {
        self.flow.proto == 0
    }

    #[inline(always)]
    pub fn key(&self) -> FlowKeyV6 {
        FlowKeyV6 {
            saddr: self.saddr,
            daddr: self.daddr,
            ports: self.ports,
            proto: u32::from(self.flow.proto),
        }
    }
}

/// Value of `FLOW_CACHE_V6`: two 64-byte cache lines, two flows of 44 bytes and the sequence
/// count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowBucketV6 {
    pub ways: [FlowEntryV6; flow_table::WAYS_V6],
    /// As [`FlowBucketV4::seq`].
    pub seq: u32,
    pub _pad: [u32; 9],
}

/// Value of `FLOW_CACHE_V4`: one 64-byte cache line of flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowBucketV4 {
    pub ways: [FlowEntryV4; flow_table::WAYS],
    /// The bucket's sequence count: odd while a writer holds the bucket (taken with a
    /// compare-and-swap from even), advanced by 2 by every write of a way's 5-tuple or target.
    /// A reader that sees it odd, or changed across its read, read nothing it may trust.
    pub seq: u32,
}

/// Value of `REAL_CONNS`: a real server's connections, active (SYN_RECV, ESTABLISHED) and
/// inactive (the other states), as IPVS counts them. Signed: adds and subtracts from the data
/// plane and userspace may pass each other.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ConnCount {
    pub active: i64,
    pub inactive: i64,
}

/// Key of `PERSIST`: a service and a client network (the client's address masked by the
/// service's `persist_mask`, as on the wire, in `ServiceKey::addr`'s layout). Service ids are
/// unique over both families, so IPv4 and IPv6 templates share the map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PersistKey {
    pub service: u32,
    pub client: [u32; 4],
}

/// Value of `PERSIST`: the real server (as `Flow::target`) and the clock (low 16 bits) of the
/// client network's last new connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Persist {
    pub target: u32,
    pub stamp: u16,
    pub _pad: u16,
}

/// Value of `CLOCK`: the flow table's idle clock and the timeouts, both in seconds. Userspace
/// advances `now` (CLOCK_BOOTTIME seconds) about once a second; a flow stores its low 16 bits
/// when it sees a packet, and only when they changed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Clock {
    pub now: u32,
    pub _pad: u32,
    /// Idle timeout per state, indexed by the [`conn`] state (8 entries: the data plane
    /// indexes with `state & 7`, which the verifier can bound).
    pub timeouts: [u32; 8],
}

impl Clock {
    /// The idle timeout of `state`.
    #[inline(always)]
    pub fn timeout(&self, state: u8) -> u32 {
        self.timeouts[usize::from(state & 7)]
    }
}

/// Connection states, tracked as IPVS tracks them in direct-routing mode: from the client's
/// side only (IPVS's "input-only" table), on SYN, FIN, ACK and RST. UDP has one state.
pub mod conn {
    pub const SYN_RECV: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const FIN_WAIT: u8 = 3;
    pub const TIME_WAIT: u8 = 4;
    pub const CLOSE: u8 = 5;
    pub const UDP: u8 = 6;
    /// Number of state values (0 is no state: a free way).
    pub const STATES: usize = 7;
    /// As ipvsadm -L -c names them.
    pub const NAMES: [&str; STATES] = [
        "NONE",
        "SYN_RECV",
        "ESTABLISHED",
        "FIN_WAIT",
        "TIME_WAIT",
        "CLOSE",
        "UDP",
    ];
    /// IPVS's default timeouts (seconds), indexed by state. `--set TCP TCPFIN UDP` changes
    /// ESTABLISHED, FIN_WAIT and UDP.
    pub const DEFAULT_TIMEOUTS: [u32; STATES] = [2, 60, 900, 120, 120, 10, 300];
    /// The largest timeout: a flow's idle time is kept in 16 bits of seconds, and the sweep
    /// that frees expired flows passes over the whole table at least every 256 s.
    pub const MAX_TIMEOUT: u32 = 64_800;

    /// TCP flags, as in the 14th byte of the TCP header.
    pub const TCP_FIN: u8 = 0x01;
    pub const TCP_SYN: u8 = 0x02;
    pub const TCP_RST: u8 = 0x04;
    pub const TCP_ACK: u8 = 0x10;

    /// IPVS counts these under ActiveConn, every other state under InActConn.
    #[inline(always)]
    pub fn is_active(state: u8) -> bool {
        state == SYN_RECV || state == ESTABLISHED
    }

    /// Whether a packet with these TCP flags opens a connection: SYN without RST.
    #[inline(always)]
    pub fn is_syn(flags: u8) -> bool {
        flags & (TCP_SYN | TCP_RST) == TCP_SYN
    }

    /// Whether a packet with these flags may change a connection's state (a plain ACK in
    /// ESTABLISHED, FIN_WAIT, TIME_WAIT or CLOSE does not).
    #[inline(always)]
    pub fn may_change(state: u8, flags: u8) -> bool {
        flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 || state == SYN_RECV
    }

    /// A TCP connection's state after a packet from the client with `flags`: IPVS's
    /// input-only transitions (RST first, then SYN, FIN, ACK; other packets change nothing).
    /// A SYN on a TIME_WAIT or CLOSE connection is a new connection (see
    /// [`reopens`]), not a transition.
    #[inline(always)]
    pub fn next_tcp(state: u8, flags: u8) -> u8 {
        if flags & TCP_RST != 0 {
            if state == SYN_RECV { SYN_RECV } else { CLOSE }
        } else if flags & TCP_SYN != 0 {
            if state == ESTABLISHED {
                ESTABLISHED
            } else {
                SYN_RECV
            }
        } else if flags & TCP_FIN != 0 {
            match state {
                ESTABLISHED => FIN_WAIT,
                SYN_RECV => TIME_WAIT,
                s => s,
            }
        } else if flags & TCP_ACK != 0 && state == SYN_RECV {
            ESTABLISHED
        } else {
            state
        }
    }

    /// Whether a SYN on a remembered connection in `state`, idle for `expired`, starts a new
    /// connection (scheduled again), as IPVS does with its default `conn_reuse_mode`.
    #[inline(always)]
    pub fn reopens(state: u8, expired: bool) -> bool {
        expired || state == TIME_WAIT || state == CLOSE
    }

    /// Whether a SYN on a remembered connection in `state`, to a real server of `flags`
    /// ([`crate::RealServer::flags`]), starts a new connection (scheduled again): a half-open
    /// one (SYN_RECV) to a real server that failed its health check. Nothing was established
    /// there, and in DR the director never sees that real server refuse the handshake, so the
    /// client's retry, or a new connection from the same source port, would be refused again
    /// for the SYN_RECV timeout. A real server set to weight 0 by the operator (quiesced) keeps
    /// such SYNs, as in IPVS.
    #[inline(always)]
    pub fn restarts(state: u8, flags: u16) -> bool {
        state == SYN_RECV && flags & crate::RealServer::DOWN != 0
    }

    /// Seconds since `stamp` (wrapping 16-bit seconds).
    #[inline(always)]
    pub fn age(now: u32, stamp: u16) -> u32 {
        u32::from((now as u16).wrapping_sub(stamp))
    }

    /// The eviction rank of a way (lower goes first): free, then closed (TIME_WAIT, CLOSE)
    /// or expired, then half-open (SYN_RECV), then the rest (ESTABLISHED, FIN_WAIT, UDP); the
    /// least recently seen first within each.
    #[inline(always)]
    pub fn rank(proto: u8, state: u8, age: u32, timeout: u32) -> u32 {
        let class = if proto == 0 {
            0
        } else if age > timeout || state == TIME_WAIT || state == CLOSE {
            1
        } else if state == SYN_RECV {
            2
        } else {
            3
        };
        class << 16 | (0xffff - (age & 0xffff))
    }

    /// Ranks at or above this are live flows that must not be dropped to make room.
    pub const RANK_KEEP: u32 = 3 << 16;
}

/// The IPv4 flow table: a set-associative cache of 64-byte buckets (`FLOW_CACHE_V4`) in front
/// of a kernel hash (`FLOWS_V4`) for the established flows that find no room there.
///
/// A flow has two candidate buckets, both chosen by a seeded hash of its 5-tuple: one in the
/// *front* (the first `FLOW_FRONT_MASK + 1` buckets, 4 MiB at most) and one anywhere in the
/// array. A lookup reads the front bucket, then the other, then the overflow hash. A new flow
/// goes to a free way of its two buckets, else to the way of lowest [`crate::conn::rank`]:
/// a closed or expired flow, then a half-open one, each simply replaced; only when all six are
/// live established flows (or FIN_WAIT, or UDP) does the least recently seen of them move to
/// the overflow hash to make room. When the overflow hash is full too, the new flow is not
/// remembered at all (`flow_insert_failed`): no live flow is ever dropped to make room.
///
/// Concurrency: writers of a way's 5-tuple or target hold its bucket (its `seq`, see
/// [`crate::FlowBucketV4`]); readers check `seq` around their read. A flow's state and stamp
/// are single-byte and two-byte stores that never change which flow a way holds.
///
/// Why buckets: with the kernel's hash alone, a lookup reads a bucket and an element, in
/// different places of a large table, each a cache miss and (4 KiB pages) a TLB miss once the
/// flows outnumber the caches. Here a lookup in the front is one cache line in a region small
/// enough for the TLB, and any other lookup one line more.
pub mod flow_table {
    /// Flows per bucket (3 x 20 bytes + the sequence count = 64 bytes).
    pub const WAYS: usize = 3;
    /// Flows per IPv6 bucket (2 x 44 bytes + the sequence count, in 128 bytes).
    pub const WAYS_V6: usize = 2;
    /// Buckets in the IPv6 front region at most (4 MiB).
    pub const MAX_FRONT_BUCKETS_V6: u32 = 1 << 15;
    /// Buckets in the front region at most (4 MiB).
    pub const MAX_FRONT_BUCKETS: u32 = 1 << 16;
    /// Real-server slots fit in the low 20 bits of `Flow::target` (so at most 1 048 576).
    pub const SLOT_BITS: u32 = 20;
    pub const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
    /// Generations take the other 12 bits: 1 to 4095, then 1 again.
    pub const GENERATION_MASK: u32 = (1 << (32 - SLOT_BITS)) - 1;
    /// Names of the program's read-only globals, set by the loader.
    pub const SEED: &str = "FLOW_HASH_SEED";
    /// Buckets in `FLOW_CACHE_V4` minus one (a power of two minus one).
    pub const BUCKET_MASK: &str = "FLOW_BUCKET_MASK";
    /// Buckets in the front region minus one.
    pub const FRONT_MASK: &str = "FLOW_FRONT_MASK";
    /// The same two for `FLOW_CACHE_V6`.
    pub const BUCKET_MASK_V6: &str = "FLOW6_BUCKET_MASK";
    pub const FRONT_MASK_V6: &str = "FLOW6_FRONT_MASK";

    /// Buckets and overflow entries for a table that must hold `flows` flows: as many buckets
    /// as `flows` rounded up to a power of two (3 to 6 ways a flow, so that few flows need the
    /// overflow hash), and an overflow hash of a quarter of `flows`, at least `MIN_OVERFLOW`.
    pub const fn sizes(flows: u32) -> (u32, u32) {
        let buckets = flows.next_power_of_two();
        let overflow = if flows / 4 > MIN_OVERFLOW {
            flows / 4
        } else {
            MIN_OVERFLOW
        };
        (buckets, overflow)
    }

    /// Kernel memory of the two maps for a table of `flows` flows, in bytes, at most: the
    /// buckets (allocated up front), and the overflow hash at 88 bytes an entry (allocated as
    /// it fills).
    pub const fn memory(flows: u32) -> u64 {
        let (buckets, overflow) = sizes(flows);
        buckets as u64 * core::mem::size_of::<super::FlowBucketV4>() as u64 + overflow as u64 * 88
    }

    /// The smallest overflow hash.
    pub const MIN_OVERFLOW: u32 = 1024;

    /// Buckets and overflow entries for an IPv6 table of `flows` flows: half as many buckets
    /// (two ways each, rounded up to a power of two: 2 to 4 ways a flow), and an overflow hash
    /// of a quarter of `flows`, at least `MIN_OVERFLOW`.
    pub const fn sizes_v6(flows: u32) -> (u32, u32) {
        let buckets = (flows / 2).next_power_of_two();
        let overflow = if flows / 4 > MIN_OVERFLOW {
            flows / 4
        } else {
            MIN_OVERFLOW
        };
        (buckets, overflow)
    }

    /// Kernel memory of the IPv6 table's two maps, as [`memory`] (an overflow entry takes 112
    /// bytes).
    pub const fn memory_v6(flows: u32) -> u64 {
        let (buckets, overflow) = sizes_v6(flows);
        buckets as u64 * core::mem::size_of::<super::FlowBucketV6>() as u64 + overflow as u64 * 112
    }

    /// The seeded hash of an IPv6 5-tuple: the addresses folded to a word each (as IPVS folds
    /// them), then as [`hash`].
    #[inline(always)]
    pub fn hash_v6(key: &super::FlowKeyV6, seed: u32) -> u32 {
        let fold =
            |a: [u32; 4]| a[0] ^ a[1].rotate_left(8) ^ a[2].rotate_left(16) ^ a[3].rotate_left(24);
        hash(
            &super::FlowKeyV4 {
                saddr: fold(key.saddr),
                daddr: fold(key.daddr),
                ports: key.ports,
                proto: key.proto,
            },
            seed,
        )
    }

    /// The seeded hash of a 5-tuple that both of its buckets come from.
    #[inline(always)]
    pub fn hash(key: &super::FlowKeyV4, seed: u32) -> u32 {
        // Three independent multiplies (they run in parallel), then murmur3's finalizer: the
        // bucket index is on every packet's critical path. The seed enters every word.
        let mut h = (key.saddr ^ seed).wrapping_mul(0x9E37_79B1)
            ^ (key.ports ^ seed.rotate_left(16)).wrapping_mul(0x85EB_CA77)
            ^ (key.daddr ^ key.proto ^ seed.rotate_left(8)).wrapping_mul(0xC2B2_AE3D);
        h ^= h >> 16;
        h = h.wrapping_mul(0x85EB_CA6B);
        h ^= h >> 13;
        h = h.wrapping_mul(0xC2B2_AE35);
        h ^= h >> 16;
        h
    }

    /// The front bucket of a flow of hash `h`.
    #[inline(always)]
    pub fn front_bucket(h: u32, front_mask: u32) -> u32 {
        h & front_mask
    }

    /// The other bucket of a flow of hash `h`: from the high half of the hash first (the front
    /// bucket uses the low half).
    #[inline(always)]
    pub fn other_bucket(h: u32, bucket_mask: u32) -> u32 {
        h.rotate_left(16).wrapping_mul(0x297A_2D39) & bucket_mask
    }
}

/// Value of `IFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Iface {
    pub mac: [u8; 6],
    /// 1 when the program serves this interface.
    pub enabled: u8,
    pub _pad: u8,
}

/// Per-CPU counters of a service, a real server, or a global reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Counters {
    /// Packets (frames) seen.
    pub packets: u64,
    /// Bytes of those frames, from the Ethernet header on.
    pub bytes: u64,
    /// New connections scheduled.
    pub conns: u64,
    /// Packets dropped because no real server was available (services only).
    pub drops: u64,
}

/// A fingerprint of the layouts of every map's keys and values. A director kept by
/// `run --keep` is taken over only by a program of the same layouts: the next one reuses its
/// maps as they are.
pub const LAYOUT: u32 = {
    let sizes = [
        core::mem::size_of::<ServiceKey>(),
        core::mem::size_of::<Service>(),
        core::mem::size_of::<RealServer>(),
        core::mem::size_of::<FlowKeyV4>(),
        core::mem::size_of::<Flow>(),
        core::mem::size_of::<FlowBucketV4>(),
        core::mem::size_of::<FlowKeyV6>(),
        core::mem::size_of::<FlowBucketV6>(),
        core::mem::size_of::<Iface>(),
        core::mem::size_of::<Clock>(),
        core::mem::size_of::<ConnCount>(),
        core::mem::size_of::<PersistKey>(),
        core::mem::size_of::<Persist>(),
        core::mem::size_of::<Counters>(),
        core::mem::size_of::<MaglevBlock>(),
        core::mem::size_of::<DirectService>(),
        reason::COUNT as usize,
    ];
    // FNV-1a over the sizes.
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < sizes.len() {
        h = (h ^ sizes[i] as u32).wrapping_mul(0x0100_0193);
        i += 1;
    }
    h
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are #[repr(C)], Copy and 'static, and bytemuck::Pod proves there are no
    // padding bytes, so every bit pattern the kernel hands back is a valid value.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::RealServer {}
    unsafe impl aya::Pod for super::FlowKeyV4 {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::FlowBucketV4 {}
    unsafe impl aya::Pod for super::FlowKeyV6 {}
    unsafe impl aya::Pod for super::FlowBucketV6 {}
    unsafe impl aya::Pod for super::Iface {}
    unsafe impl aya::Pod for super::Clock {}
    unsafe impl aya::Pod for super::ConnCount {}
    unsafe impl aya::Pod for super::PersistKey {}
    unsafe impl aya::Pod for super::Persist {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::MaglevBlock {}
    unsafe impl aya::Pod for super::DirectService {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_are_stable() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<Service>(), 40);
        assert_eq!(size_of::<PersistKey>(), 20);
        assert_eq!(size_of::<Persist>(), 8);
        assert_eq!(size_of::<RealServer>(), 20);
        assert_eq!(size_of::<FlowKeyV4>(), 16);
        assert_eq!(size_of::<Flow>(), 8);
        assert_eq!(size_of::<FlowEntryV4>(), 20);
        assert_eq!(size_of::<FlowBucketV4>(), 64);
        assert_eq!(size_of::<FlowKeyV6>(), 40);
        assert_eq!(size_of::<FlowEntryV6>(), 44);
        assert_eq!(size_of::<FlowBucketV6>(), 128);
        assert_eq!(size_of::<Iface>(), 8);
        assert_eq!(size_of::<Counters>(), 32);
        assert_eq!(size_of::<Clock>(), 40);
        assert_eq!(size_of::<ConnCount>(), 16);
        assert_eq!(reason::NAMES.len(), reason::COUNT as usize);
    }

    /// The flow hash spreads structured keys (consecutive ports, then consecutive addresses, as
    /// a load generator or a NAT sends them) over the buckets as a random function would: the
    /// share of empty buckets is e^-load.
    #[test]
    fn the_flow_hash_spreads_consecutive_flows_evenly() {
        extern crate std;
        use std::vec;
        const FLOWS: u32 = 200_000;
        let (front_bits, all_bits) = (16, 18);
        let mut front = vec![0u32; 1 << front_bits];
        let mut all = vec![0u32; 1 << all_bits];
        for seed in [0, 0xdead_beef] {
            front.fill(0);
            all.fill(0);
            for i in 0..FLOWS {
                let saddr = u32::from_be_bytes([10, 200, 0, 1]) + i / 16384;
                let sport = (1024 + i % 16384) as u16;
                let [hi, lo] = sport.to_be_bytes();
                let ports = u32::from_ne_bytes([hi, lo, 0, 80]);
                let key = FlowKeyV4 {
                    saddr: saddr.swap_bytes(),
                    daddr: u32::from_ne_bytes([10, 0, 0, 10]),
                    ports,
                    proto: 6,
                };
                let h = flow_table::hash(&key, seed);
                let a = flow_table::front_bucket(h, (1 << front_bits) - 1);
                let b = flow_table::other_bucket(h, (1 << all_bits) - 1);
                front[a as usize] += 1;
                all[b as usize] += 1;
            }
            for (name, counts) in [("front", &front), ("other", &all)] {
                let load = f64::from(FLOWS) / counts.len() as f64;
                let expected = (-load).exp() * counts.len() as f64;
                let empty = counts.iter().filter(|&&c| c == 0).count() as f64;
                assert!(
                    (empty - expected).abs() < expected * 0.1,
                    "seed {seed:#x}, {name}: {empty} empty buckets, expected about {expected:.0}"
                );
                let fullest = counts.iter().max().copied().unwrap_or(0);
                assert!(
                    fullest < 20,
                    "seed {seed:#x}, {name}: a bucket of {fullest}"
                );
            }
        }
    }
}

/// The benchmark programs' contract (object `lvs-xdp-bench`): a traffic generator run with
/// BPF_PROG_TEST_RUN live frames, a counting sink, a bare XDP_TX bounce and a pass program.
pub mod bench {
    pub const GENERATOR: &str = "bench_gen";
    pub const SINK: &str = "bench_sink";
    pub const BOUNCE: &str = "bench_bounce";
    pub const PASS: &str = "bench_pass";
    /// A minimal flow-table load balancer: the reference lvs-xdp is compared with.
    pub const MINIMAL_LB: &str = "bench_minimal_lb";
    /// `Array<u64>`, two entries: the minimal load balancer's backend MACs (first six bytes).
    pub const MIN_BACKENDS: &str = "MIN_BACKENDS";
    /// `Array<GenConfig>`, one entry.
    pub const GEN_CONFIG: &str = "GEN_CONFIG";
    /// `PerCpuArray<u32>`, one entry: the next flow index.
    pub const GEN_STATE: &str = "GEN_STATE";
    /// `PerCpuArray<u64>`, 256 entries: frames received, by the last byte of the destination MAC.
    pub const SINK_COUNTS: &str = "SINK_COUNTS";
    /// Source ports per source address: flow `i` uses port `sport_base + i % PORTS_PER_ADDR`
    /// from address `saddr + i / PORTS_PER_ADDR`.
    pub const PORTS_PER_ADDR: u32 = 16384;

    /// What the generator sends. The frame itself is the template given to BPF_PROG_TEST_RUN
    /// (flow 0, with its checksums); live-frame pages start as a copy of it and are recycled
    /// without being reset, so on every run the generator rewrites everything that varies or
    /// that the program under test may have changed: both MACs, the source address's last 32
    /// bits, the source port and the checksums (updated incrementally from the template's).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
    pub struct GenConfig {
        pub dst_mac: [u8; 6],
        pub src_mac: [u8; 6],
        /// Number of distinct flows (cycled through in order); at least 1.
        pub flows: u32,
        /// Offset of the source address's last 32 bits in the frame.
        pub saddr_off: u16,
        /// Offset of the L4 header.
        pub l4_off: u16,
        /// Offset of the L4 checksum.
        pub l4_csum_off: u16,
        /// Offset of the IPv4 header checksum; 0 for IPv6.
        pub ip_csum_off: u16,
        /// The template's source address (last 32 bits), port and checksums, host order.
        pub saddr_low: u32,
        pub sport: u16,
        pub l4_csum: u16,
        pub ip_csum: u16,
        pub _pad: [u8; 2],
    }
    #[cfg(feature = "user")]
    // SAFETY: as for the other map types: repr(C), Copy, no padding (bytemuck::Pod).
    unsafe impl aya::Pod for GenConfig {}
}
