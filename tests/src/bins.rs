//! Where the built `lvs-xdp` binary is.
use std::path::PathBuf;

/// `$LVS_XDP_BIN`, or `lvs-xdp` next to the running test executable's directory
/// (target/PROFILE/deps/test-HASH → target/PROFILE/lvs-xdp). `cargo xtask test` builds it first.
pub fn lvs_xdp() -> PathBuf {
    if let Some(p) = std::env::var_os("LVS_XDP_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("lvs-xdp");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p lvs-xdp; cargo xtask test does) or set LVS_XDP_BIN",
        bin.display()
    );
    bin
}

/// Runs `lvs-xdp ARGS` inside `ns`; it must succeed. Returns its standard output.
pub fn output_in(ns: &crate::netns::Netns, args: &[&str]) -> String {
    let bin = lvs_xdp();
    let out = ns
        .command(bin.to_str().expect("binary path"))
        .expect("lvs-xdp is a listed program")
        .args(args)
        .output()
        .expect("lvs-xdp runs");
    assert!(
        out.status.success(),
        "lvs-xdp {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `lvs-xdp run --iface IFACE --mode generic --interval SECS --config CONFIG` inside `ns`
/// and waits for its first line on stdout, which must say it attached to `iface`. The pipe's
/// reader is dropped once that line is read (the process keeps running, its stdout closed).
/// Returns the child and that line.
pub fn start_run(
    ns: &crate::netns::Netns,
    iface: &str,
    interval_secs: u32,
    config: &std::path::Path,
    stderr: std::process::Stdio,
) -> anyhow::Result<(std::process::Child, String)> {
    use std::io::{BufRead as _, BufReader};
    let bin = lvs_xdp();
    let mut child = ns
        .command(bin.to_str().ok_or_else(|| anyhow::anyhow!("binary path"))?)?
        .args(["run", "--iface", iface, "--mode", "generic", "--interval"])
        .arg(interval_secs.to_string())
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    BufReader::new(stdout).read_line(&mut line)?;
    if !line.contains(&format!("attached to {iface}")) {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("lvs-xdp did not start: {line}");
    }
    Ok((child, line))
}
