//! Builds the XDP object (lvs-xdp-ebpf) with the nightly toolchain and bpf-linker; the library
//! embeds it from OUT_DIR. `cargo xtask setup` installs what this needs.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lvs-xdp-ebpf");
    let root = root.canonicalize()?;
    let root = root.to_str().expect("workspace path is UTF-8");
    // aya-build watches the eBPF crate only; the contract it shares is compiled into it too.
    let common = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lvs-xdp-common");
    println!(
        "cargo:rerun-if-changed={}",
        common.canonicalize()?.display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lvs-xdp-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
