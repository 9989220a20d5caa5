//! Each real server's connections, active and inactive (`REAL_CONNS`), kept with atomic adds:
//! shared by every CPU, as IPVS's counters are, and read by the connection-based schedulers.
use lvs_xdp_common::{ConnCount, conn};

use crate::maps::REAL_CONNS;

/// Adds `delta` to the connections of `slot` in `state`'s class (active or inactive).
#[inline(always)]
pub fn add(slot: u32, state: u8, delta: i64) {
    let Some(c) = REAL_CONNS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: a field of a map value, 8-byte aligned.
    let field = unsafe {
        if conn::is_active(state) {
            &raw mut (*c).active
        } else {
            &raw mut (*c).inactive
        }
    };
    // SAFETY: one atomic add (BPF_ATOMIC | BPF_ADD) to an 8-byte field of a map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)(r1 + 0) += r2",
            in("r1") field,
            in("r2") delta,
            options(nostack),
        );
    }
}

/// Moves one connection of `slot` from `from`'s class to `to`'s, if they differ.
#[inline(always)]
pub fn moved(slot: u32, from: u8, to: u8) {
    if conn::is_active(from) != conn::is_active(to) {
        add(slot, from, -1);
        add(slot, to, 1);
    }
}

/// A copy of `slot`'s counts.
#[inline(always)]
pub fn of(slot: u32) -> ConnCount {
    REAL_CONNS.get(slot).copied().unwrap_or_default()
}
