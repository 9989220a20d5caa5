//! Installs what building and testing lvs-xdp needs, skipping what is already there. Runs before
//! anything that compiles the lvs-xdp crate (its build script needs nightly's rust-src and
//! bpf-linker).
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::programs::{self, PROGRAMS, Source};

/// bpf-linker 0.10.x links with the LLVM inside the nightly toolchain; 0.10.4 emits BTF the
/// kernel accepts when aya-log is linked (0.10.1 does not; 0.11+ needs a system LLVM 21+).
const BPF_LINKER_VERSION: &str = "0.10.4";
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
    debian_files()?;
    check_installed()
}

/// A command for a listed program; an error naming it and its source otherwise.
pub fn program(name: &str) -> Result<Command> {
    programs::command(name).map_err(anyhow::Error::msg)
}

fn rust_src() -> Result<()> {
    if !ok(program("rustup")?.args(["run", "nightly", "rustc", "--version"])) {
        bail!("the nightly Rust toolchain is missing (rustup toolchain install nightly)");
    }
    let installed = output(program("rustup")?.args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(program("rustup")?.args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let version = programs::command("bpf-linker")
        .ok()
        .and_then(|mut cmd| output(cmd.arg("--version")))
        .unwrap_or_default();
    if !version.contains(BPF_LINKER_VERSION) {
        run(program("cargo")?.args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }
    Ok(())
}

/// Installs the Debian packages of the program list that are not installed.
fn packages() -> Result<()> {
    let mut missing = Vec::new();
    for package in programs::debian_packages() {
        let status = output(program("dpkg-query")?.args(["-W", "-f=${Status}", package]));
        if !status.is_some_and(|s| s.contains("install ok installed")) {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    run(program("apt-get")?.args(["update", "-qq"]))?;
    run(program("apt-get")?
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// Extracts the single files of Debian packages that the list names (promtool), when missing:
/// the package is downloaded, not installed, and only that file is kept.
fn debian_files() -> Result<()> {
    for p in PROGRAMS {
        let Source::DebianFile(package, file) = p.source else {
            continue;
        };
        if programs::installed(p.name) {
            continue;
        }
        let dir = std::env::temp_dir().join(format!("lvs-xdp-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let result = (|| -> Result<()> {
            // apt's sandbox user downloads into the directory.
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
            let download = || -> Result<()> {
                run(program("apt-get")?
                    .current_dir(&dir)
                    .args(["download", "-qq", package]))
            };
            if download().is_err() {
                // A fresh machine's package lists may not know it yet.
                run(program("apt-get")?.args(["update", "-qq"]))?;
                download()?;
            }
            let deb = std::fs::read_dir(&dir)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .with_context(|| format!("apt-get download {package} gave no .deb"))?;
            // dpkg-deb writes the package's files as a tar stream; tar keeps the one file.
            let mut unpack = program("dpkg-deb")?
                .arg("--fsys-tarfile")
                .arg(&deb)
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot run dpkg-deb")?;
            let stream = unpack.stdout.take().context("dpkg-deb's output")?;
            let extracted = program("tar")?
                .arg("-x")
                .arg("-C")
                .arg(&dir)
                .arg(file)
                .stdin(stream)
                .status()?;
            let unpacked = unpack.wait()?;
            if !extracted.success() || !unpacked.success() {
                bail!("cannot extract {file} from {}", deb.display());
            }
            let target = Path::new("/usr/local/bin").join(p.name);
            std::fs::copy(dir.join(file), &target)
                .with_context(|| format!("cannot install {}", target.display()))?;
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    Ok(())
}

/// Every program of the list that setup provides is now there: a package that installs under
/// another name fails here, naming the program, not later inside a test.
fn check_installed() -> Result<()> {
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|p| {
            matches!(
                p.source,
                Source::Debian(_) | Source::CargoInstall(_) | Source::DebianFile(..)
            )
        })
        .filter_map(|p| programs::resolve(p.name).err())
        .collect();
    if !missing.is_empty() {
        bail!("after setup: {}", missing.join("; "));
    }
    Ok(())
}
