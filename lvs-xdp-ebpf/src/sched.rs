//! Scheduling of new flows.
use lvs_xdp_common::{RealServer, Service, scheduler};

use crate::maps::{REALS, RR, SCHED};

/// Picks a real server for a new flow of `svc`: its slot in `REALS` and a copy of the entry.
/// `None` when the service has no usable real server.
#[inline(always)]
pub fn pick(svc: &Service) -> Option<(u32, RealServer)> {
    if svc.sched_len == 0 {
        return None;
    }
    let offset = match svc.scheduler {
        scheduler::RR => round_robin(svc)?,
        _ => return None,
    };
    let slot = *SCHED.get(svc.sched_start.wrapping_add(offset))?;
    let real = *REALS.get(slot)?;
    if real.generation == 0 {
        return None;
    }
    Some((slot, real))
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
