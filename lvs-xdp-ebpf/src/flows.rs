//! The IPv4 flow table (see `lvs_xdp_common::flow_table` for its design): two candidate
//! buckets of three ways in `FLOW_CACHE_V4`, then the hash `FLOWS_V4` for established flows
//! that found no room there.
//!
//! Concurrency, per bucket (`FlowBucketV4::seq`):
//! - A writer of a way's 5-tuple or target first takes the bucket: a compare-and-swap of `seq`
//!   from even to odd, which fails if another writer holds it. It writes the way, the 5-tuple
//!   and target before the protocol byte that makes the way match, then releases the bucket
//!   with a second compare-and-swap to the next even value. Both are full barriers.
//! - A reader reads `seq`, then the ways, then `seq` again (volatile loads, in program order);
//!   what it read counts only if `seq` was even and did not change. x86-64 keeps loads in
//!   order, so a way that matched was not rewritten while it was read: a packet never pairs one
//!   flow's 5-tuple with another's real server.
//! - A flow's state and stamp bytes are written in place, without changing which flow the way
//!   holds: the state under the bucket with the 5-tuple checked again, the stamp (a hint for
//!   eviction and expiry) without it.
//! - Userspace frees expired ways with a compare-and-swap of the protocol/state/stamp word: it
//!   fails if a packet or a writer touched the way since userspace read it.
use aya_ebpf::bindings::BPF_NOEXIST;
use core::ptr::{read_volatile, write_volatile};
use lvs_xdp_common::{
    Clock, Flow, FlowBucketV4, FlowEntryV4, FlowKeyV4, RealServer, conn, flow_table,
    flow_table::WAYS, reason,
};

use crate::{
    conns,
    maps::{FLOW_CACHE_V4, FLOWS_V4, REALS},
    stats,
};

/// Set by the loader before the program is loaded (read-only data, constant for the verifier).
#[unsafe(no_mangle)]
static FLOW_HASH_SEED: u32 = 0;
#[unsafe(no_mangle)]
static FLOW_BUCKET_MASK: u32 = 0;
#[unsafe(no_mangle)]
static FLOW_FRONT_MASK: u32 = 0;

/// Where a flow was found.
#[derive(Clone, Copy)]
pub enum Place {
    Way(*mut FlowBucketV4, *mut FlowEntryV4),
    Overflow(*mut Flow),
}

/// What a lookup found.
pub enum Lookup {
    Found(Flow, Place),
    Missing,
    /// A bucket of the flow was being written: nothing read from it can be trusted.
    Busy,
}

/// The flow table's parameters, read-only globals.
#[inline(always)]
fn globals() -> (u32, u32, u32) {
    // SAFETY: plain reads of the program's read-only globals.
    unsafe {
        (
            read_volatile(&FLOW_HASH_SEED),
            read_volatile(&FLOW_BUCKET_MASK),
            read_volatile(&FLOW_FRONT_MASK),
        )
    }
}

/// A flow's two buckets (which may be the same one, hence raw pointers).
#[inline(always)]
fn buckets(key: &FlowKeyV4) -> Option<(*mut FlowBucketV4, *mut FlowBucketV4)> {
    let (seed, mask, front) = globals();
    let h = flow_table::hash(key, seed);
    Some((
        FLOW_CACHE_V4.get_ptr_mut(flow_table::front_bucket(h, front))?,
        FLOW_CACHE_V4.get_ptr_mut(flow_table::other_bucket(h, mask))?,
    ))
}

/// Compare-and-swap of the `u32` at `ptr`: returns the value found there (the swap happened
/// if it equals `old`). A BPF atomic instruction, fully ordered.
///
/// # Safety
/// `ptr` must point into a map value, 4-byte aligned.
#[inline(always)]
unsafe fn cmpxchg(ptr: *mut u32, old: u32, new: u32) -> u32 {
    let mut r0 = u64::from(old);
    // SAFETY: per the caller; the instruction reads and writes only `*ptr`.
    unsafe {
        core::arch::asm!(
            "w0 = cmpxchg32_32(r1 + 0, w0, w2)",
            in("r1") ptr,
            in("r2") u64::from(new),
            inout("r0") r0,
            options(nostack),
        );
    }
    r0 as u32
}

#[inline(always)]
fn seq(bucket: *mut FlowBucketV4) -> u32 {
    // SAFETY: `bucket` points into the array map's values, valid for this program run.
    unsafe { read_volatile(&raw const (*bucket).seq) }
}

/// Takes `bucket` for writing: its `seq` before (even), or `None` if another writer holds it.
#[inline(always)]
fn lock(bucket: *mut FlowBucketV4) -> Option<u32> {
    let s = seq(bucket);
    if s & 1 != 0 {
        return None;
    }
    // SAFETY: `seq` is a 4-byte aligned field of the map value.
    (unsafe { cmpxchg(&raw mut (*bucket).seq, s, s | 1) } == s).then_some(s)
}

#[inline(always)]
fn unlock(bucket: *mut FlowBucketV4, s: u32) {
    // SAFETY: as in `lock`; this writer holds the bucket, so the swap succeeds.
    unsafe { cmpxchg(&raw mut (*bucket).seq, s | 1, s.wrapping_add(2)) };
}

/// The flow part of a way, read as two words (volatile, in order).
#[inline(always)]
fn read_flow(way: *mut FlowEntryV4) -> Flow {
    // SAFETY: `way` points into a bucket; `Flow` is two 4-byte aligned words.
    let (target, meta) = unsafe {
        let p = (&raw const (*way).flow).cast::<u32>();
        (read_volatile(p), read_volatile(p.add(1)))
    };
    Flow {
        target,
        proto: meta as u8,
        state: (meta >> 8) as u8,
        stamp: (meta >> 16) as u16,
    }
}

/// Whether `way` holds `key` (volatile reads).
#[inline(always)]
fn holds(way: *mut FlowEntryV4, key: &FlowKeyV4) -> bool {
    // SAFETY: `way` points into a bucket, valid for this program run.
    unsafe {
        read_volatile(&raw const (*way).saddr) == key.saddr
            && read_volatile(&raw const (*way).daddr) == key.daddr
            && read_volatile(&raw const (*way).ports) == key.ports
            && u32::from(read_volatile(&raw const (*way).flow.proto)) == key.proto
    }
}

/// Writes a whole way: everything else before the protocol byte that makes it match.
#[inline(always)]
fn write_way(way: *mut FlowEntryV4, key: &FlowKeyV4, flow: Flow) {
    // SAFETY: `way` points into a bucket the caller holds.
    unsafe {
        write_volatile(&raw mut (*way).flow.proto, 0);
        write_volatile(&raw mut (*way).saddr, key.saddr);
        write_volatile(&raw mut (*way).daddr, key.daddr);
        write_volatile(&raw mut (*way).ports, key.ports);
        write_volatile(&raw mut (*way).flow.target, flow.target);
        write_volatile(&raw mut (*way).flow.state, flow.state);
        write_volatile(&raw mut (*way).flow.stamp, flow.stamp);
        write_volatile(&raw mut (*way).flow.proto, flow.proto);
    }
}

/// Searches one bucket, checking its sequence count around the read.
#[inline(always)]
fn search(bucket: *mut FlowBucketV4, key: &FlowKeyV4) -> Lookup {
    let before = seq(bucket);
    let mut found = Lookup::Missing;
    for w in 0..WAYS {
        // SAFETY: a way of the bucket, constant index.
        let way = unsafe { &raw mut (*bucket).ways[w] };
        if holds(way, key) {
            found = Lookup::Found(read_flow(way), Place::Way(bucket, way));
            break;
        }
    }
    if before & 1 != 0 || seq(bucket) != before {
        return Lookup::Busy;
    }
    found
}

/// The full lookup: the front bucket, then the other one (computed only if needed: this is
/// every packet's path), then the overflow hash.
#[inline(always)]
pub fn lookup(key: &FlowKeyV4) -> Lookup {
    let (seed, mask, front) = globals();
    let h = flow_table::hash(key, seed);
    let Some(a) = FLOW_CACHE_V4.get_ptr_mut(flow_table::front_bucket(h, front)) else {
        return Lookup::Missing;
    };
    match search(a, key) {
        Lookup::Missing => {}
        other => return other,
    }
    let Some(b) = FLOW_CACHE_V4.get_ptr_mut(flow_table::other_bucket(h, mask)) else {
        return Lookup::Missing;
    };
    match search(b, key) {
        Lookup::Missing => {}
        other => return other,
    }
    match FLOWS_V4.get_ptr_mut(key) {
        // SAFETY: a value of a hash map that is not preallocated: valid for this program run
        // even if the entry is deleted meanwhile (freed after an RCU grace period).
        Some(p) => Lookup::Found(unsafe { *p }, Place::Overflow(p)),
        None => Lookup::Missing,
    }
}

/// `lookup`, waiting (a bounded number of times) for a bucket that is being written.
#[inline(always)]
pub fn lookup_settled(key: &FlowKeyV4) -> Lookup {
    let mut result = lookup(key);
    for _ in 0..3 {
        if !matches!(result, Lookup::Busy) {
            break;
        }
        result = lookup(key);
    }
    result
}

/// Refreshes the flow's stamp, only if it changed (a store at most once a second a flow).
#[inline(always)]
pub fn touch(place: Place, flow: &Flow, now: u16) {
    if flow.stamp == now {
        return;
    }
    // SAFETY: pointers into map values, valid for this program run.
    unsafe {
        match place {
            Place::Way(_, way) => write_volatile(&raw mut (*way).flow.stamp, now),
            Place::Overflow(p) => write_volatile(&raw mut (*p).stamp, now),
        }
    }
}

/// Sets the flow's state (and stamp). In a bucket, only if the way still holds `key`. Returns
/// whether it did.
#[inline(always)]
pub fn set_state(place: Place, key: &FlowKeyV4, state: u8, now: u16) -> bool {
    match place {
        Place::Way(bucket, way) => {
            let Some(s) = lock(bucket) else {
                return false;
            };
            let held = holds(way, key);
            if held {
                // SAFETY: a way of the bucket this program holds.
                unsafe {
                    write_volatile(&raw mut (*way).flow.state, state);
                    write_volatile(&raw mut (*way).flow.stamp, now);
                }
            }
            unlock(bucket, s);
            held
        }
        // SAFETY: as in `touch`.
        Place::Overflow(p) => unsafe {
            write_volatile(&raw mut (*p).state, state);
            write_volatile(&raw mut (*p).stamp, now);
            true
        },
    }
}

/// What `insert` or `replace` did.
pub enum Inserted {
    /// Remembered.
    Done,
    /// Another CPU remembered this flow meanwhile: its choice.
    Raced(Flow),
    /// Not remembered: no room that a live flow did not hold, or the buckets were busy.
    Failed,
}

/// Replaces the flow at `place` (found stale, or a connection opened again on the same
/// 5-tuple), if it still holds `key`; otherwise inserts it.
#[inline(always)]
pub fn replace(place: Place, key: &FlowKeyV4, flow: Flow, clock: &Clock) -> Inserted {
    match place {
        Place::Way(bucket, way) => {
            let Some(s) = lock(bucket) else {
                return Inserted::Failed;
            };
            let held = holds(way, key);
            if held {
                write_way(way, key, flow);
            }
            unlock(bucket, s);
            if held {
                Inserted::Done
            } else {
                insert(key, flow, clock)
            }
        }
        Place::Overflow(p) => {
            // One 8-byte store: a reader on another CPU sees the old flow or the new one.
            // SAFETY: as in `touch`; `Flow` is 8 bytes, 8-byte aligned in the map value.
            unsafe { write_volatile(p.cast::<u64>(), bytemuck_u64(flow)) };
            Inserted::Done
        }
    }
}

#[inline(always)]
fn bytemuck_u64(flow: Flow) -> u64 {
    u64::from(flow.target)
        | u64::from(flow.proto) << 32
        | u64::from(flow.state) << 40
        | u64::from(flow.stamp) << 48
}

/// A way's eviction rank ([`conn::rank`]); a flow whose real server is gone ranks as closed.
#[inline(always)]
fn rank(way: *mut FlowEntryV4, clock: &Clock) -> u32 {
    let flow = read_flow(way);
    if flow.proto != 0 && real_of(&flow).is_none() {
        return 1 << 16;
    }
    let timeout = clock.timeout(flow.state);
    conn::rank(
        flow.proto,
        flow.state,
        conn::age(clock.now, flow.stamp),
        timeout,
    )
}

/// Remembers a new flow (one that `lookup` did not find), holding both of its buckets.
#[inline(always)]
pub fn insert(key: &FlowKeyV4, flow: Flow, clock: &Clock) -> Inserted {
    let Some((a, b)) = buckets(key) else {
        return Inserted::Failed;
    };
    let Some(sa) = lock(a) else {
        return Inserted::Failed;
    };
    let sb = if b == a {
        None
    } else {
        match lock(b) {
            Some(s) => Some(s),
            None => {
                unlock(a, sa);
                return Inserted::Failed;
            }
        }
    };
    let result = insert_held(a, b, key, flow, clock);
    if let Some(s) = sb {
        unlock(b, s);
    }
    unlock(a, sa);
    result
}

/// `insert`, with both buckets held.
#[inline(always)]
fn insert_held(
    a: *mut FlowBucketV4,
    b: *mut FlowBucketV4,
    key: &FlowKeyV4,
    flow: Flow,
    clock: &Clock,
) -> Inserted {
    // The way of lowest rank, and the flow's own way if another CPU remembered it meanwhile.
    let mut victim: *mut FlowEntryV4 = core::ptr::null_mut();
    let mut best = u32::MAX;
    for bucket in [a, b] {
        for w in 0..WAYS {
            // SAFETY: a way of a held bucket, constant index.
            let way = unsafe { &raw mut (*bucket).ways[w] };
            if holds(way, key) {
                let other = read_flow(way);
                if real_of(&other).is_some() {
                    return Inserted::Raced(other);
                }
                write_way(way, key, flow);
                return Inserted::Done;
            }
            let r = rank(way, clock);
            if r < best {
                best = r;
                victim = way;
            }
        }
    }
    if victim.is_null() {
        return Inserted::Failed;
    }
    if best >= conn::RANK_KEEP {
        // Six live flows: the least recently seen moves to the overflow hash, before its way
        // is rewritten (a packet of it meanwhile finds the bucket busy, then the hash). If the
        // hash is full, nothing moves and the new flow is not remembered.
        // SAFETY: a way of a held bucket.
        let old = unsafe { *victim };
        if FLOWS_V4
            .insert(old.key(), old.flow, BPF_NOEXIST as u64)
            .is_err()
        {
            return Inserted::Failed;
        }
        stats::global(reason::EVENT_FLOW_MOVED, 0);
    } else if best >= 1 << 16 {
        stats::global(reason::EVENT_FLOW_RECLAIMED, 0);
        // A flow of a live real server leaves its counts.
        let old = read_flow(victim);
        if real_of(&old).is_some() {
            conns::add(old.slot(), old.state, -1);
        }
    }
    write_way(victim, key, flow);
    Inserted::Done
}

/// The real server `flow` was scheduled to, if its slot still holds that server (same
/// generation, not retired).
#[inline(always)]
pub fn real_of(flow: &Flow) -> Option<&'static RealServer> {
    REALS
        .get(flow.slot())
        .filter(|real| real.generation == flow.generation())
}
