//! Per-CPU counters: no atomics and no sharing between CPUs on the packet path.
use aya_ebpf::maps::PerCpuArray;
use lvs_xdp_common::Counters;

use crate::maps::GLOBAL_STATS;

#[inline(always)]
pub fn count(map: &PerCpuArray<Counters>, index: u32, bytes: u64, new_conn: bool) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; nothing else writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            if new_conn {
                (*c).conns += 1;
            }
        }
    }
}

#[inline(always)]
pub fn count_drop(map: &PerCpuArray<Counters>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: as in `count`.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).drops += 1;
        }
    }
}

/// One verdict or event in `GLOBAL_STATS`.
#[inline(always)]
pub fn global(reason: u32, bytes: u64) {
    count(&GLOBAL_STATS, reason, bytes, false);
}
