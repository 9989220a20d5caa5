//! The configuration: the TOML file, the command-line services, and their validation.
//!
//! Parsing happens in two steps: serde reads the file into loosely typed `Raw*` structs (so that a
//! wrong value can be reported with our own words and its position), then `validate` turns them
//! into [`Config`], refusing the whole input on the first problem.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    str::FromStr,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;

/// Default number of flow-table entries (connections remembered at once).
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// Smallest accepted flow table.
pub const MIN_FLOW_TABLE_SIZE: u32 = 16;
/// Largest accepted flow table (about 1.5 GiB of kernel memory).
pub const MAX_FLOW_TABLE_SIZE: u32 = 1 << 24;
/// Largest real-server weight, as in IPVS.
pub const MAX_WEIGHT: u32 = 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// Round-robin (ipvsadm `-s rr`).
    RoundRobin,
}

impl FromStr for Scheduler {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rr" => Ok(Scheduler::RoundRobin),
            _ => bail!("unknown scheduler {s:?} (supported: \"rr\")"),
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheduler::RoundRobin => "rr",
        })
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

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

/// A real server of a service (an IPVS "destination").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    pub address: Ipv4Addr,
    /// Explicit MAC; `None`: resolved from the neighbour table.
    pub mac: Option<Mac>,
    /// 0 takes no new connections (as in IPVS); weights are otherwise used by later schedulers.
    pub weight: u32,
}

/// A virtual service: VIP, port and protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    pub real_servers: Vec<RealServer>,
}

impl Service {
    /// `TCP 10.0.0.1:80`, as ipvsadm names a service.
    pub fn name(&self) -> String {
        format!("{} {}:{}", self.protocol, self.vip, self.port)
    }
}

/// A validated configuration: every value checked, no duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub services: Vec<Service>,
    pub flow_table_size: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            services: Vec::new(),
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    service: Vec<RawService>,
    flow_table_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    vip: String,
    port: i64,
    protocol: Option<String>,
    scheduler: Option<String>,
    #[serde(default)]
    real_servers: Vec<RawReal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    address: String,
    mac: Option<String>,
    weight: Option<i64>,
}

impl Config {
    /// Reads and validates a TOML file. Errors are one line, starting with `FILE:LINE:COL:` when
    /// the problem has a position.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Config::from_toml(&text).map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let mut config = Config::default();
        if let Some(size) = raw.flow_table_size {
            config.flow_table_size = flow_table_size(size)?;
        }
        for (i, svc) in raw.service.into_iter().enumerate() {
            let svc = validate_service(svc).with_context(|| format!("service {}", i + 1))?;
            config.add_service(svc)?;
        }
        Ok(config)
    }

    /// Adds a service, refusing a duplicate (VIP, port, protocol).
    pub fn add_service(&mut self, svc: Service) -> Result<()> {
        if self
            .services
            .iter()
            .any(|s| (s.vip, s.port, s.protocol) == (svc.vip, svc.port, svc.protocol))
        {
            bail!("duplicate service {}", svc.name());
        }
        self.services.push(svc);
        Ok(())
    }

    /// Merges services given on the command line: `--service VIP:PORT[/tcp|/udp]` each followed
    /// by its `--real RIP` flags. `reals[i]` belongs to `services[i]`.
    pub fn add_cli_services(&mut self, services: &[(String, Vec<String>)]) -> Result<()> {
        for (spec, reals) in services {
            let svc =
                parse_cli_service(spec, reals).with_context(|| format!("--service {spec}"))?;
            self.add_service(svc)?;
        }
        Ok(())
    }

    pub fn set_flow_table_size(&mut self, size: i64) -> Result<()> {
        self.flow_table_size = flow_table_size(size).context("--flow-table-size")?;
        Ok(())
    }

    /// Real servers over all services.
    pub fn real_server_count(&self) -> usize {
        self.services.iter().map(|s| s.real_servers.len()).sum()
    }
}

fn flow_table_size(size: i64) -> Result<u32> {
    if !(MIN_FLOW_TABLE_SIZE as i64..=MAX_FLOW_TABLE_SIZE as i64).contains(&size) {
        bail!(
            "flow_table_size {size} out of range ({MIN_FLOW_TABLE_SIZE}..={MAX_FLOW_TABLE_SIZE})"
        );
    }
    Ok(size as u32)
}

fn validate_service(raw: RawService) -> Result<Service> {
    let vip = ipv4(&raw.vip, "vip")?;
    let port = port(raw.port)?;
    let protocol = match raw.protocol {
        Some(p) => p.parse()?,
        None => Protocol::Tcp,
    };
    let scheduler = match raw.scheduler {
        Some(s) => s.parse()?,
        None => Scheduler::RoundRobin,
    };
    let mut svc = Service {
        vip,
        port,
        protocol,
        scheduler,
        real_servers: Vec::new(),
    };
    for (i, real) in raw.real_servers.into_iter().enumerate() {
        let real = validate_real(real).with_context(|| format!("real server {}", i + 1))?;
        add_real(&mut svc, real)?;
    }
    Ok(svc)
}

fn validate_real(raw: RawReal) -> Result<RealServer> {
    let address = ipv4(&raw.address, "address")?;
    let mac = raw.mac.as_deref().map(str::parse).transpose()?;
    let weight = match raw.weight {
        None => 1,
        Some(w) if (0..=MAX_WEIGHT as i64).contains(&w) => w as u32,
        Some(w) => bail!("weight {w} out of range (0..={MAX_WEIGHT})"),
    };
    Ok(RealServer {
        address,
        mac,
        weight,
    })
}

fn add_real(svc: &mut Service, real: RealServer) -> Result<()> {
    if svc.real_servers.iter().any(|r| r.address == real.address) {
        bail!(
            "duplicate real server {} in service {}",
            real.address,
            svc.name()
        );
    }
    svc.real_servers.push(real);
    Ok(())
}

fn ipv4(s: &str, field: &str) -> Result<Ipv4Addr> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
            bail!("bad {field} {s:?}: not a unicast address")
        }
        Ok(IpAddr::V4(a)) => Ok(a),
        Ok(IpAddr::V6(_)) => bail!("bad {field} {s:?}: IPv6 is not supported yet"),
        Err(_) => bail!("bad {field} {s:?}: not an IPv4 address"),
    }
}

fn port(p: i64) -> Result<u16> {
    if !(1..=65535).contains(&p) {
        bail!("port {p} out of range (1..=65535)");
    }
    Ok(p as u16)
}

/// `VIP:PORT[/tcp|/udp]` and its real servers' addresses.
fn parse_cli_service(spec: &str, reals: &[String]) -> Result<Service> {
    let (addr, protocol) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, p.parse()?),
        None => (spec, Protocol::Tcp),
    };
    let (vip, port_str) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("expected VIP:PORT[/tcp|/udp], got {spec:?}"))?;
    let port_num: i64 = port_str
        .parse()
        .map_err(|_| anyhow!("bad port {port_str:?}"))?;
    let mut svc = Service {
        vip: ipv4(vip, "vip")?,
        port: port(port_num)?,
        protocol,
        scheduler: Scheduler::RoundRobin,
        real_servers: Vec::new(),
    };
    for real in reals {
        let real = RealServer {
            address: ipv4(real, "--real")?,
            mac: None,
            weight: 1,
        };
        add_real(&mut svc, real)?;
    }
    Ok(svc)
}

/// One line: `LINE:COL: message` from a toml error (whose own Display spans several lines).
fn toml_error(text: &str, err: &toml::de::Error) -> anyhow::Error {
    let msg = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            anyhow!("{line}:{col}: {msg}")
        }
        None => anyhow!("{msg}"),
    }
}

#[cfg(test)]
mod tests;
