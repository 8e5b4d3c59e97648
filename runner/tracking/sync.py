"""Bring an MLflow store up to date with what is on disk (`python -m runner.sync` is its
command).

A job's output directory is the record of truth (result.json, job.log, saved_model/, the
configs). For every job under the paths given this creates the run of a job that has none in the
store, completes a run that is RUNNING or lacks part of the record, sets its final status, and
does the same for a sweep's parent run with its matrix. Idempotent: a run that holds its job's
record (its `runner.record` tag) is left alone. Runs recorded in one store are pushed into
another the same way, each found again by its job's output directory, so never pushed twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from runner.core import files, redact, sweep_file
from runner.core import result as results
from runner.core.text import first_line
from runner.tracking import matrix, record
from runner.tracking.handover import MODEL_NAME_ENV, RUN_ID_ENV
from runner.tracking.links import compare_page, href, runs_page
from runner.tracking.runs import TrackedRun, finish_parent, run_status
from runner.tracking.store import configure, experiment, store_lock, store_name, unavailable

if TYPE_CHECKING:
    from runner.core.schema import Mlflow

# The job process that rebuilds a job's MLflow model from its saved .keras file.
RELOG_MODULE = "runner.job.relog"


@dataclass
class Outcome:
    path: Path
    what: str  # created, completed, up to date, skipped, failed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.what != "failed"

    def line(self) -> str:
        return f"{self.what:<10} {self.path}{': ' + self.detail if self.detail else ''}"


def sync(paths: list[Path], mcfg: Mlflow) -> list[Outcome]:
    """Sync every job (and then every sweep's parent) found under `paths` into `mcfg`'s store."""
    jobs, sweeps = find(paths)
    try:
        uri, artifacts = configure(mcfg)
        with store_lock(uri):  # MlflowClient, too, would make a missing store
            client = MlflowClient(uri)
            experiment_id = experiment(client, mcfg.experiment_name, artifacts)
    except Exception as e:  # noqa: BLE001 - the store is away: nothing can be synced
        reason = unavailable(store_name(mcfg), e)
        return [Outcome(p, "failed", reason) for p in [*jobs, *sweeps]]
    store = Store(client, uri, experiment_id, mcfg)
    parents = {sweep: store.parent_of(sweep) for sweep in sweeps}
    outcomes = [store.sync_job(job, parents.get(job.parent)) for job in jobs]
    outcomes += [store.sync_sweep(sweep, parents[sweep]) for sweep in sweeps]
    return outcomes


def find(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """The job directories (holding result.json) and sweep directories (holding sweep.json)
    under `paths`, each once, in order."""
    jobs: list[Path] = []
    sweeps: list[Path] = []
    for path in paths:
        path = path.resolve()
        for found in sorted(path.rglob(results.FILENAME)) if path.is_dir() else []:
            if found.parent not in jobs and not any(p.name.startswith(".") for p in
                                                    found.relative_to(path).parents):
                jobs.append(found.parent)
        for found in sorted(path.rglob(files.SWEEP)) if path.is_dir() else []:
            if found.parent not in sweeps:
                sweeps.append(found.parent)
    return jobs, sweeps


@dataclass
class Store:
    client: Any
    uri: str
    experiment_id: str
    mcfg: Mlflow

    def find_run(self, output_dir: Path, run_id: str | None) -> Any:
        """The job's run in this store: by its id if the store knows it, else by its output
        directory (a run pushed from another store)."""
        if run_id:
            try:
                run = self.client.get_run(run_id)
                if run.info.experiment_id == self.experiment_id:
                    return run
            except Exception:  # noqa: BLE001 - not this store's run
                pass
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.output_dir = '{output_dir}'",
            max_results=1)
        return found[0] if found else None

    def sync_job(self, job: Path, parent_run_id: str | None) -> Outcome:
        try:
            result = results.read(job)
        except (OSError, ValueError) as e:
            return Outcome(job, "skipped", f"unreadable {results.FILENAME}: {e}")
        if result.get("status") == "running":
            return Outcome(job, "skipped", "still running (or its process died: run the "
                                           "runner again to close it)")
        try:
            run = self.find_run(job, result.get("mlflow_run_id"))
            digest = record.record_digest(result)
            if run is not None and run.info.status != "RUNNING" and \
                    run.data.tags.get(record.RECORD_TAG) == digest:
                self.note(job, result, run.info.run_id)
                return Outcome(job, "up to date", f"runs:/{run.info.run_id}")
            what = "completed"
            if run is None:
                what = "created"
                run = self.create(job, result, parent_run_id)
            elif parent_run_id and run.data.tags.get("mlflow.parentRunId") != parent_run_id:
                self.client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_run_id)
            run_id = run.info.run_id
            detail = self.log_model(job, result, run_id)
            record.complete(self.client, run_id, result, job)
            self.client.set_terminated(run_id, status=run_status(result["status"]))
            self.note(job, result, run_id)
            return Outcome(job, what, f"runs:/{run_id}{detail}")
        except Exception as e:  # noqa: BLE001 - one job's failure is reported, the rest go on
            return Outcome(job, "failed", unavailable(self.uri, e))

    def create(self, job: Path, result: results.Result, parent_run_id: str | None) -> Any:
        """A run for a job that has none here: named and tagged as the live runner does."""
        cfg = OmegaConf.load(files.hydra_file(job))
        tags = record.start_tags(cfg, job, list(result.get("overrides") or []))
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
            tags["job_num"] = job.name
        tags["runner.synced"] = "true"
        run = self.client.create_run(self.experiment_id, run_name=record.run_name(cfg),
                                     tags=tags, start_time=_start_ms(job))
        return run

    def log_model(self, job: Path, result: results.Result, run_id: str) -> str:
        """The MLflow model, if the job did not log one into this run: rebuilt in a job process
        of the model's Keras generation from saved_model/ where that is a Keras file; otherwise
        a note of why not."""
        logged = result.get("mlflow_model") or {}
        if logged.get("logged") and (logged.get("model_uri") or "") and self.has_model(run_id):
            return ""
        if not wanted_model(job):  # mlflow.log_model=false: the job meant to log none
            return ""
        stored = job / files.SAVED_MODEL
        with_file = json.loads((stored / files.SAVED_WITH).read_text()) \
            if (stored / files.SAVED_WITH).is_file() else {}
        model_file = stored / str(with_file.get("model_file", ""))
        if not with_file or model_file.suffix != ".keras" or not model_file.is_file():
            return " (MLflow model not rebuilt: no .keras file of the job to rebuild it from)"
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri,
               "MLFLOW_EXPERIMENT_ID": self.experiment_id, RUN_ID_ENV: run_id,
               MODEL_NAME_ENV: record.model_name(result),
               "TF_USE_LEGACY_KERAS": "1" if with_file.get("keras_module") == "tf_keras" else "0"}
        proc = subprocess.run([sys.executable, "-m", RELOG_MODULE, str(job)],
                              env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return f" (MLflow model not rebuilt: {first_line(proc.stderr[-500:])})"
        return " (MLflow model rebuilt from saved_model/)"

    def has_model(self, run_id: str) -> bool:
        run = self.client.get_run(run_id)
        return bool(run.outputs and run.outputs.model_outputs)

    def note(self, job: Path, result: results.Result, run_id: str) -> None:
        """A job whose record was pending says where its run is now. (One recorded already, in
        another store, keeps saying where it was recorded first.)"""
        if (result.get("tracking") or {}).get("status") == "recorded":
            return
        result["tracking"] = {"status": "recorded", "run_id": run_id,
                              "uri": redact.text(self.uri)}
        result["mlflow_run_id"] = result.get("mlflow_run_id") or run_id
        results.write(job, result)

    def parent_of(self, sweep: Path) -> str | None:
        """The sweep's parent run here: its own if this store has it, the one found by its
        sweep directory (pushed before), or a new one; None for an untracked sweep."""
        info = sweep_file.sweep_info(sweep)
        if not info.get("parent_run_id"):
            return None
        try:
            try:
                run = self.client.get_run(info["parent_run_id"])
                if run.info.experiment_id == self.experiment_id:
                    return run.info.run_id
            except Exception:  # noqa: BLE001 - not this store's run
                pass
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.sweep_dir = '{sweep}'", max_results=1)
            if found:
                return found[0].info.run_id
            return self.client.create_run(
                self.experiment_id, run_name=info.get("name") or f"sweep {sweep.name}",
                start_time=_start_ms(sweep),
                tags={"runner.sweep": "true", "sweep_dir": str(sweep), "status": "running",
                      "runner.synced": "true"}).info.run_id
        except Exception:  # noqa: BLE001 - reported by sync_sweep
            return None

    def sync_sweep(self, sweep: Path, parent_run_id: str | None) -> Outcome:
        if parent_run_id is None:
            if not sweep_file.sweep_info(sweep).get("parent_run_id"):
                return Outcome(sweep, "skipped", "an untracked sweep (mlflow.enabled=false)")
            return Outcome(sweep, "failed", f"its parent run could not be found or made at "
                                            f"{self.uri}")
        try:
            run = self.client.get_run(parent_run_id)
            done = sweep_file.job_results(sweep)
            digest = record.sweep_digest(done)
            if run.info.status != "RUNNING" and run.data.tags.get(record.RECORD_TAG) == digest:
                return Outcome(sweep, "up to date", f"parent runs:/{parent_run_id}")
            finished = all(r.get("status") != "running" for r in done)
            # The matrix into a folder of its own: the sweep's files link to the runs of the
            # store it ran against, these to this store's.
            with tempfile.TemporaryDirectory(prefix="runner-sync-") as out:
                paths = {}
                if done:
                    here = [self.find_run(Path(r["output_dir"]), r.get("mlflow_run_id"))
                            for r in done]
                    m = matrix.build(matrix.record_from_result(
                        {**r, "mlflow_run_id": found.info.run_id if found else None})
                        for r, found in zip(done, here, strict=True))
                    ids = [found.info.run_id for found in here if found]
                    paths = matrix.write(m, Path(out), lambda rid: TrackedRun(
                        self.uri, rid, self.experiment_id).href, href(
                        self.uri, compare_page(self.experiment_id, ids)), href(
                        self.uri, runs_page(self.experiment_id, parent_run_id)))
                finish_parent(
                    TrackedRun(self.uri, parent_run_id, self.experiment_id), paths,
                    sweep, "finished" if finished else "interrupted", done)
            self.client.set_tag(parent_run_id, record.RECORD_TAG, digest)
            sweep_file.note_parent(sweep, "recorded")
            return Outcome(sweep, "completed", f"parent runs:/{parent_run_id} with its matrix")
        except Exception as e:  # noqa: BLE001
            return Outcome(sweep, "failed", unavailable(self.uri, e))


def wanted_model(job: Path) -> bool:
    """Whether the job's config asked for an MLflow model (mlflow.log_model)."""
    resolved = files.hydra_file(job)
    if not resolved.is_file():
        return True
    return bool(OmegaConf.select(OmegaConf.load(resolved), "mlflow.log_model", default=True))


def _start_ms(job: Path) -> int | None:
    try:
        return int(files.hydra_file(job, files.HYDRA_CONFIG).stat().st_mtime * 1000)
    except OSError:
        return None
