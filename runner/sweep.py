"""A sweep's bookends, as a Hydra callback in the launching process.

Before any job starts: create the MLflow store, experiment and one parent run (so that parallel
jobs never race to create the sqlite schema), and leave its id in the sweep dir for the jobs.
After the last job: build the compatibility matrix from the jobs' result.json files, write it
into the sweep dir, print it, log it to the parent run and close that run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_FILE = "sweep.json"


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {"parent_run_id": None, "tracking_uri": None}
        if config.mlflow.enabled:
            from runner import tracking

            parent = tracking.start_parent(config, sweep_dir)
            info.update(parent_run_id=parent.run_id, tracking_uri=parent.uri)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(info, indent=2) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner import matrix

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        m = matrix.build(matrix.record_from_result(r) for r in job_results(sweep_dir))
        paths = matrix.write(m, sweep_dir)
        print(f"\nCompatibility matrix ({sweep_dir}):\n\n{matrix.to_markdown(m)}", flush=True)
        info = sweep_info(sweep_dir)
        if info.get("parent_run_id"):
            from runner import tracking

            parent = tracking.TrackedRun(info["tracking_uri"], info["parent_run_id"])
            tracking.finish_parent(parent, paths, sweep_dir)


def job_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """The result.json of every job of a sweep, in job order."""
    paths = [p for p in sweep_dir.glob("*/result.json") if p.parent.name.isdigit()]
    return [json.loads(p.read_text()) for p in sorted(paths, key=lambda p: int(p.parent.name))]


def sweep_info(sweep_dir: Path) -> dict[str, Any]:
    """What the launching process left for the jobs: the MLflow parent run, if it opened one."""
    try:
        return json.loads((sweep_dir / SWEEP_FILE).read_text())
    except FileNotFoundError:
        return {}


def parent_run_id(sweep_dir: Path) -> str | None:
    return sweep_info(sweep_dir).get("parent_run_id")
