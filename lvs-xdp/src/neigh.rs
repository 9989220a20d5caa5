//! Real-server MACs from the kernel's neighbour table.
//!
//! For each address: dump the table. A confirmed entry (REACHABLE, PERMANENT) is used. A missing
//! one is resolved: the kernel is asked to (NTF_USE: it sends an ARP request exactly as if a
//! packet were waiting), then the table is polled until an entry appears or the deadline
//! passes. An entry not confirmed lately (STALE, DELAY, PROBE: the host may have gone, or its
//! address moved to another MAC) is confirmed before it is used: probed at once (NUD_PROBE, a
//! unicast ARP request to the MAC it has), and when that brings no answer within a second,
//! forgotten and resolved again by broadcast, which finds a new MAC.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

pub use crate::netlink::Neighbour;
use crate::{
    model::Mac,
    netlink::{NUD_UNCONFIRMED, Rtnl},
};

const POLL: Duration = Duration::from_millis(50);
/// Ask again this often while waiting (the kernel gives up after its own probe count).
const RETRIGGER: Duration = Duration::from_millis(1000);

/// The neighbour table of the current network namespace.
pub fn dump() -> Result<Vec<Neighbour>> {
    Ok(Rtnl::open()?.neighbours()?)
}

/// How long a unicast probe of an unconfirmed entry may take before the entry is forgotten and
/// resolved by broadcast.
const PROBE_PATIENCE: Duration = Duration::from_millis(1000);

/// Resolves each address to a MAC on interface `ifindex` (`ifname` for messages), as described
/// above, waiting at most `timeout` in all. An unconfirmed entry that could not be confirmed in
/// time is used as it is, with a warning. Fails naming the first address that has no MAC.
pub fn resolve(
    ifindex: u32,
    ifname: &str,
    addresses: &[IpAddr],
    timeout: Duration,
) -> Result<HashMap<IpAddr, Mac>> {
    let mut nl = Rtnl::open()?;
    let start = Instant::now();
    let deadline = start + timeout;
    let mut found = HashMap::new();
    let mut probed: HashMap<IpAddr, Instant> = HashMap::new();
    let mut forgotten: HashSet<IpAddr> = HashSet::new();
    let mut last_trigger: Option<Instant> = None;
    loop {
        let mut unconfirmed = HashMap::new();
        for n in nl.neighbours()? {
            let address = n.address;
            if n.ifindex != ifindex || !addresses.contains(&address) {
                continue;
            }
            if let Some(mac) = n.usable_mac() {
                if n.state & NUD_UNCONFIRMED != 0 {
                    unconfirmed.insert(address, mac);
                } else {
                    found.insert(address, mac);
                }
            }
        }
        let missing: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|a| !found.contains_key(a))
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let now = Instant::now();
        if now >= deadline {
            for a in &missing {
                let Some(mac) = unconfirmed.get(a) else {
                    bail!(
                        "real server {a} did not resolve to a MAC on {ifname} within {:.1}s (is it up and on the same L2 segment? give its MAC to skip resolution: `mac` in the config, --mac on the command line)",
                        timeout.as_secs_f64()
                    );
                };
                log::warn!(
                    "real server {a}: its neighbour entry on {ifname} ({mac}) was not confirmed within {:.1}s; using it",
                    timeout.as_secs_f64()
                );
                found.insert(*a, *mac);
            }
            return Ok(found);
        }
        let retrigger = last_trigger.is_none_or(|t| t.elapsed() >= RETRIGGER);
        for a in &missing {
            let ask = |e: std::io::Error| {
                anyhow::anyhow!("cannot ask the kernel to resolve {a} on {ifname}: {e}")
            };
            match (unconfirmed.contains_key(a), probed.get(a)) {
                // Unconfirmed, not probed yet: probe it now.
                (true, None) => {
                    nl.probe(ifindex, *a).map_err(ask)?;
                    probed.insert(*a, now);
                }
                // Probed without an answer: forget it once, and resolve by broadcast.
                (true, Some(t))
                    if now.duration_since(*t) >= PROBE_PATIENCE && !forgotten.contains(a) =>
                {
                    let _ = nl.forget_neighbour(ifindex, *a);
                    forgotten.insert(*a);
                    nl.resolve(ifindex, *a).map_err(ask)?;
                }
                (true, Some(_)) => {}
                (false, _) if retrigger => nl.resolve(ifindex, *a).map_err(ask)?,
                (false, _) => {}
            }
        }
        if retrigger {
            last_trigger = Some(now);
        }
        thread::sleep(POLL);
    }
}

/// Where a real server's MAC is looked up: the interface, its name, and the VLAN its frames
/// are tagged with (0: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub ifindex: u32,
    pub ifname: String,
    pub vlan: u16,
}

/// The segment of a real server: with a VLAN given (`wanted`), that VLAN's interface on the
/// director's (`vlans`, its VLAN sub-interfaces); otherwise the VLAN sub-interface its route
/// goes out of (`oif`), or else the director's interface itself.
pub fn segment(
    addr: IpAddr,
    wanted: Option<u16>,
    oif: Option<u32>,
    attach: &Segment,
    vlans: &[crate::netlink::VlanIface],
) -> Result<Segment> {
    let on = |v: &crate::netlink::VlanIface| Segment {
        ifindex: v.ifindex,
        ifname: v.name.clone(),
        vlan: v.vid,
    };
    match wanted {
        Some(vid) => match vlans.iter().find(|v| v.vid == vid) {
            Some(v) => Ok(on(v)),
            None => bail!(
                "real server {addr} is on VLAN {vid}, but {} has no VLAN {vid} interface to resolve its MAC on (create it, or give the real server's mac)",
                attach.ifname
            ),
        },
        None => Ok(oif
            .and_then(|i| vlans.iter().find(|v| v.ifindex == i))
            .map_or_else(|| attach.clone(), on)),
    }
}

/// Resolves each real server (address, its VLAN if given) on its segment (see [`segment`]):
/// its MAC, and the VLAN its frames are to be tagged with.
pub fn resolve_all(
    r: &crate::director::Resolver,
    reals: &[(IpAddr, Option<u16>)],
) -> Result<HashMap<IpAddr, (Mac, u16)>> {
    let mut nl = Rtnl::open()?;
    let vlans = nl.vlans_on(r.ifindex)?;
    let attach = Segment {
        ifindex: r.ifindex,
        ifname: r.ifname.clone(),
        vlan: 0,
    };
    let mut groups: HashMap<u32, (Segment, Vec<IpAddr>)> = HashMap::new();
    for (addr, wanted) in reals {
        // Only worth a route lookup when there are VLAN interfaces to choose from.
        let oif = if vlans.is_empty() || wanted.is_some() {
            None
        } else {
            nl.route_oif(*addr)?
        };
        let seg = segment(*addr, *wanted, oif, &attach, &vlans)?;
        groups
            .entry(seg.ifindex)
            .or_insert_with(|| (seg, Vec::new()))
            .1
            .push(*addr);
    }
    let mut out = HashMap::new();
    for (seg, addrs) in groups.into_values() {
        for (addr, mac) in resolve(seg.ifindex, &seg.ifname, &addrs, r.timeout)? {
            out.insert(addr, (mac, seg.vlan));
        }
    }
    Ok(out)
}
