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
