//! From a validated configuration to the exact contents of the maps. Pure: no kernel involved,
//! so the table layout is unit-tested on its own.
use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::{Result, anyhow};
use lvs_xdp_common as common;

use crate::config::{Config, Mac, Scheduler};

/// The contents of SERVICES, REALS and SCHED for one configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Services (id = index in `Config::services`) and one address marker per (VIP, protocol).
    pub services: Vec<(common::ServiceKey, common::Service)>,
    /// Indexed by real-server slot: services' real servers in configuration order.
    pub reals: Vec<common::RealServer>,
    /// Scheduling slots, each a real-server slot.
    pub sched: Vec<u32>,
    /// `real_slots[service id]`: the slots of that service's real servers, in configuration
    /// order (for naming counters).
    pub real_slots: Vec<Vec<u32>>,
}

/// Generation of every slot in a freshly loaded program (0 means unused).
pub const FIRST_GENERATION: u32 = 1;

pub fn service_key(vip: Ipv4Addr, port: u16, proto: u8) -> common::ServiceKey {
    common::ServiceKey {
        addr: [u32::from_ne_bytes(vip.octets()), 0, 0, 0],
        port: u16::from_ne_bytes(port.to_be_bytes()),
        proto,
        family: common::FAMILY_V4,
    }
}

impl Layout {
    /// `macs` must hold a MAC for every real server without an explicit one.
    pub fn build(config: &Config, macs: &HashMap<Ipv4Addr, Mac>) -> Result<Layout> {
        let mut layout = Layout {
            services: Vec::new(),
            reals: Vec::new(),
            sched: Vec::new(),
            real_slots: Vec::new(),
        };
        let mut markers = Vec::new();
        for (id, svc) in config.services.iter().enumerate() {
            let sched_start = layout.sched.len() as u32;
            let mut slots = Vec::new();
            for real in &svc.real_servers {
                let mac = match real.mac {
                    Some(mac) => mac,
                    None => *macs
                        .get(&real.address)
                        .ok_or_else(|| anyhow!("no MAC for real server {}", real.address))?,
                };
                let slot = layout.reals.len() as u32;
                layout.reals.push(common::RealServer {
                    mac: mac.0,
                    _pad: [0; 2],
                    service: id as u32,
                    generation: FIRST_GENERATION,
                });
                slots.push(slot);
                // Weight 0: kept (its connections go on) but given no new ones, as in IPVS.
                match svc.scheduler {
                    Scheduler::RoundRobin if real.weight > 0 => layout.sched.push(slot),
                    Scheduler::RoundRobin => {}
                }
            }
            layout.real_slots.push(slots);
            layout.services.push((
                service_key(svc.vip, svc.port, svc.protocol.number()),
                common::Service {
                    id: id as u32,
                    sched_start,
                    sched_len: layout.sched.len() as u32 - sched_start,
                    scheduler: common::scheduler::RR,
                    flags: 0,
                },
            ));
            let marker = service_key(svc.vip, 0, svc.protocol.number());
            if !markers.contains(&marker) {
                markers.push(marker);
            }
        }
        for key in markers {
            layout.services.push((
                key,
                common::Service {
                    id: u32::MAX,
                    sched_start: 0,
                    sched_len: 0,
                    scheduler: common::scheduler::RR,
                    flags: common::service_flags::ADDRESS_MARKER,
                },
            ));
        }
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_two_services() {
        let config = Config::from_toml(
            r#"
[[service]]
vip = "10.0.0.1"
port = 80
real_servers = [ { address = "10.0.0.3" }, { address = "10.0.0.4", weight = 0 }, { address = "10.0.0.5", mac = "02:00:00:00:00:05" } ]
[[service]]
vip = "10.0.0.1"
port = 443
real_servers = [ { address = "10.0.0.3" } ]
[[service]]
vip = "10.0.0.2"
port = 53
protocol = "udp"
"#,
        )
        .unwrap();
        let macs = HashMap::from([
            (Ipv4Addr::new(10, 0, 0, 3), Mac([2, 0, 0, 0, 0, 3])),
            (Ipv4Addr::new(10, 0, 0, 4), Mac([2, 0, 0, 0, 0, 4])),
        ]);
        let l = Layout::build(&config, &macs).unwrap();
        assert_eq!(l.reals.len(), 4);
        assert_eq!(l.reals[2].mac, [2, 0, 0, 0, 0, 5]);
        assert_eq!(l.reals[3].service, 1);
        // Weight 0 is not scheduled.
        assert_eq!(l.sched, vec![0, 2, 3]);
        assert_eq!(l.real_slots, vec![vec![0, 1, 2], vec![3], vec![]]);
        let svcs: Vec<_> = l.services.iter().map(|(_, s)| s).collect();
        assert_eq!((svcs[0].sched_start, svcs[0].sched_len), (0, 2));
        assert_eq!((svcs[1].sched_start, svcs[1].sched_len), (2, 1));
        assert_eq!((svcs[2].id, svcs[2].sched_len), (2, 0));
        // One marker per (VIP, protocol): 10.0.0.1/tcp and 10.0.0.2/udp.
        assert_eq!(l.services.len(), 5);
        assert_eq!(l.services[1].0.port.to_ne_bytes(), 443u16.to_be_bytes());
        let markers: Vec<_> = l.services[3..]
            .iter()
            .map(|(k, _)| (k.addr[0].to_ne_bytes()[3], k.proto))
            .collect();
        assert_eq!(markers, vec![(1, 6), (2, 17)]);
    }

    #[test]
    fn missing_mac_is_an_error() {
        let config = Config::from_toml(
            "[[service]]\nvip = \"10.0.0.1\"\nport = 80\nreal_servers = [ { address = \"10.0.0.3\" } ]\n",
        )
        .unwrap();
        let err = Layout::build(&config, &HashMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "no MAC for real server 10.0.0.3");
    }
}
