//! The flow tables (see `lvs_xdp_common::flow_table` for their design), one per family, written
//! once over the [`Table`] trait: two candidate buckets (three ways for IPv4 in
//! `FLOW_CACHE_V4`, two for IPv6 in `FLOW_CACHE_V6`), then a hash (`FLOWS_V4`, `FLOWS_V6`) for
//! established flows that found no room there.
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
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    maps::{Array, HashMap},
};
use core::ptr::{read_volatile, write_volatile};
use lvs_xdp_common::{
    Clock, FAMILY_V4, FAMILY_V6, Flow, FlowBucketV4, FlowBucketV6, FlowEntryV4, FlowEntryV6,
    FlowKeyV4, FlowKeyV6, RealServer, ServiceKey, conn, flow_table, reason,
};

use crate::{
    conns,
    maps::{FLOW_CACHE_V4, FLOW_CACHE_V6, FLOWS_V4, FLOWS_V6, REALS},
    stats,
};

/// Set by the loader before the program is loaded (read-only data, constant for the verifier).
#[unsafe(no_mangle)]
static FLOW_HASH_SEED: u32 = 0;
#[unsafe(no_mangle)]
static FLOW_BUCKET_MASK: u32 = 0;
#[unsafe(no_mangle)]
static FLOW_FRONT_MASK: u32 = 0;
#[unsafe(no_mangle)]
static FLOW6_BUCKET_MASK: u32 = 0;
#[unsafe(no_mangle)]
static FLOW6_FRONT_MASK: u32 = 0;

/// One family's flow table: its key, ways and buckets, and its two maps. Everything below is
/// written once for both.
pub trait Table {
    type Key: Copy + 'static;
    type Entry: Copy + 'static;
    type Bucket: 'static;
    const WAYS: usize;
    /// The bucket array and the overflow hash.
    fn cache() -> &'static Array<Self::Bucket>;
    fn overflow() -> &'static HashMap<Self::Key, Flow>;
    /// The seeded hash of a key, and the table's masks (bucket, front).
    fn hash(key: &Self::Key, seed: u32) -> u32;
    fn masks() -> (u32, u32);
    /// Way `w` of `bucket`, and the bucket's sequence count.
    fn way(bucket: *mut Self::Bucket, w: usize) -> *mut Self::Entry;
    fn seq_of(bucket: *mut Self::Bucket) -> *mut u32;
    /// The flow part of a way.
    fn flow_of(way: *mut Self::Entry) -> *mut Flow;
    /// Whether the way's 5-tuple (without the protocol) is `key`'s (volatile reads).
    fn same_tuple(way: *mut Self::Entry, key: &Self::Key) -> bool;
    fn proto(key: &Self::Key) -> u32;
    /// Writes the way's 5-tuple (not its flow).
    fn write_tuple(way: *mut Self::Entry, key: &Self::Key);
    /// The key of a way (to move it to the overflow hash).
    fn key_of(way: *mut Self::Entry) -> Self::Key;
    /// The flow as the schedulers and persistence see it: IPv4's key itself; for IPv6, each
    /// address folded into a word (the XOR of its four, as IPVS folds them for `sh` and `mh`).
    fn view(key: &Self::Key) -> FlowKeyV4;
    /// The `SERVICES` key of the flow's destination (`port` 0: the address marker).
    fn service_key(key: &Self::Key, port: u16) -> ServiceKey;
    /// The client's network under `mask` (persistence), in `ServiceKey::addr`'s layout.
    fn client_net(key: &Self::Key, mask: &[u32; 4]) -> [u32; 4];
}

pub struct V4;
pub struct V6;

impl Table for V4 {
    type Key = FlowKeyV4;
    type Entry = FlowEntryV4;
    type Bucket = FlowBucketV4;
    const WAYS: usize = flow_table::WAYS;

    #[inline(always)]
    fn cache() -> &'static Array<FlowBucketV4> {
        &FLOW_CACHE_V4
    }
    #[inline(always)]
    fn overflow() -> &'static HashMap<FlowKeyV4, Flow> {
        &FLOWS_V4
    }
    #[inline(always)]
    fn hash(key: &FlowKeyV4, seed: u32) -> u32 {
        flow_table::hash(key, seed)
    }
    #[inline(always)]
    fn masks() -> (u32, u32) {
        // SAFETY: plain reads of the program's read-only globals.
        unsafe {
            (
                read_volatile(&FLOW_BUCKET_MASK),
                read_volatile(&FLOW_FRONT_MASK),
            )
        }
    }
    #[inline(always)]
    fn way(bucket: *mut FlowBucketV4, w: usize) -> *mut FlowEntryV4 {
        // SAFETY: a way of a bucket in the map's values; callers pass w < WAYS.
        unsafe { (&raw mut (*bucket).ways).cast::<FlowEntryV4>().add(w) }
    }
    #[inline(always)]
    fn seq_of(bucket: *mut FlowBucketV4) -> *mut u32 {
        // SAFETY: a field of a bucket in the map's values.
        unsafe { &raw mut (*bucket).seq }
    }
    #[inline(always)]
    fn flow_of(way: *mut FlowEntryV4) -> *mut Flow {
        // SAFETY: a field of a way.
        unsafe { &raw mut (*way).flow }
    }
    #[inline(always)]
    fn same_tuple(way: *mut FlowEntryV4, key: &FlowKeyV4) -> bool {
        // SAFETY: `way` points into a bucket, valid for this program run.
        unsafe {
            read_volatile(&raw const (*way).saddr) == key.saddr
                && read_volatile(&raw const (*way).daddr) == key.daddr
                && read_volatile(&raw const (*way).ports) == key.ports
        }
    }
    #[inline(always)]
    fn proto(key: &FlowKeyV4) -> u32 {
        key.proto
    }
    #[inline(always)]
    fn write_tuple(way: *mut FlowEntryV4, key: &FlowKeyV4) {
        // SAFETY: `way` points into a bucket the caller holds.
        unsafe {
            write_volatile(&raw mut (*way).saddr, key.saddr);
            write_volatile(&raw mut (*way).daddr, key.daddr);
            write_volatile(&raw mut (*way).ports, key.ports);
        }
    }
    #[inline(always)]
    fn key_of(way: *mut FlowEntryV4) -> FlowKeyV4 {
        // SAFETY: a way of a bucket the caller holds.
        unsafe { (*way).key() }
    }
    #[inline(always)]
    fn view(key: &FlowKeyV4) -> FlowKeyV4 {
        *key
    }
    #[inline(always)]
    fn service_key(key: &FlowKeyV4, port: u16) -> ServiceKey {
        ServiceKey {
            addr: [key.daddr, 0, 0, 0],
            port,
            proto: key.proto as u8,
            family: FAMILY_V4,
        }
    }
    #[inline(always)]
    fn client_net(key: &FlowKeyV4, mask: &[u32; 4]) -> [u32; 4] {
        [key.saddr & mask[0], 0, 0, 0]
    }
}

impl Table for V6 {
    type Key = FlowKeyV6;
    type Entry = FlowEntryV6;
    type Bucket = FlowBucketV6;
    const WAYS: usize = flow_table::WAYS_V6;

    #[inline(always)]
    fn cache() -> &'static Array<FlowBucketV6> {
        &FLOW_CACHE_V6
    }
    #[inline(always)]
    fn overflow() -> &'static HashMap<FlowKeyV6, Flow> {
        &FLOWS_V6
    }
    #[inline(always)]
    fn hash(key: &FlowKeyV6, seed: u32) -> u32 {
        flow_table::hash_v6(key, seed)
    }
    #[inline(always)]
    fn masks() -> (u32, u32) {
        // SAFETY: plain reads of the program's read-only globals.
        unsafe {
            (
                read_volatile(&FLOW6_BUCKET_MASK),
                read_volatile(&FLOW6_FRONT_MASK),
            )
        }
    }
    #[inline(always)]
    fn way(bucket: *mut FlowBucketV6, w: usize) -> *mut FlowEntryV6 {
        // SAFETY: as for V4.
        unsafe { (&raw mut (*bucket).ways).cast::<FlowEntryV6>().add(w) }
    }
    #[inline(always)]
    fn seq_of(bucket: *mut FlowBucketV6) -> *mut u32 {
        // SAFETY: a field of a bucket in the map's values.
        unsafe { &raw mut (*bucket).seq }
    }
    #[inline(always)]
    fn flow_of(way: *mut FlowEntryV6) -> *mut Flow {
        // SAFETY: a field of a way.
        unsafe { &raw mut (*way).flow }
    }
    #[inline(always)]
    fn same_tuple(way: *mut FlowEntryV6, key: &FlowKeyV6) -> bool {
        // SAFETY: `way` points into a bucket, valid for this program run.
        unsafe {
            let s = &raw const (*way).saddr;
            let d = &raw const (*way).daddr;
            let words = |p: *const [u32; 4], k: &[u32; 4]| {
                let p = p.cast::<u32>();
                (read_volatile(p) ^ k[0])
                    | (read_volatile(p.add(1)) ^ k[1])
                    | (read_volatile(p.add(2)) ^ k[2])
                    | (read_volatile(p.add(3)) ^ k[3])
            };
            words(s, &key.saddr) | words(d, &key.daddr) == 0
                && read_volatile(&raw const (*way).ports) == key.ports
        }
    }
    #[inline(always)]
    fn proto(key: &FlowKeyV6) -> u32 {
        key.proto
    }
    #[inline(always)]
    fn write_tuple(way: *mut FlowEntryV6, key: &FlowKeyV6) {
        // SAFETY: `way` points into a bucket the caller holds.
        unsafe {
            write_volatile(&raw mut (*way).saddr, key.saddr);
            write_volatile(&raw mut (*way).daddr, key.daddr);
            write_volatile(&raw mut (*way).ports, key.ports);
        }
    }
    #[inline(always)]
    fn key_of(way: *mut FlowEntryV6) -> FlowKeyV6 {
        // SAFETY: a way of a bucket the caller holds.
        unsafe { (*way).key() }
    }
    #[inline(always)]
    fn view(key: &FlowKeyV6) -> FlowKeyV4 {
        let fold = |a: [u32; 4]| a[0] ^ a[1] ^ a[2] ^ a[3];
        FlowKeyV4 {
            saddr: fold(key.saddr),
            daddr: fold(key.daddr),
            ports: key.ports,
            proto: key.proto,
        }
    }
    #[inline(always)]
    fn service_key(key: &FlowKeyV6, port: u16) -> ServiceKey {
        ServiceKey {
            addr: key.daddr,
            port,
            proto: key.proto as u8,
            family: FAMILY_V6,
        }
    }
    #[inline(always)]
    fn client_net(key: &FlowKeyV6, mask: &[u32; 4]) -> [u32; 4] {
        let a = key.saddr;
        [
            a[0] & mask[0],
            a[1] & mask[1],
            a[2] & mask[2],
            a[3] & mask[3],
        ]
    }
}

/// Where a flow was found: a way (with its bucket), or the overflow hash's value.
pub enum Place<T: Table> {
    Way(*mut T::Bucket, *mut T::Entry),
    Overflow(*mut Flow),
}

impl<T: Table> Clone for Place<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Table> Copy for Place<T> {}

/// What a lookup found.
pub enum Lookup<T: Table> {
    Found(Flow, Place<T>),
    Missing,
    /// A bucket of the flow was being written: nothing read from it can be trusted.
    Busy,
}

#[inline(always)]
fn seed() -> u32 {
    // SAFETY: a plain read of the program's read-only global.
    unsafe { read_volatile(&FLOW_HASH_SEED) }
}

/// A flow's two buckets (which may be the same one, hence raw pointers).
#[inline(always)]
fn buckets<T: Table>(key: &T::Key) -> Option<(*mut T::Bucket, *mut T::Bucket)> {
    let (mask, front) = T::masks();
    let h = T::hash(key, seed());
    Some((
        T::cache().get_ptr_mut(flow_table::front_bucket(h, front))?,
        T::cache().get_ptr_mut(flow_table::other_bucket(h, mask))?,
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
fn seq<T: Table>(bucket: *mut T::Bucket) -> u32 {
    // SAFETY: `bucket` points into the array map's values, valid for this program run.
    unsafe { read_volatile(T::seq_of(bucket)) }
}

/// Takes `bucket` for writing: its `seq` before (even), or `None` if another writer holds it.
#[inline(always)]
fn lock<T: Table>(bucket: *mut T::Bucket) -> Option<u32> {
    let s = seq::<T>(bucket);
    if s & 1 != 0 {
        return None;
    }
    // SAFETY: `seq` is a 4-byte aligned field of the map value.
    (unsafe { cmpxchg(T::seq_of(bucket), s, s | 1) } == s).then_some(s)
}

#[inline(always)]
fn unlock<T: Table>(bucket: *mut T::Bucket, s: u32) {
    // SAFETY: as in `lock`; this writer holds the bucket, so the swap succeeds.
    unsafe { cmpxchg(T::seq_of(bucket), s | 1, s.wrapping_add(2)) };
}

/// The flow part of a way, read as two words (volatile, in order).
#[inline(always)]
fn read_flow<T: Table>(way: *mut T::Entry) -> Flow {
    // SAFETY: `way` points into a bucket; `Flow` is two 4-byte aligned words.
    let (target, meta) = unsafe {
        let p = T::flow_of(way).cast::<u32>();
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
fn holds<T: Table>(way: *mut T::Entry, key: &T::Key) -> bool {
    // SAFETY: `way` points into a bucket, valid for this program run.
    T::same_tuple(way, key)
        && u32::from(unsafe { read_volatile(&raw const (*T::flow_of(way)).proto) }) == T::proto(key)
}

/// Writes a whole way: everything else before the protocol byte that makes it match.
#[inline(always)]
fn write_way<T: Table>(way: *mut T::Entry, key: &T::Key, flow: Flow) {
    let f = T::flow_of(way);
    // SAFETY: `way` points into a bucket the caller holds.
    unsafe {
        write_volatile(&raw mut (*f).proto, 0);
        T::write_tuple(way, key);
        write_volatile(&raw mut (*f).target, flow.target);
        write_volatile(&raw mut (*f).state, flow.state);
        write_volatile(&raw mut (*f).stamp, flow.stamp);
        write_volatile(&raw mut (*f).proto, flow.proto);
    }
}

/// Searches one bucket, checking its sequence count around the read.
#[inline(always)]
fn search<T: Table>(bucket: *mut T::Bucket, key: &T::Key) -> Lookup<T> {
    let before = seq::<T>(bucket);
    let mut found = Lookup::Missing;
    for w in 0..T::WAYS {
        let way = T::way(bucket, w);
        if holds::<T>(way, key) {
            found = Lookup::Found(read_flow::<T>(way), Place::Way(bucket, way));
            break;
        }
    }
    if before & 1 != 0 || seq::<T>(bucket) != before {
        return Lookup::Busy;
    }
    found
}

/// The full lookup: the front bucket, then the other one (computed only if needed: this is
/// every packet's path), then the overflow hash.
#[inline(always)]
pub fn lookup<T: Table>(key: &T::Key) -> Lookup<T> {
    let (mask, front) = T::masks();
    let h = T::hash(key, seed());
    let Some(a) = T::cache().get_ptr_mut(flow_table::front_bucket(h, front)) else {
        return Lookup::Missing;
    };
    match search::<T>(a, key) {
        Lookup::Missing => {}
        other => return other,
    }
    let Some(b) = T::cache().get_ptr_mut(flow_table::other_bucket(h, mask)) else {
        return Lookup::Missing;
    };
    match search::<T>(b, key) {
        Lookup::Missing => {}
        other => return other,
    }
    match T::overflow().get_ptr_mut(key) {
        // SAFETY: a value of a hash map that is not preallocated: valid for this program run
        // even if the entry is deleted meanwhile (freed after an RCU grace period).
        Some(p) => Lookup::Found(unsafe { *p }, Place::Overflow(p)),
        None => Lookup::Missing,
    }
}

/// `lookup`, waiting (a bounded number of times) for a bucket that is being written.
#[inline(always)]
pub fn lookup_settled<T: Table>(key: &T::Key) -> Lookup<T> {
    let mut result = lookup::<T>(key);
    for _ in 0..3 {
        if !matches!(result, Lookup::Busy) {
            break;
        }
        result = lookup::<T>(key);
    }
    result
}

/// Refreshes the flow's stamp, only if it changed (a store at most once a second a flow).
#[inline(always)]
pub fn touch<T: Table>(place: Place<T>, flow: &Flow, now: u16) {
    if flow.stamp == now {
        return;
    }
    // SAFETY: pointers into map values, valid for this program run.
    unsafe {
        match place {
            Place::Way(_, way) => write_volatile(&raw mut (*T::flow_of(way)).stamp, now),
            Place::Overflow(p) => write_volatile(&raw mut (*p).stamp, now),
        }
    }
}

/// Sets the flow's state (and stamp). In a bucket, only if the way still holds `key`. Returns
/// whether it did.
#[inline(always)]
pub fn set_state<T: Table>(place: Place<T>, key: &T::Key, state: u8, now: u16) -> bool {
    match place {
        Place::Way(bucket, way) => {
            let Some(s) = lock::<T>(bucket) else {
                return false;
            };
            let held = holds::<T>(way, key);
            if held {
                let f = T::flow_of(way);
                // SAFETY: a way of the bucket this program holds.
                unsafe {
                    write_volatile(&raw mut (*f).state, state);
                    write_volatile(&raw mut (*f).stamp, now);
                }
            }
            unlock::<T>(bucket, s);
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
pub fn replace<T: Table>(place: Place<T>, key: &T::Key, flow: Flow, clock: &Clock) -> Inserted {
    match place {
        Place::Way(bucket, way) => {
            let Some(s) = lock::<T>(bucket) else {
                return Inserted::Failed;
            };
            let held = holds::<T>(way, key);
            if held {
                write_way::<T>(way, key, flow);
            }
            unlock::<T>(bucket, s);
            if held {
                Inserted::Done
            } else {
                insert::<T>(key, flow, clock)
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
fn rank<T: Table>(way: *mut T::Entry, clock: &Clock) -> u32 {
    let flow = read_flow::<T>(way);
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
pub fn insert<T: Table>(key: &T::Key, flow: Flow, clock: &Clock) -> Inserted {
    let Some((a, b)) = buckets::<T>(key) else {
        return Inserted::Failed;
    };
    let Some(sa) = lock::<T>(a) else {
        return Inserted::Failed;
    };
    let sb = if b == a {
        None
    } else {
        match lock::<T>(b) {
            Some(s) => Some(s),
            None => {
                unlock::<T>(a, sa);
                return Inserted::Failed;
            }
        }
    };
    let result = insert_held::<T>(a, b, key, flow, clock);
    if let Some(s) = sb {
        unlock::<T>(b, s);
    }
    unlock::<T>(a, sa);
    result
}

/// `insert`, with both buckets held.
#[inline(always)]
fn insert_held<T: Table>(
    a: *mut T::Bucket,
    b: *mut T::Bucket,
    key: &T::Key,
    flow: Flow,
    clock: &Clock,
) -> Inserted {
    // The way of lowest rank, and the flow's own way if another CPU remembered it meanwhile.
    let mut victim: *mut T::Entry = core::ptr::null_mut();
    let mut best = u32::MAX;
    for bucket in [a, b] {
        for w in 0..T::WAYS {
            let way = T::way(bucket, w);
            if holds::<T>(way, key) {
                let other = read_flow::<T>(way);
                if real_of(&other).is_some() {
                    return Inserted::Raced(other);
                }
                write_way::<T>(way, key, flow);
                return Inserted::Done;
            }
            let r = rank::<T>(way, clock);
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
        let old_key = T::key_of(victim);
        let old_flow = read_flow::<T>(victim);
        if T::overflow()
            .insert(old_key, old_flow, BPF_NOEXIST as u64)
            .is_err()
        {
            return Inserted::Failed;
        }
        stats::global(reason::EVENT_FLOW_MOVED, 0);
    } else if best >= 1 << 16 {
        stats::global(reason::EVENT_FLOW_RECLAIMED, 0);
        // A flow of a live real server leaves its counts.
        let old = read_flow::<T>(victim);
        if real_of(&old).is_some() {
            conns::add(old.slot(), old.state, -1);
        }
    }
    write_way::<T>(victim, key, flow);
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
