//! Prometheus metrics: a [`Snapshot`] in the text exposition format, written by the
//! `prometheus-client` crate. Counters are the kernel's, never zeroed (`-Z` zeroes only the
//! listings), so they only grow while the director runs.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::Result;
use http_body_util::Full;
use hyper::body::Bytes;
use lvs_xdp_common::reason;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::mpsc;

use crate::{
    health::Shown,
    listing::{ServiceView, Snapshot},
};

type Labels = Vec<(&'static str, String)>;

fn service_labels(svc: &ServiceView) -> Labels {
    vec![
        ("protocol", svc.key.protocol.to_string().to_lowercase()),
        ("vip", svc.key.addr.to_string()),
        ("port", svc.key.port.to_string()),
    ]
}

fn real_labels(svc: &ServiceView, addr: IpAddr) -> Labels {
    let mut l = service_labels(svc);
    l.push(("real_server", addr.to_string()));
    l
}

/// A family of counters set to given values.
struct Counters(Family<Labels, Counter>);

impl Counters {
    fn new(registry: &mut Registry, name: &str, help: &str) -> Counters {
        let family = Family::<Labels, Counter>::default();
        registry.register(name, help, family.clone());
        Counters(family)
    }
    fn set(&self, labels: Labels, value: u64) {
        self.0.get_or_create(&labels).inc_by(value);
    }
}

struct Gauges(Family<Labels, Gauge>);

impl Gauges {
    fn new(registry: &mut Registry, name: &str, help: &str) -> Gauges {
        let family = Family::<Labels, Gauge>::default();
        registry.register(name, help, family.clone());
        Gauges(family)
    }
    fn set(&self, labels: Labels, value: i64) {
        self.0.get_or_create(&labels).set(value);
    }
}

/// The metrics of `now`, in the text exposition format (OpenMetrics' text, which Prometheus
/// reads).
pub fn render(now: &Snapshot) -> Result<String> {
    let mut r = Registry::with_prefix("lvs_xdp");
    let svc_conns = Counters::new(
        &mut r,
        "service_connections",
        "New connections scheduled to the service's real servers",
    );
    let svc_packets = Counters::new(
        &mut r,
        "service_packets",
        "Packets of the service forwarded to its real servers",
    );
    let svc_bytes = Counters::new(
        &mut r,
        "service_bytes",
        "Bytes (from the Ethernet header on) of the service forwarded to its real servers",
    );
    let svc_drops = Counters::new(
        &mut r,
        "service_dropped_connections",
        "New connections dropped for want of a real server",
    );
    let conns = Counters::new(
        &mut r,
        "real_server_connections",
        "New connections scheduled to the real server",
    );
    let packets = Counters::new(
        &mut r,
        "real_server_packets",
        "Packets forwarded to the real server",
    );
    let bytes = Counters::new(
        &mut r,
        "real_server_bytes",
        "Bytes forwarded to the real server",
    );
    let active = Gauges::new(
        &mut r,
        "real_server_active_connections",
        "Connections in ESTABLISHED (ipvsadm's ActiveConn), as the last sweep counted",
    );
    let inactive = Gauges::new(
        &mut r,
        "real_server_inactive_connections",
        "Connections in other states (ipvsadm's InActConn), as the last sweep counted",
    );
    let weight = Gauges::new(
        &mut r,
        "real_server_weight",
        "The real server's weight in the kernel (0 while its health check fails)",
    );
    let up = Gauges::new(
        &mut r,
        "real_server_up",
        "1 while the real server's health check passes, 0 while it fails (checked ones only)",
    );
    let changes = Counters::new(
        &mut r,
        "real_server_health_changes",
        "Times the real server's health check verdict changed (checked ones only)",
    );
    let sorry = Gauges::new(
        &mut r,
        "service_sorry_server_active",
        "1 while the service's sorry server takes its connections (services with one only)",
    );
    let verdicts = Counters::new(
        &mut r,
        "packets",
        "Packets the XDP program saw, by verdict (forwarded, or why passed or dropped)",
    );
    let verdict_bytes = Counters::new(&mut r, "bytes", "Bytes of those packets, by verdict");
    let events = Counters::new(
        &mut r,
        "events",
        "Flow-table and ICMP events (a packet may cause one besides its verdict)",
    );
    let swept = Counters::new(
        &mut r,
        "flows_swept",
        "Flows the sweep freed, by reason (expired idle, or their real server gone)",
    );
    for svc in &now.services {
        let l = service_labels(svc);
        svc_conns.set(l.clone(), svc.counters.conns);
        svc_packets.set(
            l.clone(),
            svc.counters.packets.saturating_sub(svc.dropped.packets),
        );
        svc_bytes.set(
            l.clone(),
            svc.counters.bytes.saturating_sub(svc.dropped.bytes),
        );
        svc_drops.set(l.clone(), svc.dropped.drops);
        if svc.reals.iter().any(|r| r.shown == Shown::Sorry) {
            sorry.set(l, 1);
        }
        for real in &svc.reals {
            let l = real_labels(svc, real.addr);
            conns.set(l.clone(), real.counters.conns);
            packets.set(l.clone(), real.counters.packets);
            bytes.set(l.clone(), real.counters.bytes);
            active.set(l.clone(), real.conns.0 as i64);
            inactive.set(l.clone(), real.conns.1 as i64);
            weight.set(l.clone(), i64::from(real.opts.weight));
            if let Some((is_up, n)) = real.check {
                up.set(l.clone(), i64::from(is_up));
                changes.set(l, n);
            }
        }
    }
    for (i, name) in reason::NAMES.iter().enumerate() {
        let c = now.global[i];
        if i < reason::VERDICTS as usize {
            verdicts.set(vec![("verdict", name.to_string())], c.packets);
            verdict_bytes.set(vec![("verdict", name.to_string())], c.bytes);
        } else {
            events.set(vec![("event", name.to_string())], c.packets);
        }
    }
    swept.set(vec![("reason", "expired".into())], now.swept.0);
    swept.set(vec![("reason", "real_server_gone".into())], now.swept.1);
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}

/// A request for the metrics: the daemon answers it with [`render`] of its director.
pub type Scrape = tokio::sync::oneshot::Sender<String>;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where `--metrics ADDR` listens: `HOST:PORT` (`[v6]:PORT`), or a port alone for localhost.
pub fn listen_addr(spec: &str) -> Result<SocketAddr> {
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    spec.parse::<SocketAddr>().map_err(|_| {
        anyhow::anyhow!(
            "--metrics {spec:?}: expected HOST:PORT ([IPv6]:PORT for IPv6) or a port alone (localhost)"
        )
    })
}

/// Serves `GET /metrics` on `listener` for ever, each scrape asked of the daemon through
/// `scrapes`. One task per connection; a client gets 10 s to send its request's head.
pub async fn serve(listener: tokio::net::TcpListener, scrapes: mpsc::Sender<Scrape>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| respond(req, scrapes.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    scrapes: mpsc::Sender<Scrape>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: u16, content_type: &str, body: String| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_str(content_type).expect("a valid header"),
        );
        Ok(r)
    };
    let text = "text/plain; charset=utf-8";
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(405, text, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if scrapes.send(tx).await.is_err() {
                return reply(503, text, "lvs-xdp is stopping\n".into());
            }
            match rx.await {
                Ok(body) => reply(200, CONTENT_TYPE, body),
                Err(_) => reply(500, text, "the metrics could not be read\n".into()),
            }
        }
        "/" => reply(200, text, "lvs-xdp: metrics at /metrics\n".into()),
        _ => reply(404, text, "not found: metrics are at /metrics\n".into()),
    }
}
