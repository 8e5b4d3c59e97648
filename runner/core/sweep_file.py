"""A sweep's directory: sweep.json, which the launching process writes before any job starts
(the MLflow parent run, the swept keys, how many jobs) and its jobs and runner.sync read; the
jobs' results in job order; and how far the sweep is."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core import result as results
from runner.core.files import SWEEP, TRACKING_LOST


@dataclass(frozen=True)
class Job:
    """A sweep's job as its MLflow run needs it: the parent run, its number, the swept keys."""

    parent_run_id: str
    num: int
    swept: list[str]
    store_lost: bool = False  # an earlier job found the store gone (TRACKING_LOST)


def sweep_info(sweep_dir: Path) -> dict[str, Any]:
    """What the launching process left for the jobs: the MLflow parent run, if it opened one."""
    try:
        return json.loads((sweep_dir / SWEEP).read_text())
    except FileNotFoundError:
        return {}


def write_info(sweep_dir: Path, info: dict[str, Any]) -> None:
    results.write_atomic(sweep_dir / SWEEP, json.dumps(info, indent=2) + "\n")


def note_parent(sweep_dir: Path, status: str) -> None:
    """sweep.json says whether the parent run holds the sweep's record (recorded/pending)."""
    info = sweep_info(sweep_dir)
    if info and info.get("parent_status") != status:
        info["parent_status"] = status
        write_info(sweep_dir, info)


def job(sweep_dir: Path, num: int) -> Job | None:
    """This job of the sweep in `sweep_dir`, if the sweep has a parent run."""
    info = sweep_info(sweep_dir)
    if not info.get("parent_run_id"):
        return None
    return Job(info["parent_run_id"], num, list(info.get("swept") or []),
               (sweep_dir / TRACKING_LOST).exists())


def note_lost(sweep_dir: Path) -> None:
    """A job of the sweep found its store gone: the next jobs look for it with one try only."""
    (sweep_dir / TRACKING_LOST).touch()


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The jobs' output directories (0, 1, ...), in job order."""
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def job_results(sweep_dir: Path) -> list[results.Result]:
    """The result.json of every job of a sweep that wrote one, in job order."""
    return [results.read(d) for d in job_dirs(sweep_dir) if (d / results.FILENAME).exists()]


def progress(sweep_dir: Path) -> str | None:
    """After a job: 'sweep: 5/32 jobs done (4 passed, 1 failed), 41 s, about 3 min left'."""
    info = sweep_info(sweep_dir)
    done = [r for r in job_results(sweep_dir) if r.get("status") != "running"]
    if not done:
        return None
    passed = sum(r["status"] == "passed" for r in done)
    elapsed = time.time() - info.get("started", time.time())
    total = info.get("jobs")
    line = (f"sweep: {len(done)}/{total or '?'} jobs done ({passed} passed, "
            f"{len(done) - passed} failed), {_duration(elapsed)}")
    if total and len(done) < total:
        line += f", about {_duration(elapsed / len(done) * (total - len(done)))} left"
    return line


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
