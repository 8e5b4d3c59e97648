"""Every job one MLflow run, every sweep one parent run: opened, handed to the job process,
closed with its outcome.

The Hydra process opens the run before the job process starts and closes it after that process
ends, whatever happened to it, so a crashed job never leaves a run RUNNING. The job process hands
over the per-epoch metrics as they come and the MLflow model (it alone holds the trained Keras
model), which this process logs while the job runs (runner.tracking.relay).
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import exceptions as mlflow_exceptions
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils import git_utils, mlflow_tags
from mlflow.utils.credentials import read_mlflow_creds
from mlflow.utils.time import get_current_time_millis

from runner.core import redact
from runner.core.files import MATRIX_DIR, MULTIRUN_YAML, RESULT
from runner.core.result import DIMENSIONS, RUN_URL_ENV, Result, read_or_crashed
from runner.core.summary import sweep_counts, sweep_words, verdict
from runner.core.sweep_file import Job, sweep_info
from runner.tracking.handover import RUN_ID_ENV
from runner.tracking.links import WORKFLOW, href, open_with, sweep_filter
from runner.tracking.record import (
    complete,
    logged_model_id,
    params,
    run_name,
    start_tags,
    swept_name,
)
from runner.tracking.store import (
    TrackingUnavailableError,
    configure,
    experiment,
    store_lock,
    store_name,
    unavailable,
)

if TYPE_CHECKING:
    from runner.core.schema import Config, Mlflow

SYSTEM_METRICS_INTERVAL_S = 2  # MLflow's default, 10 s, gives one sample of a short job


class StartFailed(Exception):
    """The job's run was created, but what follows its creation failed: `error`. The run exists
    and must be closed."""

    def __init__(self, run: TrackedRun, error: Exception) -> None:
        super().__init__(str(error))
        self.run, self.error = run, error


@dataclass(frozen=True)
class TrackedRun:
    uri: str
    run_id: str
    experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    @property
    def url(self) -> str:
        """The run in the MLflow UI on a tracking server; `runs:/<id>` for the embedded store,
        which has no UI until `mlflow ui` serves it (see `open_with`)."""
        if self.uri.startswith(("http://", "https://")):
            return href(self.uri, self.page)
        return f"runs:/{self.run_id}"

    @property
    def page(self) -> str:
        # The UI opens in its GenAI mode unless told (MLflow 3.17: the run then shows as an
        # "evaluation run"); workflowType puts it in "Model training", where runs are runs.
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}?{WORKFLOW}"

    @property
    def href(self) -> str:
        """A link to the run from a page the same UI shows (an HTML artifact)."""
        return href(self.uri, self.page)

    def open_with(self) -> str:
        """How to see the run in a browser, in one line."""
        return open_with(self.uri, self.page)


def start(cfg: Config, output_dir: Path, overrides: list[str], sweep: Job | None = None,
          brief: bool = False) -> TrackedRun:
    """Create the job's run with its params and tags. `sweep`: the parent run, this job's
    number in it and the keys the sweep varies. The job process finds the run through
    `job_env(run)`."""
    tags = start_tags(cfg, output_dir, overrides)
    name = run_name(cfg)
    if sweep is not None:
        tags["mlflow.parentRunId"], tags["job_num"] = sweep.parent_run_id, str(sweep.num)
        name = swept_name(cfg, overrides, sweep.swept)
    run = _create_run(cfg.mlflow, name, tags, brief)
    if brief:
        configure(cfg.mlflow)  # the usual retries again for the rest of the job
    try:
        # The outcome first, a placeholder (NaN) until the job ends: the compare page's plots
        # show the first metric its runs share, in the order the store first saw them.
        run.client.log_batch(run.run_id, metrics=[
            Metric("outcome", math.nan, get_current_time_millis(), 0)],
            params=[Param(k, v) for k, v in params(cfg).items()])
    except Exception as e:
        raise StartFailed(run, e) from e
    return run


def start_parent(cfg: Config, sweep_dir: Path, name: str) -> TrackedRun:
    """The sweep's parent run; creating it also creates the store and the experiment, once,
    before parallel jobs start (several processes creating a fresh sqlite store collide)."""
    overrides = " ".join(cfg.hydra.overrides.task)
    return _create_run(cfg.mlflow, name, {
        "runner.sweep": "true", "sweep_dir": str(sweep_dir),
        "overrides": overrides or "(defaults)", "status": "running"})


def _create_run(mcfg: Mlflow, name: str, tags: dict[str, str], brief: bool = False) -> TrackedRun:
    uri = store_name(mcfg)
    try:
        uri, artifacts = configure(mcfg, brief)
        with store_lock(uri):  # the store whole before MlflowClient opens it; one experiment
            client = MlflowClient(uri)
            experiment_id = experiment(client, mcfg.experiment_name, artifacts)
        tags = {**source_tags(), **tags}
        run = client.create_run(experiment_id, run_name=redact.text(name),
                                tags={k: redact.text(v) for k, v in tags.items()})
        return TrackedRun(uri, run.info.run_id, experiment_id)
    except Exception as e:
        raise TrackingUnavailableError(unavailable(uri, e)) from e


@functools.cache
def source_tags() -> dict[str, str]:
    """The tags `mlflow.start_run` adds (user, source, git commit and branch: the run page's
    "Source" and "User"), for the runner's own entry point rather than sys.argv[0], which in a
    joblib worker is loky's. Once per process: the code a sweep runs is the code it imported."""
    entry = str(Path(__file__).parents[1] / "__main__.py")
    tags = {
        mlflow_tags.MLFLOW_USER: read_mlflow_creds().username or getpass.getuser(),
        mlflow_tags.MLFLOW_SOURCE_NAME: entry,
        mlflow_tags.MLFLOW_SOURCE_TYPE: "LOCAL",
        mlflow_tags.MLFLOW_GIT_COMMIT: git_utils.get_git_commit(entry),
        mlflow_tags.MLFLOW_GIT_BRANCH: git_utils.get_git_branch(entry),
        mlflow_tags.MLFLOW_GIT_REPO_URL: git_utils.get_git_repo_url(entry),
    }
    return {key: value for key, value in tags.items() if value}


def job_env(run: TrackedRun) -> dict[str, str]:
    """What the job process needs to add to this run: the per-epoch metrics as they come, and
    the MLflow model, which MLflow logs into MLFLOW_EXPERIMENT_ID's experiment (else into
    experiment 0, 'Default', with its artifacts under ./mlruns wherever the job runs)."""
    return {RUN_ID_ENV: run.run_id, "MLFLOW_TRACKING_URI": run.uri,
            "MLFLOW_EXPERIMENT_ID": str(run.experiment_id), RUN_URL_ENV: run.url}


@contextlib.contextmanager
def system_metrics(run: TrackedRun, enabled: bool) -> Iterator[None]:
    """MLflow's own system metrics (CPU, memory; GPU when present) logged to the run while the
    block runs, every SYSTEM_METRICS_INTERVAL_S seconds."""
    if not enabled:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                   tracking_uri=run.uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def finish(run: TrackedRun, result: Result, output_dir: Path) -> None:
    """Log the job's measurements, datasets and files, then close the run with the job's
    outcome."""
    client = run.client
    try:
        complete(client, run.run_id, result, output_dir, fresh=True)
    finally:
        client.set_terminated(run.run_id, status=run_status(result["status"]))


def register(run: TrackedRun, result: Result, name: str) -> None:
    """A passed job's logged model as a new version of the registered model `name`
    (mlflow.register_model), the job's choices and verdict as the version's tags, and the
    logged model tagged with its versions as register_model does (its page links them).
    result.json's mlflow_model.registered says which version, or why none (a failure to
    register is noted, not the job's failure)."""
    model_id = logged_model_id(result)
    if result["status"] != "passed" or model_id is None:
        return
    logged = result["mlflow_model"]
    tags = {key: str(result[key]) for key in DIMENSIONS if result.get(key) is not None}
    tags["verdict"] = verdict(result)
    client = run.client
    try:
        with contextlib.suppress(mlflow_exceptions.MlflowException):  # it exists already
            client.create_registered_model(name)
        model = client.get_logged_model(model_id)
        # The model's own location, not `models:/<id>`: an embedded store resolves that with a
        # client of the global tracking URI, which the runner never sets (runner.tracking.store).
        version = client.create_model_version(name, model.artifact_location, run_id=run.run_id,
                                              tags=tags, model_id=model_id)
        versions = json.loads(model.tags.get(mlflow_tags.MLFLOW_MODEL_VERSIONS) or "[]")
        mine = {"name": name, "version": str(version.version)}
        if mine not in versions:  # a server has added it already
            client.set_logged_model_tags(model_id, {
                mlflow_tags.MLFLOW_MODEL_VERSIONS: json.dumps([*versions, mine])})
    except Exception as e:  # noqa: BLE001 - the job's record matters more than its registry entry
        logged["registered"] = {"name": name, "error": f"{type(e).__name__}: {e}"[:500]}
        return
    logged["registered"] = {"name": name, "version": int(version.version)}


def run_status(status: str) -> str:
    return {"passed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")


def abort(run: TrackedRun) -> None:
    """Close the run as KILLED (the Hydra process is being interrupted)."""
    run.client.set_terminated(run.run_id, status="KILLED")


def finish_parent(run: TrackedRun, matrix_files: Mapping[str, Path], sweep_dir: Path,
                  status: str, done: list[Result]) -> None:
    """Log the matrix, the sweep's outcome and close the parent run. The runs list shows the
    outcome on the parent's row: counts as metrics (passed, failed, resume_exact, ...), a
    `summary` tag, a name whose start fits the column ('2/4 passed: load_api × save_api'), a status
    that is FINISHED only when every job passed (KILLED for an interrupted sweep); the details
    (overrides, folder, matrix) in its description."""
    client = run.client
    counts = sweep_counts(done)
    words = sweep_words(counts)
    info = sweep_info(sweep_dir)
    try:
        for path in matrix_files.values():
            client.log_artifact(run.run_id, str(path), MATRIX_DIR)
        if (sweep_dir / MULTIRUN_YAML).exists():
            client.log_artifact(run.run_id, str(sweep_dir / MULTIRUN_YAML))
        what = info.get("what")
        name = f"{counts['passed']}/{counts['jobs']} passed: {what}" if what else None
        now = get_current_time_millis()
        client.log_batch(run.run_id, metrics=[
            Metric(key, float(n), now, 0) for key, n in counts.items()], tags=[
            RunTag("status", status if not counts["failed"] else
                   f"{status}: {counts['failed']} of {counts['jobs']} jobs failed"),
            RunTag("summary", words),
            RunTag(mlflow_tags.MLFLOW_RUN_NOTE, redact.text(parent_note(
                words, sweep_dir, info, matrix_files.get("md"))))])
        if name:
            client.update_run(run.run_id, name=name)
    finally:
        if status == "finished" and counts["failed"]:
            status = "failed"
        client.set_terminated(run.run_id, status=run_status(
            "passed" if status == "finished" else status))


def parent_note(words: str, sweep_dir: Path, info: Mapping[str, object],
                matrix_md: Path | None) -> str:
    """The parent run's description (markdown, on its page): the outcome, how the sweep was
    run, where its files are, its matrix."""
    lines = [f"**{words}**", "",
             f"- overrides: `{info.get('overrides') or '(defaults)'}`",
             f"- sweep folder: `{sweep_dir}`",
             "- each job is a child run; the matrix's cells link to them (artifact "
             f"`{MATRIX_DIR}/matrix.html`)"]
    if matrix_md is not None and matrix_md.is_file():
        lines += ["", matrix_md.read_text()]
    return "\n".join(lines)


def close_running_children(parent: TrackedRun, e: BaseException) -> None:
    """The jobs of an interrupted sweep whose run is still RUNNING (their process was killed
    before it could close it): close each with what its output directory holds."""
    client = parent.client
    experiment_id = client.get_run(parent.run_id).info.experiment_id
    running = client.search_runs(
        [experiment_id], filter_string=f"{sweep_filter(parent.run_id)} "
                                       "and attributes.status = 'RUNNING'")
    for child in running:
        run = TrackedRun(parent.uri, child.info.run_id)
        output_dir = Path(child.data.tags.get("output_dir", ""))
        if (output_dir / RESULT).is_file():
            finish(run, read_or_crashed(output_dir, None, failure=e), output_dir)
        else:
            abort(run)
