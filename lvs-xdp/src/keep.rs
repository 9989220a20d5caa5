//! Restarts that lose no connection. `lvs-xdp run --keep` leaves the program attached and its
//! maps alive when it stops: the maps and each interface's link are pinned in
//! `/sys/fs/bpf/lvs-xdp/IFACE/` (`/sys/fs/bpf/lvs-xdp/netns/NAME/IFACE/` in a named network
//! namespace), and what the maps do not say (the services' placement, the flow-hash seed, the
//! capacities) is written next to the control socket as `IFACE.kept.json`. The next `run` on
//! that interface loads its program over the same maps with the same seed, replaces the kept
//! program in one step, and removes the pins: the flow table, and so every established
//! connection, carries over; a crash of the new run then leaves nothing behind.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::{
    Director,
    balancer::PINNED_MAPS,
    config::Capacity,
    control::{RUN_DIR, socket_dir},
    director::Image,
};

/// Where bpffs is mounted.
pub const BPF_FS: &str = "/sys/fs/bpf";
/// statfs(2)'s f_type of a bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What a kept director saves besides its pins.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kept {
    /// The interfaces it served, the first one naming the pins.
    pub interfaces: Vec<String>,
    /// The flow table's hash seed: the next program must hash flows the same way.
    pub seed: u32,
    /// The maps' sizes (they stay as they were created).
    pub capacity: Capacity,
    /// The maps' layouts ([`lvs_xdp_common::LAYOUT`]); 0 in a file of a version without it.
    #[serde(default)]
    pub layout: u32,
    pub director: Image,
}

/// The directory of the pins of the director serving `iface` (first of its interfaces).
pub fn pin_dir(iface: &str) -> PathBuf {
    let base = Path::new(BPF_FS).join("lvs-xdp");
    match socket_dir().strip_prefix(RUN_DIR) {
        Ok(rest) if !rest.as_os_str().is_empty() => base.join(rest).join(iface),
        _ => base.join(iface),
    }
}

/// The saved state of the director serving `iface`.
pub fn state_path(iface: &str) -> PathBuf {
    socket_dir().join(format!("{iface}.kept.json"))
}

/// Whether `path` is on a bpffs.
fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid out-parameter; c is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Mounts a bpffs on /sys/fs/bpf when none is there (systemd hosts mount one at boot).
pub fn ensure_bpffs() -> Result<()> {
    let dir = Path::new(BPF_FS);
    if is_bpffs(dir) {
        return Ok(());
    }
    if !dir.exists() {
        bail!("{BPF_FS} does not exist: cannot keep the program (is /sys mounted?)");
    }
    let (src, target, fstype) = (c"bpf", CString::new(BPF_FS)?, c"bpf");
    // SAFETY: valid C strings; no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "cannot mount a bpffs on {BPF_FS}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The kept director on `iface`, if `run --keep` left one.
pub fn kept(iface: &str) -> Result<Option<Kept>> {
    let path = state_path(iface);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    let kept: Kept = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a kept lvs-xdp director", path.display()))?;
    if !is_bpffs(&pin_dir(iface)) {
        bail!(
            "{} says a director was kept on {iface}, but its pins are gone from {} (remove the file to start afresh)",
            path.display(),
            pin_dir(iface).display()
        );
    }
    if kept.layout != lvs_xdp_common::LAYOUT {
        bail!(
            "the director kept on {iface} was made by an lvs-xdp whose maps are laid out differently: this one cannot take its connections over. To start afresh, detach it (`ip link set dev {iface} xdp off`) and remove {} and {}",
            pin_dir(iface).display(),
            path.display()
        );
    }
    Ok(Some(kept))
}

/// Pins `director`'s program and maps and saves what they do not say, so that the next `run`
/// on the same interfaces takes them over. The program stays attached.
pub fn keep(director: &mut Director, interfaces: &[String]) -> Result<PathBuf> {
    let first = interfaces.first().context("no interface")?;
    ensure_bpffs()?;
    let dir = pin_dir(first);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let kept = Kept {
        interfaces: interfaces.to_vec(),
        seed: director.balancer().seed(),
        capacity: *director.balancer().capacity(),
        layout: lvs_xdp_common::LAYOUT,
        director: director.image(),
    };
    let state = state_path(first);
    let tmp = state.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string(&kept)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    director.balancer_mut().keep(&dir)?;
    std::fs::rename(&tmp, &state)?;
    Ok(dir)
}

/// Removes the pins and the saved state of the director kept on `iface` (once taken over, or
/// to start afresh). Pins that are gone already are no error.
pub fn forget(iface: &str) -> Result<()> {
    let dir = pin_dir(iface);
    for name in PINNED_MAPS {
        let _ = std::fs::remove_file(dir.join(name));
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("link-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // The directory, and its parents up to /sys/fs/bpf/lvs-xdp, when empty.
    let top = Path::new(BPF_FS).join("lvs-xdp");
    let mut d = Some(dir.as_path());
    while let Some(p) = d.filter(|p| p.starts_with(&top)) {
        if std::fs::remove_dir(p).is_err() {
            break;
        }
        d = p.parent();
    }
    match std::fs::remove_file(state_path(iface)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow!(
            "cannot remove {}: {e}",
            state_path(iface).display()
        )),
        _ => Ok(()),
    }
}
