//! Every external program that lvs-xdp's workflows, lab, tests and benchmarks execute, and where
//! it comes from. This is the one list: `cargo xtask setup` installs the Debian packages named
//! here, and [`command`] is the only way the project starts a program, so a program missing from
//! the list is refused (naming it) the first time anything tries to run it, and a listed program
//! that is not installed is one line naming its package.
//!
//! The file is plain std so that both xtask (`mod programs`) and the tests library
//! (`lvs_xdp_tests::programs`, through `#[path]`) compile it; the lvs-xdp library and daemon run no
//! external program at all.
#![allow(dead_code)] // each of the two crates that compile this file uses part of it

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

/// Where a program comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Debian package, installed by `cargo xtask setup` when missing.
    Debian(&'static str),
    /// The Rust toolchain (rustup's stable and nightly), which the README asks for up front.
    Rust,
    /// A crate that `cargo xtask setup` installs with `cargo install`.
    CargoInstall(&'static str),
    /// One file of a Debian package that is not installed whole: `cargo xtask setup` downloads
    /// the package (`apt-get download`) and extracts that file (`dpkg-deb`) to
    /// `/usr/local/bin`. (package, the file's path inside it)
    DebianFile(&'static str, &'static str),
    /// A binary this workspace builds, run by its path.
    Workspace,
}

/// One program the project executes.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// The name looked up on `PATH` (or the file name of a workspace binary).
    pub name: &'static str,
    pub source: Source,
    /// Who runs it, for the README's table.
    pub used_for: &'static str,
}

const fn deb(name: &'static str, package: &'static str, used_for: &'static str) -> Program {
    Program {
        name,
        source: Source::Debian(package),
        used_for,
    }
}

/// The list. Keep it sorted by source, then name; the README's table shows the Debian rows.
pub const PROGRAMS: &[Program] = &[
    deb("apt-get", "apt", "setup: installs the packages below"),
    deb(
        "bird",
        "bird2",
        "tests: BGP on the router and the directors of the ECMP test",
    ),
    deb(
        "birdc",
        "bird2",
        "tests: asks BIRD whether its BGP sessions are up",
    ),
    deb(
        "cat",
        "coreutils",
        "lab: reads interface counters inside a namespace",
    ),
    deb(
        "chmod",
        "coreutils",
        "lab: makes the real servers' web roots readable",
    ),
    deb("curl", "curl", "lab, tests: the client's HTTP requests"),
    deb(
        "dpkg-deb",
        "dpkg",
        "setup: extracts promtool from Debian's prometheus package",
    ),
    deb("dpkg-query", "dpkg", "setup: which packages are installed"),
    deb(
        "ethtool",
        "ethtool",
        "lab, tests: TX checksum offload off on the senders' veths, rx-vlan offload off",
    ),
    deb(
        "ip",
        "iproute2",
        "lab, tests, benchmarks: namespaces, veth pairs, bridge, addresses",
    ),
    deb(
        "keepalived",
        "keepalived",
        "tests: VRRP between two directors (keepalived for the VIP, lvs-xdp for the load)",
    ),
    deb(
        "nft",
        "nftables",
        "benchmarks: the nftables forwarding baseline",
    ),
    deb(
        "nginx",
        "nginx",
        "lab, tests: the real servers' web servers",
    ),
    deb(
        "nsenter",
        "util-linux",
        "lab, tests: lvs-xdp run in a namespace, seeing the host's bpffs",
    ),
    deb(
        "setpriv",
        "util-linux",
        "tests: runs a command as another user",
    ),
    deb("ss", "iproute2", "lab: waits for nginx to listen"),
    deb(
        "systemd-analyze",
        "systemd",
        "tests: checks the shipped systemd unit (`systemd-analyze verify`)",
    ),
    deb(
        "tar",
        "tar",
        "setup: extracts promtool from Debian's prometheus package",
    ),
    deb(
        "sysctl",
        "procps",
        "lab: arp_ignore and arp_announce on the real servers",
    ),
    deb(
        "taskset",
        "util-linux",
        "lab: pins the client's requests to one CPU",
    ),
    Program {
        name: "cargo",
        source: Source::Rust,
        used_for: "xtask: builds, tests, benchmarks",
    },
    Program {
        name: "rustup",
        source: Source::Rust,
        used_for: "setup: nightly's rust-src",
    },
    Program {
        name: "bpf-linker",
        source: Source::CargoInstall("bpf-linker"),
        used_for: "build: links the XDP object",
    },
    Program {
        name: "promtool",
        source: Source::DebianFile("prometheus", "./usr/bin/promtool"),
        used_for: "tests: checks the metrics lvs-xdp serves (`promtool check metrics`)",
    },
    Program {
        name: "lvs-xdp",
        source: Source::Workspace,
        used_for: "the product",
    },
];

/// The Debian packages of the list, sorted, each once.
pub fn debian_packages() -> Vec<&'static str> {
    let mut packages: Vec<&str> = PROGRAMS
        .iter()
        .filter_map(|p| match p.source {
            Source::Debian(package) => Some(package),
            _ => None,
        })
        .collect();
    packages.sort_unstable();
    packages.dedup();
    packages
}

/// Where `source` says to get a program, as the end of an error line.
fn remedy(source: Source) -> String {
    match source {
        Source::Debian(package) => {
            format!("Debian package {package}; `cargo xtask setup` installs it")
        }
        Source::Rust => "the Rust toolchain; install rustup's stable and nightly".into(),
        Source::CargoInstall(krate) => {
            format!("crate {krate}; `cargo xtask setup` installs it with cargo install")
        }
        Source::Workspace => "built by this workspace; `cargo xtask build` builds it".into(),
        Source::DebianFile(package, file) => format!(
            "{file} of Debian package {package}; `cargo xtask setup` extracts it to /usr/local/bin"
        ),
    }
}

/// The listed program `name` (a bare name, or a path whose file name is listed).
pub fn lookup(name: &str) -> Result<&'static Program, String> {
    let file_name = Path::new(name)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or(name);
    PROGRAMS
        .iter()
        .find(|p| p.name == file_name)
        .ok_or_else(|| {
            format!(
                "program `{name}` is not in the list of programs the project runs \
                 (xtask/src/programs.rs): add it there with its Debian package"
            )
        })
}

/// `name` found in the directories of `path` (a `PATH`-style list), as an executable file.
pub fn find_in(name: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The absolute path of listed program `name`: on `PATH` (then `/usr/sbin` and `/sbin`, which a
/// non-login root shell may lack), or `name` itself when it is a path.
pub fn resolve(name: &str) -> Result<PathBuf, String> {
    resolve_in(name, &std::env::var_os("PATH").unwrap_or_default())
}

/// [`resolve`] with an explicit `PATH`.
pub fn resolve_in(name: &str, path: &OsStr) -> Result<PathBuf, String> {
    let program = lookup(name)?;
    let found = if name.contains('/') {
        Some(PathBuf::from(name)).filter(|p| p.is_file())
    } else {
        let mut dirs: Vec<PathBuf> = std::env::split_paths(path).collect();
        dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
        std::env::join_paths(dirs)
            .ok()
            .and_then(|p| find_in(name, &p))
    };
    found.ok_or_else(|| format!("`{name}` is not installed ({})", remedy(program.source)))
}

/// Whether listed program `name` is installed.
pub fn installed(name: &str) -> bool {
    resolve(name).is_ok()
}

/// A command for listed, installed program `name`; otherwise one line saying what is wrong.
pub fn command(name: &str) -> Result<Command, String> {
    Ok(Command::new(resolve(name)?))
}
