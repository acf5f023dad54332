//! Leveled logs through `tracing`: events (start-up, recovery, flushes and compactions, stalls,
//! faults, poison, shutdown), never one line per request. `RUST_LOG`, when set, takes precedence
//! over `--log-level`; `--log-format json` writes one JSON object per line.

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {text:?}: expected text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the process's subscriber, writing to stderr. `level` is a `tracing` filter
/// (`info`, `debug`, `ringkv=debug,warn`); `RUST_LOG` replaces it when set.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.trim().is_empty())
        .unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(&spec).map_err(|error| format!("bad log filter {spec:?}: {error}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| format!("cannot install the logger: {error}"))?;
    FORMAT.set(format).ok();
    Ok(())
}

static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The line that says the server is ready. In text format it is printed as it always was, with
/// no timestamp or level, so that scripts (and the tests) can wait for a line starting
/// "ringkv listening on "; in JSON format it is an event like any other.
pub fn ready(line: &str) {
    if FORMAT.get() == Some(&LogFormat::Json) {
        tracing::info!(ready = true, "{line}");
    } else {
        eprintln!("{line}");
    }
}
