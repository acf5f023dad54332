#!/usr/bin/env python3
# Does the disk charge for a WAL write in 512-byte sectors instead of 4 KiB blocks? (BENCHMARKS.md,
# issue 14, "The device does not charge for a sector".) Replays the WAL's pattern with O_DIRECT
# into a pre-written 64 MiB file: each write appends 144 bytes (one record) and rewrites the
# partial unit before it, from the unit's start to the next unit boundary. 20,000 writes per run,
# units alternating, 5 rounds; prints p50 and p99 per run.
#   python3 benches/ab/wal_unit_latency.py [dsync]     (dsync: the file opened O_DSYNC)
# The file goes to $DIR (default /var/tmp; it needs O_DIRECT, not tmpfs) and is removed after.
import mmap
import os
import sys
import time

path = os.path.join(os.environ.get("DIR", "/var/tmp"), f"wal-unit-latency-{os.getpid()}.dat")
flags = os.O_RDWR | os.O_CREAT | os.O_DIRECT | (os.O_DSYNC if "dsync" in sys.argv[1:] else 0)
fd = os.open(path, flags)
size = 64 << 20
buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs; all zeros
for off in range(0, size, 1 << 20):  # pre-written, as a WAL segment is
    os.pwrite(fd, buf, off)
os.fsync(fd)


def run(unit, n=20000):
    end, lat = 0, []
    for _ in range(n):
        end += 144
        start = (end - 144) // unit * unit
        stop = -(-end // unit) * unit
        t = time.perf_counter_ns()
        os.pwritev(fd, [memoryview(buf)[: stop - start]], start)
        lat.append(time.perf_counter_ns() - t)
    lat.sort()
    return lat[len(lat) // 2] / 1000, lat[len(lat) * 99 // 100] / 1000


try:
    for r in range(5):
        for unit in (4096, 512):
            p50, p99 = run(unit)
            print(f"round {r + 1} unit {unit}: p50 {p50:.1f} us p99 {p99:.1f} us", flush=True)
finally:
    os.close(fd)
    os.remove(path)
