//! A minimal `log` backend on stderr (the program's aya-log records and the loader's messages).
use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "lvs-xdp: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
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
