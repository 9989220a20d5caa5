//! `lvs-xdp realserver up|down`: the real-server half of the LVS-DR recipe, and its undoing.
//!
//! `up` puts each VIP on `lo` as a /32 and sets `arp_ignore=1` and `arp_announce=2` on `all`,
//! `lo` and the interfaces named, so that the real server accepts frames for the VIP but never
//! answers or announces ARP for it. What was there before is recorded (a file next to the
//! control sockets); `down` restores exactly that: the values found, and no address that `up`
//! did not add.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::{control::socket_dir, iface::Interface, netlink::Rtnl};

/// The sysctls `up` sets, with their values.
const SETTINGS: [(&str, &str); 2] = [("arp_ignore", "1"), ("arp_announce", "2")];

/// What `up` changed, and what was there before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// (sysctl path, value before `up`).
    pub sysctls: Vec<(String, String)>,
    /// VIPs `up` added to `lo` (those already there are not listed).
    pub addresses: Vec<Ipv4Addr>,
}

/// Where the record of this network namespace is kept.
pub fn record_path() -> PathBuf {
    socket_dir().join("realserver.json")
}

fn sysctl_path(conf: &str, key: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{conf}/{key}")
}

fn read(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {path}"))?
        .trim()
        .to_string())
}

fn write(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("cannot set {path} to {value}"))
}

fn load_record() -> Result<Option<Record>> {
    let path = record_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is not a record of lvs-xdp realserver", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn save_record(record: &Record) -> Result<()> {
    let path = record_path();
    let dir = path.parent().expect("a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(record)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// `up`: the VIPs on `lo`, ARP quiet on `all`, `lo` and `interfaces`. Run again, it adds what is
/// new and keeps the first record of what was there before. All or nothing: a failure undoes
/// what this call changed.
pub fn up(vips: &[Ipv4Addr], interfaces: &[String]) -> Result<Record> {
    if vips.is_empty() {
        bail!("no VIP given (--vip)");
    }
    for vip in vips {
        crate::model::check_unicast(IpAddr::V4(*vip), "vip").map_err(|r| anyhow!("{r}"))?;
    }
    for name in interfaces {
        Interface::index_of(name)?;
    }
    let lo = Interface::index_of("lo")?;
    let mut record = load_record()?.unwrap_or_default();
    let mut confs = vec!["all".to_string(), "lo".to_string()];
    confs.extend(interfaces.iter().cloned());
    // Everything read before anything changes.
    let mut changes = Vec::new();
    for conf in &confs {
        for (key, value) in SETTINGS {
            let path = sysctl_path(conf, key);
            let before = read(&path)?;
            if !record.sysctls.iter().any(|(p, _)| *p == path) {
                record.sysctls.push((path.clone(), before.clone()));
            }
            changes.push((path, before, value));
        }
    }
    let mut nl = Rtnl::open()?;
    let present: Vec<IpAddr> = nl.addresses(lo)?.into_iter().map(|(a, _)| a).collect();
    let to_add: Vec<Ipv4Addr> = vips
        .iter()
        .copied()
        .filter(|v| !present.contains(&IpAddr::V4(*v)))
        .collect();
    // Then the changes, undone on the first failure.
    let mut apply = || -> Result<()> {
        for (path, _, value) in &changes {
            write(path, value)?;
        }
        for vip in &to_add {
            nl.add_address(lo, IpAddr::V4(*vip), 32)
                .with_context(|| format!("cannot add {vip}/32 to lo"))?;
        }
        Ok(())
    };
    if let Err(e) = apply() {
        for (path, before, _) in &changes {
            let _ = write(path, before);
        }
        if let Ok(mut nl) = Rtnl::open() {
            for vip in &to_add {
                let _ = nl.delete_address(lo, IpAddr::V4(*vip), 32);
            }
        }
        return Err(e);
    }
    record.addresses.extend(to_add);
    save_record(&record)?;
    Ok(record)
}

/// `down`: restores what `up` found, and forgets the record.
pub fn down() -> Result<Record> {
    let path = record_path();
    let Some(record) = load_record()? else {
        bail!(
            "nothing to undo: no record at {} (`lvs-xdp realserver up` did not run here, or `down` already did)",
            path.display()
        );
    };
    let lo = Interface::index_of("lo")?;
    let mut nl = Rtnl::open()?;
    let present: Vec<IpAddr> = nl.addresses(lo)?.into_iter().map(|(a, _)| a).collect();
    for vip in &record.addresses {
        if present.contains(&IpAddr::V4(*vip)) {
            nl.delete_address(lo, IpAddr::V4(*vip), 32)
                .with_context(|| format!("cannot remove {vip}/32 from lo"))?;
        }
    }
    for (path, before) in &record.sysctls {
        write(path, before)?;
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    crate::control::remove_empty_dirs(&path);
    Ok(record)
}
