//! The control channel between `lvs-xdp run` and the commands that drive it while it runs.
//!
//! Local and root-only: a Unix socket per served interface, `IFACE.sock`, in a directory of
//! mode 0700 owned by root: `/run/lvs-xdp`, or `/run/lvs-xdp/netns/NAME` inside a named network
//! namespace (`ip netns add NAME`), so that directors in two namespaces do not meet. The daemon also
//! checks that the peer is root. One request and one reply per connection, each a line of JSON.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::{
    Director,
    director::{ApplyError, Connection},
    listing::{Listing, Snapshot},
    model::{Mac, Op},
};

/// Where the sockets live on the host.
pub const RUN_DIR: &str = "/run/lvs-xdp";

/// What a command asks of the running director.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Apply these changes, all or none.
    Apply(Vec<Op>),
    /// Every service with counters and rates.
    List,
    /// The flow table's connections.
    Connections,
    /// What `-S` needs: the listing, and the real servers with an explicit MAC.
    Save,
    /// `-Z`: zero the listed counters of one service, or all.
    Zero(Option<crate::model::ServiceKey>),
    /// Weight 0 for a real server (no new connections; its connections go on).
    Quiesce(crate::model::ServiceKey, IpAddr),
    /// A real server's connections, counted over the whole flow table now.
    Conns(crate::model::ServiceKey, IpAddr),
}

/// The running director's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Done,
    /// The state refused op number `op` (ipvsadm's message).
    Refused {
        op: usize,
        message: String,
    },
    /// The change could not be carried out (nothing was applied).
    Failed(String),
    Listing(Listing),
    Connections(Vec<Connection>),
    Saved {
        listing: Listing,
        macs: Vec<(IpAddr, Mac)>,
    },
    Conns {
        active: u64,
        inactive: u64,
    },
}

/// The message a non-root caller gets (ipvsadm's).
pub const NOT_ROOT: &str = "Permission denied (you must be root)";

/// The directory of this network namespace's sockets: `/run/lvs-xdp/netns/NAME` when the
/// calling thread is in the named namespace `/run/netns/NAME`, `/run/lvs-xdp` otherwise.
pub fn socket_dir() -> PathBuf {
    let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let Some(me) = ino(Path::new("/proc/thread-self/ns/net")) else {
        return PathBuf::from(RUN_DIR);
    };
    let named = std::fs::read_dir("/run/netns").ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .find(|e| ino(&e.path()) == Some(me))
            .and_then(|e| e.file_name().into_string().ok())
    });
    match named {
        Some(name) => Path::new(RUN_DIR).join("netns").join(name),
        None => PathBuf::from(RUN_DIR),
    }
}

/// The socket of the director serving `iface`.
pub fn socket_path(iface: &str) -> PathBuf {
    socket_dir().join(format!("{iface}.sock"))
}

/// The socket to talk to: `iface`'s, or the only one there is.
pub fn find(iface: Option<&str>) -> Result<PathBuf> {
    let dir = socket_dir();
    if let Some(iface) = iface {
        let path = socket_path(iface);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!("{NOT_ROOT}"),
            Err(_) => bail!(
                "no lvs-xdp runs on {iface} (no control socket {})",
                path.display()
            ),
        }
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!("{NOT_ROOT}"),
        Err(_) => bail!(
            "no lvs-xdp is running here (no control socket in {}): start `lvs-xdp run --iface IFACE`",
            dir.display()
        ),
    };
    let mut sockets: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".sock").map(str::to_string))
        .collect();
    sockets.sort();
    match sockets.as_slice() {
        [] => bail!(
            "no lvs-xdp is running here (no control socket in {}): start `lvs-xdp run --iface IFACE`",
            dir.display()
        ),
        [one] => Ok(socket_path(one)),
        many => bail!(
            "lvs-xdp runs on several interfaces ({}): choose one with --iface",
            many.join(", ")
        ),
    }
}

/// Sends `request` to the director at `path` and returns its reply.
pub fn call(path: &Path, request: &Request) -> Result<Reply> {
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!("{NOT_ROOT}"),
        Err(e) => {
            return Err(anyhow!(
                "cannot reach the lvs-xdp at {}: {e} (is `lvs-xdp run` still running?)",
                path.display()
            ));
        }
    };
    // Applying a change may wait for ARP (seconds); listing 10 000 services takes a while too.
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .context("reading the director's reply")?;
    if reply.is_empty() {
        bail!("the director closed the connection without a reply");
    }
    serde_json::from_str(&reply).context("the director's reply is malformed")
}

/// The daemon's side: the listening sockets, removed on drop.
pub struct Listeners {
    pub sockets: Vec<(PathBuf, UnixListener)>,
}

impl Listeners {
    /// Binds a socket for each of `ifaces`. Refuses when a director already serves one of
    /// them; a socket left by a director that died is replaced.
    pub fn bind(ifaces: &[String]) -> Result<Listeners> {
        let dir = socket_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for d in dir.ancestors().take_while(|d| d.starts_with(RUN_DIR)) {
            let meta = std::fs::metadata(d)?;
            if meta.uid() != 0 {
                bail!(
                    "{} is not root's: refusing to put a control socket there",
                    d.display()
                );
            }
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut listeners = Listeners {
            sockets: Vec::new(),
        };
        for iface in ifaces {
            let path = socket_path(iface);
            if UnixStream::connect(&path).is_ok() {
                bail!(
                    "lvs-xdp already runs on {iface} (control socket {})",
                    path.display()
                );
            }
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)
                .with_context(|| format!("cannot create the control socket {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            listeners.sockets.push((path, listener));
        }
        Ok(listeners)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for (path, _) in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
        if let Some((path, _)) = self.sockets.first() {
            remove_empty_dirs(path);
        }
    }
}

/// Removes the directories of `path` up to /run/lvs-xdp included, as long as they are empty:
/// nothing of lvs-xdp stays in /run once its last socket or record is gone.
pub fn remove_empty_dirs(path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(RUN_DIR)) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// The uid of the process at the other end of `stream`.
pub fn peer_uid(stream: &impl std::os::fd::AsRawFd) -> Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        bail!("SO_PEERCRED: {}", std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The director's answer to `request`. `rates` are the two snapshots the rates are estimated
/// between (the daemon takes one every [`RATE_INTERVAL`]).
pub fn answer(
    director: &mut Director,
    request: Request,
    rates: Option<(&Snapshot, &Snapshot)>,
) -> Reply {
    let listing = |d: &Director| -> Result<Listing> {
        Ok(Listing::new(
            &d.snapshot()?,
            rates,
            d.state().timeouts,
            d.zeroed(),
        ))
    };
    let result = match request {
        Request::Apply(ops) => {
            return match director.apply(&ops) {
                Ok(()) => Reply::Done,
                Err(ApplyError::Refused { op, refusal }) => Reply::Refused {
                    op,
                    message: refusal.to_string(),
                },
                Err(ApplyError::Failed(e)) => Reply::Failed(format!("{e:#}")),
            };
        }
        Request::Zero(key) => {
            return match director.zero(key) {
                Ok(()) => Reply::Done,
                Err(ApplyError::Refused { op, refusal }) => Reply::Refused {
                    op,
                    message: refusal.to_string(),
                },
                Err(ApplyError::Failed(e)) => Reply::Failed(format!("{e:#}")),
            };
        }
        Request::Quiesce(key, addr) => {
            return match director.quiesce(&key, addr) {
                Ok(()) => Reply::Done,
                Err(ApplyError::Refused { op, refusal }) => Reply::Refused {
                    op,
                    message: refusal.to_string(),
                },
                Err(ApplyError::Failed(e)) => Reply::Failed(format!("{e:#}")),
            };
        }
        Request::Conns(key, addr) => director.count_connections(&key, addr).map(|c| match c {
            Some((active, inactive)) => Reply::Conns { active, inactive },
            None => Reply::Failed("No such destination".into()),
        }),
        Request::List => director
            .refresh_connections()
            .and_then(|()| listing(director))
            .map(Reply::Listing),
        Request::Connections => director.connections().map(Reply::Connections),
        Request::Save => director
            .refresh_connections()
            .and_then(|()| listing(director))
            .map(|listing| {
                let macs = director
                    .state()
                    .services
                    .values()
                    .flat_map(|s| s.reals.iter())
                    .filter_map(|(a, r)| Some((*a, r.mac?)))
                    .collect();
                Reply::Saved { listing, macs }
            }),
    };
    result.unwrap_or_else(|e| Reply::Failed(format!("{e:#}")))
}

/// How often the daemon samples the counters for `--rate` (IPVS's estimator uses 2 s).
pub const RATE_INTERVAL: Duration = Duration::from_secs(2);
