//! What the director shows: every service and real server with its counters at one instant
//! ([`Snapshot`], made by [`crate::director::Director::snapshot`]), and the ways it is printed.
use std::{fmt::Write as _, net::Ipv4Addr, time::Instant};

use lvs_xdp_common::{Counters, reason};

use crate::model::{Mac, RealOpts, ServiceKey, ServiceOpts};

/// A real server and its counters.
#[derive(Clone, Debug)]
pub struct RealView {
    pub addr: Ipv4Addr,
    pub opts: RealOpts,
    /// The MAC frames are sent to (explicit or from the neighbour table).
    pub mac: Mac,
    pub counters: Counters,
}

/// A service, its counters (over its real servers, present and past, plus its drops) and its
/// real servers.
#[derive(Clone, Debug)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub opts: ServiceOpts,
    pub counters: Counters,
    pub reals: Vec<RealView>,
}

/// Every counter, summed over CPUs, at one instant. Services in ipvsadm's order.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Instant,
    /// Indexed by `lvs_xdp_common::reason`.
    pub global: Vec<Counters>,
    pub services: Vec<ServiceView>,
}

impl Snapshot {
    /// Packets over all verdicts: every packet the program saw, exactly once.
    pub fn total_packets(&self) -> u64 {
        self.global[..reason::VERDICTS as usize]
            .iter()
            .map(|c| c.packets)
            .sum()
    }

    pub fn reason(&self, r: u32) -> Counters {
        self.global[r as usize]
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceView> {
        self.services.iter().find(|s| s.key == *key)
    }
}

/// Human-readable byte count: 512, 1.5K, 20.0M, ...
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{}", v.round() as u64)
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

fn rate(now: u64, before: Option<u64>, secs: f64) -> f64 {
    match before {
        Some(b) if secs > 0.0 => now.saturating_sub(b) as f64 / secs,
        _ => 0.0,
    }
}

/// The stats table `run` prints: one line per service, one per real server, then the non-zero
/// verdicts. Rates are over the interval since `prev` (matched by service and address).
pub fn render_table(now: &Snapshot, prev: Option<&Snapshot>) -> String {
    let secs = prev.map_or(0.0, |p| now.at.duration_since(p.at).as_secs_f64());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:>8} {:>10} {:>9} {:>7} {:>8} {:>9} {:>7}",
        "Prot LocalAddress:Port Scheduler",
        "Conns",
        "InPkts",
        "InBytes",
        "CPS",
        "InPPS",
        "InBPS",
        "Drops"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port Weight");
    let line = |out: &mut String, name: String, c: &Counters, p: Option<&Counters>| {
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>10} {:>9} {:>7.0} {:>8.0} {:>9} {:>7}",
            name,
            c.conns,
            c.packets,
            bytes(c.bytes as f64),
            rate(c.conns, p.map(|p| p.conns), secs),
            rate(c.packets, p.map(|p| p.packets), secs),
            bytes(rate(c.bytes, p.map(|p| p.bytes), secs)),
            c.drops,
        );
    };
    for svc in &now.services {
        let before = prev.and_then(|p| p.service(&svc.key));
        let name = format!("{} {}", svc.key, svc.opts.scheduler);
        line(&mut out, name, &svc.counters, before.map(|b| &b.counters));
        for real in &svc.reals {
            let p = before
                .and_then(|b| b.reals.iter().find(|r| r.addr == real.addr))
                .map(|r| &r.counters);
            let name = format!("  -> {}:{} {}", real.addr, svc.key.port, real.opts.weight);
            line(&mut out, name, &real.counters, p);
        }
    }
    let mut verdicts = Vec::new();
    for (i, name) in reason::NAMES.iter().enumerate() {
        let c = now.global[i];
        if c.packets > 0 {
            verdicts.push(format!("{name}={}", c.packets));
        }
    }
    let _ = writeln!(
        out,
        "packets {}: {}",
        now.total_packets(),
        if verdicts.is_empty() {
            "-".to_string()
        } else {
            verdicts.join(" ")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0.0), "0");
        assert_eq!(bytes(999.0), "999");
        assert_eq!(bytes(1500.0), "1.5K");
        assert_eq!(bytes(20_971_520.0), "21.0M");
    }
}
