//! What the director shows: every service and real server with its counters at one instant
//! ([`Snapshot`], made by [`crate::director::Director::snapshot`]), and the ways it is printed.
use std::{fmt::Write as _, net::IpAddr, time::Instant};

use lvs_xdp_common::{Counters, reason};

use serde::{Deserialize, Serialize};

use crate::health::Shown;
use crate::model::{
    Mac, Persistence, Protocol, RealOpts, SchedFlags, Scheduler, ServiceKey, ServiceOpts, Timeouts,
};

/// A real server and its counters.
#[derive(Clone, Debug)]
pub struct RealView {
    pub addr: IpAddr,
    pub opts: RealOpts,
    /// The MAC frames are sent to (explicit or from the neighbour table).
    pub mac: Mac,
    pub counters: Counters,
    /// Its connections (active, inactive) as the last full sweep of the flow table counted.
    pub conns: (u64, u64),
    /// How its health checks leave it (`Up` when it has none).
    pub shown: Shown,
    /// Its check's verdict (true: up) and how many times it changed; `None`: not checked.
    pub check: Option<(bool, u64)>,
}

/// A service, its counters (over its real servers, present and past, plus its drops) and its
/// real servers.
#[derive(Clone, Debug)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub opts: ServiceOpts,
    pub counters: Counters,
    /// The part of `counters` that new connections dropped for want of a real server make.
    pub dropped: Counters,
    pub reals: Vec<RealView>,
}

/// Every counter, summed over CPUs, at one instant. Services in ipvsadm's order.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Instant,
    /// Indexed by `lvs_xdp_common::reason`.
    pub global: Vec<Counters>,
    pub services: Vec<ServiceView>,
    /// Flows the sweep freed since the start: (expired, whose real server was gone).
    pub swept: (u64, u64),
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

    /// The service `key` (services are in key order: a binary search).
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceView> {
        let i = self.services.binary_search_by(|s| s.key.cmp(key)).ok()?;
        Some(&self.services[i])
    }
}

impl ServiceView {
    /// The real server at `addr` (real servers are in address order: a binary search).
    pub fn real(&self, addr: IpAddr) -> Option<&RealView> {
        let i = self.reals.binary_search_by(|r| r.addr.cmp(&addr)).ok()?;
        Some(&self.reals[i])
    }
}

/// What `-Z` zeroed: the counters at that moment, subtracted from what the listings show (the
/// kernel's counters, the daemon's table and `forwarded` keep growing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zeroed {
    /// Per service: (its totals, the dropped part of them).
    pub services: Vec<(ServiceKey, [u64; 4], [u64; 4])>,
    pub reals: Vec<(ServiceKey, IpAddr, [u64; 4])>,
}

fn minus(c: Counters, base: [u64; 4]) -> Counters {
    Counters {
        packets: c.packets.saturating_sub(base[0]),
        bytes: c.bytes.saturating_sub(base[1]),
        conns: c.conns.saturating_sub(base[2]),
        drops: c.drops.saturating_sub(base[3]),
    }
}

/// Counters as plain numbers (packets, bytes, conns, drops).
pub fn counts(c: Counters) -> [u64; 4] {
    [c.packets, c.bytes, c.conns, c.drops]
}

impl Zeroed {
    /// Zeroes `svc` (and its real servers) as of `now`.
    pub fn zero(&mut self, svc: &ServiceView) {
        self.forget(&svc.key);
        self.services
            .push((svc.key, counts(svc.counters), counts(svc.dropped)));
        for r in &svc.reals {
            self.reals.push((svc.key, r.addr, counts(r.counters)));
        }
    }

    /// Forgets what was zeroed of service `key` (it is gone, or zeroed again).
    pub fn forget(&mut self, key: &ServiceKey) {
        self.services.retain(|(k, ..)| k != key);
        self.reals.retain(|(k, ..)| k != key);
    }

    /// Forgets what was zeroed of real server `addr` of service `key` (it is gone).
    pub fn forget_real(&mut self, key: &ServiceKey, addr: IpAddr) {
        self.reals.retain(|(k, a, _)| !(k == key && *a == addr));
    }

    fn service(&self, key: &ServiceKey) -> ([u64; 4], [u64; 4]) {
        self.services
            .iter()
            .find(|(k, ..)| k == key)
            .map_or(([0; 4], [0; 4]), |(_, t, d)| (*t, *d))
    }

    fn real(&self, key: &ServiceKey, addr: IpAddr) -> [u64; 4] {
        self.reals
            .iter()
            .find(|(k, a, _)| k == key && *a == addr)
            .map_or([0; 4], |(.., c)| *c)
    }
}

/// Totals as ipvsadm `--stats` shows them. A direct-routing director never sees the replies:
/// `out_pkts` and `out_bytes` are always 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl From<Counters> for Stats {
    fn from(c: Counters) -> Stats {
        Stats {
            conns: c.conns,
            in_pkts: c.packets,
            out_pkts: 0,
            in_bytes: c.bytes,
            out_bytes: 0,
        }
    }
}

/// Rates per second as ipvsadm `--rate` shows them (bytes per second for the `bps` ones, as in
/// IPVS), over the daemon's last estimation interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

impl Rates {
    fn between(before: &Counters, after: &Counters, secs: f64) -> Rates {
        let r = |a: u64, b: u64| (rate(b, Some(a), secs)).round() as u64;
        Rates {
            cps: r(before.conns, after.conns),
            in_pps: r(before.packets, after.packets),
            out_pps: 0,
            in_bps: r(before.bytes, after.bytes),
            out_bps: 0,
        }
    }
}

/// A real server as the control commands list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealEntry {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// The MAC frames go to.
    pub mac: Mac,
    /// Connections by state: ESTABLISHED and SYN_RECV are active, the others inactive (from the
    /// last sweep of the flow table).
    pub active_conns: u64,
    pub inact_conns: u64,
    pub stats: Stats,
    pub rates: Rates,
}

/// A service as the control commands list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub protocol: Protocol,
    pub addr: IpAddr,
    pub port: u16,
    pub scheduler: Scheduler,
    /// `-b`: the scheduler's flags.
    #[serde(default)]
    pub sched_flags: SchedFlags,
    /// `-p`/`-M`.
    #[serde(default)]
    pub persistence: Option<Persistence>,
    /// New connections dropped for want of a real server.
    pub drops: u64,
    pub stats: Stats,
    pub rates: Rates,
    pub reals: Vec<RealEntry>,
}

impl ServiceEntry {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.protocol, self.addr, self.port)
    }
}

/// What `lvs-xdp -L` shows: every service in ipvsadm's order (also the `--json` output).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub services: Vec<ServiceEntry>,
    pub timeouts: Timeouts,
}

impl Listing {
    /// A state's services without counters (what `check` prints, before anything runs). MACs
    /// not given explicitly are unknown here and show as zero.
    pub fn from_state(state: &crate::model::State) -> Listing {
        let services = state
            .services
            .iter()
            .map(|(key, svc)| ServiceEntry {
                protocol: key.protocol,
                addr: key.addr,
                port: key.port,
                scheduler: svc.opts.scheduler,
                sched_flags: svc.opts.flags,
                persistence: svc.opts.persistence,
                drops: 0,
                stats: Stats::default(),
                rates: Rates::default(),
                reals: svc
                    .reals
                    .iter()
                    .map(|(addr, r)| RealEntry {
                        addr: *addr,
                        port: key.port,
                        weight: r.weight,
                        mac: r.mac.unwrap_or(Mac([0; 6])),
                        active_conns: 0,
                        inact_conns: 0,
                        stats: Stats::default(),
                        rates: Rates::default(),
                    })
                    .collect(),
            })
            .collect();
        Listing {
            services,
            timeouts: state.timeouts,
        }
    }

    /// `now`, with rates over the interval between `base.0` and `base.1` (none: zero rates).
    /// The counters shown are those since the last `-Z` (`zeroed`).
    pub fn new(
        now: &Snapshot,
        base: Option<(&Snapshot, &Snapshot)>,
        timeouts: Timeouts,
        zeroed: &Zeroed,
    ) -> Listing {
        let secs = base.map_or(0.0, |(a, b)| b.at.duration_since(a.at).as_secs_f64());
        let services = now
            .services
            .iter()
            .map(|svc| {
                let pair =
                    base.and_then(|(a, b)| Some((a.service(&svc.key)?, b.service(&svc.key)?)));
                let rates = pair.map_or(Rates::default(), |(a, b)| {
                    Rates::between(&a.counters, &b.counters, secs)
                });
                // A failed real server that keepalived would have taken out is not listed.
                let reals = svc
                    .reals
                    .iter()
                    .filter(|r| r.shown != Shown::Hidden)
                    .map(|r| {
                        let find = |v: &ServiceView| v.real(r.addr).map(|x| x.counters);
                        let rates = pair
                            .and_then(|(a, b)| Some((find(a)?, find(b)?)))
                            .map_or(Rates::default(), |(a, b)| Rates::between(&a, &b, secs));
                        RealEntry {
                            addr: r.addr,
                            port: svc.key.port,
                            weight: r.opts.weight,
                            mac: r.mac,
                            active_conns: r.conns.0,
                            inact_conns: r.conns.1,
                            stats: minus(r.counters, zeroed.real(&svc.key, r.addr)).into(),
                            rates,
                        }
                    })
                    .collect();
                ServiceEntry {
                    protocol: svc.key.protocol,
                    addr: svc.key.addr,
                    port: svc.key.port,
                    scheduler: svc.opts.scheduler,
                    sched_flags: svc.opts.flags,
                    persistence: svc.opts.persistence,
                    drops: svc.counters.drops,
                    // As IPVS counts them: what was forwarded, not what was dropped.
                    stats: {
                        let (total, dropped) = zeroed.service(&svc.key);
                        let (c, d) = (minus(svc.counters, total), minus(svc.dropped, dropped));
                        Stats {
                            conns: c.conns,
                            in_pkts: c.packets.saturating_sub(d.packets),
                            in_bytes: c.bytes.saturating_sub(d.bytes),
                            ..Stats::default()
                        }
                    },
                    rates,
                    reals,
                }
            })
            .collect();
        Listing { services, timeouts }
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
        "{:<34} {:>9} {:>9} {:>8} {:>10} {:>9} {:>7} {:>8} {:>9} {:>7}",
        "Prot LocalAddress:Port Scheduler",
        "ActConn",
        "InActConn",
        "Conns",
        "InPkts",
        "InBytes",
        "CPS",
        "InPPS",
        "InBPS",
        "Drops"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port Weight");
    let line =
        |out: &mut String, name: String, conns: (u64, u64), c: &Counters, p: Option<&Counters>| {
            let _ = writeln!(
                out,
                "{:<34} {:>9} {:>9} {:>8} {:>10} {:>9} {:>7.0} {:>8.0} {:>9} {:>7}",
                name,
                conns.0,
                conns.1,
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
        let conns = svc
            .reals
            .iter()
            .fold((0, 0), |(a, i), r| (a + r.conns.0, i + r.conns.1));
        line(
            &mut out,
            name,
            conns,
            &svc.counters,
            before.map(|b| &b.counters),
        );
        for real in &svc.reals {
            let p = before.and_then(|b| b.real(real.addr)).map(|r| &r.counters);
            let health = match (real.shown, real.check) {
                (Shown::Sorry, _) => " sorry",
                (_, Some((true, _))) => " up",
                (_, Some((false, _))) => " DOWN",
                (_, None) => "",
            };
            let name = format!(
                "  -> {} {}{health}",
                crate::model::AddrPort(real.addr, svc.key.port),
                real.opts.weight
            );
            line(&mut out, name, real.conns, &real.counters, p);
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
    let _ = writeln!(
        out,
        "flows freed by the sweep: expired={} real_server_gone={}",
        now.swept.0, now.swept.1
    );
    let checked: Vec<(bool, u64)> = now
        .services
        .iter()
        .flat_map(|s| s.reals.iter().filter_map(|r| r.check))
        .collect();
    if !checked.is_empty() {
        let _ = writeln!(
            out,
            "health checks: {} real servers checked, {} down, {} state changes",
            checked.len(),
            checked.iter().filter(|(up, _)| !up).count(),
            checked.iter().map(|(_, n)| n).sum::<u64>()
        );
    }
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
