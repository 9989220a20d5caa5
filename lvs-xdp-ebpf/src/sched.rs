//! Scheduling of new flows.
use lvs_xdp_common::{
    FlowKeyV4, RealServer, Service, flow_table, maglev, scheduler, service_flags,
};

use crate::maps::{MAGLEV, REALS, RR, SCHED};

/// Picks a real server by round robin for a new flow of `svc`: its slot in `REALS` and a copy
/// of the entry. `None` when the service has no usable real server.
#[inline(always)]
fn pick(svc: &Service) -> Option<(u32, RealServer)> {
    if svc.sched_len == 0 {
        return None;
    }
    let offset = match svc.scheduler {
        scheduler::RR => round_robin(svc)?,
        _ => return None,
    };
    at(svc, offset)
}

/// Picks a real server for a new flow of `svc`, by its scheduler: by round robin, or for `mh`
/// by the client's entry in the service's Maglev table.
#[inline(always)]
pub fn pick_for(svc: &Service, key: &FlowKeyV4) -> Option<(u32, RealServer)> {
    if svc.scheduler == scheduler::MH {
        return by_maglev(svc, key);
    }
    pick(svc)
}

/// The real server of the client's entry in the service's Maglev table.
#[inline(always)]
fn by_maglev(svc: &Service, key: &FlowKeyV4) -> Option<(u32, RealServer)> {
    if svc.sched_len == 0 {
        return None;
    }
    let hash = if svc.flags & service_flags::MH_PORT != 0 {
        maglev::client_port_hash(key.saddr, key.ports)
    } else {
        maglev::client_hash(key.saddr)
    };
    let entry = hash % maglev::TABLE_SIZE;
    let index = svc
        .table
        .wrapping_mul(maglev::TABLE_SIZE)
        .wrapping_add(entry);
    let slot = *MAGLEV.get(index)?;
    live(slot)
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

/// The real server for a flow that is not remembered: for `mh`, where the Maglev table says
/// (where its connection is, unless the real servers changed); otherwise picked by an unseeded
/// hash of its 5-tuple over the service's scheduling range, so every packet of it goes to the
/// same one while the range is unchanged.
#[inline(always)]
pub fn by_hash(svc: &Service, key: &FlowKeyV4) -> Option<(u32, RealServer)> {
    if svc.scheduler == scheduler::MH {
        return by_maglev(svc, key);
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
