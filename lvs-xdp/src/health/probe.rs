//! The probes: one check of one real server, at its own address (never the VIP), bounded by
//! the check's `connect_timeout` as a whole.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Check, Probe};

/// Largest body an HTTP check reads (for its digest).
const MAX_BODY: usize = 1 << 20;

/// Runs `check` against real server `addr` (port: the check's, else `service_port`). `Ok` when
/// it passed; the error says why not.
pub async fn run(check: &Check, addr: IpAddr, service_port: u16) -> Result<()> {
    let target = SocketAddr::new(addr, check.port.unwrap_or(service_port));
    tokio::time::timeout(check.connect_timeout, once(&check.probe, target))
        .await
        .map_err(|_| {
            anyhow!(
                "no answer within {:.1}s",
                check.connect_timeout.as_secs_f64()
            )
        })?
}

async fn once(probe: &Probe, target: SocketAddr) -> Result<()> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect to {target}"))?;
    let Probe::Http {
        path,
        status,
        digest,
    } = probe
    else {
        return Ok(());
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    // The connection's driver lives as long as this probe (the timeout ends both).
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let request = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, host(target))
        .header(hyper::header::CONNECTION, "close")
        .header(hyper::header::USER_AGENT, "lvs-xdp health check")
        .body(Empty::<Bytes>::new())
        .context("HTTP request")?;
    let exchange = async {
        let response = sender.send_request(request).await.context("HTTP GET")?;
        let got = response.status().as_u16();
        if got != *status {
            bail!("GET {path}: status {got}, expected {status}");
        }
        let Some(want) = digest else {
            return Ok(());
        };
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("GET {path}: body: {e}"))?
            .to_bytes();
        let got = md5::compute(&body);
        if got.0 != *want {
            bail!("GET {path}: body digest {got:x}, expected {}", hex(want));
        }
        Ok(())
    };
    exchange.await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn host(target: SocketAddr) -> String {
    match target {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Lower-case hex, as keepalived's `genhash` prints a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a digest as keepalived's configuration writes it (32 hex digits).
pub fn parse_digest(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The time a check takes at most to notice a failure of a real server that refuses
/// connections at once: the wait for the next check, then `fall - 1` retries.
pub fn detection_bound(check: &Check) -> Duration {
    check.delay_loop + check.delay_before_retry * check.fall.saturating_sub(1)
}
