#!/usr/bin/env bash
# servercpu.sh PROCESS BENCH N: runs one benchmark case of this directory
# with -benchtime Nx and prints, beside its result, the CPU that the named
# server process (redis-server, kfake, postgres, beam.smp) spent during the
# run, per event: what cpu-ns/op, this process's own CPU, leaves out.
# Filling a store before the timer starts is counted too: use it for cases
# whose setup does not touch that server.
set -euo pipefail
name=$1 re=$2 n=$3
pids=$(pgrep -x "$name") || { echo "no process named $name" >&2; exit 1; }
ticks() {
  local t=0 p f
  for p in $pids; do
    read -r -a f <"/proc/$p/stat"
    t=$((t + f[13] + f[14])) # utime + stime (the command name has no spaces)
  done
  echo "$t"
}
cd "$(dirname "$0")"
before=$(ticks)
go test -run '^$' -bench "$re" -benchtime "${n}x" | grep '^Benchmark'
after=$(ticks)
awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$n" -v p="$name" \
  'BEGIN { printf "%s: %.2f µs of CPU per event (%d ticks)\n", p, t / hz * 1e6 / n, t }'
