//! The classic LVS-DR experiment in network namespaces: a client, the load balancer and two real
//! servers on one bridge (in a namespace of its own, so the host's namespace is never touched).
//!
//! ```text
//!   client 192.168.0.100 ─┐
//!   lb     192.168.0.1 + VIP 192.168.0.10 on eth0 ─┤ br0 (namespace "sw")
//!   rs1    192.168.0.3 + VIP on lo ─┤
//!   rs2    192.168.0.4 + VIP on lo ─┘
//! ```
//! Everything is removed on drop, on every exit path.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    netns::{self, Netns},
    xdp_pass::{self, XdpPass},
};

pub const VIP: &str = "192.168.0.10";
pub const LB_IP: &str = "192.168.0.1";
pub const CLIENT_IP: &str = "192.168.0.100";
pub const LB_MAC: &str = "02:00:00:00:00:01";
pub const CLIENT_MAC: &str = "02:00:00:00:00:64";
/// (name, address, MAC) of each real server.
pub const REAL_SERVERS: [(&str, &str, &str); 2] = [
    ("rs1", "192.168.0.3", "02:00:00:00:00:03"),
    ("rs2", "192.168.0.4", "02:00:00:00:00:04"),
];
/// The IPv6 side of the same lab: every namespace has an address in 2001:db8::/64 too, the VIP
/// is on the LB's eth0 and on the real servers' lo.
pub const VIP6: &str = "2001:db8::10";
pub const LB_IP6: &str = "2001:db8::1";
pub const CLIENT_IP6: &str = "2001:db8::100";
pub const REAL_SERVERS_V6: [&str; 2] = ["2001:db8::3", "2001:db8::4"];

/// The lvs-xdp configuration of the lab, as an operator would write it.
pub fn lvs_config() -> String {
    format!(
        r#"# The LVS-DR recipe: ipvsadm -A -t {VIP}:80 -s rr; ipvsadm -a -t {VIP}:80 -r RIP -g
[[service]]
vip = "{VIP}"
port = 80
protocol = "tcp"
scheduler = "rr"
real_servers = [ {{ address = "{}" }}, {{ address = "{}" }} ]
"#,
        REAL_SERVERS[0].1, REAL_SERVERS[1].1
    )
}

/// The lab's configuration with an IPv6 service beside the IPv4 one: `-A -t [VIP6]:80 -s rr`
/// and a real server per IPv6 address.
pub fn lvs_config_dual() -> String {
    format!(
        r#"{}
[[service]]
vip = "{VIP6}"
port = 80
protocol = "tcp"
scheduler = "rr"
real_servers = [ {{ address = "{}" }}, {{ address = "{}" }} ]
"#,
        lvs_config(),
        REAL_SERVERS_V6[0],
        REAL_SERVERS_V6[1]
    )
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let path =
            std::env::temp_dir().join(format!("{}-{}-{tag}", netns::PREFIX, std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The lab. Field order is drop order: the load balancer stops first, the files go last.
pub struct Lab {
    pub lb: Netns,
    pub real_servers: Vec<Netns>,
    pub client: Netns,
    pub switch: Netns,
    lb_process: Option<Child>,
    bridge_port_xdp: Option<XdpPass>,
    pub dir: TempDir,
}

impl Lab {
    /// Builds the topology (no nginx, no load balancer yet).
    pub fn new(tag: &str) -> Result<Lab> {
        netns::remove_stale();
        let dir = TempDir::new(tag)?;
        let switch = Netns::new("sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let mut lab = Lab {
            lb: Netns::new("lb")?,
            real_servers: vec![Netns::new("rs1")?, Netns::new("rs2")?],
            client: Netns::new("client")?,
            switch,
            lb_process: None,
            bridge_port_xdp: None,
            dir,
        };
        lab.plug(
            &lab.client,
            "p-client",
            CLIENT_MAC,
            &format!("{CLIENT_IP}/24"),
        )?;
        lab.plug(&lab.lb, "p-lb", LB_MAC, &format!("{LB_IP}/24"))?;
        for (ns, (name, ip, mac)) in lab.real_servers.iter().zip(REAL_SERVERS) {
            lab.plug(ns, &format!("p-{name}"), mac, &format!("{ip}/24"))?;
        }

        // The load balancer holds the VIP on its interface and answers ARP for it.
        lab.lb
            .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
        // Frames the LB sends with XDP_TX reach the bridge only if the bridge's end of the veth
        // pair runs XDP too (a veth fact, not a product one): a pass program there.
        lab.bridge_port_xdp = Some(xdp_pass::attach(&lab.switch.name, "p-lb")?);
        // The client's veth would leave TCP checksums to an offload that an XDP_TX'd frame no
        // longer carries: compute them in software (real NICs do it before the wire).
        lab.client.exec("ethtool", &["-K", "eth0", "tx", "off"])?;

        for ns in &lab.real_servers {
            real_server(ns, VIP)?;
        }
        // IPv6 beside (without duplicate address detection, so the addresses work at once).
        let add6 = |ns: &Netns, addr: &str, dev: &str| {
            ns.ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"])
        };
        add6(&lab.client, &format!("{CLIENT_IP6}/64"), "eth0")?;
        add6(&lab.lb, &format!("{LB_IP6}/64"), "eth0")?;
        add6(&lab.lb, &format!("{VIP6}/128"), "eth0")?;
        for (ns, addr) in lab.real_servers.iter().zip(REAL_SERVERS_V6) {
            add6(ns, &format!("{addr}/64"), "eth0")?;
            add6(ns, &format!("{VIP6}/128"), "lo")?;
        }
        Ok(lab)
    }

    /// The names of the lab's namespaces: client, lb, rs1, rs2, switch.
    pub fn namespace_names(&self) -> [String; 5] {
        [
            &self.client,
            &self.lb,
            &self.real_servers[0],
            &self.real_servers[1],
            &self.switch,
        ]
        .map(|ns| ns.name.clone())
    }

    /// A veth pair: `eth0` in `ns`, `port` on the bridge.
    pub fn plug(&self, ns: &Netns, port: &str, mac: &str, addr: &str) -> Result<()> {
        plug(&self.switch, ns, port, mac, addr)
    }

    /// Starts nginx on every real server, serving `index.html` naming the server and, when
    /// given, `big.bin` with these bytes. Returns once all listen on port 80.
    pub fn start_nginx(&mut self, big_file: Option<&[u8]>) -> Result<()> {
        start_nginx(&self.dir.0, &mut self.real_servers, big_file)
    }

    /// Writes the lab's lvs-xdp configuration and returns its path.
    pub fn write_lvs_config(&self) -> Result<PathBuf> {
        let path = self.dir.0.join("lvs-xdp.toml");
        fs::write(&path, lvs_config())?;
        Ok(path)
    }

    /// Writes the configuration with the IPv6 service too ([`lvs_config_dual`]).
    pub fn write_lvs_config_dual(&self) -> Result<PathBuf> {
        let path = self.dir.0.join("lvs-xdp-dual.toml");
        fs::write(&path, lvs_config_dual())?;
        Ok(path)
    }

    /// `curl -6 http://[VIP6]{path}` from the client, pinned to CPU 0. Returns the body.
    pub fn get6(&self, path: &str) -> Result<String> {
        let url = format!("http://[{VIP6}]{path}");
        let out = self.client.exec_on_cpu(
            0,
            "curl",
            &["-6", "-g", "-sS", "--fail", "--max-time", "10", &url],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `lvs-xdp run` on the LB's eth0 with `args` after `run --iface eth0`, its stdout and
    /// stderr appended to `lvs-xdp.log`; returns once it says it is attached. It runs under
    /// `nsenter --net`, so it sees the host's /sys/fs/bpf as on a real host.
    pub fn start_lb(&mut self, bin: &Path, args: &[&str]) -> Result<()> {
        self.lb_process = Some(start_lvs_xdp(&self.lb, bin, &self.lb_log(), args)?);
        Ok(())
    }

    /// Stops lvs-xdp with SIGTERM and returns its exit status.
    pub fn stop_lb(&mut self) -> Result<ExitStatus> {
        self.stop_lb_with(libc::SIGTERM, Duration::from_secs(10))
    }

    /// Sends `signal` to lvs-xdp and waits up to `timeout` for it to exit.
    pub fn stop_lb_with(&mut self, signal: i32, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self.lb_process.take().context("lvs-xdp is not running")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                netns::stop(&mut child, Duration::from_millis(100));
                bail!("lvs-xdp did not exit within {timeout:?} of signal {signal}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the running lvs-xdp.
    pub fn lb_pid(&self) -> Option<u32> {
        self.lb_process.as_ref().map(|c| c.id())
    }

    pub fn lb_log(&self) -> PathBuf {
        self.dir.0.join("lvs-xdp.log")
    }

    /// What lvs-xdp printed so far.
    pub fn lb_output(&self) -> String {
        fs::read_to_string(self.lb_log()).unwrap_or_default()
    }

    /// Whether an XDP program is attached to the LB's eth0 (`ip link` shows `prog/xdp`).
    pub fn xdp_attached(&self) -> Result<bool> {
        xdp_attached(&self.lb)
    }

    /// `curl http://VIP{path}` from the client, pinned to CPU 0 (see `get`). Returns the body.
    pub fn get(&self, path: &str) -> Result<String> {
        let url = format!("http://{VIP}{path}");
        let out =
            self.client
                .exec_on_cpu(0, "curl", &["-sS", "--fail", "--max-time", "10", &url])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Downloads `http://VIP{path}` on the client into `dest`.
    pub fn download(&self, path: &str, dest: &Path) -> Result<()> {
        let url = format!("http://{VIP}{path}");
        let dest = dest.to_str().context("path")?;
        self.client.exec(
            "curl",
            &["-sS", "--fail", "--max-time", "60", "-o", dest, &url],
        )?;
        Ok(())
    }

    /// Starts `curl http://VIP{path} -o dest` on the client, at most `max_secs` long, and
    /// returns at once (stderr piped, for the failure message).
    pub fn start_download(&self, path: &str, dest: &Path, max_secs: u32) -> Result<Child> {
        start_download(&self.client, &format!("http://{VIP}{path}"), dest, max_secs)
    }

    /// Waits for a download from [`Lab::start_download`] to end, and checks that it succeeded
    /// and that `dest` holds exactly `want`; the error carries curl's and lvs-xdp's output.
    pub fn finish_download(&self, curl: Child, dest: &Path, want: &[u8]) -> Result<()> {
        let out = curl.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "the download broke: {}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                self.lb_output()
            );
        }
        if fs::read(dest)? != want {
            bail!("downloaded bytes differ from the served file");
        }
        Ok(())
    }

    /// Waits until `dest` holds `bytes` at least; fails after `timeout`.
    pub fn wait_for_bytes(dest: &Path, bytes: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while fs::metadata(dest).map_or(0, |m| m.len()) < bytes {
            if Instant::now() >= deadline {
                bail!(
                    "{} did not reach {bytes} bytes within {timeout:?}",
                    dest.display()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// (rx_bytes, tx_bytes) of eth0 in `ns`.
    pub fn eth0_bytes(ns: &Netns) -> Result<(u64, u64)> {
        let read = |what: &str| -> Result<u64> {
            let v = ns.stdout("cat", &[&format!("/sys/class/net/eth0/statistics/{what}")])?;
            v.trim()
                .parse()
                .with_context(|| format!("parsing {what}: {v:?}"))
        };
        Ok((read("rx_bytes")?, read("tx_bytes")?))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // lvs-xdp first (it detaches on SIGTERM); the namespaces and their nginx go after.
        if let Some(mut child) = self.lb_process.take() {
            netns::stop(&mut child, Duration::from_secs(5));
        }
    }
}

/// A veth pair: `eth0` in `ns` with `mac` and `addr`, `port` on `switch`'s br0.
pub fn plug(switch: &Netns, ns: &Netns, port: &str, mac: &str, addr: &str) -> Result<()> {
    switch.ip(&[
        "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;
    switch.ip(&["link", "set", port, "master", "br0", "up"])?;
    ns.ip(&["link", "set", "eth0", "address", mac])?;
    ns.ip(&["addr", "add", addr, "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}

/// The real-server half of the LVS-DR recipe: `vip` on lo, and never answer or announce ARP
/// for it.
pub fn real_server(ns: &Netns, vip: &str) -> Result<()> {
    ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
    for conf in ["all", "lo", "eth0"] {
        ns.sysctl(&format!("net.ipv4.conf.{conf}.arp_ignore"), "1")?;
        ns.sysctl(&format!("net.ipv4.conf.{conf}.arp_announce"), "2")?;
    }
    Ok(())
}

/// Starts nginx in each of `real_servers` (named and addressed as [`REAL_SERVERS`]), its files
/// under `base`, serving `index.html` naming the server and, when given, `big.bin` with these
/// bytes (also at 4 MB/s under `/slow/`). Returns once all listen on port 80.
pub fn start_nginx(base: &Path, real_servers: &mut [Netns], big_file: Option<&[u8]>) -> Result<()> {
    for (i, ns) in real_servers.iter_mut().enumerate() {
        let (name, ip, _) = REAL_SERVERS[i];
        let dir = base.join(name);
        let www = dir.join("www");
        fs::create_dir_all(&www)?;
        fs::create_dir_all(dir.join("tmp"))?;
        fs::write(www.join("index.html"), format!("{name} {ip}\n"))?;
        if let Some(bytes) = big_file {
            fs::write(www.join("big.bin"), bytes)?;
        }
        make_world_readable(base)?;
        fs::write(dir.join("nginx.conf"), nginx_conf(&dir))?;
        spawn_nginx(&dir, ns)?;
    }
    for ns in real_servers.iter() {
        wait_for_nginx(ns)?;
    }
    Ok(())
}

/// Starts the nginx of `dir` (written by [`start_nginx`]) in `ns`.
fn spawn_nginx(dir: &Path, ns: &mut Netns) -> Result<()> {
    let mut cmd = ns.command("nginx")?;
    cmd.arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"));
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    ns.spawn("nginx", cmd)
}

fn wait_for_nginx(ns: &Netns) -> Result<()> {
    ns.wait_for(
        "nginx to listen on port 80",
        Duration::from_secs(10),
        || {
            ns.stdout("ss", &["-Hnlt", "sport = 80"])
                .map(|s| !s.trim().is_empty())
                .unwrap_or(false)
        },
    )
}

/// The output of `lvs-xdp ARGS` (ipvsadm's words, such as `-L -n`) run in `ns`, where a
/// director runs (with the host's bpffs, as the daemon sees it).
pub fn lvs_xdp_words(ns: &Netns, bin: &Path, args: &[&str]) -> String {
    let out = ns
        .nsenter_command(bin.to_str().expect("binary path"))
        .and_then(|mut cmd| Ok(cmd.args(args).output()?))
        .expect("lvs-xdp runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the nginx of real server `i` (SIGKILL: it stops answering at once) and waits for it.
pub fn kill_nginx(real_servers: &mut [Netns], i: usize) -> Result<()> {
    let mut child = real_servers[i]
        .take_child("nginx")
        .context("nginx is not running there")?;
    // The workers hold the listening socket too: kill them (children of this master only;
    // the other real servers' nginx share the host's process table), then the master.
    // The master is stopped first, so that it forks no worker after the scan.
    let ns = &real_servers[i];
    // SAFETY: kill(2) on our own child's id and on ids read from /proc; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
    for pid in children_of(child.id()) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    child.kill()?;
    child.wait()?;
    ns.wait_for("nginx to stop listening", Duration::from_secs(5), || {
        ns.stdout("ss", &["-Hnlt", "sport = 80"])
            .map(|s| s.trim().is_empty())
            .unwrap_or(false)
    })
}

/// The processes whose parent is `pid` (from /proc/PID/stat's fourth field).
fn children_of(pid: u32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command may hold spaces: the fields after its closing parenthesis.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Starts the nginx of real server `i` again (after [`kill_nginx`]).
pub fn restart_nginx(base: &Path, real_servers: &mut [Netns], i: usize) -> Result<()> {
    let dir = base.join(REAL_SERVERS[i].0);
    spawn_nginx(&dir, &mut real_servers[i])?;
    wait_for_nginx(&real_servers[i])
}

/// Starts `curl URL -o dest` in `ns`, at most `max_secs` long, and returns at once (stderr
/// piped, for the failure message).
pub fn start_download(ns: &Netns, url: &str, dest: &Path, max_secs: u32) -> Result<Child> {
    let child = ns
        .command("curl")?
        .args(["-sS", "--fail", "--max-time", &max_secs.to_string(), "-o"])
        .arg(dest)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start curl")?;
    Ok(child)
}

/// Starts `lvs-xdp run --iface eth0 ARGS` in `ns` under `nsenter --net` (so it sees the host's
/// /sys/fs/bpf, as on a real host), its stdout and stderr appended to `log`; returns once it says
/// it is attached and `ip link` shows the program.
pub fn start_lvs_xdp(ns: &Netns, bin: &Path, log: &Path, args: &[&str]) -> Result<Child> {
    let output = || fs::read_to_string(log).unwrap_or_default();
    let attached = |out: &str| out.matches("lvs-xdp: attached to eth0").count();
    let before = attached(&output());
    let file = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = ns.nsenter_command(bin.to_str().context("binary path")?)?;
    cmd.args(["run", "--iface", "eth0"]).args(args);
    cmd.stdout(file.try_clone()?)
        .stderr(file)
        .stdin(Stdio::null());
    let mut child = cmd.spawn().context("cannot start lvs-xdp")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if attached(&output()) > before && xdp_attached(ns)? {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "lvs-xdp exited ({status}) before attaching: {}",
                output().trim()
            );
        }
        if Instant::now() >= deadline {
            netns::stop(&mut child, Duration::from_secs(3));
            bail!("lvs-xdp did not attach within 20 s: {}", output().trim());
        }
        if let Err(e) = crate::signals::check() {
            netns::stop(&mut child, Duration::from_secs(3));
            return Err(e);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether an XDP program is attached to `eth0` in `ns` (`ip link` shows `prog/xdp`).
pub fn xdp_attached(ns: &Netns) -> Result<bool> {
    let out = ns.ip(&["-d", "link", "show", "dev", "eth0"])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("prog/xdp"))
}

fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    server {{
        listen 80;
        listen [::]:80;
        root {d}/www;
        location = /index.html {{ default_type text/plain; }}
        # The same files at 4 MB/s per response, for transfers that must last.
        location /slow/ {{ alias {d}/www/; limit_rate 4m; }}
    }}
}}
"#
    )
}

/// nginx workers run as nobody: the web root and the path to it must be readable.
fn make_world_readable(base: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut p = Some(base);
    while let Some(dir) = p {
        if dir == Path::new("/") || dir == std::env::temp_dir() {
            break;
        }
        let mut perms = fs::metadata(dir)?.permissions();
        perms.set_mode(perms.mode() | 0o755);
        fs::set_permissions(dir, perms)?;
        p = dir.parent();
    }
    crate::netns::run(
        crate::netns::program("chmod")?
            .args(["-R", "a+rX"])
            .arg(base),
    )?;
    Ok(())
}
