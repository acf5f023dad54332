//! What a bug does to the process, and a test-only way to plant one.
//!
//! A panic anywhere (the serving ring, the WAL committer on it, the background ring) must end the
//! process, never leave it half alive: a panicked background ring used to leave writes waiting
//! forever once the memtables filled, and a panicked connection task a store nobody could
//! trust. [`install_abort_hook`] makes every panic print one line and abort (non-zero exit,
//! `SIGABRT`), so that a supervisor restarts the server and recovery replays the WAL. A hook
//! rather than only `panic = "abort"` in the release profile: it covers every build of the
//! binary, and `cargo test --release` would otherwise build every dependency twice (tests
//! always unwind).
//!
//! `RINGKV_PANIC_ON_KEY=PLACE:KEY` in the server's environment plants a panic: PLACE panics
//! when it handles a write of KEY. Places: `serving` (the `/set` handler, before the write),
//! `wal` (the WAL committer, before it writes the batch holding the record), `background` (the
//! flush of the memtable holding the key). Unset, as in production, a check is one load of a
//! `OnceLock`.

use std::sync::OnceLock;

/// Where a planted panic fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Serving,
    Wal,
    Background,
}

const VARIABLE: &str = "RINGKV_PANIC_ON_KEY";

fn planted() -> Option<&'static (Place, Vec<u8>)> {
    static PLANTED: OnceLock<Option<(Place, Vec<u8>)>> = OnceLock::new();
    PLANTED
        .get_or_init(|| {
            let setting = std::env::var(VARIABLE).ok()?;
            let (place, key) = setting.split_once(':')?;
            let place = match place {
                "serving" => Place::Serving,
                "wal" => Place::Wal,
                "background" => Place::Background,
                _ => return None,
            };
            Some((place, key.as_bytes().to_vec()))
        })
        .as_ref()
}

/// The key whose write makes `place` panic, if one is planted there.
pub fn key_at(place: Place) -> Option<&'static [u8]> {
    planted()
        .filter(|(planted_place, _)| *planted_place == place)
        .map(|(_, key)| key.as_slice())
}

/// Panics if a panic is planted at `place` for `key`.
pub fn check(place: Place, key: &[u8]) {
    if key_at(place) == Some(key) {
        fire(place);
    }
}

/// Panics: `place` found the planted key (as [`check`] does, for a place that has matched it
/// already).
pub fn fire(place: Place) -> ! {
    let key = key_at(place).map(String::from_utf8_lossy).unwrap_or_default();
    panic!("planted by {VARIABLE} at {place:?} on key {key:?}");
}

/// Makes every panic, on any thread, print one line and abort the process (see the module
/// documentation). For the server binary; tests keep unwinding.
pub fn install_abort_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let location = info
            .location()
            .map_or_else(String::new, |location| format!(" at {location}"));
        eprintln!(
            "ringkv: panic on thread '{name}'{location}: {message}; aborting, so that a supervisor restarts the server and recovery replays the WAL"
        );
        // The backtrace, when RUST_BACKTRACE asks for one.
        default_hook(info);
        std::process::abort();
    }));
}
