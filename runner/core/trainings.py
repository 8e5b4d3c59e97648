"""A sweep's shared trainings (runner.share_training): which cells have the same training side,
and the files through which one cell's training reaches the others.

Cells whose every key that reaches the training side is the same (strategy, model, data, keras,
tf, seed, train.*, save_api, ...: all but LOAD_SIDE) train one model: the first cell to start
claims the training (`<sweep>/.trainings/<key>/claim.json`), its job process publishes the
training side's result once its model is saved (`trained.json`), and every other cell loads that
model in its own fresh process, as a `load_from` job would, keeping the training's record. Read
and written by the launching processes and the job process; no TensorFlow, no MLflow.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core import cluster
from runner.core.result import MESSAGE_LIMIT, Result, new_result, write_atomic

if TYPE_CHECKING:
    from runner.core.schema import Config

FOLDER = ".trainings"  # in the sweep directory
CLAIM = "claim.json"  # {job, output_dir}: the cell that trains
TRAINED = "trained.json"  # {status, job, output_dir, result | error}
MLFLOW_MODEL = "mlflow_model"  # the MLflow model the training saved, for the others' runs
# The job process of the cell that trains publishes into this folder.
FOLDER_ENV = "RUNNER_SHARED_TRAINING_DIR"

# What reaches only the load side, or no side (how the job is run and recorded); every other
# key is part of the training's identity, so that a key added later shares nothing by mistake.
LOAD_SIDE = ("load_api", "load_strategy", "load_keras", "load_tf", "load", "load_from",
             "save_api.paired_with", "continue_epochs", "verify.tolerance", "verify.resume",
             "verify.resave", "verbose", "runner", "tutorial_step", "mlflow.tracking_uri",
             "mlflow.store_dir", "mlflow.experiment_name", "mlflow.register_model",
             "mlflow.system_metrics", "mlflow.http_timeout_s", "mlflow.http_max_retries",
             "mlflow.on_lost")
# The fields of a result that are the cell's own, not its training's.
CELL_FIELDS = ("status", "phase", "tutorial_step", "load_strategy", "load_api", "load_keras",
               "load_tf", "load_variant", "tolerance", "overrides", "output_dir", "mlflow_run_id",
               "mlflow_run_url", "process", "load_versions", "clock")


def key(cfg: Config) -> str | None:
    """The training side's identity; None where the cell trains its own: sharing is off, it
    loads a given model, or a side is multi-worker (its training is a collective of workers
    that belong to this job)."""
    from omegaconf import OmegaConf

    if not cfg.runner.get("share_training", True) or cfg.load_from or cluster.multi_worker(cfg):
        return None
    tree = OmegaConf.to_container(cfg, resolve=True)
    for path in LOAD_SIDE:
        *parents, last = path.split(".")
        node = tree
        for part in parents:
            node = node.get(part) or {}
        node.pop(last, None)
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder(sweep_dir: Path, training: str) -> Path:
    return Path(sweep_dir) / FOLDER / training


def claim(where: Path, job: int | None, output_dir: Path) -> bool:
    """Whether this cell trains (the first to claim it); O_EXCL, so on a shared folder too."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(where / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"job": job, "output_dir": str(output_dir)}, f)
    return True


def claimed_by(where: Path) -> dict[str, Any]:
    """The cell that trains: {job, output_dir}; {} while its claim is being written."""
    try:
        return json.loads((where / CLAIM).read_text())
    except (OSError, ValueError):
        return {}


def publish(where: Path, result: Result) -> None:
    """The job process, its training side done and saved: the others may load its model now."""
    owner = claimed_by(where)
    write_atomic(where / TRAINED, json.dumps(
        {"status": "trained", "job": owner.get("job"), "output_dir": result["output_dir"],
         "result": result}) + "\n")


def publish_failure(where: Path, result: Result) -> None:
    """The cell that trains ended without publishing: its error and what its training recorded
    before it (a save that failed after the whole training: its curves), for the cells that
    wait."""
    if (where / TRAINED).exists():
        return
    owner = claimed_by(where)
    error = result.get("error") or {"type": "JobCrashed", "message": "the training's job ended "
                                    "without saving a model", "phase": result.get("phase")}
    write_atomic(where / TRAINED, json.dumps(
        {"status": result.get("status", "failed"), "job": owner.get("job"),
         "output_dir": result.get("output_dir"), "error": error,
         "result": result if "format_version" in result else None}) + "\n")


def trained(where: Path) -> dict[str, Any] | None:
    """What the training published; None while it runs."""
    try:
        return json.loads((where / TRAINED).read_text())
    except (OSError, ValueError):
        return None


def adopted_result(cfg: Config, out: Path, overrides: list[str], published: dict[str, Any],
                   run_id: str | None) -> Result:
    """A cell's result that starts from the shared training's: the training's fields (curves,
    accuracy after training, timings, what was saved) and the cell's own identity, ready for
    its load side (`python -m runner.job ... --side load --resume`)."""
    mine = new_result(cfg, out, overrides, run_id)
    result: Result = copy.deepcopy(published["result"])
    for field in CELL_FIELDS:
        if field in mine:
            result[field] = mine[field]  # type: ignore[literal-required]
        else:
            result.pop(field, None)  # type: ignore[misc]
    result["phase"] = "load"
    # save_api=auto's note names the load API it was paired with: this cell's.
    auto = "save_api=auto:"
    result["notes"] = [*mine["notes"], *(n for n in result["notes"] if not n.startswith(auto))]
    if result.get("artifact"):
        name = Path(result["artifact"]).name
        result["artifact"] = str(out / Path(result["artifact"]).parent.name / name)
    result["trained_by"] = trained_by(published)
    return result


def failed_result(cfg: Config, out: Path, overrides: list[str], published: dict[str, Any],
                  run_id: str | None) -> Result:
    """A cell whose shared training failed: what that training recorded before it failed (as
    the cell would have, training its own), failed with its error, named."""
    if published.get("result"):
        result = adopted_result(cfg, out, overrides, published, run_id)
        # Nothing was taken from it: no saved model here, no MLflow model for this cell's run.
        result["artifact"] = result["artifact_bytes"] = None
        result.pop("mlflow_model", None)  # type: ignore[misc]
    else:
        result = new_result(cfg, out, overrides, run_id)
    error = dict(published["error"])
    error["message"] = (f"the shared training (job {published.get('job')}, "
                        f"{published.get('output_dir')}) failed: {error.get('type')}: "
                        f"{error.get('message')}")[:MESSAGE_LIMIT]
    result["status"] = "failed" if published.get("status") == "failed" else "interrupted"
    result["error"] = error  # type: ignore[typeddict-item]
    result["phase"] = error.get("phase") or "train"
    result["trained_by"] = trained_by(published)
    return result


def trained_by(published: dict[str, Any]) -> dict[str, Any]:
    """result.json's `trained_by`: the cell that trained, from what it published."""
    return {"job": published.get("job"), "output_dir": published.get("output_dir"),
            "mlflow_run_id": (published.get("result") or {}).get("mlflow_run_id")}
