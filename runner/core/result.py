"""result.json: the contract later tools and users' scripts read, its fields defined once.

`Result` lists every field a job's result may hold; `new_result` writes the ones every result
has, and the job adds the rest as it goes. `format_version` says which contract a file follows:
1 since the contract was written down (files without it were written by earlier runners and
read the same way). Written atomically (temporary name, then rename). While a job runs it holds
`status: running` and the current `phase`, so a crashed job still says where it died.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from runner.core import redact
from runner.core.files import RESULT

if TYPE_CHECKING:
    from runner.core.schema import Config

FORMAT_VERSION = 1
FILENAME = RESULT
# The user's choices, one per config group, as result.json and MLflow tags name them.
GROUPS = ("strategy", "load_strategy", "save_api", "load_api", "model", "data", "keras",
          "load_keras")
# The choices a `load_from` job takes from the model it loads, not from its config.
TRAIN_SIDE = ("strategy", "save_api", "model", "keras")
# Top-level choices besides the groups, null unless set: where the model came from, the step.
EXTRA_DIMENSIONS = ("load_from", "tutorial_step")
# Options that make another cell of the same groups (`variants`), null when at their default.
VARIANTS = ("train_variant", "load_variant")
# Each side's TensorFlow/Keras release (`release`), null when installed: this environment's.
RELEASES = ("tf", "load_tf")
# Every dimension a job differs by.
DIMENSIONS = (*GROUPS, *EXTRA_DIMENSIONS, *VARIANTS, *RELEASES)
MESSAGE_LIMIT = 2000

Status = Literal["running", "passed", "failed", "interrupted"]
ENDED = ("passed", "failed", "interrupted")


class Error(TypedDict):
    type: str  # the exception's class name
    message: str
    phase: str  # train, data, save, mlflow_model, resume, load, verify, continue, resave, ...
    hint: str | None  # runner.core.hints
    # Where the side that failed ran in another release's environment: 'tf=v2.15: tensorflow
    # 2.15.1, tf-keras 2.15.1' (an API that release lacks fails as data naming it).
    release: str | None


class Replicas(TypedDict):
    train: int | None
    load: int | None


class Accuracy(TypedDict):
    after_train: float | None
    after_load: float | None
    after_continue: float | None


class Optimizer(TypedDict):
    saved: dict[str, int] | None  # {iterations, variables}
    loaded: dict[str, int] | None
    new_optimizer: bool | None


class Resume(TypedDict, total=False):
    """runner.core.resume: can the loaded model keep training with the original's numbers?"""

    outcome: str  # exact, drifted, error, n/a
    max_abs_diff: float | None
    cause: str | None
    hint: str | None
    reason: str  # why n/a
    error: str  # outcome error: what the steps raised
    tolerance: float
    steps: int
    global_batch: int
    recipe: str
    seconds: float


class Process(TypedDict):
    pid: int
    start: Literal["forked", "new"]


class Tracking(TypedDict, total=False):
    status: Literal["recorded", "pending"]
    run_id: str | None
    reason: str  # pending: why the store could not be used
    uri: str  # recorded by runner.sync into another store


class MlflowModel(TypedDict, total=False):
    logged: bool | None  # None: saved by the job process, not yet logged
    saved: bool
    model_uri: str
    serving_env: dict[str, str]
    error: str
    registered: dict[str, Any]  # mlflow.register_model: {name, version} or {name, error}


class _Always(TypedDict):
    """What every result holds from the start (new_result)."""

    format_version: int
    status: Status
    strategy: str
    load_strategy: str
    save_api: str
    load_api: str
    model: str
    data: str
    keras: str
    load_keras: str
    load_from: str | None
    tutorial_step: str | None
    train_variant: str | None  # `variants`: e.g. "mixed_float16 weights_only"
    load_variant: str | None  # e.g. "build_first=false"
    tf: str | None  # `release`: the training side's release (v2.15), null when installed
    load_tf: str | None
    # What the loaded model is verified against: "stored", the probe logits saved with it (a
    # runner job's); "native", the artifact loaded with its own format's API outside any
    # strategy (a model saved outside the runner: runner.job.native).
    reference: str
    replicas: Replicas
    error: Error | None
    max_abs_diff: float | None
    tolerance: float
    accuracy: Accuracy
    timings: dict[str, float | None]  # train_s, save_s, load_s, continue_s, resume_s, ...
    throughput: dict[str, float | None]  # train_examples_per_s, continue_examples_per_s
    history: dict[str, dict[str, list[float]]]  # phase -> loss/accuracy per epoch
    resume: Resume | None
    optimizer: Optimizer
    random_layers: list[str] | None
    distributed_variables: str | None  # "6/6"
    pinned_devices: dict[str, Any] | None  # {count, first}
    resave: dict[str, Any] | None  # {max_abs_diff, error}
    artifact: str | None
    artifact_bytes: int | None
    io_device: str | None
    notes: list[str]
    overrides: list[str]
    output_dir: str
    mlflow_run_id: str | None
    mlflow_run_url: str | None
    devices: list[str] | None
    process: Process
    keras_module: str | None  # keras or tf_keras: what tf.keras was on the train side
    load_keras_module: str | None
    versions: dict[str, str | None]  # the training side's process's (`versions`)
    load_versions: dict[str, str | None]  # the load side's process's


class Result(_Always, total=False):
    """Every field a result may hold: _Always's, and what the job adds as it goes."""

    phase: str  # while running, and where a failed job failed
    clock: dict[str, float]  # when job_start, run_opened, process_start, prepared, process_end
    data_sizes: dict[str, dict[str, int]]  # side -> {train, test}
    # after_train/after_load/after_continue -> the model's own compiled loss and metrics, where
    # the argmax accuracy does not fit its outputs (runner.job.accuracy)
    metrics: dict[str, dict[str, float]]
    caveat: dict[str, Any]  # model.save_before_fit
    saved_with: dict[str, Any]  # a load_from job: the loaded model's saved_with.json
    cluster: dict[str, Any]  # a multi-worker job: {workers, task, spec}
    cluster_start: dict[str, Any]  # a multi-worker job: {spec, me, joined}
    mlflow_model: MlflowModel
    metrics_logged_live: list[str]  # the phases the relay logged epoch by epoch
    continue_from_step: int  # the training's epochs: continuing's first step on the curves
    fit_params: dict[str, str]  # the training's epochs, batch_size, optimizer_<key> (autolog's)
    tracking: Tracking
    # save_api=backup_and_restore: the training killed and started again, against the same
    # training uninterrupted (runner.job.interruption): killed_at {epoch, batch},
    # restarted_at_epoch, epochs_after_restart, optimizer_steps {resumed, uninterrupted},
    # max_abs_diff (weights), tolerance, data_order_kept, outcome (exact, drifted), cause, hint
    interruption: dict[str, Any]
    # A sweep's cell that loaded another cell's training (runner.core.trainings): {job,
    # output_dir, mlflow_run_id} of the cell that trained; its training's fields are that one's.
    trained_by: dict[str, Any]


STARTED_ENV = "RUNNER_JOB_PROCESS_START"  # set to "forked" by runner.launcher.fork_server
RUN_URL_ENV = "RUNNER_MLFLOW_RUN_URL"  # where the job's run is in the UI, for its summary line
# The job's Hydra overrides, as JSON, for its result: in the environment of its processes, never
# on their command lines (which any local user can read).
OVERRIDES_ENV = "RUNNER_JOB_OVERRIDES"


def this_process() -> Process:
    """The job process (the last one, for a job whose sides run in two): its pid, and how it
    started: "forked" from the fork server's process (TensorFlow imported, its runtime fresh)
    or "new" (a new Python process)."""
    start = "forked" if os.environ.get(STARTED_ENV) == "forked" else "new"
    return {"pid": os.getpid(), "start": start}


def variants(cfg: Config) -> dict[str, str | None]:
    """The options beside the groups that change what a cell measures, in a word each:
    train_variant (train.precision, save_api.weights_only, BackupAndRestore's save_freq and
    interrupt), load_variant (load_api.build_first=false); null at their defaults."""
    fit, save, load_api = (cfg.get(group) or {} for group in ("train", "save_api", "load_api"))
    train, load = [], []
    if fit.get("precision") not in (None, "float32"):
        train.append(str(fit.get("precision")))
    if save.get("weights_only"):
        train.append("weights_only")
    if save.get("save_freq") not in (None, "epoch"):
        train.append(f"save_freq={save.get('save_freq')}")
    if save.get("interrupt") is False:
        train.append("uninterrupted")
    if load_api.get("build_first") is False:
        load.append("build_first=false")
    return {"train_variant": " ".join(train) or None, "load_variant": " ".join(load) or None}


def release(cfg: Config, key: str) -> str | None:
    """A side's release as results name it (tf=v2.16, tf.keras_version=3.3.3: 'v2.16
    keras=3.3.3'); None for the installed one."""
    node = cfg.get(key)
    if node is None or node.name == "installed":
        return None
    version = node.get("keras_version")
    return node.name + (f" keras={version}" if version and f"keras{version}" not in node.name
                        else "")


def new_result(cfg: Config, out: Path, overrides: list[str],
               mlflow_run_id: str | None = None) -> Result:
    """The result before anything ran: the combination, empty measurements."""
    result: Result = {
        "format_version": FORMAT_VERSION,
        "status": "running",
        "phase": "train",
        **{group: cfg[group].name for group in GROUPS},  # type: ignore[typeddict-item]
        **{key: cfg[key] for key in EXTRA_DIMENSIONS},
        **variants(cfg),  # type: ignore[typeddict-item]
        **{key: release(cfg, key) for key in RELEASES},  # type: ignore[typeddict-item]
        "reference": "stored",
        "replicas": {"train": None, "load": None},
        "error": None,
        "max_abs_diff": None,
        "tolerance": cfg.verify.tolerance,
        "accuracy": {"after_train": None, "after_load": None, "after_continue": None},
        "timings": {"train_s": None, "save_s": None, "load_s": None, "continue_s": None,
                    "resume_s": None},
        "throughput": {"train_examples_per_s": None, "continue_examples_per_s": None},
        "history": {},
        # Can it keep training with the same numbers? (runner.job.resume)
        "resume": None,
        "optimizer": {"saved": None, "loaded": None, "new_optimizer": None},
        "random_layers": None,
        "distributed_variables": None,
        "pinned_devices": None,
        "resave": None,
        "artifact": None,
        "artifact_bytes": None,
        "io_device": cfg.io_device,
        "notes": [f"save_api=auto: saved with {cfg.save_api.name}, the save API the seed "
                  f"pairs with load_api={cfg.save_api.paired_with}"]
                 if cfg.save_api.get("paired_with") else [],
        "overrides": overrides,
        "output_dir": str(out),
        "mlflow_run_id": mlflow_run_id,
        "mlflow_run_url": os.environ.get(RUN_URL_ENV) if mlflow_run_id else None,
        "devices": None,
        "process": this_process(),
        "keras_module": None,
        "load_keras_module": None,
        "versions": versions(),
        "load_versions": versions(),
    }
    return result


def set_error(result: Result, e: BaseException, phase: str, hint: str | None) -> None:
    """Mark the result failed (or interrupted, for Ctrl-C) by `e` in `phase`."""
    result["status"] = "failed" if isinstance(e, Exception) else "interrupted"
    result["error"] = {
        "type": type(e).__name__,
        "message": (str(e) or repr(e))[:MESSAGE_LIMIT],
        "phase": phase,
        "hint": hint,
        "release": None,
    }


def not_started(cfg: Config, out: Path, overrides: list[str], e: BaseException,
                phase: str) -> Result:
    """A failed result for a job that could not start (e.g. its tracking server is down)."""
    result = new_result(cfg, out, overrides)
    result.pop("phase")
    set_error(result, e, phase, None)
    return result


def versions() -> dict[str, str | None]:
    """Python's and the libraries' versions, from package metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for dist in ("tensorflow", "keras", "tf-keras", "tensorflow-hub", "tensorflow-datasets",
                 "numpy", "hydra-core", "omegaconf", "mlflow"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


def stamp(result: Result | dict[str, Any], event: str, keep: bool = False) -> None:
    """When `event` happened (Unix seconds) in result["clock"], which says where a job's wall
    time went besides its timed phases: `job_start` (the Hydra task began), `run_opened`
    (its MLflow run), `process_start` and `prepared` (the job process began; its runtime was
    ready), `process_end` (it wrote its last result). keep: the first time only."""
    clock = result.setdefault("clock", {})
    if not (keep and event in clock):
        clock[event] = round(time.time(), 3)


def write(output_dir: Path, result: Result) -> None:
    write_atomic(Path(output_dir) / FILENAME, json.dumps(redact.tree(result), indent=2) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary name beside `path`, then rename it into place: a reader sees
    the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read(output_dir: Path) -> Result:
    """The job's result.json; a ValueError for one of a newer contract than this runner's."""
    result = json.loads((Path(output_dir) / FILENAME).read_text())
    version = result.get("format_version", 0) if isinstance(result, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{Path(output_dir) / FILENAME} has format_version {version!r}; this "
                         f"runner reads up to {FORMAT_VERSION}: update the runner to read it")
    return result


class JobCrashed(RuntimeError):
    """The job process ended without writing its result."""


def read_or_crashed(output_dir: Path, returncode: int | None, final: bool = True,
                    failure: BaseException | None = None) -> Result:
    """The job's result; if its process ended before finishing it, a failed one saying why:
    `failure` when given (e.g. another worker of the job failed), else JobCrashed.
    final=False: a job's train-side process, which ends with its result still running."""
    try:
        result = read(output_dir)
    except (FileNotFoundError, json.JSONDecodeError):
        result = {"format_version": FORMAT_VERSION, "status": "running",  # type: ignore
                  "phase": "data"}
    if result.get("status") in ENDED:
        return result
    if failure is None and not final and returncode == 0:
        return result
    phase = result.get("phase", "data")
    if failure is None:
        failure = JobCrashed(f"the job process exited with code {returncode} during phase "
                             f"'{phase}' before writing its result; see job.log")
    set_error(result, failure, phase, None)
    write(output_dir, result)
    return result
