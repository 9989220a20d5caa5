//! A configuration written back as lvs-xdp's TOML (`lvs-xdp convert`): what `Config::from_toml`
//! reads into the same configuration. Values are written by the `toml` crate, so strings are
//! quoted and escaped as TOML wants.
use std::time::Duration;

use toml::{Table, Value};

use super::Config;
use crate::health::{Check, OnFailure, Probe, ServiceHealth};

fn secs(d: Duration) -> Value {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        Value::Integer(s as i64)
    } else {
        Value::Float(s)
    }
}

fn check_table(c: &Check) -> Table {
    let mut t = Table::new();
    match &c.probe {
        Probe::Tcp => {
            t.insert("type".into(), "tcp".into());
        }
        Probe::Http {
            path,
            status,
            digest,
        } => {
            t.insert("type".into(), "http".into());
            t.insert("path".into(), path.clone().into());
            t.insert("status_code".into(), i64::from(*status).into());
            if let Some(d) = digest {
                t.insert("digest".into(), crate::health::probe::hex(d).into());
            }
        }
    }
    if let Some(p) = c.port {
        t.insert("connect_port".into(), i64::from(p).into());
    }
    t.insert("delay_loop".into(), secs(c.delay_loop));
    t.insert("connect_timeout".into(), secs(c.connect_timeout));
    t.insert("fall".into(), i64::from(c.fall).into());
    t.insert("delay_before_retry".into(), secs(c.delay_before_retry));
    t.insert("rise".into(), i64::from(c.rise).into());
    t
}

impl Config {
    /// The configuration as lvs-xdp's TOML.
    pub fn to_toml(&self) -> String {
        let defaults = Config::default();
        let mut root = Table::new();
        let c = &self.capacity;
        let d = &defaults.capacity;
        for (name, value, default) in [
            ("flow_table_size", c.flow_table_size, d.flow_table_size),
            (
                "flow_table_size_v6",
                c.flow_table_size_v6,
                d.flow_table_size_v6,
            ),
            ("max_services", c.services, d.services),
            ("max_real_servers", c.real_servers, d.real_servers),
            ("max_mh_services", c.mh_services, d.mh_services),
            (
                "maglev_table_size",
                c.maglev_table_size,
                d.maglev_table_size,
            ),
        ] {
            if value != default {
                root.insert(name.into(), i64::from(value).into());
            }
        }
        if c.direct_path != d.direct_path {
            root.insert("direct_path".into(), c.direct_path.name().into());
        }
        let t = self.state.timeouts;
        if t != defaults.state.timeouts {
            let mut timeouts = Table::new();
            timeouts.insert("tcp".into(), i64::from(t.tcp).into());
            timeouts.insert("tcp_fin".into(), i64::from(t.tcp_fin).into());
            timeouts.insert("udp".into(), i64::from(t.udp).into());
            root.insert("timeouts".into(), timeouts.into());
        }
        let mut services = Vec::new();
        for (key, svc) in &self.state.services {
            let health = self.health.get(key);
            let mut s = Table::new();
            s.insert("vip".into(), key.addr.to_string().into());
            s.insert("port".into(), i64::from(key.port).into());
            s.insert(
                "protocol".into(),
                key.protocol.to_string().to_lowercase().into(),
            );
            s.insert("scheduler".into(), svc.opts.scheduler.name().into());
            if !svc.opts.flags.is_empty() {
                let words = svc.opts.flags.words(svc.opts.scheduler);
                let list: Vec<Value> = words.split(',').map(|w| w.to_string().into()).collect();
                s.insert("scheduler_flags".into(), list.into());
            }
            if let Some(p) = svc.opts.persistence {
                s.insert("persistence_timeout".into(), i64::from(p.timeout).into());
                if !p.is_full() {
                    let mask = match p.netmask {
                        std::net::IpAddr::V4(m) => m.to_string(),
                        std::net::IpAddr::V6(_) => p.prefix_len().to_string(),
                    };
                    s.insert("persistence_netmask".into(), mask.into());
                }
            }
            let mut reals = Vec::new();
            for (addr, opts) in &svc.reals {
                let mut r = Table::new();
                r.insert("address".into(), addr.to_string().into());
                if let Some(mac) = opts.mac {
                    r.insert("mac".into(), mac.to_string().into());
                }
                if let Some(vlan) = opts.vlan {
                    r.insert("vlan".into(), i64::from(vlan).into());
                }
                r.insert("weight".into(), i64::from(opts.weight).into());
                if let Some(h) = health.and_then(|h| h.reals.get(addr)) {
                    let default = health.and_then(|h| h.check.as_ref());
                    match (&h.check, default) {
                        (Some(c), Some(d)) if c == d => {}
                        (Some(c), _) => {
                            r.insert("health_check".into(), check_table(c).into());
                        }
                        (None, Some(_)) => {
                            r.insert("health_check".into(), false.into());
                        }
                        (None, None) => {}
                    }
                    if let Some(i) = h.inhibit_on_failure {
                        r.insert("inhibit_on_failure".into(), i.into());
                    }
                }
                reals.push(Value::Table(r));
            }
            s.insert("real_servers".into(), reals.into());
            if let Some(h) = health {
                service_health(&mut s, h);
            }
            services.push(Value::Table(s));
        }
        root.insert("service".into(), services.into());
        toml::to_string(&root).expect("a table of plain values is TOML")
    }
}

fn service_health(s: &mut Table, h: &ServiceHealth) {
    if h.inhibit_on_failure {
        s.insert("inhibit_on_failure".into(), true.into());
    }
    if h.on_failure == OnFailure::Reschedule {
        s.insert("on_failure".into(), "reschedule".into());
    }
    if let Some((addr, mac)) = h.sorry_server {
        match mac {
            None => s.insert("sorry_server".into(), addr.to_string().into()),
            Some(mac) => {
                let mut t = Table::new();
                t.insert("address".into(), addr.to_string().into());
                t.insert("mac".into(), mac.to_string().into());
                s.insert("sorry_server".into(), t.into())
            }
        };
    }
    if let Some(c) = &h.check {
        s.insert("health_check".into(), check_table(c).into());
    }
}
