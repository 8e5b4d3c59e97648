"""A tracked sweep's parent MLflow run: opened before its first job, closed with its matrix
after the last. Imported only for a tracked sweep (it imports MLflow)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.core import sweep_file
from runner.core.result import Result
from runner.tracking import links, record, runs, store, sync


def open_parent(config: DictConfig, sweep_dir: Path, name: str) -> dict[str, Any]:
    """The parent run, for sweep.json: its id, store and experiment. A store that cannot be used
    stops the sweep before its first job (exit 1): every job would fail the same way, unlinked
    to any sweep. (Not a warning, which is what Hydra makes of a callback's exception.)"""
    try:
        parent = runs.start_parent(config, sweep_dir, name)
    except store.TrackingUnavailableError as e:
        print(f"Sweep not started: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return {"parent_run_id": parent.run_id, "tracking_uri": parent.uri,
            "experiment_id": parent.experiment_id}


class Parent:
    """The parent run of a sweep whose jobs are `done`, and the UI links its matrix carries."""

    def __init__(self, info: Mapping[str, Any], done: list[Result]) -> None:
        self.info, self.done = info, done
        self.run = runs.TrackedRun(info["tracking_uri"], info["parent_run_id"],
                                   info.get("experiment_id"))
        run_ids = [r["mlflow_run_id"] for r in done if r.get("mlflow_run_id")]
        # The UI page comparing the sweep's runs.
        self.compare = links.compare_page(info.get("experiment_id"), run_ids) if run_ids else None
        self.compare_link = links.href(self.run.uri, self.compare) if self.compare else None
        # The experiment's runs list filtered to the sweep's jobs, unfolded.
        self.runs = links.runs_page(info.get("experiment_id"), info["parent_run_id"])
        self.runs_link = links.href(self.run.uri, self.runs)

    def run_link(self, run_id: str) -> str:
        return runs.TrackedRun(self.run.uri, run_id, self.info.get("experiment_id")).href

    def close(self, paths: Mapping[str, Path], sweep_dir: Path, status: str,
              e: BaseException | None) -> None:
        """Its matrix logged, its record tagged, closed; the links printed, or, if a record of
        the sweep is pending, one sync."""
        parent = self.run
        try:
            if e is not None:
                runs.close_running_children(parent, e)
            runs.finish_parent(parent, paths, sweep_dir, status, self.done)
            parent.client.set_tag(parent.run_id, record.RECORD_TAG,
                                  record.sweep_digest(self.done))
        except Exception as lost:  # the store went away: the record is on disk
            print(f"Could not close the sweep's parent run: "
                  f"{store.unavailable(parent.uri, lost)}", file=sys.stderr, flush=True)
            sweep_file.note_parent(sweep_dir, "pending")
        pending = [r for r in self.done if (r.get("tracking") or {}).get("status") == "pending"]
        if pending or sweep_file.sweep_info(sweep_dir).get("parent_status") == "pending":
            sync_once(sweep_dir, self.info)
        else:
            print(f"MLflow, this sweep's jobs in the runs list: "
                  f"{links.open_with(parent.uri, self.runs)}", flush=True)
            print(f"Its parent run (the outcome, the matrix linking each cell to its run): "
                  f"{parent.open_with()}", flush=True)
            if self.compare:
                print(f"Its runs side by side: {links.open_with(parent.uri, self.compare)}",
                      flush=True)


def sync_once(sweep_dir: Path, info: Mapping[str, Any]) -> None:
    """Try once (bounded by the HTTP settings) to bring the store up to date with the sweep's
    pending records; say what remains pending and how to sync it later."""
    print(f"MLflow was unreachable during the sweep: syncing {sweep_dir} once ...", flush=True)
    outcomes = sync.sync([sweep_dir], OmegaConf.create(info["mlflow"]))
    left = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.what != "up to date":
            print(f"  {o.line()}", flush=True)
    if left:
        print(f"{len(left)} record(s) still pending; when the store is back: "
              f"python -m runner.sync {sweep_dir}", flush=True)
