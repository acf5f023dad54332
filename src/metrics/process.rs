//! The standard `process_*` metrics, read from `/proc/self` at each scrape (what the Prometheus
//! client libraries' process collectors export).

use std::time::SystemTime;

use super::exposition::Exposition;

/// Writes the process families; a figure `/proc` does not give is left out, not made up.
pub fn write(page: &mut Exposition, started: SystemTime) {
    let (page_size, ticks) = crate::sys::page_size_and_clock_ticks();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (field(11), field(12)) {
            page.family(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, in seconds.",
            );
            page.sample_f64(
                "process_cpu_seconds_total",
                &[],
                (user + system) as f64 / ticks as f64,
            );
        }
        if let (Some(virtual_bytes), Some(resident_pages)) = (field(20), field(21)) {
            page.single(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                virtual_bytes,
            );
            page.single(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                resident_pages * page_size,
            );
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        let open = entries.count().saturating_sub(1) as u64;
        page.single(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open,
        );
    }
    if let Ok(limit) = crate::sys::open_file_limit() {
        page.single(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            limit,
        );
    }
    if let Ok(since_epoch) = started.duration_since(SystemTime::UNIX_EPOCH) {
        page.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        page.sample_f64("process_start_time_seconds", &[], since_epoch.as_secs_f64());
    }
}
