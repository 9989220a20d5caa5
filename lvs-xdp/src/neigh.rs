//! Real-server MACs from the kernel's neighbour table.
//!
//! For each address: dump the table; if the interface has no usable entry, ask the kernel to
//! resolve it (NTF_USE: it sends an ARP request exactly as if a packet were waiting), then poll
//! until an entry appears or the deadline passes. A STALE entry (not confirmed lately: the host
//! may have gone, or its address moved) is confirmed the same way before it is used.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

pub use crate::netlink::Neighbour;
use crate::{
    model::Mac,
    netlink::{NUD_STALE, Rtnl},
};

const POLL: Duration = Duration::from_millis(50);
/// Ask again this often while waiting (the kernel gives up after its own probe count).
const RETRIGGER: Duration = Duration::from_millis(1000);

/// The neighbour table of the current network namespace.
pub fn dump() -> Result<Vec<Neighbour>> {
    Ok(Rtnl::open()?.neighbours()?)
}

/// Resolves each address to a MAC on interface `ifindex` (`ifname` for messages), triggering ARP
/// for missing and STALE entries and waiting at most `timeout` in all. A STALE entry that is not
/// confirmed in time is used as it is. Fails naming the first address that could not be resolved.
pub fn resolve(
    ifindex: u32,
    ifname: &str,
    addresses: &[Ipv4Addr],
    timeout: Duration,
) -> Result<HashMap<Ipv4Addr, Mac>> {
    let mut nl = Rtnl::open()?;
    let deadline = Instant::now() + timeout;
    let mut found = HashMap::new();
    let mut stale = HashMap::new();
    let mut last_trigger: Option<Instant> = None;
    loop {
        for n in nl.neighbours()? {
            let IpAddr::V4(address) = n.address else {
                continue;
            };
            if n.ifindex != ifindex || !addresses.contains(&address) {
                continue;
            }
            if let Some(mac) = n.usable_mac() {
                if n.state & NUD_STALE != 0 {
                    stale.insert(address, mac);
                } else {
                    found.insert(address, mac);
                }
            }
        }
        let missing: Vec<Ipv4Addr> = addresses
            .iter()
            .copied()
            .filter(|a| !found.contains_key(a))
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            let unresolved: Vec<&Ipv4Addr> =
                missing.iter().filter(|a| !stale.contains_key(a)).collect();
            if let Some(first) = unresolved.first() {
                bail!(
                    "real server {first} did not resolve to a MAC on {ifname} within {:.1}s (is it up and on the same L2 segment? give its MAC to skip resolution: `mac` in the config, --mac on the command line)",
                    timeout.as_secs_f64()
                );
            }
            for a in missing {
                log::warn!(
                    "real server {a}: its neighbour entry on {ifname} is STALE and was not confirmed within {:.1}s; using it",
                    timeout.as_secs_f64()
                );
                found.insert(a, stale[&a]);
            }
            return Ok(found);
        }
        if last_trigger.is_none_or(|t| t.elapsed() >= RETRIGGER) {
            for address in &missing {
                nl.resolve(ifindex, IpAddr::V4(*address)).map_err(|e| {
                    anyhow::anyhow!("cannot ask the kernel to resolve {address} on {ifname}: {e}")
                })?;
            }
            last_trigger = Some(Instant::now());
        }
        thread::sleep(POLL);
    }
}
