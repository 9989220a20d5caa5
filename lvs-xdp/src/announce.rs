//! Route health injection: a blackhole host route per VIP that can serve, in a routing table
//! of lvs-xdp's own, for a routing daemon (BIRD's kernel protocol with `learn`) to announce.
//! When no service of a VIP has a real server up (nor a sorry server), its route goes, so the
//! routers behind ECMP send its clients to directors that can serve them. The routes are
//! marked with lvs-xdp's own routing protocol number, so that only they are ever changed, and
//! are removed when lvs-xdp stops (kept with `--keep`, whose program goes on serving).
use std::{collections::BTreeSet, net::IpAddr};

use anyhow::{Context as _, Result, bail};

use crate::netlink::Rtnl;

/// The routing protocol number lvs-xdp's routes carry (`ip route show table N proto 251`);
/// numbers above 250 are free for local use (rt_protos).
pub const PROTOCOL: u8 = 251;

/// Keeps table `table` holding exactly the VIPs it is given.
pub struct Announcer {
    table: u32,
    nl: Rtnl,
}

impl Announcer {
    /// An announcer for routing table `table` (1..=0xffffffff, not the main or local table).
    pub fn new(table: u32) -> Result<Announcer> {
        if matches!(table, 0 | 253..=255) {
            bail!(
                "--announce-table {table}: use a table of lvs-xdp's own (not 0, default 253, main 254 or local 255)"
            );
        }
        Ok(Announcer {
            table,
            nl: Rtnl::open().context("netlink")?,
        })
    }

    /// Makes the table hold a route for each of `vips` and no other of lvs-xdp's; returns the
    /// VIPs (announced, withdrawn) by this call.
    pub fn sync(&mut self, vips: &BTreeSet<IpAddr>) -> Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        let now: BTreeSet<IpAddr> = self
            .nl
            .host_routes(self.table, PROTOCOL)
            .context("reading the announce table")?
            .into_iter()
            .collect();
        let added: Vec<IpAddr> = vips.difference(&now).copied().collect();
        let removed: Vec<IpAddr> = now.difference(vips).copied().collect();
        for a in &removed {
            self.nl
                .host_route(false, self.table, PROTOCOL, *a)
                .with_context(|| format!("withdrawing {a} from table {}", self.table))?;
        }
        for a in &added {
            self.nl
                .host_route(true, self.table, PROTOCOL, *a)
                .with_context(|| format!("announcing {a} in table {}", self.table))?;
        }
        Ok((added, removed))
    }

    /// Withdraws every VIP (at stop).
    pub fn withdraw_all(&mut self) -> Result<Vec<IpAddr>> {
        Ok(self.sync(&BTreeSet::new())?.1)
    }
}
