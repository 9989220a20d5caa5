//! The director as ipvsadm sees it: virtual services keyed by (protocol, address, port), each with
//! its real servers keyed by address, and the operations that change them. Pure data: every
//! operation is checked against the state and refused whole, with ipvsadm's words, or applied.
//! The kernel side ([`crate::director`]) follows this state; nothing here touches the kernel.
use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use anyhow::{Result, anyhow, bail};
use lvs_xdp_common as common;
use serde::{Deserialize, Serialize};

/// Largest real-server weight, as in IPVS.
pub const MAX_WEIGHT: u32 = 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lvs_xdp_common::PROTO_TCP,
            Protocol::Udp => lvs_xdp_common::PROTO_UDP,
        }
    }
}

impl FromStr for Protocol {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => bail!("unknown protocol {s:?} (expected \"tcp\" or \"udp\")"),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Scheduler {
    /// Round-robin (ipvsadm `-s rr`).
    #[serde(rename = "rr")]
    RoundRobin,
    /// Maglev consistent hashing of the client's address, with weights (ipvsadm `-s mh`).
    #[serde(rename = "mh")]
    Maglev,
    /// Weighted round robin (ipvsadm `-s wrr`).
    #[serde(rename = "wrr")]
    WeightedRoundRobin,
    /// Least connections (`lc`).
    #[serde(rename = "lc")]
    LeastConnection,
    /// Weighted least connections (`wlc`): ipvsadm's default, and so lvs-xdp's.
    #[default]
    #[serde(rename = "wlc")]
    WeightedLeastConnection,
    /// Shortest expected delay (`sed`).
    #[serde(rename = "sed")]
    ShortestExpectedDelay,
    /// Never queue (`nq`).
    #[serde(rename = "nq")]
    NeverQueue,
    /// Weighted failover (`fo`).
    #[serde(rename = "fo")]
    WeightedFailover,
    /// Weighted overflow (`ovf`).
    #[serde(rename = "ovf")]
    WeightedOverflow,
    /// Source hashing (`sh`): a table of 256 buckets by the client's address.
    #[serde(rename = "sh")]
    SourceHashing,
    /// Destination hashing (`dh`): the same table, by the destination address.
    #[serde(rename = "dh")]
    DestinationHashing,
    /// Weighted random two choices (`twos`).
    #[serde(rename = "twos")]
    TwoChoices,
}

impl Scheduler {
    /// Every scheduler, by its ipvsadm name.
    pub const ALL: [Scheduler; 12] = [
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnection,
        Scheduler::WeightedLeastConnection,
        Scheduler::ShortestExpectedDelay,
        Scheduler::NeverQueue,
        Scheduler::WeightedFailover,
        Scheduler::WeightedOverflow,
        Scheduler::SourceHashing,
        Scheduler::DestinationHashing,
        Scheduler::TwoChoices,
        Scheduler::Maglev,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::WeightedFailover => "fo",
            Scheduler::WeightedOverflow => "ovf",
            Scheduler::SourceHashing => "sh",
            Scheduler::DestinationHashing => "dh",
            Scheduler::TwoChoices => "twos",
            Scheduler::Maglev => "mh",
        }
    }

    /// The names, for messages: `rr, wrr, ...`.
    pub fn names() -> String {
        Scheduler::ALL.map(Scheduler::name).join(", ")
    }
}

impl FromStr for Scheduler {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Scheduler::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                anyhow!(
                    "unknown scheduler {s:?} (supported: {})",
                    Scheduler::names()
                )
            })
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An Ethernet address (`02:00:00:00:00:01` in JSON too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl Mac {
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl FromStr for Mac {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || anyhow!("bad MAC {s:?} (expected six hex bytes like 02:00:00:00:00:01)");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        let mac = Mac(mac);
        if !mac.is_unicast() {
            bail!("bad MAC {s:?}: a real server needs a unicast, non-zero address");
        }
        Ok(mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A virtual service's identity. Ordered as ipvsadm sorts services: protocol, address, port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub protocol: Protocol,
    pub addr: IpAddr,
    pub port: u16,
}

impl ServiceKey {
    pub fn new(protocol: Protocol, addr: impl Into<IpAddr>, port: u16) -> ServiceKey {
        ServiceKey {
            protocol,
            addr: addr.into(),
            port,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// `TCP 10.0.0.1:80` or `TCP [2001:db8::10]:80`, as ipvsadm names a service.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, AddrPort(self.addr, self.port))
    }
}

/// An address and port as ipvsadm writes them: `10.0.0.1:80`, `[2001:db8::1]:80`.
pub struct AddrPort(pub IpAddr, pub u16);

impl fmt::Display for AddrPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// What `-A`/`-E` set on a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceOpts {
    pub scheduler: Scheduler,
    /// `-b`: the scheduler's flags.
    #[serde(default)]
    pub flags: SchedFlags,
    /// `-p [TIMEOUT] [-M NETMASK]`.
    #[serde(default)]
    pub persistence: Option<Persistence>,
}

/// Persistence (`ipvsadm -p TIMEOUT -M NETMASK`): connections from one client network go to
/// the same real server for TIMEOUT seconds after the network's last new connection. The
/// netmask is of the service's family: ipvsadm writes an IPv4 one dotted and an IPv6 one as a
/// prefix length (`-M 64`), which is held here as the mask it stands for (`ffff:ffff:ffff:ffff::`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persistence {
    pub timeout: u32,
    pub netmask: IpAddr,
}

impl Persistence {
    /// ipvsadm's `-p` without a value (`IPVS_SVC_PERSISTENT_TIMEOUT`).
    pub const DEFAULT_TIMEOUT: u32 = 360;

    /// Checks a timeout (1 to lvs-xdp's largest) and a netmask (contiguous ones).
    pub fn new(timeout: u32, netmask: impl Into<IpAddr>) -> Result<Persistence, String> {
        let netmask = netmask.into();
        let max = common::conn::MAX_TIMEOUT;
        if !(1..=max).contains(&timeout) {
            return Err(format!(
                "persistence timeout {timeout} out of range (1..={max} seconds)"
            ));
        }
        let contiguous = match netmask {
            IpAddr::V4(m) => u32::from(m).leading_ones() + u32::from(m).trailing_zeros() == 32,
            IpAddr::V6(m) => u128::from(m).leading_ones() + u128::from(m).trailing_zeros() == 128,
        };
        if !contiguous || netmask.is_unspecified() {
            return Err(format!("illegal virtual server persistent mask {netmask}"));
        }
        Ok(Persistence { timeout, netmask })
    }

    /// The whole address (ipvsadm's default mask) in the family of `addr`.
    pub fn full_mask(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(_) => Ipv4Addr::BROADCAST.into(),
            IpAddr::V6(_) => Ipv6Addr::from(u128::MAX).into(),
        }
    }

    /// The mask for an IPv6 prefix length (1 to 128), as ipvsadm's `-M` takes it for IPv6.
    pub fn mask_v6(prefix: u32) -> Option<IpAddr> {
        (1..=128)
            .contains(&prefix)
            .then(|| Ipv6Addr::from(u128::MAX << (128 - prefix)).into())
    }

    /// The mask's length in bits (ipvsadm shows an IPv6 one that way).
    pub fn prefix_len(&self) -> u32 {
        match self.netmask {
            IpAddr::V4(m) => u32::from(m).leading_ones(),
            IpAddr::V6(m) => u128::from(m).leading_ones(),
        }
    }

    /// Whether the mask is the whole address (then ipvsadm does not show it).
    pub fn is_full(&self) -> bool {
        self.netmask == Self::full_mask(self.netmask)
    }
}

/// Scheduler flags (`ipvsadm -b`), for `mh`: `mh-fallback` (ipvsadm's `flag-1`) and `mh-port`
/// (`flag-2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SchedFlags {
    /// Another real server when the chosen one takes no new connections. Real servers of
    /// weight 0 hold no entry of the table here, so the table never chooses one: always so.
    pub fallback: bool,
    /// Hash the client's port with its address (connections of one client spread).
    pub port: bool,
}

impl SchedFlags {
    /// Parses `-b`'s comma-separated words for `scheduler`, with ipvsadm's messages.
    pub fn parse(words: &str, scheduler: Scheduler) -> Result<SchedFlags, String> {
        let mut flags = SchedFlags::default();
        let (mh, sh) = (
            scheduler == Scheduler::Maglev,
            scheduler == Scheduler::SourceHashing,
        );
        for word in words.split(',') {
            match word {
                "mh-fallback" if mh => flags.fallback = true,
                "mh-port" if mh => flags.port = true,
                "sh-fallback" if sh => flags.fallback = true,
                "sh-port" if sh => flags.port = true,
                "flag-1" if mh || sh => flags.fallback = true,
                "flag-2" if mh || sh => flags.port = true,
                "mh-fallback" | "mh-port" | "sh-fallback" | "sh-port" | "flag-1" | "flag-2"
                | "flag-3" => return Err(format!("incompatible scheduler flag `{word}'")),
                _ => return Err(format!("invalid scheduler flag `{word}'")),
            }
        }
        Ok(flags)
    }

    pub fn is_empty(&self) -> bool {
        !self.fallback && !self.port
    }

    /// As ipvsadm 1.31 prints them for `scheduler`: `sh-fallback,sh-port`, `mh-fallback,mh-port`.
    pub fn words(&self, scheduler: Scheduler) -> String {
        let prefix = if scheduler == Scheduler::SourceHashing {
            "sh"
        } else {
            "mh"
        };
        [(self.fallback, "fallback"), (self.port, "port")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| format!("{prefix}-{w}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What `-a`/`-e` set on a real server. The forwarding method is always direct routing, and the
/// port always the service's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealOpts {
    /// 0 takes no new connections (as in IPVS); existing ones continue.
    pub weight: u32,
    /// Explicit MAC; `None`: followed in the kernel's neighbour table.
    pub mac: Option<Mac>,
    /// The 802.1Q VLAN the real server is on (1 to 4094), when it is not the interface's own
    /// segment; `None`: the one its route goes through (a VLAN sub-interface of the interface
    /// lvs-xdp runs on), or none.
    #[serde(default)]
    pub vlan: Option<u16>,
}

impl Default for RealOpts {
    fn default() -> Self {
        RealOpts {
            weight: 1,
            mac: None,
            vlan: None,
        }
    }
}

/// A service and its real servers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Service {
    pub opts: ServiceOpts,
    pub reals: BTreeMap<IpAddr, RealOpts>,
}

/// Idle timeouts in seconds, as `ipvsadm --set TCP TCPFIN UDP` sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

impl Timeouts {
    /// The timeout of every connection state, as the data plane reads them: these three, and
    /// IPVS's defaults for the others.
    pub fn per_state(&self) -> [u32; common::conn::STATES] {
        use common::conn;
        let mut t = conn::DEFAULT_TIMEOUTS;
        t[usize::from(conn::ESTABLISHED)] = self.tcp;
        t[usize::from(conn::FIN_WAIT)] = self.tcp_fin;
        t[usize::from(conn::UDP)] = self.udp;
        t
    }
}

impl Default for Timeouts {
    /// IPVS's defaults.
    fn default() -> Self {
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

/// One change, as ipvsadm's commands make them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `-A`
    AddService(ServiceKey, ServiceOpts),
    /// `-E`
    EditService(ServiceKey, ServiceOpts),
    /// `-D`
    DeleteService(ServiceKey),
    /// `-a`
    AddReal(ServiceKey, IpAddr, RealOpts),
    /// `-e`
    EditReal(ServiceKey, IpAddr, RealOpts),
    /// `-d`
    DeleteReal(ServiceKey, IpAddr),
    /// `-C`
    Clear,
    /// `--set TCP TCPFIN UDP`: a 0 leaves that timeout as it is (as in IPVS).
    SetTimeouts(Timeouts),
}

/// Why the state refused an operation. The messages are ipvsadm's (its `ipvs_strerror`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    ServiceExists(ServiceKey),
    NoService(ServiceKey),
    RealExists(ServiceKey, IpAddr),
    NoReal(ServiceKey, IpAddr),
    /// A real-server operation on a service that does not exist.
    ServiceNotDefined(ServiceKey),
    /// A value out of range in an otherwise well-formed operation (a weight, say).
    Invalid(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ServiceExists(_) => f.write_str("Service already exists"),
            Refusal::NoService(_) => f.write_str("No such service"),
            Refusal::RealExists(..) => f.write_str("Destination already exists"),
            Refusal::NoReal(..) => f.write_str("No such destination"),
            Refusal::ServiceNotDefined(_) => f.write_str("Service not defined"),
            Refusal::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// The refusal with the service (and real server) it is about, for logs and config errors.
    pub fn detail(&self) -> String {
        match self {
            Refusal::ServiceExists(k) => format!("duplicate service {k}"),
            Refusal::NoService(k) => format!("no service {k}"),
            Refusal::RealExists(k, a) => format!("duplicate real server {a} in service {k}"),
            Refusal::NoReal(k, a) => format!("no real server {a} in service {k}"),
            Refusal::ServiceNotDefined(k) => format!("no service {k}"),
            Refusal::Invalid(why) => why.clone(),
        }
    }
}

/// Every service of the director, and its timeouts.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct State {
    pub services: BTreeMap<ServiceKey, Service>,
    pub timeouts: Timeouts,
}

fn check_real(key: &ServiceKey, addr: IpAddr, opts: &RealOpts) -> Result<(), Refusal> {
    if opts.weight > MAX_WEIGHT {
        return Err(Refusal::Invalid(format!(
            "weight {} out of range (0..={MAX_WEIGHT})",
            opts.weight
        )));
    }
    check_unicast(addr, "real server")?;
    if addr.is_ipv4() != key.addr.is_ipv4() {
        return Err(Refusal::Invalid(format!(
            "real server {addr} is not of the family of service {key}: a direct-routing service's real servers share its family"
        )));
    }
    Ok(())
}

/// A VIP or real server must be a unicast address.
pub fn check_unicast(addr: IpAddr, what: &str) -> Result<(), Refusal> {
    let unicast = match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    };
    if !unicast {
        return Err(Refusal::Invalid(format!(
            "bad {what} {addr}: not a unicast address"
        )));
    }
    Ok(())
}

/// A persistent service's netmask is of the service's family.
fn check_persistence_family(key: &ServiceKey, opts: &ServiceOpts) -> Result<(), Refusal> {
    match opts.persistence {
        Some(p) if p.netmask.is_ipv6() != key.addr.is_ipv6() => Err(Refusal::Invalid(format!(
            "service {key}: persistent mask {} is not of the service's family",
            p.netmask
        ))),
        _ => Ok(()),
    }
}

impl State {
    /// Applies `op`, or refuses it and changes nothing.
    pub fn apply(&mut self, op: &Op) -> Result<(), Refusal> {
        match op {
            Op::AddService(key, opts) => {
                check_unicast(key.addr, "vip")?;
                check_persistence_family(key, opts)?;
                if key.port == 0 {
                    return Err(Refusal::Invalid("port 0 is not a service port".into()));
                }
                if self.services.contains_key(key) {
                    return Err(Refusal::ServiceExists(*key));
                }
                self.services.insert(
                    *key,
                    Service {
                        opts: *opts,
                        reals: BTreeMap::new(),
                    },
                );
            }
            Op::EditService(key, opts) => {
                check_persistence_family(key, opts)?;
                self.service_mut(key)?.opts = *opts;
            }
            Op::DeleteService(key) => {
                self.services.remove(key).ok_or(Refusal::NoService(*key))?;
            }
            Op::AddReal(key, addr, opts) => {
                check_real(key, *addr, opts)?;
                let svc = self.real_service_mut(key)?;
                if svc.reals.contains_key(addr) {
                    return Err(Refusal::RealExists(*key, *addr));
                }
                svc.reals.insert(*addr, *opts);
            }
            Op::EditReal(key, addr, opts) => {
                check_real(key, *addr, opts)?;
                let real = self
                    .real_service_mut(key)?
                    .reals
                    .get_mut(addr)
                    .ok_or(Refusal::NoReal(*key, *addr))?;
                // ipvsadm's -e names no MAC or VLAN: those the real server has stay.
                *real = RealOpts {
                    mac: opts.mac.or(real.mac),
                    vlan: opts.vlan.or(real.vlan),
                    ..*opts
                };
            }
            Op::DeleteReal(key, addr) => {
                self.real_service_mut(key)?
                    .reals
                    .remove(addr)
                    .ok_or(Refusal::NoReal(*key, *addr))?;
            }
            Op::Clear => self.services.clear(),
            Op::SetTimeouts(t) => {
                for (name, want) in [("tcp", t.tcp), ("tcpfin", t.tcp_fin), ("udp", t.udp)] {
                    if want > common::conn::MAX_TIMEOUT {
                        return Err(Refusal::Invalid(format!(
                            "{name} timeout {want} s is above lvs-xdp's largest, {} s (18 hours)",
                            common::conn::MAX_TIMEOUT
                        )));
                    }
                }
                for (have, want) in [
                    (&mut self.timeouts.tcp, t.tcp),
                    (&mut self.timeouts.tcp_fin, t.tcp_fin),
                    (&mut self.timeouts.udp, t.udp),
                ] {
                    if want > 0 {
                        *have = want;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after every op of `ops`, or the first refusal (with its position) and no
    /// change: a batch is applied whole or not at all.
    pub fn after(&self, ops: &[Op]) -> Result<State, (usize, Refusal)> {
        let mut next = self.clone();
        for (i, op) in ops.iter().enumerate() {
            next.apply(op).map_err(|r| (i, r))?;
        }
        Ok(next)
    }

    fn service_mut(&mut self, key: &ServiceKey) -> Result<&mut Service, Refusal> {
        self.services.get_mut(key).ok_or(Refusal::NoService(*key))
    }

    fn real_service_mut(&mut self, key: &ServiceKey) -> Result<&mut Service, Refusal> {
        self.services
            .get_mut(key)
            .ok_or(Refusal::ServiceNotDefined(*key))
    }

    /// Real servers over all services.
    pub fn real_count(&self) -> usize {
        self.services.values().map(|s| s.reals.len()).sum()
    }

    /// Real-server addresses without an explicit MAC (to find in the neighbour table), each once.
    pub fn addresses_to_resolve(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .services
            .values()
            .flat_map(|s| s.reals.iter())
            .filter(|(_, r)| r.mac.is_none())
            .map(|(a, _)| *a)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The ops that build this state from an empty one (what `-S` saves).
    pub fn to_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for (key, svc) in &self.services {
            ops.push(Op::AddService(*key, svc.opts));
            for (addr, real) in &svc.reals {
                ops.push(Op::AddReal(*key, *addr, *real));
            }
        }
        ops
    }
}

/// An address as a VIP or real server: IPv4 or IPv6, unicast.
pub fn ip_addr(s: &str, field: &str) -> Result<IpAddr> {
    let Ok(a) = s.parse::<IpAddr>() else {
        bail!("bad {field} {s:?}: not an IP address");
    };
    check_unicast(a, field).map_err(|_| anyhow!("bad {field} {s:?}: not a unicast address"))?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ServiceKey {
        ServiceKey::new(Protocol::Tcp, Ipv4Addr::new(10, 0, 0, 10), port)
    }
    const RS1: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    const RS2: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4));

    #[test]
    fn operations_are_checked_against_the_state() {
        let mut s = State::default();
        let opts = ServiceOpts::default();
        s.apply(&Op::AddService(key(80), opts)).unwrap();
        assert_eq!(
            s.apply(&Op::AddService(key(80), opts)),
            Err(Refusal::ServiceExists(key(80)))
        );
        assert_eq!(
            s.apply(&Op::AddReal(key(81), RS1, RealOpts::default())),
            Err(Refusal::ServiceNotDefined(key(81)))
        );
        s.apply(&Op::AddReal(key(80), RS1, RealOpts::default()))
            .unwrap();
        assert_eq!(
            s.apply(&Op::AddReal(key(80), RS1, RealOpts::default())),
            Err(Refusal::RealExists(key(80), RS1))
        );
        assert_eq!(
            s.apply(&Op::DeleteReal(key(80), RS2)),
            Err(Refusal::NoReal(key(80), RS2))
        );
        let heavy = RealOpts {
            weight: MAX_WEIGHT + 1,
            mac: None,
            vlan: None,
        };
        assert!(matches!(
            s.apply(&Op::EditReal(key(80), RS1, heavy)),
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(s.services[&key(80)].reals[&RS1].weight, 1);
        s.apply(&Op::DeleteService(key(80))).unwrap();
        assert!(s.services.is_empty());
        assert_eq!(Refusal::NoService(key(80)).to_string(), "No such service");
    }

    #[test]
    fn a_batch_is_applied_whole_or_not_at_all() {
        let s = State::default();
        let ops = [
            Op::AddService(key(80), ServiceOpts::default()),
            Op::AddReal(key(80), RS1, RealOpts::default()),
            Op::AddReal(key(80), RS1, RealOpts::default()),
        ];
        assert_eq!(s.after(&ops), Err((2, Refusal::RealExists(key(80), RS1))));
        let ok = s.after(&ops[..2]).unwrap();
        assert_eq!(ok.real_count(), 1);
        assert_eq!(State::default().after(&ok.to_ops()).unwrap(), ok);
    }

    #[test]
    fn services_sort_as_ipvsadm_sorts_them() {
        let udp = ServiceKey::new(Protocol::Udp, Ipv4Addr::new(10, 0, 0, 1), 53);
        let tcp_b = ServiceKey::new(Protocol::Tcp, Ipv4Addr::new(10, 0, 0, 2), 80);
        let tcp_a = ServiceKey::new(Protocol::Tcp, Ipv4Addr::new(10, 0, 0, 2), 443);
        let mut keys = vec![udp, tcp_a, tcp_b];
        keys.sort();
        assert_eq!(keys, vec![tcp_b, tcp_a, udp]);
    }
}
