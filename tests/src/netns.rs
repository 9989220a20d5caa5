//! Network namespaces that are deleted on drop, with the processes started in them.
use std::{
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);
/// Every namespace this library makes is named `PREFIX-<pid>-<n>-<tag>`.
pub const PREFIX: &str = "lvsx";

/// A command for listed program `name` (see [`crate::programs`]): an error naming the program, and
/// the package that provides it, when it is not listed or not installed.
pub fn program(name: &str) -> Result<Command> {
    crate::programs::command(name).map_err(anyhow::Error::msg)
}

/// The names of the network namespaces that exist now (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    let out = run(program("ip")?.args(["netns", "list"]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Deletes namespaces of earlier runs whose process is gone (a run killed with SIGKILL cannot
/// clean up after itself).
pub fn remove_stale() {
    let Ok(names) = list() else {
        return;
    };
    for name in &names {
        let mut parts = name.splitn(3, '-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive && let Ok(mut ip) = program("ip") {
            let _ = ip.args(["netns", "del", name]).output();
        }
    }
}

/// Moves the calling thread into network namespace `name` (other threads stay where they are).
pub fn enter(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let ns = std::fs::File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("open netns {name}"))?;
    // SAFETY: ns is an open namespace file; CLONE_NEWNET moves only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `name`, for calls that take interface names
/// or indexes (XDP attach, BPF_PROG_TEST_RUN with an ingress interface).
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(name)?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The index of interface `ifname` in namespace `ns`.
pub fn ifindex(ns: &str, ifname: &str) -> Result<u32> {
    let name = std::ffi::CString::new(ifname)?;
    in_netns(ns, || {
        // SAFETY: valid C string.
        match unsafe { libc::if_nametoindex(name.as_ptr()) } {
            0 => bail!("interface {ifname} not found in {ns}"),
            i => Ok(i),
        }
    })
}

/// A network namespace, deleted (with every process it started) on drop.
pub struct Netns {
    pub name: String,
    children: Vec<(String, Child)>,
}

impl Netns {
    /// Creates `lvsx-<pid>-<n>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}-{}-{n}-{tag}", std::process::id());
        run(program("ip")?.args(["netns", "add", &name]))?;
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace holding one veth pair `a` <-> `b`, both ends up.
    pub fn with_veth_pair(tag: &str, a: &str, b: &str) -> Result<Netns> {
        let ns = Netns::new(tag)?;
        ns.ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        ns.ip(&["link", "set", a, "up"])?;
        ns.ip(&["link", "set", b, "up"])?;
        Ok(ns)
    }

    /// A command to run listed program `name` (or a workspace binary by path) inside the
    /// namespace.
    pub fn command(&self, name: &str) -> Result<Command> {
        let path = crate::programs::resolve(name).map_err(anyhow::Error::msg)?;
        let mut cmd = program("ip")?;
        cmd.args(["netns", "exec", &self.name]).arg(path);
        Ok(cmd)
    }

    /// A command to run listed program `name` (or a workspace binary by path) with only the
    /// network namespace switched (`nsenter --net`): unlike `ip netns exec`, which mounts a
    /// fresh /sys, it sees the host's /sys/fs/bpf, as a daemon on a real host does.
    pub fn nsenter_command(&self, name: &str) -> Result<Command> {
        let path = crate::programs::resolve(name).map_err(anyhow::Error::msg)?;
        let mut cmd = program("nsenter")?;
        cmd.arg(format!("--net=/run/netns/{}", self.name)).arg(path);
        Ok(cmd)
    }

    /// Runs `program args` inside; fails on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        run(self.command(program)?.args(args))
    }

    /// Runs `program args` inside, pinned to CPU `cpu` with taskset.
    pub fn exec_on_cpu(&self, cpu: u32, program: &str, args: &[&str]) -> Result<Output> {
        let path = crate::programs::resolve(program).map_err(anyhow::Error::msg)?;
        let mut cmd = self.command("taskset")?;
        cmd.args(["-c", &cpu.to_string()]).arg(path).args(args);
        run(&mut cmd)
    }

    /// Like `exec`, returning stdout as text.
    pub fn stdout(&self, program: &str, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.exec(program, args)?.stdout).into_owned())
    }

    /// `ip -n NAME args`.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        run(program("ip")?.arg("-n").arg(&self.name).args(args))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Starts a long-running process inside; it is stopped when the namespace is dropped.
    pub fn spawn(&mut self, label: &str, mut cmd: Command) -> Result<()> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {label}"))?;
        self.children.push((label.to_string(), child));
        Ok(())
    }

    /// The process id of a started process.
    pub fn child_pid(&self, label: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.id())
    }

    /// Takes a started process back (to signal it and check its exit).
    pub fn take_child(&mut self, label: &str) -> Option<Child> {
        let i = self.children.iter().position(|(l, _)| l == label)?;
        Some(self.children.remove(i).1)
    }

    /// Polls `probe` every 20 ms until it returns true or `timeout` passes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !probe() {
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what} in {}",
                    self.name
                );
            }
            crate::signals::check()?;
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Netns {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            stop(child, Duration::from_secs(3));
        }
        if let Ok(mut ip) = program("ip") {
            let _ = ip
                .args(["netns", "del", &self.name])
                .stderr(Stdio::null())
                .status();
        }
    }
}
