//! The health-check settings of the TOML file, in keepalived's words: a service's
//! `health_check` table (TCP_CHECK / HTTP_GET), `inhibit_on_failure`, `on_failure` and
//! `sorry_server`, and a real server's own `health_check` (or `false`) and
//! `inhibit_on_failure`.
use std::{net::IpAddr, time::Duration};

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;

use crate::{
    health::{Check, OnFailure, Probe, RealHealth, ServiceHealth, probe::parse_digest},
    model::ip_addr,
};

/// `health_check = { type = "tcp" | "http", ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
    status_code: Option<i64>,
    digest: Option<String>,
    connect_port: Option<i64>,
    delay_loop: Option<f64>,
    connect_timeout: Option<f64>,
    /// keepalived's: retries of a failed check before the real server is taken out.
    retry: Option<i64>,
    /// keepalived 1.x's word for `retry`.
    nb_get_retry: Option<i64>,
    /// HAProxy's: failures in a row that take it out (`retry` + 1).
    fall: Option<i64>,
    delay_before_retry: Option<f64>,
    rise: Option<i64>,
}

/// A real server's `health_check`: its own table, or `false` for none.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawRealCheck {
    Enabled(bool),
    Check(Box<RawCheck>),
}

/// `sorry_server = "10.0.0.9"` or `{ address = "10.0.0.9", mac = "..." }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSorry {
    Address(String),
    Full {
        address: String,
        mac: Option<String>,
    },
}

/// The service's part of the file, as read.
pub(super) struct RawServiceHealth {
    pub check: Option<RawCheck>,
    pub inhibit_on_failure: Option<bool>,
    pub on_failure: Option<String>,
    pub sorry_server: Option<RawSorry>,
}

/// A real server's part of the file, as read.
pub(super) struct RawRealHealth {
    pub check: Option<RawRealCheck>,
    pub inhibit_on_failure: Option<bool>,
}

/// Seconds, positive and at most a day.
fn seconds(v: f64, field: &str) -> Result<Duration> {
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        bail!("{field} {v} out of range (more than 0, at most 86400 seconds)");
    }
    Ok(Duration::from_secs_f64(v))
}

fn count(v: i64, field: &str) -> Result<u32> {
    if !(1..=1000).contains(&v) {
        bail!("{field} {v} out of range (1..=1000)");
    }
    Ok(v as u32)
}

fn check(raw: RawCheck) -> Result<Check> {
    let probe = match raw.kind.as_str() {
        "tcp" | "TCP_CHECK" => {
            if raw.path.is_some() || raw.status_code.is_some() || raw.digest.is_some() {
                bail!("a tcp check takes no path, status_code or digest");
            }
            Probe::Tcp
        }
        "http" | "HTTP_GET" => {
            let path = raw.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("path {path:?} must start with / and hold no spaces");
            }
            let status = match raw.status_code {
                None => 200,
                Some(s) if (100..=599).contains(&s) => s as u16,
                Some(s) => bail!("status_code {s} out of range (100..=599)"),
            };
            let digest = raw
                .digest
                .map(|d| {
                    parse_digest(&d.to_ascii_lowercase())
                        .ok_or_else(|| anyhow!("digest {d:?} is not an MD5 (32 hex digits)"))
                })
                .transpose()?;
            Probe::Http {
                path,
                status,
                digest,
            }
        }
        other => bail!("health_check type {other:?} unknown (tcp or http)"),
    };
    let mut c = Check::new(probe);
    if let Some(p) = raw.connect_port {
        c.port = Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| anyhow!("connect_port {p} out of range (1..=65535)"))?,
        );
    }
    if let Some(v) = raw.delay_loop {
        c.delay_loop = seconds(v, "delay_loop")?;
    }
    if let Some(v) = raw.connect_timeout {
        c.connect_timeout = seconds(v, "connect_timeout")?;
    }
    if let Some(v) = raw.delay_before_retry {
        c.delay_before_retry = seconds(v, "delay_before_retry")?;
    }
    match (raw.retry, raw.nb_get_retry, raw.fall) {
        (Some(v), None, None) | (None, Some(v), None) => {
            if !(0..=1000).contains(&v) {
                bail!("retry {v} out of range (0..=1000)");
            }
            c.fall = v as u32 + 1;
        }
        (None, None, Some(v)) => c.fall = count(v, "fall")?,
        (None, None, None) => {}
        _ => bail!("retry, nb_get_retry and fall say the same thing: give one"),
    }
    if let Some(v) = raw.rise {
        c.rise = count(v, "rise")?;
    }
    Ok(c)
}

/// Validates a service's health settings and its real servers' (`reals`: each address with
/// its part of the file). `None` when the service has none.
pub(super) fn service(
    vip: IpAddr,
    raw: RawServiceHealth,
    reals: Vec<(IpAddr, RawRealHealth)>,
) -> Result<Option<ServiceHealth>> {
    let mut h = ServiceHealth {
        check: raw.check.map(check).transpose()?,
        inhibit_on_failure: raw.inhibit_on_failure.unwrap_or(false),
        ..Default::default()
    };
    h.on_failure = match raw.on_failure.as_deref() {
        None | Some("keep") => OnFailure::Keep,
        Some("reschedule") => OnFailure::Reschedule,
        Some(other) => bail!("on_failure {other:?} unknown (keep or reschedule)"),
    };
    let real_addrs: Vec<IpAddr> = reals.iter().map(|(a, _)| *a).collect();
    let mut any = h.check.is_some() || raw.on_failure.is_some();
    for (i, (addr, real)) in reals.into_iter().enumerate() {
        let own = match real.check {
            None => None,
            Some(RawRealCheck::Enabled(true)) if h.check.is_some() => None,
            Some(RawRealCheck::Enabled(true)) => {
                bail!(
                    "real server {}: health_check = true, but the service has no health_check",
                    i + 1
                )
            }
            Some(RawRealCheck::Enabled(false)) => Some(None),
            Some(RawRealCheck::Check(c)) => Some(Some(
                check(*c).map_err(|e| anyhow!("real server {}: {e:#}", i + 1))?,
            )),
        };
        if own.is_some() || real.inhibit_on_failure.is_some() {
            let inherited = h.check.clone();
            h.reals.insert(
                addr,
                RealHealth {
                    check: own.unwrap_or(inherited),
                    inhibit_on_failure: real.inhibit_on_failure,
                },
            );
        }
    }
    any |= h.reals.values().any(|r| r.check.is_some());
    if let Some(sorry) = raw.sorry_server {
        let (address, mac) = match sorry {
            RawSorry::Address(a) => (a, None),
            RawSorry::Full { address, mac } => (address, mac),
        };
        let addr = ip_addr(&address, "sorry_server")?;
        if real_addrs.contains(&addr) {
            bail!("sorry_server {addr} is also a real server of the service");
        }
        if addr.is_ipv6() != vip.is_ipv6() {
            bail!("sorry_server {addr} is not of the VIP's family");
        }
        let mac = mac.as_deref().map(str::parse).transpose()?;
        h.sorry_server = Some((addr, mac));
        any = true;
    }
    let inhibits =
        h.inhibit_on_failure || h.reals.values().any(|r| r.inhibit_on_failure == Some(true));
    if inhibits && h.on_failure == OnFailure::Reschedule {
        bail!(
            "inhibit_on_failure keeps a failed real server at weight 0, with its connections; on_failure = \"reschedule\" takes it out to move them: choose one"
        );
    }
    any |= inhibits;
    Ok(any.then_some(h))
}
