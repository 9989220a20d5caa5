//! Installs what building and testing lvs-xdp needs, skipping what is already there. Runs before
//! anything that compiles the lvs-xdp crate (its build script needs nightly's rust-src and
//! bpf-linker).
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// bpf-linker 0.10.x links with the LLVM inside the nightly toolchain; 0.10.4 emits BTF the
/// kernel accepts when aya-log is linked (0.10.1 does not; 0.11+ needs a system LLVM 21+).
const BPF_LINKER_VERSION: &str = "0.10.4";
/// Debian packages: the lab's and the tests' tools.
const PACKAGES: [&str; 6] = [
    "nginx",
    "curl",
    "ethtool",
    "iproute2",
    "procps",
    "util-linux",
];

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn setup() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    packages()?;
    Ok(())
}

fn rust_src() -> Result<()> {
    if !ok(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        bail!("the nightly Rust toolchain is missing (rustup toolchain install nightly)");
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !version.contains(BPF_LINKER_VERSION) {
        run(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }
    Ok(())
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .into_iter()
        .filter(|p| {
            let status = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]));
            !status.is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}
