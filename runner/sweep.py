"""A sweep's bookends, as a Hydra callback in the launching process.

Before any job starts: create the MLflow store, experiment and one parent run (so that parallel
jobs never race to create the sqlite schema), and leave its id in the sweep dir for the jobs.
After the last job: build the compatibility matrix from the jobs' result.json files, write it
into the sweep dir, print it, log it to the parent run and close that run.

A sweep that ends early (Ctrl-C, SIGTERM, a launcher error) never reaches on_multirun_end: then
`close_unfinished`, called by `python -m runner` on its way out, closes it the same way with the
jobs that finished, after marking the interrupted ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner import interrupt, redact
from runner import result as results

SWEEP_FILE = "sweep.json"
# The sweep this process launched and has not closed yet (see close_unfinished), and whether
# its jobs run here (basic, joblib launchers), where they end with it: not on a SLURM cluster.
_open: list[tuple[Path, bool]] = []


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {"parent_run_id": None, "tracking_uri": None}
        with interrupt.deferred():  # a parent run created must be recorded, to be closed
            if config.mlflow.enabled:
                from runner import tracking

                try:
                    parent = tracking.start_parent(config, sweep_dir)
                except tracking.TrackingUnavailableError as e:
                    # Not a warning (what Hydra makes of a callback's exception): every job
                    # would fail the same way, unlinked to any sweep.
                    print(f"Sweep not started: {e}", file=sys.stderr)
                    raise SystemExit(1) from None
                info.update(parent_run_id=parent.run_id, tracking_uri=parent.uri)
            results.write_atomic(sweep_dir / SWEEP_FILE, json.dumps(info, indent=2) + "\n")
            local = "submitit" not in str(config.hydra.launcher.get("_target_", ""))
            _open[:] = [(sweep_dir, local)]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close(Path(config.hydra.sweep.dir).resolve(), "finished")


def close_unfinished(e: BaseException) -> None:
    """Close the sweep this process started, if it ended early: every job still `running` is
    marked interrupted (its MLflow run KILLED, with what it left), then the matrix of the jobs
    that ran is written and the parent run closed KILLED (interrupted) or FAILED."""
    if not _open:
        return
    sweep_dir, local = _open[0]
    if local:  # jobs on a cluster go on without the launching process: not ours to close
        for job_dir in job_dirs(sweep_dir):
            if (job_dir / results.FILENAME).exists():  # the job had started: how it ended
                results.read_or_crashed(job_dir, None, failure=e)
    close(sweep_dir, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
          e if local else None)


def close(sweep_dir: Path, status: str, e: BaseException | None = None) -> None:
    """The sweep's matrix from its jobs' results, printed and written; the parent run closed.
    e: what stopped the sweep early; its jobs' runs still RUNNING are closed with it."""
    from runner import matrix

    _open.clear()
    records = [matrix.record_from_result(r) for r in job_results(sweep_dir)]
    paths = {}
    if records:  # a sweep stopped before its first job wrote anything has no matrix
        m = matrix.build(records)
        paths = matrix.write(m, sweep_dir)
        print(f"\nCompatibility matrix ({sweep_dir}"
              f"{'' if status == 'finished' else ', ' + status}):\n\n"
              f"{matrix.to_markdown(m)}", flush=True)
    if (sweep_dir / "multirun.yaml").exists():
        redact.file(sweep_dir / "multirun.yaml")
    info = sweep_info(sweep_dir)
    if info.get("parent_run_id"):
        from runner import tracking

        parent = tracking.TrackedRun(info["tracking_uri"], info["parent_run_id"])
        if e is not None:
            tracking.close_running_children(parent, e)
        tracking.finish_parent(parent, paths, sweep_dir, status)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The jobs' output directories (0, 1, ...), in job order."""
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def job_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """The result.json of every job of a sweep that wrote one, in job order."""
    return [results.read(d) for d in job_dirs(sweep_dir) if (d / results.FILENAME).exists()]


def sweep_info(sweep_dir: Path) -> dict[str, Any]:
    """What the launching process left for the jobs: the MLflow parent run, if it opened one."""
    try:
        return json.loads((sweep_dir / SWEEP_FILE).read_text())
    except FileNotFoundError:
        return {}


def parent_run_id(sweep_dir: Path) -> str | None:
    return sweep_info(sweep_dir).get("parent_run_id")
