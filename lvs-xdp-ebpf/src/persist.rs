//! Persistence (`ipvsadm -p TIMEOUT -M NETMASK`): a client network keeps the real server its
//! first connection was given, for TIMEOUT seconds after its last new connection. Templates
//! live in `PERSIST`; userspace's sweep deletes the expired ones.
use aya_ebpf::bindings::BPF_ANY;
use core::ptr::write_volatile;
use lvs_xdp_common::{Clock, Flow, Persist, PersistKey, RealServer, Service, conn};

use crate::{
    flows::{self, Table},
    maps::PERSIST,
};

/// The template key of the flow `key` of service `svc`: the service and the client's network.
#[inline(always)]
fn key_of<T: Table>(svc: &Service, key: &T::Key) -> PersistKey {
    PersistKey {
        service: svc.id,
        client: T::client_net(key, &svc.persist_mask),
    }
}

/// The real server the service's template gives this client, if the template is there, not
/// expired and its real server unchanged. A new connection (`renew`) restarts its time.
#[inline(always)]
pub fn lookup<T: Table>(
    svc: &Service,
    key: &T::Key,
    clock: &Clock,
    renew: bool,
) -> Option<(u32, RealServer)> {
    if svc.persist_timeout == 0 {
        return None;
    }
    let t = PERSIST.get_ptr_mut(key_of::<T>(svc, key))?;
    // SAFETY: a value of a map that is not preallocated: valid for this program run.
    let template = unsafe { *t };
    if conn::age(clock.now, template.stamp) > svc.persist_timeout {
        return None;
    }
    let flow = Flow {
        target: template.target,
        ..Flow::default()
    };
    let real = flows::real_of(&flow)?;
    if renew && template.stamp != clock.now as u16 {
        // SAFETY: as above; a two-byte store.
        unsafe { write_volatile(&raw mut (*t).stamp, clock.now as u16) };
    }
    Some((flow.slot(), *real))
}

/// Records that this client network goes to `slot` (of `generation`) now.
#[inline(always)]
pub fn record<T: Table>(svc: &Service, key: &T::Key, slot: u32, generation: u32, clock: &Clock) {
    if svc.persist_timeout == 0 {
        return;
    }
    let template = Persist {
        target: Flow::new(slot, generation, 0, 0, 0).target,
        stamp: clock.now as u16,
        _pad: 0,
    };
    // A full table leaves the client without a template: its next connection is scheduled.
    let _ = PERSIST.insert(key_of::<T>(svc, key), template, BPF_ANY as u64);
}
