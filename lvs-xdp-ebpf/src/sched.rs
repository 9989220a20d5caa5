//! Scheduling of new flows.
use lvs_xdp_common::{
    FlowKeyV4, RealServer, Service, flow_table, maglev, scheduler, service_flags,
};

use aya_ebpf::{cty::c_void, helpers::bpf_loop};

use crate::{
    conns,
    maps::{MAGLEV, MAGLEV_PREV, REALS, RR, SCAN, SCHED, Scan},
};

/// Picks a real server by round robin for a new flow of `svc`: its slot in `REALS` and a copy
/// of the entry. `None` when the service has no usable real server.
#[inline(always)]
fn pick(svc: &Service) -> Option<(u32, RealServer)> {
    if svc.sched_len == 0 {
        return None;
    }
    let offset = match svc.scheduler {
        scheduler::RR => round_robin(svc)?,
        scheduler::TWOS => two_choices(svc)?,
        _ => by_connections(svc)?,
    };
    at(svc, offset)
}

/// The connection-based schedulers, as IPVS's: the position in the service's range of the real
/// server with the lowest score, the first one on a tie (at most `MAX_SCAN` compared). Scores
/// are fractions `num / den`, compared by cross-multiplying as IPVS does.
///
/// The scan runs in `bpf_loop`, so that the verifier checks one step rather than every one, and
/// keeps its state in a per-CPU map value (`SCAN`) rather than on the stack: the verifier does
/// not follow values in maps, so the step converges at once.
#[inline(always)]
fn by_connections(svc: &Service) -> Option<u32> {
    let scan = SCAN.get_ptr_mut(0)?;
    let len = svc.sched_len.min(scheduler::MAX_SCAN);
    // SAFETY: this CPU's entry of a per-CPU array; nothing else runs on this CPU meanwhile.
    unsafe {
        *scan = Scan {
            start: svc.sched_start,
            kind: u32::from(svc.scheduler),
            best: u32::MAX,
            second: 0,
            num: 0,
            den: 0,
        };
        bpf_loop(len, scan_step as *mut c_void, core::ptr::null_mut(), 0);
        let best = (*scan).best;
        (best < len).then_some(best)
    }
}

/// `twos`: two draws by weight (`bpf_get_prandom_u32` over the sum of the weights, kept in the
/// service's `table`), one pass over the range to find both, then the lower overhead / weight
/// (overhead as `wlc`'s, plus one, so that idle real servers compare by weight).
#[inline(always)]
fn two_choices(svc: &Service) -> Option<u32> {
    if svc.table == 0 {
        return None;
    }
    let scan = SCAN.get_ptr_mut(0)?;
    // SAFETY: a helper without arguments.
    let (r1, r2) = unsafe {
        (
            aya_ebpf::helpers::bpf_get_prandom_u32() % svc.table,
            aya_ebpf::helpers::bpf_get_prandom_u32() % svc.table,
        )
    };
    let len = svc.sched_len.min(scheduler::MAX_SCAN);
    // SAFETY: this CPU's entry of a per-CPU array; nothing else runs on this CPU meanwhile.
    let (a, b) = unsafe {
        *scan = Scan {
            start: svc.sched_start,
            kind: u32::MAX,
            best: u32::MAX,
            second: u32::MAX,
            num: u64::from(r1),
            den: u64::from(r2),
        };
        bpf_loop(len, draw_step as *mut c_void, core::ptr::null_mut(), 0);
        ((*scan).best, (*scan).second)
    };
    if a >= len || b >= len {
        return None;
    }
    let overhead = |i: u32| -> Option<(u64, u64)> {
        let slot = *SCHED.get(svc.sched_start.wrapping_add(i))?;
        let real = REALS.get(slot)?;
        let c = conns::of(slot);
        let o = c.active.max(0) as u64 * 256 + c.inactive.max(0) as u64 + 1;
        Some((o, u64::from(real.weight.max(1))))
    };
    let ((oa, wa), (ob, wb)) = (overhead(a)?, overhead(b)?);
    Some(if oa * wb > ob * wa { b } else { a })
}

/// What a step of a scan in `bpf_loop` works on: this CPU's `SCAN` entry, and the slot and
/// real server at position `i` of the range it scans.
#[inline(always)]
fn step_at(i: u32) -> Option<(&'static mut Scan, u32, &'static RealServer)> {
    let scan = SCAN.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry of a per-CPU array, for this program run.
    let scan = unsafe { &mut *scan };
    let slot = *SCHED.get(scan.start.wrapping_add(i))?;
    let real = REALS.get(slot)?;
    Some((scan, slot, real))
}

/// One step of the `twos` draws: position `i` takes a draw whose remainder (`num`, `den`) falls
/// within its weight; the positions go to `best` and `second`. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn draw_step(i: u32, _ctx: *mut c_void) -> i64 {
    let Some((scan, _, real)) = step_at(i) else {
        return 1;
    };
    let w = u64::from(real.weight);
    if scan.best == u32::MAX {
        if scan.num < w {
            scan.best = i;
        } else {
            scan.num -= w;
        }
    }
    if scan.second == u32::MAX {
        if scan.den < w {
            scan.second = i;
        } else {
            scan.den -= w;
        }
    }
    i64::from(scan.best != u32::MAX && scan.second != u32::MAX)
}

/// One step of `by_connections`: position `i`. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn scan_step(i: u32, _ctx: *mut c_void) -> i64 {
    let Some((scan, slot, real)) = step_at(i) else {
        return 1;
    };
    let c = conns::of(slot);
    let active = c.active.max(0) as u64;
    let inactive = c.inactive.max(0) as u64;
    let weight = u64::from(real.weight.max(1));
    let (num, den) = match scan.kind as u16 {
        scheduler::LC => (active * 256 + inactive, 1),
        scheduler::WLC => (active * 256 + inactive, weight),
        scheduler::NQ if active == 0 => {
            scan.best = i;
            return 1;
        }
        scheduler::SED | scheduler::NQ => (active + 1, weight),
        // The highest weight: the lowest 1 / weight.
        scheduler::FO => (1, weight),
        // Eligible while its active connections do not exceed its weight (IPVS skips above).
        scheduler::OVF if active <= weight => (1, weight),
        scheduler::OVF => return 0,
        _ => return 1,
    };
    if scan.best == u32::MAX || num * scan.den < scan.num * den {
        scan.best = i;
        scan.num = num;
        scan.den = den;
    }
    0
}

/// Picks a real server for a new flow of `svc`, by its scheduler: by round robin, or for `mh`
/// by the client's entry in the service's Maglev table (stamped with clock second `now`).
#[inline(always)]
pub fn pick_for(svc: &Service, key: &FlowKeyV4, now: u32) -> Option<(u32, RealServer)> {
    match svc.scheduler {
        scheduler::MH => by_maglev_new(svc, key, now),
        scheduler::SH | scheduler::DH => by_bucket(svc, key),
        _ => pick(svc),
    }
}

/// `sh` and `dh`: the real server of the client's (or the destination's) bucket in the table
/// the scheduling range holds, as IPVS finds it. A real server of weight 0 is unavailable:
/// with `sh-fallback` the following buckets are tried in turn, otherwise there is none.
#[inline(always)]
fn by_bucket(svc: &Service, key: &FlowKeyV4) -> Option<(u32, RealServer)> {
    if svc.sched_len == 0 {
        return None;
    }
    let ports = key.ports.to_le_bytes();
    let (addr, port) = if svc.scheduler == scheduler::DH {
        (key.daddr, 0)
    } else if svc.flags & service_flags::MH_PORT != 0 {
        (key.saddr, u16::from_be_bytes([ports[0], ports[1]]))
    } else {
        (key.saddr, 0)
    };
    let first = scheduler::bucket(u32::from_be(addr), port);
    let (slot, real) = at(svc, first % svc.sched_len)?;
    if real.weight != 0 {
        return Some((slot, real));
    }
    if svc.flags & service_flags::SH_FALLBACK == 0 {
        return None;
    }
    // The following buckets in turn, in bpf_loop with its state in `SCAN` (see
    // `by_connections`).
    let scan = SCAN.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry of a per-CPU array; nothing else runs on this CPU meanwhile.
    let found = unsafe {
        *scan = Scan {
            start: svc.sched_start,
            kind: svc.sched_len,
            best: u32::MAX,
            second: 0,
            num: u64::from(first),
            den: 0,
        };
        bpf_loop(
            scheduler::HASH_BUCKETS - 1,
            probe_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
        (*scan).best
    };
    if found == u32::MAX {
        return None;
    }
    at(svc, found)
}

/// One step of the `sh-fallback` probe: the bucket `i + 1` after the first (`Scan::num`) in a
/// table of `Scan::kind` buckets from `Scan::start`. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn probe_step(i: u32, _ctx: *mut c_void) -> i64 {
    let Some(scan) = SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's entry of a per-CPU array, for this program run.
    let scan = unsafe { &mut *scan };
    if scan.kind == 0 {
        return 1;
    }
    let b = ((scan.num as u32).wrapping_add(i + 1)) % scan.kind;
    let Some(slot) = SCHED.get(scan.start.wrapping_add(b)) else {
        return 1;
    };
    match REALS.get(*slot) {
        Some(real) if real.weight != 0 => {
            scan.best = b;
            1
        }
        Some(_) => 0,
        None => 1,
    }
}

/// Entries of every Maglev table (a prime), set by the loader before the program is loaded
/// (read-only data, constant for the verifier).
#[unsafe(no_mangle)]
static MAGLEV_TABLE_SIZE: u32 = maglev::DEFAULT_TABLE_SIZE;

/// Entries of every Maglev table.
#[inline(always)]
pub fn maglev_table_size() -> u32 {
    // SAFETY: a plain read of a read-only global.
    unsafe { core::ptr::read_volatile(&MAGLEV_TABLE_SIZE) }
}

/// The client's entry in the service's Maglev table: its value in `MAGLEV` (and
/// `MAGLEV_PREV`) and its word there.
#[inline(always)]
fn maglev_index(svc: &Service, key: &FlowKeyV4) -> Option<(u32, usize)> {
    if svc.sched_len == 0 {
        return None;
    }
    let size = maglev_table_size();
    if size == 0 {
        return None;
    }
    let entry = maglev::entry(svc.flags & service_flags::MH_PORT != 0, key, size);
    let base = svc.table.wrapping_mul(maglev::blocks(size));
    Some(block_of(base, entry))
}

/// Where entry `entry` of the table from value `base` is: its value and its word.
#[inline(always)]
pub fn block_of(base: u32, entry: u32) -> (u32, usize) {
    (
        base.wrapping_add(entry / maglev::BLOCK),
        (entry % maglev::BLOCK) as usize,
    )
}

/// The real server of the client's entry in the service's Maglev table.
#[inline(always)]
fn by_maglev(svc: &Service, key: &FlowKeyV4) -> Option<(u32, RealServer)> {
    let (block, w) = maglev_index(svc, key)?;
    let word = *MAGLEV.get(block)?.words.get(w)?;
    live(word & flow_table::SLOT_MASK)
}

/// `by_maglev` for a new connection: its entry is stamped with clock second `now`, so that the
/// entry's packets take the flow table for a while (the direct path does not see connection
/// states).
#[inline(always)]
fn by_maglev_new(svc: &Service, key: &FlowKeyV4, now: u32) -> Option<(u32, RealServer)> {
    let (block, w) = maglev_index(svc, key)?;
    let block = MAGLEV.get_ptr_mut(block)?;
    // SAFETY: a value of the map, valid for this program run.
    let e = unsafe {
        (&raw mut (*block).words)
            .cast::<u32>()
            .add(w & (maglev::BLOCK as usize - 1))
    };
    // SAFETY: a word of that value (`w` below BLOCK). The slot and pinned bits stay as they
    // are; userspace only ever clears the pinned bit of a table in use (with an atomic AND),
    // and a racing store of a stamp can only set it again (userspace then clears it again).
    let slot = unsafe {
        let word = core::ptr::read_volatile(e);
        let stamp = maglev::syn_stamp(now) << maglev::SYN_SHIFT;
        if word & maglev::SYN_MASK != stamp {
            core::ptr::write_volatile(e, (word & !maglev::SYN_MASK) | stamp);
        }
        word & flow_table::SLOT_MASK
    };
    live(slot)
}

/// For a TCP packet that matched no flow: when the client's entry in an `mh` service's table
/// is pinned and its former real server is still there (and not its real server now), that
/// real server. The connection was forwarded to it directly before the entry changed.
#[inline(always)]
pub fn pinned(svc: &Service, key: &FlowKeyV4) -> Option<(u32, RealServer)> {
    if svc.scheduler != scheduler::MH {
        return None;
    }
    let (block, w) = maglev_index(svc, key)?;
    let word = *MAGLEV.get(block)?.words.get(w)?;
    if word & maglev::PINNED == 0 {
        return None;
    }
    let prev_target = *MAGLEV_PREV.get(block)?.words.get(w)?;
    let prev = prev_target & flow_table::SLOT_MASK;
    if prev == word & flow_table::SLOT_MASK {
        return None;
    }
    let real = *REALS.get(prev)?;
    (real.generation == prev_target >> flow_table::SLOT_BITS).then_some((prev, real))
}

/// A real-server slot's entry, if it holds a live real server.
#[inline(always)]
fn live(slot: u32) -> Option<(u32, RealServer)> {
    let real = *REALS.get(slot)?;
    if real.generation == 0 || real.generation & RealServer::RETIRED != 0 {
        return None;
    }
    Some((slot, real))
}

/// The real server at `offset` in the service's scheduling range.
#[inline(always)]
fn at(svc: &Service, offset: u32) -> Option<(u32, RealServer)> {
    let slot = *SCHED.get(svc.sched_start.wrapping_add(offset))?;
    live(slot)
}

/// The real server for a flow that is not remembered: for `mh`, `sh` and `dh`, where the table
/// says (where its connection is, unless the real servers changed); otherwise picked by an unseeded
/// hash of its 5-tuple over the service's scheduling range, so every packet of it goes to the
/// same one while the range is unchanged.
#[inline(always)]
pub fn by_hash(svc: &Service, key: &FlowKeyV4) -> Option<(u32, RealServer)> {
    match svc.scheduler {
        scheduler::MH => return by_maglev(svc, key),
        scheduler::SH | scheduler::DH => return by_bucket(svc, key),
        _ => {}
    }
    if svc.sched_len == 0 {
        return None;
    }
    at(svc, flow_table::hash(key, 0) % svc.sched_len)
}

/// Round-robin from a per-CPU position: each CPU walks the service's slots in turn, without
/// atomics. Scheduling is per flow, never per packet.
#[inline(always)]
fn round_robin(svc: &Service) -> Option<u32> {
    let pos = RR.get_ptr_mut(svc.id)?;
    // SAFETY: this CPU's slot of a per-CPU array.
    unsafe {
        let mut i = *pos;
        if i >= svc.sched_len {
            i = 0;
        }
        *pos = i + 1;
        Some(i)
    }
}
