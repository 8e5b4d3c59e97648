"""While a SLURM sweep runs: which of its jobs SLURM keeps pending, and why. (The submitit
launcher itself waits silently, forever for a job that asks for more than the cluster has.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

# SLURM's reasons for a pending job that no wait will ever satisfy (squeue's %r).
NEVER_SCHEDULED = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
                   "ReqNodeNotAvail", "InvalidQOS", "QOSMaxCpuPerJobLimit", "AssocMaxJobsLimit"}
PENDING_WATCH_S = 10


def start_pending_watch(submitit_dir: Path) -> threading.Thread:
    """A daemon thread that asks squeue every PENDING_WATCH_S seconds and says each new
    (job, reason) once."""
    watch = threading.Thread(target=_watch_pending, args=(submitit_dir,), daemon=True,
                             name="runner-pending-watch")
    watch.start()
    return watch


def _watch_pending(submitit_dir: Path) -> None:
    told: set[tuple[str, str]] = set()
    while True:
        time.sleep(PENDING_WATCH_S)
        for job_id, reason in pending_jobs(submitit_dir):
            if (job_id, reason) in told:
                continue
            told.add((job_id, reason))
            print(pending_message(job_id, reason), file=sys.stderr, flush=True)


def pending_jobs(submitit_dir: Path) -> list[tuple[str, str]]:
    """(SLURM job id, reason) of this sweep's jobs that are PENDING, from squeue."""
    ids = [p.name for p in submitit_dir.glob("*") if p.is_dir() and p.name.split("_")[0].isdigit()]
    if not ids or shutil.which("squeue") is None:
        return []
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [(job, reason) for job, state, reason in
            (line.split("|", 2) for line in out.splitlines() if line.count("|") == 2)
            if state == "PENDING"]


def pending_message(job_id: str, reason: str) -> str:
    if reason in NEVER_SCHEDULED:
        return (f"SLURM job {job_id} of this sweep is PENDING ({reason}): it asks for more than "
                "the partition offers and will never start (e.g. hydra.launcher.nodes larger "
                "than the partition's nodes; on one node: hydra.launcher.nodes=1 "
                "hydra.launcher.tasks_per_node=2). Stop the sweep (Ctrl-C), scancel "
                f"{job_id}, and choose what the cluster has (sinfo).")
    return f"SLURM job {job_id} of this sweep is PENDING ({reason}): waiting to be scheduled."
