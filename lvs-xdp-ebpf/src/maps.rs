//! Every map of the program. The sizes here are placeholders: the loader sets each
//! `max_entries` from the configuration before the maps are created. Names, keys and values are
//! the contract in `lvs-xdp-common`.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use lvs_xdp_common::{
    Clock, ConnCount, Counters, DirectService, Flow, FlowBucketV4, FlowBucketV6, FlowKeyV4,
    FlowKeyV6, Iface, MaglevBlock, Persist, PersistKey, RealServer, Service, ServiceKey, maglev,
    reason,
};

/// Not preallocated, so that a value replaced by userspace is freed only after readers are done
/// (RCU): a packet never sees half of an old service and half of a new one.
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

#[map]
pub static REALS: Array<RealServer> = Array::with_max_entries(1, 0);

#[map]
pub static SCHED: Array<u32> = Array::with_max_entries(1, 0);

/// Mmapable so that the values start page-aligned: every 64-byte bucket is one cache line.
#[map]
pub static FLOW_CACHE_V4: Array<FlowBucketV4> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Not preallocated, like `SERVICES`: an entry deleted while a packet holds a pointer to its
/// value is freed only after that packet is done.
#[map]
pub static FLOWS_V4: HashMap<FlowKeyV4, Flow> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// The IPv6 flow table, as the two above.
#[map]
pub static FLOW_CACHE_V6: Array<FlowBucketV6> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map]
pub static FLOWS_V6: HashMap<FlowKeyV6, Flow> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

#[map]
pub static CLOCK: Array<Clock> = Array::with_max_entries(1, 0);

/// Not preallocated: a template deleted by userspace while a packet reads it stays valid for
/// that packet.
#[map]
pub static PERSIST: HashMap<PersistKey, Persist> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// Mmapable: the sweep subtracts what it frees with atomics on the mapped memory.
#[map]
pub static REAL_CONNS: Array<ConnCount> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Mmapable: userspace writes a whole table as memory before a service points at it.
#[map]
pub static MAGLEV: Array<MaglevBlock> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map]
pub static MAGLEV_PREV: Array<MaglevBlock> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The services of the direct path (see `direct`), a fixed size.
#[map]
pub static DIRECT: Array<DirectService> = Array::with_max_entries(maglev::DIRECT_SLOTS, 0);

#[map]
pub static SAMPLE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static IFACES: Array<Iface> = Array::with_max_entries(1, 0);

#[map]
pub static RR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static REAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static GLOBAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(reason::COUNT, 0);

/// What a connection-based scheduler's scan keeps between its steps (see `sched`): one entry,
/// per CPU.
#[repr(C)]
pub struct Scan {
    pub start: u32,
    pub kind: u32,
    /// The best position so far (`u32::MAX`: none), and its score `num / den`; for `twos`,
    /// the two drawn positions (`best`, `second`) and the draws' remainders (`num`, `den`).
    pub best: u32,
    pub second: u32,
    pub num: u64,
    pub den: u64,
}

#[map]
pub static SCAN: PerCpuArray<Scan> = PerCpuArray::with_max_entries(1, 0);
