//! The configuration: the TOML file, the command-line services, and their validation.
//!
//! Parsing happens in two steps: serde reads the file into loosely typed `Raw*` structs (so that a
//! wrong value can be reported with our own words and its position), then `validate` turns them
//! into [`Config`], refusing the whole input on the first problem.
mod chunks;
mod health;
mod write;
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;

use crate::model::{
    MAX_WEIGHT, Op, Persistence, RealOpts, Refusal, ServiceKey, ServiceOpts, State, ip_addr,
};
pub use crate::model::{Mac, Protocol, SchedFlags, Scheduler};

/// Default number of flow-table entries (connections remembered at once).
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// IPv6 flows the IPv6 flow table holds at least, unless configured otherwise: a quarter of
/// IPv4's (16 MiB of buckets).
pub const DEFAULT_FLOW_TABLE_SIZE_V6: u32 = 1 << 18;
/// Smallest accepted flow table.
pub const MIN_FLOW_TABLE_SIZE: u32 = 16;
/// Largest accepted flow table (about 1.5 GiB of kernel memory).
pub const MAX_FLOW_TABLE_SIZE: u32 = 1 << 24;

/// Virtual services the maps have room for, unless configured otherwise.
pub const DEFAULT_MAX_SERVICES: u32 = 4096;
/// Real servers (over all services) the maps have room for, unless configured otherwise.
pub const DEFAULT_MAX_REAL_SERVERS: u32 = 16384;
/// Largest accepted capacity of either kind.
pub const MAX_CAPACITY: u32 = 1 << 20;
pub const DEFAULT_MAX_MH_SERVICES: u32 = 8;
/// 256 `mh` services: 256 MiB of tables.
pub const MAX_MH_SERVICES: u32 = 256;

/// How large the kernel's tables are made when the program is loaded. A running director can
/// change its services, but not these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Capacity {
    /// Connections the flow table holds at least.
    pub flow_table_size: u32,
    /// IPv6 connections the IPv6 flow table holds at least (its own table: an IPv6 flow
    /// takes 44 bytes, an IPv4 one 20). Absent from the state of a director kept by an earlier
    /// version, which had no IPv6 table.
    #[serde(default = "default_flow_table_size_v6")]
    pub flow_table_size_v6: u32,
    /// Virtual services at once.
    pub services: u32,
    /// Real servers at once, over all services.
    pub real_servers: u32,
    /// `mh` services at once (each holds a Maglev table, and a second one for its next change).
    pub mh_services: u32,
    /// Entries of every Maglev table: a prime (65 537 by default). Absent from the state of a
    /// director kept by an earlier version, which had 65 537.
    #[serde(default = "default_maglev_table_size")]
    pub maglev_table_size: u32,
    /// When known flows of `mh` services take the direct path (see [`DirectPath`]). Absent
    /// from the state of a director kept by an earlier version: `auto`.
    #[serde(default)]
    pub direct_path: DirectPath,
}

/// When known flows of IPv4 TCP `mh` services are forwarded straight from the Maglev table,
/// without the flow table (see [`lvs_xdp_common::maglev`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectPath {
    /// While the flow table holds more than [`DirectPath::AUTO_ON`] connections (where its
    /// lookups miss the caches), until it holds fewer than [`DirectPath::AUTO_OFF`].
    #[default]
    Auto,
    Always,
    Never,
}

impl DirectPath {
    pub const AUTO_ON: u64 = 65_536;
    pub const AUTO_OFF: u64 = 32_768;

    pub fn parse(s: &str, field: &str) -> Result<DirectPath> {
        match s {
            "auto" => Ok(DirectPath::Auto),
            "always" => Ok(DirectPath::Always),
            "never" => Ok(DirectPath::Never),
            other => bail!("{field} \"{other}\": expected auto, always or never"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DirectPath::Auto => "auto",
            DirectPath::Always => "always",
            DirectPath::Never => "never",
        }
    }

    /// Whether the direct path is on, given whether it was (`on`) and the connections the
    /// flow table holds.
    pub fn on(self, on: bool, connections: u64) -> bool {
        match self {
            DirectPath::Always => true,
            DirectPath::Never => false,
            DirectPath::Auto if on => connections >= DirectPath::AUTO_OFF,
            DirectPath::Auto => connections > DirectPath::AUTO_ON,
        }
    }
}

fn default_flow_table_size_v6() -> u32 {
    DEFAULT_FLOW_TABLE_SIZE_V6
}

fn default_maglev_table_size() -> u32 {
    lvs_xdp_common::maglev::DEFAULT_TABLE_SIZE
}

/// Kernel memory the Maglev tables may take in all: `max_mh_services` x 2 x
/// `maglev_table_size` x 8 bytes.
pub const MAX_MAGLEV_BYTES: u64 = 1 << 30;

impl Capacity {
    /// Bytes of kernel memory the Maglev tables take (two per `mh` service, 8 bytes an entry).
    pub fn maglev_bytes(&self) -> u64 {
        u64::from(self.mh_services) * 2 * u64::from(self.maglev_table_size) * 8
    }

    /// Refuses a combination of `mh` services and table size that would take more than
    /// [`MAX_MAGLEV_BYTES`].
    fn check_maglev(&self) -> Result<()> {
        let bytes = self.maglev_bytes();
        if bytes > MAX_MAGLEV_BYTES {
            bail!(
                "max_mh_services {} x 2 tables x maglev_table_size {} x 8 bytes = {} MiB of kernel memory; at most {} MiB",
                self.mh_services,
                self.maglev_table_size,
                bytes >> 20,
                MAX_MAGLEV_BYTES >> 20
            );
        }
        Ok(())
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
            flow_table_size_v6: DEFAULT_FLOW_TABLE_SIZE_V6,
            services: DEFAULT_MAX_SERVICES,
            real_servers: DEFAULT_MAX_REAL_SERVERS,
            mh_services: DEFAULT_MAX_MH_SERVICES,
            maglev_table_size: default_maglev_table_size(),
            direct_path: DirectPath::Auto,
        }
    }
}

/// A validated configuration: the director's services, their health checks and the tables'
/// sizes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Config {
    pub state: State,
    pub capacity: Capacity,
    pub health: crate::health::Health,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    service: Vec<RawService>,
    flow_table_size: Option<i64>,
    flow_table_size_v6: Option<i64>,
    max_services: Option<i64>,
    max_real_servers: Option<i64>,
    max_mh_services: Option<i64>,
    maglev_table_size: Option<i64>,
    direct_path: Option<String>,
    timeouts: Option<RawTimeouts>,
}

/// `[timeouts]`: as `ipvsadm --set TCP TCPFIN UDP`, in seconds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    tcp: Option<i64>,
    tcp_fin: Option<i64>,
    udp: Option<i64>,
}

/// One `[[service]]` part of the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    service: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    vip: String,
    port: i64,
    protocol: Option<String>,
    scheduler: Option<String>,
    scheduler_flags: Option<Vec<String>>,
    persistence_timeout: Option<i64>,
    persistence_netmask: Option<String>,
    #[serde(default)]
    real_servers: Vec<RawReal>,
    health_check: Option<health::RawCheck>,
    inhibit_on_failure: Option<bool>,
    on_failure: Option<String>,
    sorry_server: Option<health::RawSorry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    address: String,
    mac: Option<String>,
    weight: Option<i64>,
    vlan: Option<i64>,
    health_check: Option<health::RawRealCheck>,
    inhibit_on_failure: Option<bool>,
}

impl Config {
    /// Reads and validates a configuration file: TOML, the rules `lvs-xdp -S` (and
    /// `ipvsadm-save`) write, or a keepalived.conf (its `virtual_server` blocks), told apart by
    /// the first line that is not blank or a comment. Errors are one line, starting with
    /// `FILE:LINE:COL:` (TOML), `FILE: line N:` (rules) or `FILE:LINE:` (keepalived.conf). What
    /// a keepalived.conf holds besides its virtual servers is logged as left to keepalived.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        if crate::keepalived::looks_like(&text) {
            let imported = crate::keepalived::import(path)?;
            for note in &imported.notes {
                log::info!("{note}");
            }
            return Ok(imported.config);
        }
        let rules = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.starts_with('-'));
        let config = if rules {
            Config::from_rules(&text)
        } else {
            Config::from_toml(&text)
        };
        config.map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    /// Parses and validates ipvsadm rules (`-A ...`, `-a ...`, one per line), as `-R` reads
    /// them. The capacities keep their defaults.
    pub fn from_rules(text: &str) -> Result<Config> {
        let ops = crate::ipvsadm::parse::restore_ops(text).map_err(|u| anyhow!("{}", u.message))?;
        let mut config = Config::default();
        for (line, op) in ops {
            config
                .state
                .apply(&op)
                .map_err(|r| anyhow!("line {line}: {}", r.detail()))?;
        }
        Ok(config)
    }

    /// Parses and validates TOML text. Each `[[service]]` table is parsed on its own (see
    /// [`chunks`]), so a large file never has its whole document model in memory.
    pub fn from_toml(text: &str) -> Result<Config> {
        let cut = chunks::cut(text);
        let rest: String = cut.rest.iter().map(|p| p.text).collect();
        let mut raw: RawConfig = toml::from_str(&rest).map_err(|e| {
            // The error's line in `rest`, moved to the file's.
            let mut line_of = Vec::new();
            for p in &cut.rest {
                let lines = p.text.matches('\n').count()
                    + usize::from(!p.text.is_empty() && !p.text.ends_with('\n'));
                line_of.extend((0..lines).map(|i| p.first_line + i));
            }
            toml_error_at(&rest, &e, |l| line_of.get(l).copied().unwrap_or(l))
        })?;
        let inline = std::mem::take(&mut raw.service);
        let mut config = Config::default();
        if let Some(size) = raw.flow_table_size {
            config.capacity.flow_table_size = flow_table_size(size, "flow_table_size")?;
        }
        if let Some(size) = raw.flow_table_size_v6 {
            config.capacity.flow_table_size_v6 = flow_table_size(size, "flow_table_size_v6")?;
        }
        if let Some(n) = raw.max_services {
            config.capacity.services = capacity(n, "max_services")?;
        }
        if let Some(n) = raw.max_real_servers {
            config.capacity.real_servers = capacity(n, "max_real_servers")?;
        }
        if let Some(n) = raw.max_mh_services {
            if !(1..=i64::from(MAX_MH_SERVICES)).contains(&n) {
                bail!("max_mh_services {n} out of range (1..={MAX_MH_SERVICES})");
            }
            config.capacity.mh_services = n as u32;
        }
        if let Some(n) = raw.maglev_table_size {
            config.capacity.maglev_table_size = maglev_table_size(n, "maglev_table_size")?;
        }
        config.capacity.check_maglev()?;
        if let Some(d) = &raw.direct_path {
            config.capacity.direct_path = DirectPath::parse(d, "direct_path")?;
        }
        if let Some(t) = raw.timeouts {
            let mut want = config.state.timeouts;
            for (field, value, name) in [
                (&mut want.tcp, t.tcp, "tcp"),
                (&mut want.tcp_fin, t.tcp_fin, "tcp_fin"),
                (&mut want.udp, t.udp, "udp"),
            ] {
                if let Some(v) = value {
                    let max = lvs_xdp_common::conn::MAX_TIMEOUT;
                    if !(1..=i64::from(max)).contains(&v) {
                        bail!("timeouts.{name} {v} out of range (1..={max} seconds)");
                    }
                    *field = v as u32;
                }
            }
            config.state.timeouts = want;
        }
        let mut add = |i: usize, svc: RawService| -> Result<()> {
            let (ops, health) =
                validate_service(svc).with_context(|| format!("service {}", i + 1))?;
            config.add_ops(&ops)?;
            if let (Some(h), Some(Op::AddService(key, _))) = (health, ops.first()) {
                config.health.insert(*key, h);
            }
            Ok(())
        };
        let mut n = 0;
        for svc in inline {
            add(n, svc)?;
            n += 1;
        }
        for part in &cut.services {
            let file: ServiceFile = toml::from_str(part.text)
                .map_err(|e| toml_error_at(part.text, &e, |l| part.first_line + l))?;
            for svc in file.service {
                add(n, svc)?;
                n += 1;
            }
        }
        Ok(config)
    }

    /// Adds a new service and its real servers (`ops`: one AddService, then its AddReals),
    /// whole or not at all; a refusal names the service. The service is built apart and then
    /// moved in, so a configuration of many services costs no copy of the state per service.
    pub fn add_ops(&mut self, ops: &[Op]) -> Result<()> {
        let built = State::default()
            .after(ops)
            .map_err(|(_, refusal)| anyhow!("{}", refusal.detail()))?;
        for key in built.services.keys() {
            if self.state.services.contains_key(key) {
                bail!("{}", Refusal::ServiceExists(*key).detail());
            }
        }
        self.state.services.extend(built.services);
        Ok(())
    }

    /// Merges services given on the command line: `--service VIP:PORT[/tcp|/udp]` each followed
    /// by its `--real RIP` flags. `reals[i]` belongs to `services[i]`.
    pub fn add_cli_services(&mut self, services: &[(String, Vec<String>)]) -> Result<()> {
        for (spec, reals) in services {
            let ops =
                parse_cli_service(spec, reals).with_context(|| format!("--service {spec}"))?;
            self.add_ops(&ops)?;
        }
        Ok(())
    }

    pub fn set_flow_table_size(&mut self, size: i64) -> Result<()> {
        self.capacity.flow_table_size = flow_table_size(size, "--flow-table-size")?;
        Ok(())
    }

    pub fn set_flow_table_size_v6(&mut self, size: i64) -> Result<()> {
        self.capacity.flow_table_size_v6 = flow_table_size(size, "--flow-table-size-v6")?;
        Ok(())
    }

    pub fn set_direct_path(&mut self, s: &str) -> Result<()> {
        self.capacity.direct_path = DirectPath::parse(s, "--direct-path")?;
        Ok(())
    }

    pub fn set_maglev_table_size(&mut self, n: i64) -> Result<()> {
        self.capacity.maglev_table_size = maglev_table_size(n, "--maglev-table-size")?;
        self.capacity.check_maglev()
    }

    pub fn set_max_services(&mut self, n: i64) -> Result<()> {
        self.capacity.services = capacity(n, "--max-services")?;
        Ok(())
    }

    pub fn set_max_real_servers(&mut self, n: i64) -> Result<()> {
        self.capacity.real_servers = capacity(n, "--max-real-servers")?;
        Ok(())
    }
}

fn capacity(n: i64, field: &str) -> Result<u32> {
    if !(1..=i64::from(MAX_CAPACITY)).contains(&n) {
        bail!("{field} {n} out of range (1..={MAX_CAPACITY})");
    }
    Ok(n as u32)
}

/// A Maglev table size: a prime in range (a skip must visit every entry).
fn maglev_table_size(n: i64, field: &str) -> Result<u32> {
    use lvs_xdp_common::maglev::{MAX_TABLE_SIZE, MIN_TABLE_SIZE};
    if !(i64::from(MIN_TABLE_SIZE)..=i64::from(MAX_TABLE_SIZE)).contains(&n) {
        bail!("{field} {n} out of range ({MIN_TABLE_SIZE}..={MAX_TABLE_SIZE})");
    }
    let is_prime = (2..).take_while(|d| d * d <= n).all(|d| n % d != 0);
    if !is_prime {
        bail!(
            "{field} {n} is not a prime (Maglev's table size must be one, for example 65537, 131071 or 1048573)"
        );
    }
    Ok(n as u32)
}

fn flow_table_size(size: i64, field: &str) -> Result<u32> {
    if !(MIN_FLOW_TABLE_SIZE as i64..=MAX_FLOW_TABLE_SIZE as i64).contains(&size) {
        bail!("{field} {size} out of range ({MIN_FLOW_TABLE_SIZE}..={MAX_FLOW_TABLE_SIZE})");
    }
    Ok(size as u32)
}

/// A service of the file as the ops that add it and its real servers, and its health checks.
fn validate_service(raw: RawService) -> Result<(Vec<Op>, Option<crate::health::ServiceHealth>)> {
    let vip = ip_addr(&raw.vip, "vip")?;
    let port = port(raw.port)?;
    let protocol = match raw.protocol {
        Some(p) => p.parse()?,
        None => Protocol::Tcp,
    };
    let scheduler = match raw.scheduler {
        Some(s) => s.parse()?,
        None => Scheduler::default(),
    };
    let flags = match raw.scheduler_flags {
        Some(words) if !words.is_empty() => {
            SchedFlags::parse(&words.join(","), scheduler).map_err(|e| anyhow!("{e}"))?
        }
        _ => SchedFlags::default(),
    };
    let persistence = match (raw.persistence_timeout, raw.persistence_netmask) {
        (None, None) => None,
        (None, Some(_)) => bail!("persistence_netmask needs persistence_timeout"),
        (Some(t), mask) => {
            // As ipvsadm's -M: a dotted mask for an IPv4 VIP, a prefix length for an IPv6 one.
            let mask = match mask {
                Some(m) if vip.is_ipv6() => m
                    .trim_start_matches('/')
                    .parse()
                    .ok()
                    .and_then(Persistence::mask_v6)
                    .ok_or_else(|| {
                        anyhow!("bad persistence_netmask {m:?} (an IPv6 VIP's is a prefix length, 1 to 128)")
                    })?,
                Some(m) => m
                    .parse::<Ipv4Addr>()
                    .map_err(|_| anyhow!("bad persistence_netmask {m:?}"))?
                    .into(),
                None => Persistence::full_mask(vip),
            };
            let t =
                u32::try_from(t).map_err(|_| anyhow!("persistence_timeout {t} out of range"))?;
            Some(Persistence::new(t, mask).map_err(|e| anyhow!("{e}"))?)
        }
    };
    let key = ServiceKey::new(protocol, vip, port);
    let opts = ServiceOpts {
        scheduler,
        flags,
        persistence,
    };
    let mut ops = vec![Op::AddService(key, opts)];
    let mut seen = BTreeSet::new();
    let mut reals_health = Vec::new();
    for (i, mut real) in raw.real_servers.into_iter().enumerate() {
        let real_health = health::RawRealHealth {
            check: real.health_check.take(),
            inhibit_on_failure: real.inhibit_on_failure.take(),
        };
        let (addr, opts) = validate_real(real).with_context(|| format!("real server {}", i + 1))?;
        if !seen.insert(addr) {
            bail!("{}", Refusal::RealExists(key, addr).detail());
        }
        ops.push(Op::AddReal(key, addr, opts));
        reals_health.push((addr, real_health));
    }
    let service_health = health::RawServiceHealth {
        check: raw.health_check,
        inhibit_on_failure: raw.inhibit_on_failure,
        on_failure: raw.on_failure,
        sorry_server: raw.sorry_server,
    };
    let health = health::service(vip, service_health, reals_health)?;
    Ok((ops, health))
}

fn validate_real(raw: RawReal) -> Result<(IpAddr, RealOpts)> {
    let address = ip_addr(&raw.address, "address")?;
    let mac = raw.mac.as_deref().map(str::parse).transpose()?;
    let weight = match raw.weight {
        None => 1,
        Some(w) if (0..=MAX_WEIGHT as i64).contains(&w) => w as u32,
        Some(w) => bail!("weight {w} out of range (0..={MAX_WEIGHT})"),
    };
    let vlan = match raw.vlan {
        None => None,
        Some(v) if (1..=4094).contains(&v) => Some(v as u16),
        Some(v) => bail!("vlan {v} out of range (1..=4094)"),
    };
    Ok((address, RealOpts { weight, mac, vlan }))
}

fn port(p: i64) -> Result<u16> {
    if !(1..=65535).contains(&p) {
        bail!("port {p} out of range (1..=65535)");
    }
    Ok(p as u16)
}

/// `VIP:PORT[/tcp|/udp]` and its real servers' addresses, as the ops that add them.
fn parse_cli_service(spec: &str, reals: &[String]) -> Result<Vec<Op>> {
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
    // An IPv6 VIP is written in brackets, as ipvsadm writes it: [2001:db8::10]:80.
    let vip = vip
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(vip);
    let key = ServiceKey::new(protocol, ip_addr(vip, "vip")?, port(port_num)?);
    let mut ops = vec![Op::AddService(key, ServiceOpts::default())];
    let mut seen = BTreeSet::new();
    for real in reals {
        let addr = ip_addr(real, "--real")?;
        if !seen.insert(addr) {
            bail!("{}", Refusal::RealExists(key, addr).detail());
        }
        ops.push(Op::AddReal(key, addr, RealOpts::default()));
    }
    Ok(ops)
}

/// One line: `LINE:COL: message` from a toml error (whose own Display spans several lines).
/// A TOML error as `LINE:COL: message`, the line (0-based in `text`) mapped to the file's by
/// `file_line`.
fn toml_error_at(
    text: &str,
    err: &toml::de::Error,
    file_line: impl Fn(usize) -> usize,
) -> anyhow::Error {
    let msg = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = file_line(before.matches('\n').count()) + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            anyhow!("{line}:{col}: {msg}")
        }
        None => anyhow!("{msg}"),
    }
}

#[cfg(test)]
mod tests;
