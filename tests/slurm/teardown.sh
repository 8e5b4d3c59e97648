#!/usr/bin/env bash
# Stop what setup.sh beside it started (slurmd, slurmctld, munged), each by its pid file, after
# cancelling every job; the packages and configs stay.
set -uo pipefail
stop() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file"); kill "$pid" 2>/dev/null
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null; rm -f "$file"
}
command -v scancel >/dev/null && scancel --user=root 2>/dev/null
stop /run/slurm/slurmd.pid
stop /run/slurm/slurmctld.pid
stop /run/munge/munged.pid
pkill -x slurmstepd 2>/dev/null
exit 0
