//! `lvs-xdp drain -t VIP:PORT -r RIP [--timeout S]`: take a real server out without breaking a
//! connection. Weight 0 first (no new connections, as ipvsadm -e -w 0), then wait until it has
//! no active connection (or the deadline passes), printing progress, then remove it.
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use lvs_xdp::{
    control::{self, Reply, Request},
    ipvsadm::parse::{self, Command},
    model::Op,
};

/// How often the connections are counted.
const POLL: Duration = Duration::from_secs(1);

pub struct Drain {
    /// `-t VIP:PORT` or `-u VIP:PORT`, as ipvsadm writes them.
    pub service: (String, String),
    pub real: String,
    pub timeout: Option<Duration>,
    pub iface: Option<String>,
}

fn call(path: &std::path::Path, request: &Request) -> Result<Reply> {
    match control::call(path, request)? {
        Reply::Refused { message, .. } | Reply::Failed(message) => bail!("{message}"),
        reply => Ok(reply),
    }
}

pub fn run(d: &Drain) -> Result<()> {
    // The words ipvsadm would take to delete it: the same checks, the same messages.
    let words: Vec<String> = ["-d", &d.service.0, &d.service.1, "-r", &d.real]
        .iter()
        .map(|w| w.to_string())
        .collect();
    let invocation = parse::parse(&words).map_err(|u| anyhow!("{}", u.message))?;
    let Command::Apply(Op::DeleteReal(key, addr)) = invocation.command else {
        bail!("drain takes one service (-t|-u VIP:PORT) and one real server (-r RIP)");
    };
    let path = control::find(d.iface.as_deref())?;
    call(&path, &Request::Quiesce(key, addr))?;
    println!("lvs-xdp: drain {key} -> {addr}: weight 0, no new connections");
    let start = Instant::now();
    let mut last = None;
    loop {
        let Reply::Conns { active, inactive } = call(&path, &Request::Conns(key, addr))? else {
            bail!("unexpected reply from the director");
        };
        if last != Some((active, inactive)) {
            println!(
                "lvs-xdp: drain {key} -> {addr}: {active} active, {inactive} inactive connection(s) after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            last = Some((active, inactive));
        }
        if active == 0 {
            break;
        }
        if d.timeout.is_some_and(|t| start.elapsed() >= t) {
            println!(
                "lvs-xdp: drain {key} -> {addr}: deadline passed with {active} active connection(s); removing it"
            );
            break;
        }
        std::thread::sleep(POLL);
    }
    call(&path, &Request::Apply(vec![Op::DeleteReal(key, addr)]))?;
    println!(
        "lvs-xdp: drain {key} -> {addr}: removed after {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
