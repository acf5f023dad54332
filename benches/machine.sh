#!/usr/bin/env bash
# Prints, as one Markdown line, what about this machine moves latency figures: kernel, CPUs, the
# idle policy (on a VM whose guest halts without polling, every wake-up is a VM exit: it moved
# ringkv's `always` p50 at one connection by 40%; BENCHMARKS.md, "Where a lone `always` write
# waits"), and the disk's write cache. Usage: benches/machine.sh [DIR]  (DIR: the data's file
# system, default /var/tmp). Benchmark scripts print it in their reports.
dir=${1:-/var/tmp}
read_or() { cat "$1" 2>/dev/null || echo "$2"; }
idle_driver=$(read_or /sys/devices/system/cpu/cpuidle/current_driver none)
halt_poll=$(read_or /sys/module/haltpoll/parameters/guest_halt_poll_ns -)
device=$(df --output=source "$dir" 2>/dev/null | tail -1)
disk=$(basename "$(readlink -f "/sys/class/block/$(basename "$device")/.." 2>/dev/null || true)")
[ -e "/sys/block/$disk/queue" ] || disk=$(basename "$device")
cache=$(read_or "/sys/block/$disk/queue/write_cache" unknown)
fua=$(read_or "/sys/block/$disk/queue/fua" unknown)
model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo "machine: Linux $(uname -r), $(nproc) CPUs ($model), cpuidle $idle_driver (guest_halt_poll_ns $halt_poll), $dir on $device (write cache: $cache, FUA: $fua)"
