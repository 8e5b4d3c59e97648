"""Every job one MLflow run: params, tags, metrics, artifacts and status.

The Hydra process opens the run before the job process starts and closes it after that process
ends, whatever happened to it, so a crashed job never leaves a run RUNNING. The job process hands
over the per-epoch metrics as they come and the MLflow model (it alone holds the trained Keras
model), which this process logs while the job runs: runner.live, `JobRelay`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import getpass
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils import git_utils, mlflow_tags
from mlflow.utils.credentials import read_mlflow_creds
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from runner import DEFAULT_STORE_DIR, live, redact
from runner.live import RUN_ID_ENV
from runner.result import (
    DIMENSIONS,
    EXTRA_DIMENSIONS,
    FILENAME,
    GROUPS,
    first_line,
    read_or_crashed,
)

# MLflow's INFO lines (a fresh store's tables created, system metrics started and stopped) are
# its business, not the job's: the console keeps the job's own output and MLflow's warnings.
for _name in ("mlflow.store.db.utils", "mlflow.system_metrics", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)

RUN_URL_ENV = "RUNNER_MLFLOW_RUN_URL"  # where the job's run is in the UI, for its summary line
# What the experiment is for, in MLflow's own tag. (The 3.17 UI does not open it by this tag: it
# opens in its GenAI mode unless the link says WORKFLOW, measured in a headless browser.)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# The MLflow UI mode in which runs show as training runs (see TrackedRun.page).
WORKFLOW = "workflowType=machine_learning"
SYSTEM_METRICS_INTERVAL_S = 2  # MLflow's default, 10 s, gives one sample of a short job


class TrackingUnavailableError(RuntimeError):
    """The tracking store or server could not be reached."""


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


def href(uri: str, page: str) -> str:
    """A link to a UI page from a page the same UI shows: absolute on a server, from the UI's
    root for `mlflow ui` on the embedded store."""
    if uri.startswith(("http://", "https://")):
        return redact.text(f"{uri.rstrip('/')}/{page}")
    return f"/{page}"


def open_with(uri: str, page: str) -> str:
    """How to see a UI page of the store at `uri` in a browser, in one line."""
    if uri.startswith(("http://", "https://")):
        return href(uri, page)
    return f"mlflow ui --backend-store-uri {uri} --port 5000, then http://127.0.0.1:5000/{page}"


def compare_page(experiment_id: str | None, run_ids: list[str]) -> str:
    """The UI's side-by-side comparison of these runs: their params (the differing ones first
    in its parallel-coordinates plot), metrics and tags in one table."""
    import json
    from urllib.parse import quote

    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = quote(json.dumps([experiment_id]))
    return f"#/compare-runs?runs={runs}&experiments={experiments}&{WORKFLOW}"


def configure(mcfg: Any, brief: bool = False) -> tuple[str, str | None]:
    """The configured store: (tracking URI, artifact location or None).

    Also shortens MLflow's HTTP retries (defaults: 7 retries, 120 s timeout) so that an
    unreachable server is reported in seconds; the job process inherits the same settings.
    The URI is passed explicitly, never through mlflow.set_tracking_uri: that also sets
    MLFLOW_TRACKING_URI in os.environ, which the next job of a sweep would read as its config.
    """
    # brief: one try (a sweep's job looking whether a store that went away is back).
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0" if brief else str(mcfg.http_max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(mcfg.http_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    # MLflow's own "View run at" lines: the runner prints its own, which open the UI in its
    # "Model training" mode (TrackedRun.page) and never carry a password from the URI.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if mcfg.tracking_uri:
        uri, artifacts = mcfg.tracking_uri, None  # a server chooses its own artifact store
    else:
        store = Path(mcfg.store_dir or DEFAULT_STORE_DIR).resolve()
        store.mkdir(parents=True, exist_ok=True)
        uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()
    return uri, artifacts


def start(cfg: Any, output_dir: Path, overrides: list[str], sweep: Any = None,
          brief: bool = False) -> TrackedRun:
    """Create the job's run with its params and tags. `sweep`: the parent run, this job's
    number in it and the keys the sweep varies (runner.sweep.Job). The job process finds the
    run through `job_env(run)`."""
    tags = start_tags(cfg, output_dir, overrides)
    name = run_name(cfg)
    if sweep is not None:
        tags["mlflow.parentRunId"], tags["job_num"] = sweep.parent_run_id, str(sweep.num)
        name = swept_name(cfg, overrides, sweep.swept)
    run = _create_run(cfg.mlflow, name, tags, brief)
    if brief:
        configure(cfg.mlflow)  # the usual retries again for the rest of the job
    try:
        run.client.log_batch(run.run_id, params=[Param(k, v) for k, v in params(cfg).items()])
    except Exception as e:
        raise StartFailed(run, e) from e
    return run


def start_parent(cfg: Any, sweep_dir: Path, name: str) -> TrackedRun:
    """The sweep's parent run; creating it also creates the store and the experiment, once,
    before parallel jobs start (several processes creating a fresh sqlite store collide)."""
    overrides = " ".join(cfg.hydra.overrides.task)
    return _create_run(cfg.mlflow, name, {
        "runner.sweep": "true", "sweep_dir": str(sweep_dir),
        "overrides": overrides or "(defaults)", "status": "running"})


def finish_parent(run: TrackedRun, matrix_files: Mapping[str, Path], sweep_dir: Path,
                  status: str = "finished") -> None:
    """Log the matrix and close the parent run: FINISHED, or KILLED/FAILED for a sweep that
    was interrupted or broke off (status "interrupted"/"failed")."""
    client = run.client
    try:
        for path in matrix_files.values():
            client.log_artifact(run.run_id, str(path), "matrix")
        if (sweep_dir / "multirun.yaml").exists():
            client.log_artifact(run.run_id, str(sweep_dir / "multirun.yaml"))
        client.set_tag(run.run_id, "status", status)
    finally:
        client.set_terminated(run.run_id, status=run_status(
            "passed" if status == "finished" else status))


def close_running_children(parent: TrackedRun, e: BaseException) -> None:
    """The jobs of an interrupted sweep whose run is still RUNNING (their process was killed
    before it could close it): close each with what its output directory holds."""
    client = parent.client
    experiment_id = client.get_run(parent.run_id).info.experiment_id
    running = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' "
                                       "and attributes.status = 'RUNNING'")
    for child in running:
        run = TrackedRun(parent.uri, child.info.run_id)
        output_dir = Path(child.data.tags.get("output_dir", ""))
        if (output_dir / FILENAME).is_file():
            finish(run, read_or_crashed(output_dir, None, failure=e), output_dir)
        else:
            abort(run)


def store_name(mcfg: Any) -> str:
    """The configured store as a message names it, before configure() resolves it."""
    return mcfg.tracking_uri or str(mcfg.store_dir or DEFAULT_STORE_DIR)


def _create_run(mcfg: Any, name: str, tags: dict[str, str], brief: bool = False) -> TrackedRun:
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
    entry = str(Path(__file__).with_name("__main__.py"))
    tags = {
        mlflow_tags.MLFLOW_USER: read_mlflow_creds().username or getpass.getuser(),
        mlflow_tags.MLFLOW_SOURCE_NAME: entry,
        mlflow_tags.MLFLOW_SOURCE_TYPE: "LOCAL",
        mlflow_tags.MLFLOW_GIT_COMMIT: git_utils.get_git_commit(entry),
        mlflow_tags.MLFLOW_GIT_BRANCH: git_utils.get_git_branch(entry),
        mlflow_tags.MLFLOW_GIT_REPO_URL: git_utils.get_git_repo_url(entry),
    }
    return {key: value for key, value in tags.items() if value}


def experiment(client: MlflowClient, name: str, artifacts: str | None) -> str:
    """The runner's experiment in the store (created as a model-training one if missing)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifacts,
                                             tags=dict([EXPERIMENT_KIND]))
        except MlflowException as e:
            # Created meanwhile: by another runner on the same server, or by this request
            # itself when its reply timed out and the retry found the experiment there.
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
    if EXPERIMENT_KIND[0] not in found.tags:  # made by an older runner
        client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
    return found.experiment_id


def unavailable(uri: str, e: Exception) -> str:
    """Why the store at `uri` cannot be used, and what to check."""
    reason = f"{type(e).__name__}: {first_line(e) or repr(e)}"
    if re.search(r"error code 40[13]\b", reason):
        return redact.text(
            f"MLflow tracking at {uri} refused the credentials ({reason}). Check "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN): "
            "401 means unknown user or wrong password, 403 a user without permission.")
    return redact.text(
        f"MLflow tracking at {uri} is unavailable: {reason}. Check mlflow.tracking_uri (or "
        "MLFLOW_TRACKING_URI), or run with mlflow.enabled=false.")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For a sqlite store, one process at a time, and the store made whole if it is missing
    (`create_sqlite_store`): the first use of a fresh store creates its tables, and processes
    doing so at once break it (alembic: 'table already exists'); two creating the experiment at
    once, one fails. Two sweeps started together do both."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    with open(db.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            create_sqlite_store(db)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_sqlite_store(db: Path) -> None:
    """If `db` is missing, make its tables in a file beside it and link that into place.

    A process that opens the store the moment its file appears (`mlflow ui`, a script polling
    it) then finds every table. With MLflow creating them in place (~4 s of migrations), such a
    reader created them too, at the same time, and failed ('table ... already exists', alembic's
    'expected to match one row'): 3 tries in 3. Two processes creating a store at once can
    also leave it broken for good (`_alembic_tmp_tags already exists` on every open)."""
    if db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    made = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    made.unlink(missing_ok=True)
    try:
        # The default experiment's artifacts in the store's own folder, as configure() puts
        # the runner's (MLflow's default is ./mlruns, wherever a process runs).
        store = SqlAlchemyStore(f"sqlite:///{made}", (db.parent / "artifacts").as_uri())
        store.engine.dispose()
        try:
            os.link(made, db)  # never over a store made meanwhile by a process not locking
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not db.exists():
                os.replace(made, db)
    finally:
        made.unlink(missing_ok=True)


def job_env(run: TrackedRun) -> dict[str, str]:
    """What the job process needs to add to this run: the per-epoch metrics as they come, and
    the MLflow model, which MLflow logs into MLFLOW_EXPERIMENT_ID's experiment (else into
    experiment 0, 'Default', with its artifacts under ./mlruns wherever the job runs)."""
    return {RUN_ID_ENV: run.run_id, "MLFLOW_TRACKING_URI": run.uri,
            "MLFLOW_EXPERIMENT_ID": str(run.experiment_id), RUN_URL_ENV: run.url}


def swept_name(cfg: Any, overrides: list[str], swept: list[str]) -> str:
    """run_name, plus `key=value` for each swept key the name does not show yet, so that every
    job of a sweep has its own name."""
    name = run_name(cfg, swept)
    shown = {*GROUPS, "load_from"}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in swept and key not in shown:
            name += f" {override.lstrip('+~')}"
    return name[:250]


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


# A run's tag naming the result.json it holds (record_digest): runner.sync leaves such a run
# alone, and completes one without it (still RUNNING, or closed before its record was in).
RECORD_TAG = "runner.record"


def finish(run: TrackedRun, result: Mapping[str, Any], output_dir: Path) -> None:
    """Log the job's measurements, datasets and files, then close the run with the job's
    outcome."""
    client = run.client
    try:
        complete(client, run.run_id, result, output_dir, fresh=True)
    finally:
        client.set_terminated(run.run_id, status=run_status(result["status"]))


def complete(client: MlflowClient, run_id: str, result: Mapping[str, Any], output_dir: Path,
             fresh: bool = False) -> None:
    """Everything of the job's record the run does not hold yet: metrics (per-epoch ones the job
    process logged live are not logged twice), tags, dataset inputs, files, and last the record
    tag. fresh=False (runner.sync): the run may hold part of it already; only what is missing
    is added, so completing twice changes nothing."""
    have_params, have_steps, have_inputs = set(), set(), set()
    if fresh:
        model_id = logged_model_id(result)  # logged into this run by the relay, in this store
    else:
        existing = client.get_run(run_id)
        # runner.sync: result.json may name a model of the store the job ran with; this run's
        # own is the one it holds here, if any (logged live or rebuilt).
        outputs = existing.outputs.model_outputs if existing.outputs else []
        model_id = outputs[0].model_id if outputs else None
        have_params = set(existing.data.params)
        have_inputs = {d.dataset.name for d in existing.inputs.dataset_inputs}
        for phase, history in (result.get("history") or {}).items():
            for name in history:
                key = f"{phase}_{name}"
                have_steps |= {(key, m.step) for m in client.get_metric_history(run_id, key)}
        singles = set(existing.data.metrics) - {k for k, _ in have_steps}
        have_steps |= {(k, 0) for k in singles}
    todo = [m for m in metrics(result, all_phases=not fresh, model_id=model_id)
            if (m.key, m.step) not in have_steps]
    client.log_batch(run_id, metrics=todo, tags=[
        RunTag(k, redact.text(v)) for k, v in result_tags(result).items()])
    if not fresh and output_dir.joinpath(".hydra", "resolved.yaml").is_file():
        from omegaconf import OmegaConf

        on_disk = params(OmegaConf.load(output_dir / ".hydra" / "resolved.yaml"))
        missing = [Param(k, v) for k, v in on_disk.items() if k not in have_params]
        if missing:
            client.log_batch(run_id, params=missing)
    if result.get("data_sizes"):
        inputs = [d for d in dataset_inputs(result) if d.dataset.name not in have_inputs]
        if inputs:
            client.log_inputs(run_id, datasets=inputs)
    log_files(client, run_id, result, output_dir)
    client.set_tag(run_id, RECORD_TAG, record_digest(result))


def logged_model_id(result: Mapping[str, Any]) -> str | None:
    """The id of the logged model result.json says the job's run holds, if any."""
    logged = result.get("mlflow_model") or {}
    uri = str(logged.get("model_uri") or "") if logged.get("logged") else ""
    return uri.removeprefix("models:/") if uri.startswith("models:/") else None


def sweep_digest(done: list[Mapping[str, Any]]) -> str:
    """A digest of a sweep's record: its jobs' records."""
    return record_digest({"jobs": [record_digest(r) for r in done]})


def record_digest(result: Mapping[str, Any]) -> str:
    """A digest of what a run must hold of `result`, less the fields that say where the run is
    (runner.sync fills them in), not what the job did."""
    import hashlib
    import json

    where = ("tracking", "mlflow_run_id", "mlflow_run_url")
    content = json.dumps({k: v for k, v in result.items() if k not in where}, sort_keys=True,
                         default=str)
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def abort(run: TrackedRun) -> None:
    """Close the run as KILLED (the Hydra process is being interrupted)."""
    run.client.set_terminated(run.run_id, status="KILLED")


# ---- what a run holds ------------------------------------------------------------------------

# What a run's name leaves out when it is the default and no sweep varies it.
NAME_DEFAULTS = {"model": "sequential", "data": "digits"}


def run_name(cfg: Any, swept: list[str] | tuple[str, ...] = ()) -> str:
    """The combination at a glance, short enough for the runs table: e.g.
    'keras→saved_model v3 mirrored→none'; 'legacy→v3' where the generations differ; the model
    and the data only where they are not the defaults or a sweep varies them; 'from runs:/…'
    for load_from."""
    keras = cfg.keras.name if cfg.load_keras.name == cfg.keras.name else (
        f"{cfg.keras.name}→{cfg.load_keras.name}")
    extra = "".join(f" {cfg[group].name}" for group, default in NAME_DEFAULTS.items()
                    if cfg[group].name != default or group in swept)
    if cfg.load_from:
        return (f"from {cfg.load_from}→{cfg.load_api.name} {cfg.load_keras.name} "
                f"→{cfg.load_strategy.name}{extra}")[:250]
    return (f"{cfg.save_api.name}→{cfg.load_api.name} {keras} "
            f"{cfg.strategy.name}→{cfg.load_strategy.name}{extra}")


def params(cfg: Any) -> dict[str, str]:
    """The resolved config as dotted keys, values cut to MLflow's length limit."""
    from omegaconf import OmegaConf

    flat = dict(_flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
    return {k: redact.text(str(v))[:MAX_PARAM_VAL_LENGTH] for k, v in flat.items()}


def start_tags(cfg: Any, output_dir: Path, overrides: list[str]) -> dict[str, str]:
    tags = {group: str(cfg[group].name) for group in GROUPS}
    tags.update({key: str(cfg[key]) for key in EXTRA_DIMENSIONS if cfg[key]})
    tags.update({
        "status": "running",
        "overrides": " ".join(overrides) or "(defaults)",
        "output_dir": str(output_dir),
        "mlflow.note.content": f"python -m runner {' '.join(overrides)}".strip(),
    })
    return tags


def result_tags(result: Mapping[str, Any]) -> dict[str, str]:
    versions = result.get("versions") or {}
    tags = {key: str(result[key]) for key in DIMENSIONS if result.get(key) is not None}
    tags.update({
        "status": result["status"],
        "tensorflow_version": str(versions.get("tensorflow")),
        "keras_version": str(versions.get("keras")),
        "tf_keras_version": str(versions.get("tf-keras")),
        "keras_module": str(result.get("keras_module")),
        "load_keras_module": str(result.get("load_keras_module")),
    })
    if result.get("error"):
        tags.update(error_type=result["error"]["type"], error_phase=result["error"]["phase"],
                    error_message=first_line(result["error"]["message"])[:5000])
        if result["error"].get("hint"):
            tags["error_hint"] = result["error"]["hint"]
    resume = result.get("resume") or {}
    if resume.get("outcome"):
        tags["resume"] = resume["outcome"]
        cause = resume.get("cause") or resume.get("reason")
        if cause:
            tags["resume_cause"] = cause
    if result.get("distributed_variables"):
        tags["distributed_variables"] = result["distributed_variables"]
    mlflow_model = result.get("mlflow_model") or {}
    if mlflow_model.get("model_uri"):
        tags["mlflow_model_uri"] = mlflow_model["model_uri"]
    return tags


def metrics(result: Mapping[str, Any], all_phases: bool = False,
            model_id: str | None = None) -> Iterator[Metric]:
    """Per-epoch curves (step = epoch) of the phases the job process did not log live (all of
    them, all_phases=True), then the job's single numbers, linked to the run's logged model
    `model_id` as MLflow's fluent log_metric links a run's step-0 metrics to its output model:
    the model's page in the UI shows them."""
    now = int(time.time() * 1000)
    live = set() if all_phases else set(result.get("metrics_logged_live") or ())
    for phase, history in (result.get("history") or {}).items():
        if phase in live:
            continue
        for name, values in history.items():
            for epoch, value in enumerate(values):
                yield Metric(f"{phase}_{name}", float(value), now, epoch)
    singles = {
        **{f"accuracy_{k}": v for k, v in (result.get("accuracy") or {}).items()},
        **(result.get("timings") or {}),
        **(result.get("throughput") or {}),
        "max_abs_diff": result.get("max_abs_diff"),
        "artifact_bytes": result.get("artifact_bytes"),
        "resume_max_abs_diff": (result.get("resume") or {}).get("max_abs_diff"),
        "resave_max_abs_diff": (result.get("resave") or {}).get("max_abs_diff"),
        "pinned_devices": (result.get("pinned_devices") or {}).get("count"),
    }
    for name, value in singles.items():
        if value is not None:
            yield Metric(name, float(value), now, 0, model_id=model_id)


def log_files(client: MlflowClient, run_id: str, result: Mapping[str, Any],
              output_dir: Path) -> None:
    """The saved model as written, Hydra's configs, the logs, the result, curves, traceback."""
    for path in (output_dir / "result.json", output_dir / "job.log",
                 output_dir / "traceback.txt", output_dir / "workers.json",
                 *sorted(output_dir.glob("worker-*.log"))):  # multi-worker: the others' output
        if path.exists():
            client.log_artifact(run_id, str(path))
    if (output_dir / ".hydra").is_dir():
        client.log_artifacts(run_id, str(output_dir / ".hydra"), ".hydra")
    if (output_dir / "saved_model").is_dir():  # a load_from job saved nothing of its own
        client.log_artifacts(run_id, str(output_dir / "saved_model"), "saved_model")
    if result.get("history"):
        client.log_figure(run_id, curves_figure(result["history"]), "curves.png")


def import_plotting() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def warm_finish() -> None:
    """Import what `finish` draws with (matplotlib, about a second) in a background thread,
    while the job's process runs: the run then closes that much sooner after the job."""
    threading.Thread(target=import_plotting, name="runner-warm-finish", daemon=True).start()


def curves_figure(history: Mapping[str, Mapping[str, list[float]]]) -> Any:
    """Loss and accuracy per epoch, training then continued, on one epoch axis."""
    import_plotting()
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    offset = 0
    for phase, curves in history.items():
        n = max((len(v) for v in curves.values()), default=0)
        epochs = list(range(offset + 1, offset + n + 1))
        for ax, name in zip(axes, ("loss", "accuracy"), strict=True):
            if curves.get(name):
                ax.plot(epochs, curves[name], marker="o", label=phase)
        offset += n
    for ax, name in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set(xlabel="epoch", title=name)
        ax.legend()
    # Fixed margins, room for 6-character tick labels: tight_layout drew the figure once more,
    # 0.15-0.35 s after every tracked job (measured).
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    plt.close(fig)
    return fig


def run_status(status: str) -> str:
    return {"passed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")


def dataset_inputs(result: Mapping[str, Any]) -> list[Any]:
    """Each side's data as an MLflow dataset input, so the runs table's Dataset column says
    what the job ran on: e.g. 'digits (train 1437, test 360)', context training / continue."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    inputs, names = [], set()
    for side, sizes in (result.get("data_sizes") or {}).items():
        name = f"{result.get('data')} (train {sizes['train']}, test {sizes['test']})"
        if name in names:  # both sides on the same data: one input (MLflow keeps one anyway)
            continue
        names.add(name)
        dataset = MetaDataset(CodeDatasetSource({"data": str(result.get("data"))}), name=name)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[
            InputTag("mlflow.data.context", "training" if side == "train" else "continue")]))
    return inputs


# ---- the job process's part ------------------------------------------------------------------

def log_keras_model(model: Any, probe: Any, logits: Any,
                    versions: Mapping[str, str | None]) -> dict[str, Any]:
    """Log a model to MLFLOW_RUN_ID's run with MLflow's TensorFlow flavour, signature inferred
    from the probe (runner.sync, rebuilding the model of a job whose store was away). Returns
    what result.json records: the model URI, or why it could not be logged."""
    import mlflow.tensorflow
    from mlflow.models import Model, infer_signature

    try:
        info = Model.log(
            None, name="model", flavor=mlflow.tensorflow, run_id=os.environ[RUN_ID_ENV],
            model=model, signature=infer_signature(probe, logits),
            pip_requirements=live.requirements(versions))
    except Exception as e:  # recorded, not fatal: the scenario's own save/load is the subject
        return live.not_logged(e)
    logged: dict[str, Any] = {"logged": True, "model_uri": info.model_uri}
    if live.serving_env(model):
        logged["serving_env"] = live.serving_env(model)
    return logged


# The run's tags that MLflow's Model.log also gives the logged model (who, from what code).
SOURCE_TAGS = ("mlflow.user", "mlflow.source.name", "mlflow.source.type",
               "mlflow.source.git.commit")


class JobRelay:
    """While a tracked job runs, what its process hands over (runner.live) goes into its run:
    each epoch's metrics as the epoch ends, and the MLflow model as soon as it is saved, while
    the job goes on to load and continue. A thread polls the job's files; leaving the `with`
    takes what came last. A store that fails stops the relay: `finish` then logs what is
    missing, or the job's record waits for runner.sync."""

    POLL_S = 0.2

    def __init__(self, run: TrackedRun, directory: Path) -> None:
        self.run = run
        self.epochs_file, self.model_dir = directory / "epochs.jsonl", directory / "mlflow_model"
        self.logged: dict[str, int] = {}  # epochs logged, per phase
        self.failed = False
        self.model: dict[str, Any] | None = None  # the MLflow model's outcome, once seen
        self._read = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="runner-relay", daemon=True)

    def env(self) -> dict[str, str]:
        return {live.EPOCHS_ENV: str(self.epochs_file), live.MODEL_DIR_ENV: str(self.model_dir)}

    def __enter__(self) -> JobRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def apply(self, result: dict[str, Any]) -> None:
        """Into the job's result: the phases whose every epoch is in the run (`finish` logs the
        others), and where the MLflow model the job saved was logged."""
        live_phases = [phase for phase, curves in (result.get("history") or {}).items()
                       if self.logged.get(phase) == max(map(len, curves.values()), default=0)]
        if live_phases:
            result["metrics_logged_live"] = live_phases
        saved = result.get("mlflow_model") or {}
        if saved.get("saved") or self.model:  # logged, even if its process died before saying
            outcome = self.model or {"logged": False,
                                     "error": "the saved MLflow model was not found"}
            result["mlflow_model"] = {**{k: v for k, v in saved.items() if k != "saved"},
                                      **outcome}

    def _work(self) -> None:
        client = self.run.client
        while True:
            stopping = self._stop.wait(self.POLL_S)
            if not self.failed:
                self._relay_epochs(client)
            if self.model is None and self.model_dir.is_dir():
                self.model = self._log_model(client)
            if stopping:
                return

    def _relay_epochs(self, client: MlflowClient) -> None:
        try:
            with open(self.epochs_file, "rb") as f:
                f.seek(self._read)
                text = f.read()
        except FileNotFoundError:
            return
        whole = text[:text.rfind(b"\n") + 1]
        for line in whole.decode().split("\n")[:-1]:
            try:
                epoch = json.loads(line)
                client.log_batch(self.run.run_id, metrics=[
                    Metric(f"{epoch['phase']}_{k}", v, epoch["time_ms"], epoch["epoch"])
                    for k, v in epoch["values"].items()])
            except Exception:  # noqa: BLE001 - finish logs the phase whole, or sync does
                self.failed = True
                return
            self.logged[epoch["phase"]] = self.logged.get(epoch["phase"], 0) + 1
            self._read += len(line.encode()) + 1

    def _log_model(self, client: MlflowClient) -> dict[str, Any]:
        """What Model.log does, less saving the model (the job process did): a logged model in
        the run's experiment, linked to the run as its output, its files uploaded, READY."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        model_id = None
        try:
            run = client.get_run(self.run.run_id)
            logged = client.create_logged_model(
                run.info.experiment_id, name="model", source_run_id=self.run.run_id,
                params=dict(run.data.params),
                tags={k: v for k, v in run.data.tags.items() if k in SOURCE_TAGS})
            model_id = logged.model_id
            mlmodel = Model.load(str(self.model_dir / "MLmodel"))
            mlmodel.artifact_path, mlmodel.run_id = logged.artifact_location, self.run.run_id
            mlmodel.model_uuid = mlmodel.model_id = model_id
            mlmodel.save(str(self.model_dir / "MLmodel"))
            client.log_outputs(self.run.run_id, models=[LoggedModelOutput(model_id, step=0)])
            client.log_model_artifacts(model_id, str(self.model_dir))
            client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        except Exception as e:  # noqa: BLE001 - recorded; runner.sync rebuilds it later
            if model_id is not None:
                with contextlib.suppress(Exception):
                    client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
            return live.not_logged(e)
        return {"logged": True, "model_uri": f"models:/{model_id}"}


def download(uri: str, destination: Path, mcfg: Any) -> Path:
    """A `load_from` artifact URI fetched into `destination`; runs:/<id> alone means that run's
    saved_model/ folder."""
    import mlflow.artifacts

    if uri.startswith("runs:/") and "/" not in uri[len("runs:/"):].strip("/"):
        uri = uri.rstrip("/") + "/saved_model"
    tracking_uri, _ = configure(mcfg)
    destination.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(destination), tracking_uri=tracking_uri))


# ---- helpers ---------------------------------------------------------------------------------

def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node
