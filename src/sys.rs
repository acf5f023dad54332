//! The few raw system calls made outside `io/`, each behind a safe function with its `SAFETY`
//! argument: socket shutdown and a non-blocking send on descriptors the HTTP loop owns, the
//! open-file limit, a file's direct-I/O alignment, and one allocator option. Owns no policy:
//! callers decide when and why.

use std::io;
use std::os::fd::RawFd;

/// Shuts both directions of socket `fd` down, waking any read or accept pending on it (Linux).
/// Errors are ignored: the socket is being given up on either way.
pub fn shutdown_socket(fd: RawFd) {
    // SAFETY: `shutdown` takes no pointers; on a descriptor that is closed or not a socket it
    // fails with EBADF/ENOTSOCK and changes nothing. Callers pass descriptors they keep open.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Sends `bytes` on socket `fd` without blocking and without SIGPIPE, as far as the socket
/// buffer takes them; returns how many were sent.
pub fn send_nonblocking(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length come from one live slice, read only for the call's length.
    let sent = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit, or the error.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = nofile_limit()?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `setrlimit` reads the local struct it is given a valid pointer to.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Sends `signal` to process `pid` (tests and the benchmark tool stop and kill the servers they
/// start).
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `kill` takes no pointers.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The soft open-file limit.
pub fn open_file_limit() -> io::Result<u64> {
    Ok(nofile_limit()?.rlim_cur)
}

fn nofile_limit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into the local struct it is given a valid pointer to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// The memory page size and the clock ticks per second of `/proc/self/stat`'s CPU times.
pub fn page_size_and_clock_ticks() -> (u64, u64) {
    // SAFETY: `sysconf` takes no pointers; it returns -1 for an unknown name, mapped to a default.
    let (page, ticks) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE),
            libc::sysconf(libc::_SC_CLK_TCK),
        )
    };
    (
        u64::try_from(page).unwrap_or(4096),
        u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
    )
}

/// mimalloc's `mi_option_purge_delay`: its index in `mi_option_t` (the same in mimalloc 2 and 3).
/// `libmimalloc-sys` leaves the experimental options unnamed; a test pins the index by the
/// option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes the allocator keep the memory it frees for reuse instead of returning it to the system
/// (mimalloc's purge delay set to "never"), unless `MIMALLOC_PURGE_DELAY` in the environment
/// says otherwise. Returns the delay in effect, in milliseconds (`-1`: never returned). Call it
/// before any other thread starts: mimalloc's option functions are not thread-safe.
///
/// Why: the memtable is the bulk of what the server allocates, and it is freed all at once when
/// flushed and allocated again as the next one fills. With mimalloc's default (return after
/// 1 s), most of a flushed memtable was returned before the next one reached it, and was faulted
/// back in as 4 KiB pages: each zeroed again, and the skiplist's nodes no longer on huge pages
/// (46-70% of the memory on huge pages after 30 s of sets, 95% with this). The resident size stays
/// at its high-water mark instead (memtables, block cache, buffers: all bounded by flags).
/// Measured in BENCHMARKS.md ("Keeping freed memory").
pub fn keep_freed_memory_for_reuse() -> std::ffi::c_long {
    // SAFETY: both calls take an option index and a number, no pointers; the index is checked
    // by mimalloc and pinned by a test. `mi_option_get` first reads the environment, so that
    // `mi_option_set_default` changes the value only if the environment did not set it. The
    // caller runs it before other threads start (the option functions are not thread-safe).
    unsafe {
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
    }
}

/// The offset (and length) alignment the file system requires of direct I/O on open file `fd`
/// (`statx` with `STATX_DIOALIGN`, Linux 6.1): `None` when the kernel or the file system does not
/// say, or says the file cannot do direct I/O.
pub fn direct_io_offset_align(fd: RawFd) -> io::Result<Option<u32>> {
    // SAFETY: an all-zero `statx` is a valid value of the plain-data struct.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid NUL-terminated empty string, which with `AT_EMPTY_PATH` names
    // `fd` itself; `statx` writes into the local struct it is given a valid pointer to.
    let result = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stat,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let reported = stat.stx_mask & libc::STATX_DIOALIGN != 0;
    Ok(Some(stat.stx_dio_offset_align).filter(|&align| reported && align > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_mimallocs_purge_delay_and_is_set_to_never() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("MIMALLOC_PURGE_DELAY is set: the default cannot be checked; not run");
            return;
        }
        // SAFETY: as in `keep_freed_memory_for_reuse`; this test process has no other user of
        // the option.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "option {MI_OPTION_PURGE_DELAY} is not mimalloc 3's purge delay (1000 ms by default)"
        );
        assert_eq!(keep_freed_memory_for_reuse(), -1);
    }
}
