//! Two lvs-xdp directors behind a router that spreads connections over them (ECMP), the routes
//! learned over BGP from BIRD, as in a deployment with several directors.
//!
//! ```text
//!   client 172.16.0.100 ── router (172.16.0.1 | 192.168.0.254) ─┐
//!   d1 192.168.0.1: lvs-xdp, BIRD announcing VIP 10.0.0.10 ─────┤
//!   d2 192.168.0.2: the same ───────────────────────────────────┤ br0 (namespace "sw")
//!   rs1 192.168.0.3, rs2 192.168.0.4: nginx, VIP on lo ─────────┘
//! ```
//! The router runs `docs/bird/router.conf` and each director `docs/bird/director.conf`, the
//! files shipped as examples, unchanged. The real servers answer the client through the router
//! (their default route), never through a director. Everything is removed on drop.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::{self, REAL_SERVERS, TempDir},
    netns::{self, Netns},
    xdp_pass::{self, XdpPass},
};

pub const VIP: &str = "10.0.0.10";
pub const CLIENT_IP: &str = "172.16.0.100";
pub const ROUTER_CLIENT_SIDE: &str = "172.16.0.1";
pub const ROUTER_LAN: &str = "192.168.0.254";
/// (name, address, MAC) of each director.
pub const DIRECTORS: [(&str, &str, &str); 2] = [
    ("d1", "192.168.0.1", "02:00:00:00:00:01"),
    ("d2", "192.168.0.2", "02:00:00:00:00:02"),
];

const ROUTER_BIRD: &str = include_str!("../../docs/bird/router.conf");
const DIRECTOR_BIRD: &str = include_str!("../../docs/bird/director.conf");

/// One director: its namespace, its lvs-xdp and its BIRD.
pub struct Director {
    pub name: &'static str,
    lvs_xdp: Option<Child>,
    pub ns: Netns,
    _bridge_port_xdp: XdpPass,
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(mut child) = self.lvs_xdp.take() {
            netns::stop(&mut child, Duration::from_secs(5));
        }
    }
}

/// The topology. Field order is drop order: directors first, files last.
pub struct EcmpLab {
    pub directors: Vec<Director>,
    pub router: Netns,
    pub client: Netns,
    pub real_servers: Vec<Netns>,
    pub switch: Netns,
    pub dir: TempDir,
}

impl EcmpLab {
    /// Builds the topology: addresses, routes, the real servers' half of the DR recipe. Nothing
    /// runs yet.
    pub fn new(tag: &str) -> Result<EcmpLab> {
        netns::remove_stale();
        let dir = TempDir::new(tag)?;
        let switch = Netns::new("sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;

        // The client is one hop away, behind the router.
        let client = Netns::new("client")?;
        let router = Netns::new("router")?;
        client.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
            "netns",
            &router.name,
        ])?;
        client.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"])?;
        client.ip(&["link", "set", "eth0", "up"])?;
        client.ip(&["route", "add", "default", "via", ROUTER_CLIENT_SIDE])?;
        // Checksums in software: a frame the director sends on with XDP_TX loses the veth's
        // checksum offload mark (see the lab).
        client.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
        router.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_CLIENT_SIDE}/24"),
            "dev",
            "eth1",
        ])?;
        router.ip(&["link", "set", "eth1", "up"])?;
        lab::plug(
            &switch,
            &router,
            "p-router",
            "02:00:00:00:00:fe",
            &format!("{ROUTER_LAN}/24"),
        )?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        // Spread by ports too, or every connection of the one client takes the same director.
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;

        let mut real_servers = Vec::new();
        for (name, ip, mac) in REAL_SERVERS {
            let ns = Netns::new(name)?;
            lab::plug(&switch, &ns, &format!("p-{name}"), mac, &format!("{ip}/24"))?;
            lab::real_server(&ns, VIP)?;
            ns.ip(&["route", "add", "default", "via", ROUTER_LAN])?;
            real_servers.push(ns);
        }

        let mut directors = Vec::new();
        for (name, ip, mac) in DIRECTORS {
            let ns = Netns::new(name)?;
            let port = format!("p-{name}");
            lab::plug(&switch, &ns, &port, mac, &format!("{ip}/24"))?;
            // XDP_TX frames reach the bridge only if its end of the veth runs XDP too.
            let bridge_port_xdp = xdp_pass::attach(&switch.name, &port)?;
            directors.push(Director {
                name,
                lvs_xdp: None,
                ns,
                _bridge_port_xdp: bridge_port_xdp,
            });
        }
        Ok(EcmpLab {
            directors,
            router,
            client,
            real_servers,
            switch,
            dir,
        })
    }

    /// nginx on both real servers, as in the lab (`/slow/` serves at 4 MB/s).
    pub fn start_nginx(&mut self, big_file: Option<&[u8]>) -> Result<()> {
        lab::start_nginx(&self.dir.0, &mut self.real_servers, big_file)
    }

    /// Starts `lvs-xdp run --config` on director `i` with `config` (TOML), written to a file of
    /// its own; returns once it is attached.
    pub fn start_lvs_xdp(&mut self, i: usize, bin: &Path, config: &str) -> Result<()> {
        let director = &self.directors[i];
        let path = self.dir.0.join(format!("{}.toml", director.name));
        fs::write(&path, config)?;
        let path = path.to_str().context("config path")?;
        let log = self.lvs_xdp_log(i);
        // Route health injection into the table the shipped BIRD configuration learns.
        let child = lab::start_lvs_xdp(
            &director.ns,
            bin,
            &log,
            &["--config", path, "--announce-table", "100"],
        )?;
        self.directors[i].lvs_xdp = Some(child);
        Ok(())
    }

    /// Stops director `i`'s lvs-xdp (SIGTERM: it detaches and prints its final table) and
    /// returns everything it wrote.
    pub fn stop_lvs_xdp(&mut self, i: usize) -> Result<String> {
        let mut child = self.directors[i]
            .lvs_xdp
            .take()
            .context("lvs-xdp is not running")?;
        netns::stop(&mut child, Duration::from_secs(10));
        Ok(fs::read_to_string(self.lvs_xdp_log(i))?)
    }

    /// Where director `i`'s lvs-xdp writes.
    pub fn lvs_xdp_log(&self, i: usize) -> PathBuf {
        self.dir
            .0
            .join(format!("{}.lvs-xdp.log", self.directors[i].name))
    }

    /// Starts BIRD on the router and on every director, each with the shipped configuration and a
    /// log file and control socket of its own in the lab's directory.
    pub fn start_bird(&mut self) -> Result<()> {
        let dir = self.dir.0.clone();
        spawn_bird(&mut self.router, &dir, "router", ROUTER_BIRD)?;
        for d in &mut self.directors {
            spawn_bird(&mut d.ns, &dir, d.name, DIRECTOR_BIRD)?;
        }
        Ok(())
    }

    /// The next hops of the router's route to the VIP (none when it has no route).
    pub fn next_hops(&self) -> Result<Vec<String>> {
        let out = self.router.ip(&["route", "show", &format!("{VIP}/32")])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        Ok(words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect())
    }

    /// Waits until the router's route to the VIP has exactly `want` next hops; returns how long
    /// that took.
    pub fn wait_for_next_hops(&self, want: usize, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let hops = self.next_hops()?;
            if hops.len() == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                bail!(
                    "the router's route to {VIP} has next hops {hops:?}, not {want}, after \
                     {timeout:?}; BGP sessions:\n{}",
                    self.bird_protocols().unwrap_or_else(|e| e.to_string())
                );
            }
            crate::signals::check()?;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `birdc show protocols` on the router.
    pub fn bird_protocols(&self) -> Result<String> {
        let sock = bird_socket(&self.dir.0, "router");
        self.router.stdout(
            "birdc",
            &["-s", sock.to_str().context("path")?, "show", "protocols"],
        )
    }

    /// Stops director `i` as a failure or a maintenance would: SIGTERM to its BIRD (which
    /// closes its BGP session) and to its lvs-xdp (which detaches), at once. Returns how long the
    /// router took to withdraw the director's next hop (`want_after` next hops left), measured
    /// from the signals by polling the router's route every 2 ms; then waits for both to exit.
    pub fn stop_director(&mut self, i: usize, want_after: usize) -> Result<Duration> {
        let d = &mut self.directors[i];
        let mut bird = d.ns.take_child("bird").context("BIRD is not running")?;
        let mut lvs = d.lvs_xdp.take().context("lvs-xdp is not running")?;
        // SAFETY: signalling our own children.
        unsafe {
            libc::kill(bird.id() as i32, libc::SIGTERM);
            libc::kill(lvs.id() as i32, libc::SIGTERM);
        }
        let withdrawn = self.wait_for_next_hops(want_after, Duration::from_secs(10));
        netns::stop(&mut lvs, Duration::from_secs(5));
        netns::stop(&mut bird, Duration::from_secs(5));
        withdrawn
    }

    /// Freezes director `i`'s BIRD (SIGSTOP), as a hung daemon: its session stays open but sends
    /// nothing. Returns how long the router took to drop the director's next hop (`want_after`
    /// left): the hold time. Then lets BIRD go on (SIGCONT).
    pub fn hang_bird(&mut self, i: usize, want_after: usize) -> Result<Duration> {
        let pid = self.directors[i]
            .ns
            .child_pid("bird")
            .context("BIRD is not running")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let dropped = self.wait_for_next_hops(want_after, Duration::from_secs(30));
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        dropped
    }

    /// `curl http://VIP{path}` from the client; returns the body.
    pub fn get(&self, path: &str) -> Result<String> {
        let out = self.client.exec(
            "curl",
            &[
                "-sS",
                "--fail",
                "--max-time",
                "10",
                &format!("http://{VIP}{path}"),
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `curl http://VIP{path} -o dest` on the client, at most `max_secs` long.
    pub fn start_download(&self, path: &str, dest: &Path, max_secs: u32) -> Result<Child> {
        lab::start_download(&self.client, &format!("http://{VIP}{path}"), dest, max_secs)
    }
}

fn bird_socket(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.bird.ctl"))
}

/// `bird -f` in `ns` with `config` plus a line sending its log to a file; stopped with the
/// namespace.
fn spawn_bird(ns: &mut Netns, dir: &Path, name: &str, config: &str) -> Result<()> {
    let conf = dir.join(format!("{name}.bird.conf"));
    let log = dir.join(format!("{name}.bird.log"));
    fs::write(&conf, format!("log \"{}\" all;\n{config}", log.display()))?;
    let mut cmd = ns.command("bird")?;
    cmd.arg("-f")
        .arg("-c")
        .arg(&conf)
        .arg("-s")
        .arg(bird_socket(dir, name))
        .arg("-P")
        .arg(dir.join(format!("{name}.bird.pid")));
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    ns.spawn("bird", cmd)
}
