//! The flow table as userspace sees it: the idle clock the data plane stamps flows with, the
//! sweep that frees expired flows and those of removed real servers and counts the
//! connections of each real server, and a consistent read of every flow.
//!
//! The buckets (`FLOW_CACHE_V4`, an mmapable array) are mapped into this process: reading
//! them is a memory scan, not a system call per bucket. The sweep frees a way with a
//! compare-and-swap of its protocol/state/stamp word, which fails if a packet touched the flow
//! since the sweep read it (a packet refreshes the stamp, a writer rewrites the way whole), so
//! a flow that is in use is never freed. The overflow hash is read and pruned through the
//! kernel (`bpf(2)`): it holds few flows.
use std::{
    collections::HashMap,
    os::fd::BorrowedFd,
    sync::atomic::{AtomicI64, AtomicU32, Ordering, fence},
};

use crate::mapped::Mapping;
use anyhow::Result;
use aya::maps::{HashMap as BpfHashMap, MapData};
use lvs_xdp_common::{
    Clock, ConnCount, Flow, FlowBucketV4, FlowBucketV6, FlowEntryV4, FlowEntryV6, FlowKeyV4,
    FlowKeyV6, conn,
    flow_table::{SLOT_MASK, WAYS, WAYS_V6},
};

/// One family's flow table as userspace reads it: its key, its ways and its buckets.
pub trait Family {
    type Key: aya::Pod + Copy;
    type Entry: Copy;
    type Bucket: Copy;
    /// Bytes of a bucket and of a way; where the sequence count is in a bucket.
    const BUCKET: usize;
    const WAY: usize;
    const SEQ: usize;
    fn ways(bucket: &Self::Bucket) -> &[Self::Entry];
    fn flow(way: &Self::Entry) -> Flow;
    fn key(way: &Self::Entry) -> Self::Key;
}

pub struct V4;
pub struct V6;

impl Family for V4 {
    type Key = FlowKeyV4;
    type Entry = FlowEntryV4;
    type Bucket = FlowBucketV4;
    const BUCKET: usize = std::mem::size_of::<FlowBucketV4>();
    const WAY: usize = std::mem::size_of::<FlowEntryV4>();
    const SEQ: usize = WAYS * Self::WAY;
    fn ways(bucket: &FlowBucketV4) -> &[FlowEntryV4] {
        &bucket.ways
    }
    fn flow(way: &FlowEntryV4) -> Flow {
        way.flow
    }
    fn key(way: &FlowEntryV4) -> FlowKeyV4 {
        way.key()
    }
}

impl Family for V6 {
    type Key = FlowKeyV6;
    type Entry = FlowEntryV6;
    type Bucket = FlowBucketV6;
    const BUCKET: usize = std::mem::size_of::<FlowBucketV6>();
    const WAY: usize = std::mem::size_of::<FlowEntryV6>();
    const SEQ: usize = WAYS_V6 * Self::WAY;
    fn ways(bucket: &FlowBucketV6) -> &[FlowEntryV6] {
        &bucket.ways
    }
    fn flow(way: &FlowEntryV6) -> Flow {
        way.flow
    }
    fn key(way: &FlowEntryV6) -> FlowKeyV6 {
        way.key()
    }
}

/// Seconds of CLOCK_BOOTTIME: the idle clock. Every process reads the same one, and it goes on
/// through a restart of the daemon, so flows kept across a restart keep their ages.
pub fn now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u32
}

/// The clock as the data plane reads it: `now`, and the timeouts of every state.
pub fn clock(per_state: [u32; conn::STATES]) -> Clock {
    let mut timeouts = [0; 8];
    timeouts[..conn::STATES].copy_from_slice(&per_state);
    Clock {
        now: now(),
        _pad: 0,
        timeouts,
    }
}

/// The protocol/state/stamp word of a flow, as it lies in memory (little-endian).
fn meta_word(flow: &Flow) -> u32 {
    u32::from(flow.proto) | u32::from(flow.state) << 8 | u32::from(flow.stamp) << 16
}

/// Offset of the protocol/state/stamp word in a way: the way's last word (after the 5-tuple
/// and the target).
fn meta_offset<F: Family>() -> usize {
    F::WAY - 4
}

/// The buckets, mapped shared into this process.
pub struct Buckets<F: Family> {
    map: Mapping,
    buckets: u32,
    _family: std::marker::PhantomData<F>,
}

impl<F: Family> Buckets<F> {
    /// Maps the `buckets` buckets of the array map `fd`.
    pub fn map(fd: BorrowedFd<'_>, buckets: u32) -> Result<Buckets<F>> {
        Ok(Buckets {
            map: Mapping::new(fd, buckets as usize * F::BUCKET, "the flow table")?,
            buckets,
            _family: std::marker::PhantomData,
        })
    }

    pub fn len(&self) -> u32 {
        self.buckets
    }

    pub fn is_empty(&self) -> bool {
        self.buckets == 0
    }

    fn word(&self, bucket: u32, offset: usize) -> &AtomicU32 {
        assert!(bucket < self.buckets && offset + 4 <= F::BUCKET);
        let p = self.map.at(bucket as usize * F::BUCKET + offset, 4);
        // SAFETY: inside the mapping, 4-byte aligned (buckets are 64-byte aligned, every word
        // offset used is a multiple of 4), and the mapping lives as long as `self`.
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    /// A consistent copy of bucket `i`: read between two equal even values of its sequence
    /// count, retried while a writer holds it. `None` if it stayed busy (it never should for
    /// long: a writer holds a bucket for well under a microsecond).
    pub fn read(&self, i: u32) -> Option<F::Bucket> {
        let seq = self.word(i, F::SEQ);
        for _ in 0..1000 {
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                // SAFETY: inside the mapping (checked by `word` above); volatile: the kernel
                // writes it concurrently.
                let copy = unsafe {
                    std::ptr::read_volatile(
                        self.map
                            .at(i as usize * F::BUCKET, F::BUCKET)
                            .cast::<F::Bucket>(),
                    )
                };
                fence(Ordering::Acquire);
                if seq.load(Ordering::Relaxed) == before {
                    return Some(copy);
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Frees way `w` of bucket `i` if it still holds exactly `seen` (no packet and no writer
    /// touched it since).
    pub fn free(&self, i: u32, w: usize, seen: &Flow) -> bool {
        self.word(i, w * F::WAY + meta_offset::<F>())
            .compare_exchange(meta_word(seen), 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Calls `f` with every way in use.
    pub fn for_each(&self, mut f: impl FnMut(&F::Entry)) {
        for i in 0..self.buckets {
            if let Some(b) = self.read(i) {
                F::ways(&b)
                    .iter()
                    .filter(|w| F::flow(w).proto != 0)
                    .for_each(&mut f);
            }
        }
    }

    /// Every flow in use in the buckets.
    pub fn flows(&self) -> Vec<(F::Key, Flow)> {
        let mut out = Vec::new();
        self.for_each(|w| out.push((F::key(w), F::flow(w))));
        out
    }
}

/// `REAL_CONNS`, mapped: each real server's connections as the data plane keeps them for its
/// schedulers. Userspace zeroes a slot before a new real server takes it, and takes off what
/// the sweep frees, with atomic subtractions (the data plane adds atomically too).
pub struct RealConns {
    map: Mapping,
    slots: u32,
}

impl RealConns {
    const SIZE: usize = std::mem::size_of::<ConnCount>();

    pub fn map(fd: BorrowedFd<'_>, slots: u32) -> Result<RealConns> {
        Ok(RealConns {
            map: Mapping::new(fd, slots as usize * Self::SIZE, "the connection counts")?,
            slots,
        })
    }

    /// The (active, inactive) counter of `slot`.
    fn counters(&self, slot: u32) -> Option<(&AtomicI64, &AtomicI64)> {
        if slot >= self.slots {
            return None;
        }
        let p = self
            .map
            .at(slot as usize * Self::SIZE, Self::SIZE)
            .cast::<i64>();
        // SAFETY: two 8-byte aligned i64 inside the mapping (values are 16 bytes, the mapping
        // page-aligned), for as long as `self` lives.
        Some(unsafe { (AtomicI64::from_ptr(p), AtomicI64::from_ptr(p.add(1))) })
    }

    /// `slot`'s counts now (active, inactive).
    pub fn get(&self, slot: u32) -> (i64, i64) {
        self.counters(slot).map_or((0, 0), |(a, i)| {
            (a.load(Ordering::Relaxed), i.load(Ordering::Relaxed))
        })
    }

    /// Zeroes `slot` (no packet counts for it: no service points at it yet).
    pub fn zero(&self, slot: u32) {
        if let Some((a, i)) = self.counters(slot) {
            a.store(0, Ordering::SeqCst);
            i.store(0, Ordering::SeqCst);
        }
    }

    /// Takes one connection of `flow`'s class off its slot.
    fn forget(&self, flow: &Flow) {
        if let Some((a, i)) = self.counters(flow.target & SLOT_MASK) {
            let c = if conn::is_active(flow.state) { a } else { i };
            c.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Connections of each real-server slot: (active, inactive), as IPVS counts them
/// (SYN_RECV and ESTABLISHED are active).
pub type ConnCounts = HashMap<u32, (u64, u64)>;

/// What the sweep makes of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// In use: counted as active or not.
    Live { active: bool },
    /// Idle past its state's timeout.
    Expired,
    /// Its real server was removed or replaced (its slot holds another generation).
    Stale,
}

/// Judges `flow` at `clock`; `live[slot]` is the live generation of each slot (0: none).
pub fn judge(flow: &Flow, clock: &Clock, live: &[u32]) -> Judged {
    let slot = (flow.target & SLOT_MASK) as usize;
    if live.get(slot).copied().unwrap_or(0) != flow.generation() {
        return Judged::Stale;
    }
    let timeout = clock.timeout(flow.state);
    if conn::age(clock.now, flow.stamp) > timeout {
        return Judged::Expired;
    }
    Judged::Live {
        active: conn::is_active(flow.state),
    }
}

/// Seconds until `flow` expires (0 if it has), as `ipvsadm -L -c` shows them.
pub fn expires_in(flow: &Flow, clock: &Clock) -> u32 {
    let timeout = clock.timeout(flow.state);
    timeout.saturating_sub(conn::age(clock.now, flow.stamp))
}

/// Buckets the sweep visits a second: 4 MiB. A pass over the largest table (16 Mi buckets)
/// takes 256 s.
pub const SWEEP_BUCKETS: u32 = 1 << 16;

/// The sweep of one family's table, run a step at a time.
#[derive(Debug)]
pub struct Sweep<F: Family> {
    cursor: u32,
    counting: ConnCounts,
    counts: ConnCounts,
    /// Flows freed because they expired, since the start.
    pub expired: u64,
    /// Flows freed because their real server was gone, since the start.
    pub stale: u64,
    /// Full passes made.
    pub passes: u64,
    _family: std::marker::PhantomData<F>,
}

impl<F: Family> Default for Sweep<F> {
    fn default() -> Self {
        Sweep {
            cursor: 0,
            counting: ConnCounts::new(),
            counts: ConnCounts::new(),
            expired: 0,
            stale: 0,
            passes: 0,
            _family: std::marker::PhantomData,
        }
    }
}

fn count(counts: &mut ConnCounts, flow: &Flow, active: bool) {
    let c = counts.entry(flow.target & SLOT_MASK).or_default();
    if active {
        c.0 += 1;
    } else {
        c.1 += 1;
    }
}

impl<F: Family> Sweep<F> {
    /// The connection counts of the last full pass (or of the last [`Sweep::set_counts`]).
    pub fn counts(&self) -> &ConnCounts {
        &self.counts
    }

    /// Counts made whole by [`count_now`], current until the next pass ends.
    pub fn set_counts(&mut self, counts: ConnCounts) {
        self.counts = counts;
    }

    /// Visits up to `budget` buckets from where the last step stopped, freeing expired and
    /// stale flows and counting the others. At the end of the buckets it sweeps the overflow
    /// hash, and the pass's counts become the current ones.
    pub fn step(
        &mut self,
        buckets: &Buckets<F>,
        overflow: &mut BpfHashMap<MapData, F::Key, Flow>,
        conns: &RealConns,
        clock: &Clock,
        live: &[u32],
        budget: u32,
    ) -> Result<()> {
        let end = self.cursor.saturating_add(budget).min(buckets.len());
        for i in self.cursor..end {
            let Some(bucket) = buckets.read(i) else {
                continue;
            };
            for (w, way) in F::ways(&bucket).iter().enumerate() {
                let flow = F::flow(way);
                if flow.proto == 0 {
                    continue;
                }
                match judge(&flow, clock, live) {
                    Judged::Live { active } => count(&mut self.counting, &flow, active),
                    Judged::Expired => {
                        if buckets.free(i, w, &flow) {
                            self.expired += 1;
                            conns.forget(&flow);
                        }
                    }
                    // Only once idle for 2 s: a flow rescheduled this second could look the
                    // same as the stale one in the word the swap compares.
                    Judged::Stale if conn::age(clock.now, flow.stamp) >= 2 => {
                        self.stale += u64::from(buckets.free(i, w, &flow))
                    }
                    Judged::Stale => {}
                }
            }
        }
        self.cursor = end;
        if self.cursor >= buckets.len() {
            self.sweep_overflow(overflow, conns, clock, live)?;
            self.cursor = 0;
            self.counts = std::mem::take(&mut self.counting);
            self.passes += 1;
        }
        Ok(())
    }

    /// Deletes expired and stale flows of the overflow hash, counting the others. An entry is
    /// read once more right before it is deleted: a packet that came meanwhile keeps it.
    fn sweep_overflow(
        &mut self,
        overflow: &mut BpfHashMap<MapData, F::Key, Flow>,
        conns: &RealConns,
        clock: &Clock,
        live: &[u32],
    ) -> Result<()> {
        let entries: Vec<(F::Key, Flow)> = overflow.iter().filter_map(|r| r.ok()).collect();
        for (key, flow) in entries {
            match judge(&flow, clock, live) {
                Judged::Live { active } => count(&mut self.counting, &flow, active),
                gone => {
                    if overflow.get(&key, 0).ok() != Some(flow) || overflow.remove(&key).is_err() {
                        continue;
                    }
                    if gone == Judged::Expired {
                        self.expired += 1;
                        conns.forget(&flow);
                    } else {
                        self.stale += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Counts the live connections of the whole table now, changing nothing.
pub fn count_now<F: Family>(
    buckets: &Buckets<F>,
    overflow: &BpfHashMap<MapData, F::Key, Flow>,
    clock: &Clock,
    live: &[u32],
) -> ConnCounts {
    let mut counts = ConnCounts::new();
    let mut add = |flow: &Flow| {
        if let Judged::Live { active } = judge(flow, clock, live) {
            count(&mut counts, flow, active);
        }
    };
    buckets.for_each(|w| add(&F::flow(w)));
    for (_, flow) in overflow.iter().filter_map(|r| r.ok()) {
        add(&flow);
    }
    counts
}
