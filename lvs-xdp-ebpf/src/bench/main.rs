//! Benchmark programs, in an object of their own so that `lvs-xdp run` never carries them:
//! a traffic generator (run with BPF_PROG_TEST_RUN and live frames), a sink that counts frames
//! per destination MAC, a bare XDP_TX bounce (the ceiling for any load balancer on the path) and
//! a pass program (lets a veth receive XDP-transmitted frames into the stack).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lvs_xdp_common::bench::{GenConfig, PORTS_PER_ADDR};

#[map]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);
#[map]
static GEN_STATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
#[map]
static SINK_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(256, 0);
/// The minimal load balancer's flow table (5-tuple to backend index) and its two backends'
/// MACs (as u64).
#[map]
static MIN_FLOWS: LruHashMap<[u32; 4], u32> = LruHashMap::with_max_entries(1 << 20, 0);
#[map]
static MIN_BACKENDS: Array<u64> = Array::with_max_entries(2, 0);
#[map]
static MIN_RR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The reference for the benchmark: a minimal flow-table load balancer with nothing but the
/// essentials (Ethernet + 20-byte IPv4 header + ports, flow lookup first, round-robin for new
/// flows, destination MAC rewrite). No VLAN, options, fragment or service checks, no counters:
/// what any flow-table XDP balancer has to pay on this path.
#[xdp]
pub fn bench_minimal_lb(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + 38 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: 38 bytes checked above (Ethernet, IPv4 without options, ports).
    let key = unsafe {
        [
            *((data + 26) as *const u32),
            *((data + 30) as *const u32),
            *((data + 34) as *const u32),
            u32::from(*((data + 23) as *const u8)),
        ]
    };
    let backend = match MIN_FLOWS.get_ptr(key) {
        // SAFETY: a pointer into the map's value for this run.
        Some(b) => unsafe { *b },
        None => {
            let Some(rr) = MIN_RR.get_ptr_mut(0) else {
                return xdp_action::XDP_ABORTED;
            };
            // SAFETY: this CPU's slot.
            let b = unsafe {
                let b = *rr & 1;
                *rr = b + 1;
                b
            };
            let _ = MIN_FLOWS.insert(key, b, 0);
            b
        }
    };
    let Some(mac) = MIN_BACKENDS.get(backend) else {
        return xdp_action::XDP_ABORTED;
    };
    let mac = mac.to_ne_bytes();
    // SAFETY: inside the 38 bytes checked above.
    unsafe {
        *(data as *mut u32) = u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]);
        *((data + 4) as *mut u16) = u16::from_ne_bytes([mac[4], mac[5]]);
    }
    xdp_action::XDP_TX
}

/// The generator's offsets lie within the first this many bytes (Ethernet + IPv6 + TCP).
const MAX_HEADERS: usize = 14 + 40 + 20;

#[xdp]
pub fn bench_bounce(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 14 <= ctx.data_end() {
        // SAFETY: bounds checked above.
        let last = unsafe { *((start + 5) as *const u8) };
        if let Some(c) = SINK_COUNTS.get_ptr_mut(last as u32) {
            // SAFETY: this CPU's slot.
            unsafe { *c += 1 };
        }
    }
    xdp_action::XDP_DROP
}

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    match generate(&ctx) {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_ABORTED,
    }
}

/// One's-complement update of a checksum for 16-bit words changing from `old` to `new`
/// (RFC 1624: HC' = ~(~HC + ~m + m')), folded.
#[inline(always)]
fn csum_update(csum: u16, old: u32, new: u32) -> u16 {
    let mut acc = u32::from(!csum);
    acc += u32::from(!(old >> 16) as u16) + u32::from(!old as u16);
    acc += (new >> 16) + (new & 0xffff);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

#[inline(always)]
fn generate(ctx: &XdpContext) -> Option<()> {
    let cfg = GEN_CONFIG.get(0)?;
    let state = GEN_STATE.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot.
    let i = unsafe {
        let i = *state;
        *state = if i + 1 >= cfg.flows { 0 } else { i + 1 };
        i
    };
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return None;
    }
    let saddr = cfg.saddr_low.wrapping_add(i / PORTS_PER_ADDR);
    let sport = cfg.sport.wrapping_add((i % PORTS_PER_ADDR) as u16);
    // SAFETY: the 12 bytes of MACs are inside the frame (checked above).
    unsafe {
        core::ptr::write_unaligned(start as *mut [u8; 6], cfg.dst_mac);
        core::ptr::write_unaligned((start + 6) as *mut [u8; 6], cfg.src_mac);
    }
    put(ctx, cfg.saddr_off, saddr.to_be_bytes())?;
    put(ctx, cfg.l4_off, sport.to_be_bytes())?;
    let l4 = csum_update(cfg.l4_csum, cfg.saddr_low, saddr);
    let l4 = csum_update(l4, u32::from(cfg.sport), u32::from(sport));
    put(ctx, cfg.l4_csum_off, l4.to_be_bytes())?;
    if cfg.ip_csum_off != 0 {
        let ip = csum_update(cfg.ip_csum, cfg.saddr_low, saddr);
        put(ctx, cfg.ip_csum_off, ip.to_be_bytes())?;
    }
    Some(())
}

/// Writes `bytes` at offset `off` (from the map) if it fits in the frame. The offset is bounded
/// first: the verifier accepts a variable offset only with known bounds, checked per pointer.
#[inline(always)]
fn put<const N: usize>(ctx: &XdpContext, off: u16, bytes: [u8; N]) -> Option<()> {
    let off = off as usize;
    if off > MAX_HEADERS {
        return None;
    }
    let p = ctx.data() + off;
    if p + N > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked just above.
    unsafe { core::ptr::write_unaligned(p as *mut [u8; N], bytes) };
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
