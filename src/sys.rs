//! The few raw system calls made outside `io/`, each behind a safe function with its `SAFETY`
//! argument: socket shutdown and a non-blocking send on descriptors the HTTP loop owns, the
//! open-file limit, and a file's direct-I/O alignment. Owns no policy: callers decide when and
//! why.

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
