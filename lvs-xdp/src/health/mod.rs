//! Health checks, as keepalived does them for LVS: each checked real server is probed (a TCP
//! connect, or an HTTP GET with its status code and optionally the body's MD5) every
//! `delay_loop`; a failure is retried `retry` times (every `delay_before_retry`) before the
//! real server is taken out, and `rise` successes in a row put it back.
//!
//! Pure logic here: what a service's checks are ([`ServiceHealth`]), the up/down tracking of
//! each real server ([`Tracker`]), and the state the kernel is given for a service whose real
//! servers are not all up ([`overlay`]). The probes themselves are in [`probe`]; the daemon
//! runs them and hands their results to the director.
pub mod probe;
pub mod runner;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::model::{Mac, RealOpts, Service, ServiceKey};

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// keepalived's TCP_CHECK: the connection is accepted.
    Tcp,
    /// keepalived's HTTP_GET: `GET path` answers `status` (and, when given, a body whose MD5
    /// is `digest`).
    Http {
        path: String,
        status: u16,
        digest: Option<[u8; 16]>,
    },
}

/// One real server's check, with keepalived's words and defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub probe: Probe,
    /// `connect_port`: the port probed; `None`: the service's.
    pub port: Option<u16>,
    /// Between checks while nothing changes.
    pub delay_loop: Duration,
    /// A probe not answered within this fails.
    pub connect_timeout: Duration,
    /// Failures in a row that take a real server out: keepalived's `retry` plus the first
    /// failure (HAProxy's `fall`).
    pub fall: u32,
    /// Between a failed check and the next one, while the real server is still in.
    pub delay_before_retry: Duration,
    /// Successes in a row that put it back.
    pub rise: u32,
}

impl std::fmt::Display for Check {
    /// `http GET /health expects 200 on port 8080 every 6s (timeout 3s, out after 4 failures
    /// 1s apart, back after 1)`, as `lvs-xdp check` shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.probe {
            Probe::Tcp => write!(f, "tcp connect")?,
            Probe::Http {
                path,
                status,
                digest,
            } => {
                write!(f, "http GET {path} expects {status}")?;
                if let Some(d) = digest {
                    write!(f, " and MD5 {}", probe::hex(d))?;
                }
            }
        }
        if let Some(p) = self.port {
            write!(f, " on port {p}")?;
        }
        write!(
            f,
            " every {}s (timeout {}s, out after {} failures {}s apart, back after {})",
            self.delay_loop.as_secs_f64(),
            self.connect_timeout.as_secs_f64(),
            self.fall,
            self.delay_before_retry.as_secs_f64(),
            self.rise
        )
    }
}

impl Check {
    pub const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_DELAY_BEFORE_RETRY: Duration = Duration::from_secs(1);

    /// A check of `probe` with keepalived's defaults.
    pub fn new(probe: Probe) -> Check {
        Check {
            probe,
            port: None,
            delay_loop: Self::DEFAULT_DELAY_LOOP,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            fall: 2,
            delay_before_retry: Self::DEFAULT_DELAY_BEFORE_RETRY,
            rise: 1,
        }
    }

    /// How long after its last check (`ok`, while the real server is `up`) the next one runs.
    pub fn next_after(&self, ok: bool, up: bool) -> Duration {
        if !ok && up {
            self.delay_before_retry
        } else {
            self.delay_loop
        }
    }
}

/// What becomes of a failed real server's established connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnFailure {
    /// They go on to it (IPVS's default): it only stops getting new connections.
    #[default]
    Keep,
    /// It leaves the kernel's tables: each of its connections is scheduled again at its next
    /// packet (for a real server that is gone, a reset is better than silence).
    Reschedule,
}

/// A service's health checking.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// The check of each real server that has none of its own (real servers added later with
    /// `-a` included); `None`: only those listed in `reals` are checked.
    pub check: Option<Check>,
    /// Real servers' own settings.
    pub reals: BTreeMap<IpAddr, RealHealth>,
    /// A failed real server stays, with weight 0 (keepalived's `inhibit_on_failure`), instead
    /// of leaving the listing.
    pub inhibit_on_failure: bool,
    pub on_failure: OnFailure,
    /// Takes the connections while no real server is up (keepalived's `sorry_server`).
    pub sorry_server: Option<(IpAddr, Option<Mac>)>,
}

/// A real server's own health settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealHealth {
    /// `Some`: its own check; `None`: not checked, even if the service has a check.
    pub check: Option<Check>,
    /// Overrides the service's `inhibit_on_failure`.
    pub inhibit_on_failure: Option<bool>,
}

impl ServiceHealth {
    /// The check of real server `addr`, if it is checked.
    pub fn check_of(&self, addr: IpAddr) -> Option<&Check> {
        match self.reals.get(&addr) {
            Some(r) => r.check.as_ref(),
            None => self.check.as_ref(),
        }
    }

    pub fn inhibits(&self, addr: IpAddr) -> bool {
        self.reals
            .get(&addr)
            .and_then(|r| r.inhibit_on_failure)
            .unwrap_or(self.inhibit_on_failure)
    }
}

/// Health settings of every service that has any.
pub type Health = BTreeMap<ServiceKey, ServiceHealth>;

/// A real server's up/down state from its checks' results: `fall` failures in a row take it
/// down, `rise` successes in a row bring it up. It starts up, as in keepalived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracker {
    pub up: bool,
    /// Results in a row that disagree with `up`.
    against: u32,
    /// Times it went down or came back.
    pub transitions: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            up: true,
            against: 0,
            transitions: 0,
        }
    }
}

impl Tracker {
    /// Takes one check's result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool, check: &Check) -> Option<bool> {
        if ok == self.up {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = if self.up { check.fall } else { check.rise };
        if self.against < needed.max(1) {
            return None;
        }
        self.up = ok;
        self.against = 0;
        self.transitions += 1;
        Some(ok)
    }
}

/// How a real server appears once its health is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shown {
    /// As configured.
    Up,
    /// Failed, in the tables with weight 0 and listed so (`inhibit_on_failure`).
    Inhibited,
    /// Failed, in the tables with weight 0 for its established connections, but not listed
    /// (keepalived takes it out of IPVS).
    Hidden,
    /// Failed and out of the tables (`on_failure = "reschedule"`).
    Removed,
    /// The sorry server, in while no real server is up.
    Sorry,
}

/// The service the kernel is given: `configured` with the failed real servers (`down`) taken
/// out or inhibited, and the sorry server in when no real server is left up. Also says how
/// each real server appears.
pub fn overlay(
    configured: &Service,
    health: &ServiceHealth,
    down: &BTreeSet<IpAddr>,
) -> (Service, BTreeMap<IpAddr, Shown>) {
    let mut effective = configured.clone();
    let mut shown = BTreeMap::new();
    for (addr, opts) in &configured.reals {
        if !down.contains(addr) {
            shown.insert(*addr, Shown::Up);
            continue;
        }
        let how = match (health.inhibits(*addr), health.on_failure) {
            (true, _) => Shown::Inhibited,
            (false, OnFailure::Keep) => Shown::Hidden,
            (false, OnFailure::Reschedule) => Shown::Removed,
        };
        if how == Shown::Removed {
            effective.reals.remove(addr);
        } else {
            effective
                .reals
                .insert(*addr, RealOpts { weight: 0, ..*opts });
        }
        shown.insert(*addr, how);
    }
    let serving = configured
        .reals
        .iter()
        .any(|(a, r)| r.weight > 0 && !down.contains(a));
    if let Some((addr, mac)) = health.sorry_server
        && !serving
        && !configured.reals.contains_key(&addr)
    {
        effective.reals.insert(
            addr,
            RealOpts {
                weight: 1,
                mac,
                vlan: None,
            },
        );
        shown.insert(addr, Shown::Sorry);
    }
    (effective, shown)
}

/// A director's health checking: the settings, what each checked service is configured to be
/// (the kernel holds its [`overlay`]), each checked real server's tracker, and how the real
/// servers appear.
#[derive(Clone, Debug, Default)]
pub struct HealthState {
    pub config: Health,
    /// The services of `config` as configured (their real servers' weights as given).
    pub configured: BTreeMap<ServiceKey, Service>,
    pub trackers: BTreeMap<(ServiceKey, IpAddr), Tracker>,
    pub shown: BTreeMap<ServiceKey, BTreeMap<IpAddr, Shown>>,
}

impl HealthState {
    /// The failed real servers of service `key`.
    pub fn down(&self, key: &ServiceKey) -> BTreeSet<IpAddr> {
        self.trackers
            .range((*key, IpAddr::from([0u8; 4]))..)
            .take_while(|((k, _), _)| k == key)
            .filter(|(_, t)| !t.up)
            .map(|((_, a), _)| *a)
            .collect()
    }

    /// What the kernel is given for service `key` configured as `configured`, and how its
    /// real servers appear; `None` when the service has no health settings.
    pub fn effective(
        &self,
        key: &ServiceKey,
        configured: &Service,
    ) -> Option<(Service, BTreeMap<IpAddr, Shown>)> {
        let health = self.config.get(key)?;
        Some(overlay(configured, health, &self.down(key)))
    }

    /// Every check to run: each real server of each service with health settings that has a
    /// check, with the service's port.
    pub fn checks(&self) -> Vec<(ServiceKey, IpAddr, Check)> {
        let mut out = Vec::new();
        for (key, svc) in &self.configured {
            let Some(health) = self.config.get(key) else {
                continue;
            };
            for addr in svc.reals.keys() {
                if let Some(check) = health.check_of(*addr) {
                    out.push((*key, *addr, check.clone()));
                }
            }
        }
        out
    }

    /// Forgets the trackers of real servers no longer checked.
    pub fn prune(&mut self) {
        let checked: BTreeSet<(ServiceKey, IpAddr)> =
            self.checks().into_iter().map(|(k, a, _)| (k, a)).collect();
        self.trackers.retain(|k, _| checked.contains(k));
        self.shown.retain(|k, _| self.configured.contains_key(k));
    }

    /// How real server `addr` of service `key` appears (`Up` when it is not checked).
    pub fn shown(&self, key: &ServiceKey, addr: IpAddr) -> Shown {
        self.shown
            .get(key)
            .and_then(|s| s.get(&addr))
            .copied()
            .unwrap_or(Shown::Up)
    }
}

#[cfg(test)]
mod tests;
