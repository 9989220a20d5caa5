//! The IPv4 flow table (see `lvs_xdp_common::flow_table` for its design): two candidate
//! buckets of three ways in `FLOW_CACHE_V4`, then the LRU hash `FLOWS_V4` for flows that found
//! no room there.
//!
//! Concurrency: ways are written without locks. A flow is handled by one CPU at a time (the
//! NIC's RSS keeps a flow on one queue); two CPUs inserting *different* flows into the same
//! bucket at the same instant could pick the same free way, and the later write wins. An insert
//! re-reads the flow's buckets right before writing, so two CPUs inserting the *same* flow
//! follow the first one's choice unless they write within the same few nanoseconds.
use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lvs_xdp_common::{
    Flow, FlowBucketV4, FlowEntryV4, FlowKeyV4, RealServer, flow_table, flow_table::WAYS,
};

use crate::maps::{FLOW_CACHE_V4, FLOWS_V4, REALS};

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
    Way(*mut FlowEntryV4),
    Overflow,
}

/// The flow table's parameters, read-only globals.
#[inline(always)]
fn globals() -> (u32, u32, u32) {
    // SAFETY: plain reads of the program's read-only globals.
    unsafe {
        (
            core::ptr::read_volatile(&FLOW_HASH_SEED),
            core::ptr::read_volatile(&FLOW_BUCKET_MASK),
            core::ptr::read_volatile(&FLOW_FRONT_MASK),
        )
    }
}

/// A bucket by index. The two buckets of a flow may be the same one, hence raw pointers.
#[inline(always)]
fn bucket(index: u32) -> Option<*mut FlowBucketV4> {
    FLOW_CACHE_V4.get_ptr_mut(index)
}

/// The way of `bucket` holding `key`.
#[inline(always)]
fn find(bucket: *mut FlowBucketV4, key: &FlowKeyV4) -> Option<*mut FlowEntryV4> {
    for w in 0..WAYS {
        // SAFETY: `bucket` points into the array map's values, valid for this program run.
        let way = unsafe { &raw mut (*bucket).ways[w] };
        if unsafe { (*way).matches(key) } {
            return Some(way);
        }
    }
    None
}

/// A free way of `bucket`.
#[inline(always)]
fn free(bucket: *mut FlowBucketV4) -> Option<*mut FlowEntryV4> {
    for w in 0..WAYS {
        // SAFETY: as in `find`.
        let way = unsafe { &raw mut (*bucket).ways[w] };
        if unsafe { (*way).is_free() } {
            return Some(way);
        }
    }
    None
}

/// The full lookup: the front bucket, then the other one (computed only if needed: this is
/// every packet's path), then the overflow hash.
#[inline(always)]
pub fn lookup(key: &FlowKeyV4) -> Option<(Flow, Place)> {
    let (seed, mask, front) = globals();
    let h = flow_table::hash(key, seed);
    let mut way = find(bucket(flow_table::front_bucket(h, front))?, key);
    if way.is_none() {
        way = find(bucket(flow_table::other_bucket(h, mask))?, key);
    }
    if let Some(way) = way {
        // SAFETY: as in `find`.
        return Some((unsafe { (*way).flow() }, Place::Way(way)));
    }
    // SAFETY: a pointer into the LRU map's value, valid for this program run.
    let flow = unsafe { *FLOWS_V4.get_ptr(key)? };
    Some((flow, Place::Overflow))
}

/// What `insert` did.
pub enum Inserted {
    /// Remembered.
    Done,
    /// Another CPU remembered this flow meanwhile: its choice.
    Raced(Flow),
    /// The overflow hash refused (the error code); the flow is not remembered.
    Failed(i32),
}

/// Replaces the flow at `place` (a flow found stale).
#[inline(always)]
pub fn replace(place: Place, key: &FlowKeyV4, flow: Flow) -> Inserted {
    match place {
        Place::Way(way) => {
            // SAFETY: a way of a bucket of the map, valid for this program run.
            unsafe { *way = FlowEntryV4::new(key, flow) };
            Inserted::Done
        }
        Place::Overflow => match FLOWS_V4.insert(key, flow, BPF_ANY as u64) {
            Ok(()) => Inserted::Done,
            Err(e) => Inserted::Failed(e),
        },
    }
}

/// Remembers a new flow (one that `lookup` did not find).
#[inline(always)]
pub fn insert(key: &FlowKeyV4, flow: Flow) -> Inserted {
    let (seed, mask, front) = globals();
    let h = flow_table::hash(key, seed);
    let (Some(a), Some(b)) = (
        bucket(flow_table::front_bucket(h, front)),
        bucket(flow_table::other_bucket(h, mask)),
    ) else {
        return Inserted::Failed(0);
    };
    let entry = FlowEntryV4::new(key, flow);
    if let Some(way) = find(a, key).or_else(|| find(b, key)) {
        // SAFETY: as in `find`.
        let other = unsafe { (*way).flow() };
        if valid(&other) {
            return Inserted::Raced(other);
        }
        // SAFETY: as in `find`.
        unsafe { *way = entry };
        return Inserted::Done;
    }
    if let Some(way) = free(a).or_else(|| free(b)) {
        // SAFETY: as in `find`.
        unsafe { *way = entry };
        return Inserted::Done;
    }
    // Both full: move one flow of the two buckets to the overflow hash to make room. Each
    // bucket gives up its ways in turn, and the two buckets take turns (the parity of their
    // counters' sum flips with every eviction from either).
    // SAFETY: as in `find`; the two buckets may be the same one, and only one is written.
    let bucket = unsafe {
        if ((*a).next ^ (*b).next) & 1 == 0 {
            &mut *a
        } else {
            &mut *b
        }
    };
    let n = bucket.next;
    bucket.next = n.wrapping_add(1);
    // A match with constant indices: the verifier must see every way's offset bounded.
    let way = match n % WAYS as u32 {
        0 => &mut bucket.ways[0],
        1 => &mut bucket.ways[1],
        _ => &mut bucket.ways[2],
    };
    // The flow moved out goes into the overflow hash *before* its way is overwritten: a packet
    // of it on another CPU meanwhile finds it in one place or the other (or both, alike), and
    // a way read half-written matches nothing and sends that packet on to the overflow hash.
    let old = *way;
    if valid(&old.flow())
        && FLOWS_V4
            .insert(&old.key(), old.flow(), BPF_ANY as u64)
            .is_err()
    {
        // The old flow stays; the new one goes to the overflow hash instead.
        return match FLOWS_V4.insert(key, flow, BPF_NOEXIST as u64) {
            Ok(()) => Inserted::Done,
            Err(e) => Inserted::Failed(e),
        };
    }
    *way = entry;
    Inserted::Done
}

/// The real server `flow` was scheduled to, if its slot still holds that server (same
/// generation, and not retired).
#[inline(always)]
pub fn real_of(flow: &Flow) -> Option<&'static RealServer> {
    REALS
        .get(flow.real)
        .filter(|real| real.generation == flow.generation && real.generation != 0)
}

/// Whether `flow` still points at the real server it was scheduled to.
#[inline(always)]
fn valid(flow: &Flow) -> bool {
    real_of(flow).is_some()
}
