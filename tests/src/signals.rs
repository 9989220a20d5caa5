//! SIGINT/SIGTERM/SIGHUP turned into a flag, so that a long setup can stop between steps and
//! still run its cleanup (the guards' Drop) instead of dying with namespaces left behind.
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers (idempotent).
pub fn trap() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err` once a signal arrived.
pub fn check() -> Result<()> {
    if stopping() {
        bail!("interrupted");
    }
    Ok(())
}
