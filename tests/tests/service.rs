//! The shipped service files: the systemd unit passes `systemd-analyze verify` with nothing to
//! say, and the example configuration for a real NIC is valid.
use std::path::{Path, PathBuf};

use lvs_xdp_tests::{bins, lab::TempDir, netns};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/systemd")
        .canonicalize()
        .unwrap()
}

#[test]
fn the_systemd_unit_verifies_clean() {
    let unit = std::fs::read_to_string(docs().join("lvs-xdp.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/lvs-xdp run "));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // systemd-analyze needs ExecStart's binary to exist: the one this workspace built.
    let bin = bins::lvs_xdp();
    let dir = TempDir::new("unit").unwrap();
    let path = dir.0.join("lvs-xdp.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/lvs-xdp", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = netns::run(
        netns::program("systemd-analyze")
            .unwrap()
            .args(["verify", "--man=no"])
            .arg(&path),
    )
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_example_configuration_is_valid() {
    let config = docs().join("lvs-xdp.toml");
    let bin = bins::lvs_xdp();
    let out = netns::program(bin.to_str().unwrap())
        .unwrap()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("-A -t 203.0.113.10:443 -s mh -b mh-port"),
        "{said}"
    );
}
