//! Developer workflows: `cargo xtask setup | build | run | test | lab`.
mod lab;
mod programs;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup            install what building and testing needs (idempotent)
  build            setup, then build lvs-xdp (release)
  run -- ARGS      setup, build, then run `lvs-xdp ARGS` (e.g. run -- run --iface eth0 --config lb.toml)
  test             setup, build, then run every test (needs root)
  lab              setup, build, then run the LVS-DR lab: client, LB and two nginx real servers
  bench [-- ARGS]  setup, then the veth benchmark (lvs-xdp vs XDP_TX bounce vs nftables); writes
                   docs/bench/bench.md and bench.svg. ARGS: --quick, --runs N, --secs S,
                   --flows A,B,C, --udp, --ipv6, --no-cost, --no-control, --out DIR
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::setup(),
        Some("build") => build_release().map(drop),
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("lab") => build_release().and_then(|bin| lab::lab(&bin)),
        Some("bench") => bench(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> Result<()> {
    // `cargo xtask` runs xtask under the cargo that invoked it: use the same one.
    let mut cmd = match std::env::var("CARGO") {
        Ok(path) => setup::program(&path)?,
        Err(_) => setup::program("cargo")?,
    };
    cmd.args(args).current_dir(root_dir());
    eprintln!("xtask: running cargo {}", args.join(" "));
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Builds the release binary and returns its path.
fn build_release() -> Result<PathBuf> {
    setup::setup()?;
    cargo(&["build", "--release", "--package", "lvs-xdp", "--bins"])?;
    Ok(root_dir().join("target/release/lvs-xdp"))
}

fn run(args: &[String]) -> Result<()> {
    let args = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    };
    let bin = build_release()?;
    let status = setup::program(bin.to_str().context("binary path")?)?
        .args(args)
        .status()?;
    if !status.success() {
        bail!("lvs-xdp exited with {status}");
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("{what} needs root (BPF, XDP and network namespaces)");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The veth benchmark (tests/benches/veth.rs), in release mode.
fn bench(extra: &[String]) -> Result<()> {
    require_root("cargo xtask bench")?;
    // The control-plane part runs the release `lvs-xdp` binary.
    build_release()?;
    let extra: Vec<&str> = match extra.first().map(String::as_str) {
        Some("--") => extra[1..].iter().map(String::as_str).collect(),
        _ => extra.iter().map(String::as_str).collect(),
    };
    let out = root_dir().join("docs/bench");
    let out = out.to_str().context("path")?.to_string();
    let mut args = vec![
        "bench",
        "--package",
        "lvs-xdp-tests",
        "--bench",
        "veth",
        "--",
    ];
    if !extra.contains(&"--out") {
        args.extend(["--out", out.as_str()]);
    }
    args.extend(extra);
    cargo(&args)
}

/// Every test: unit tests, packet fixtures through BPF_PROG_TEST_RUN, CLI refusals and the
/// netns lab with nginx. One test at a time: they share the kernel.
fn test(extra: &[String]) -> Result<()> {
    require_root("cargo xtask test")?;
    setup::setup()?;
    cargo(&["build", "--package", "lvs-xdp", "--bins"])?;
    let mut args = vec![
        "test",
        "--workspace",
        "--exclude",
        "lvs-xdp-ebpf",
        "--",
        "--test-threads=1",
    ];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}
