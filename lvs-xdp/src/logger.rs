//! A minimal `log` backend on stderr (the program's aya-log records and the loader's messages).
//! Under systemd (stderr connected to the journal: `JOURNAL_STREAM` set), each line starts with
//! its syslog priority, `<4>` for a warning (sd-daemon(3)), so journald records the level and
//! adds the program's name itself; elsewhere lines read `lvs-xdp: warn: ...`.
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

static JOURNAL: OnceLock<bool> = OnceLock::new();

/// The syslog priority of a level (sd-daemon(3)'s `SD_ERR` .. `SD_DEBUG`).
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let journal = *JOURNAL.get_or_init(|| std::env::var_os("JOURNAL_STREAM").is_some());
        // One line per record: the journal and line-based collectors keep it whole.
        let text = record.args().to_string().replace('\n', " ");
        if journal {
            eprintln!("<{}>{text}", priority(record.level()));
        } else {
            eprintln!(
                "lvs-xdp: {}: {text}",
                record.level().as_str().to_lowercase()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Installs the logger once; the level comes from `LVS_XDP_LOG` (error, warn, info, debug,
/// trace), default info.
pub fn init() {
    let level = std::env::var("LVS_XDP_LOG")
        .ok()
        .and_then(|l| l.parse::<Level>().ok())
        .map_or(LevelFilter::Info, |l| l.to_level_filter());
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Sets the level (`error` .. `trace`), over `LVS_XDP_LOG`'s.
pub fn set_level(level: &str) {
    if let Ok(l) = level.parse::<Level>() {
        log::set_max_level(l.to_level_filter());
    }
}
