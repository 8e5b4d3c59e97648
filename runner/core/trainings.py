"""A sweep's shared trainings (runner.share_training): which cells have the same training side,
and the files through which one cell's training reaches the others.

Cells whose every key that reaches the training side is the same (strategy, model, data, keras,
tf, seed, train.*, ...: all but LOAD_SIDE and, where the model is saved after training, SAVE_SIDE)
train one model: the first cell to start claims the training (`<sweep>/.trainings/<key>/
claim.json`). Its job process saves the model once per distinct save side the sweep's plan lists
for it (`saves.json`, written before any cell starts), then publishes each save's result
(`<save>/trained.json`); every other cell loads the save it needs in its own fresh process, as a
`load_from` job would, keeping the training's record. Without a plan (another sweeper) a training
is shared by the cells of one save side only. Read and written by the launching processes and the
job process; no TensorFlow, no MLflow.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core import apis, cluster
from runner.core.result import MESSAGE_LIMIT, Result, new_result, write_atomic

if TYPE_CHECKING:
    from runner.core.schema import Config

FOLDER = ".trainings"  # in the sweep directory
CLAIM = "claim.json"  # {job, output_dir}: the cell that trains
PLAN = "saves.json"  # {save key: save side}: every save the sweep's cells need of the training
TRAINED = "trained.json"  # in <save key>/: {status, job, output_dir, saved_in, result | error}
MLFLOW_MODEL = "mlflow_model"  # the MLflow model the training saved, for the others' runs
# The job process of the cell that trains publishes into this folder, its own save as this key.
FOLDER_ENV = "RUNNER_SHARED_TRAINING_DIR"
SAVE_ENV = "RUNNER_SHARED_SAVE"

# What reaches only the save, made after training: one training serves every save side of the
# sweep. A callback save API (it saves during fit) and model.save_before_fit keep it in the key.
SAVE_SIDE = ("save_api", "io_device")

# What reaches only the load side, or no side (how the job is run and recorded); every other
# key is part of the training's identity, so that a key added later shares nothing by mistake.
LOAD_SIDE = ("load_api", "load_strategy", "load_keras", "load_tf", "load", "load_from",
             "save_api.paired_with", "continue_epochs", "verify.tolerance", "verify.resume",
             "verify.resave", "verbose", "runner", "tutorial_step", "mlflow.tracking_uri",
             "mlflow.store_dir", "mlflow.experiment_name", "mlflow.register_model",
             "mlflow.system_metrics", "mlflow.http_timeout_s", "mlflow.http_max_retries",
             "mlflow.on_lost")
# The fields of a result that are the cell's own, not its training's.
CELL_FIELDS = ("status", "phase", "tutorial_step", "save_api", "io_device", "load_strategy",
               "load_api", "load_keras", "load_tf", "load_variant", "tolerance", "overrides",
               "output_dir", "mlflow_run_id", "mlflow_run_url", "process", "load_versions",
               "clock")


def shared(cfg: Config) -> bool:
    """Whether the cell may share a training: not where sharing is off, it loads a given model,
    or a side is multi-worker (its training is a collective of workers that belong to this
    job)."""
    return bool(cfg.runner.get("share_training", True) and not cfg.load_from
                and not cluster.multi_worker(cfg))


def saved_after_training(cfg: Config) -> bool:
    """Whether the save side reaches nothing of the training: not a callback save API (it
    trains with its callback), not model.save_before_fit (it saves before fit)."""
    api = apis.SAVE_APIS.get(cfg.save_api.name)
    return bool(api is not None and not api.callback and not cfg.model.get("save_before_fit"))


def key(cfg: Config, with_save: bool = True) -> str | None:
    """The training side's identity; None where the cell trains its own (`shared`).
    with_save=False: without the save side, where it is saved after training (a plan's key)."""
    if not shared(cfg):
        return None
    tree = _tree(cfg)
    left_out = LOAD_SIDE if with_save or not saved_after_training(cfg) else LOAD_SIDE + SAVE_SIDE
    for path in left_out:
        *parents, last = path.split(".")
        node = tree
        for part in parents:
            node = node.get(part) or {}
        node.pop(last, None)
    return _digest(tree)


def save_side(cfg: Config) -> dict[str, Any]:
    """What of the config reaches the save alone: the save API and its options, io_device."""
    tree = _tree(cfg)
    side = {name: tree.get(name) for name in SAVE_SIDE}
    side["save_api"] = {k: v for k, v in (side["save_api"] or {}).items() if k != "paired_with"}
    return side


def save_key(side: dict[str, Any]) -> str:
    return _digest(side)


def locate(cfg: Config, sweep_dir: Path) -> tuple[Path, str] | None:
    """Where the cell's training is shared (its folder) and which of its saves is the cell's;
    None: the cell trains its own. The training of every save side, where the sweep's plan
    lists this cell's; else the training of this save side alone."""
    training = key(cfg, with_save=False)
    if training is None:
        return None
    mine = save_key(save_side(cfg))
    if mine not in planned(folder(sweep_dir, training)):
        training = key(cfg)
    assert training is not None
    return folder(sweep_dir, training), mine


def _tree(cfg: Config) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _digest(tree: Any) -> str:
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder(sweep_dir: Path, training: str) -> Path:
    return Path(sweep_dir) / FOLDER / training


def plan(sweep_dir: Path, cells: list[Config]) -> int:
    """Before any cell starts: each training's saves (save key: save side), from every cell of
    the sweep whose save is made after training. Returns how many trainings serve several."""
    saves: dict[str, dict[str, Any]] = {}
    for cfg in cells:
        training = key(cfg, with_save=False) if saved_after_training(cfg) else None
        if training is not None:
            side = save_side(cfg)
            saves.setdefault(training, {})[save_key(side)] = side
    for training, sides in saves.items():
        where = folder(sweep_dir, training)
        where.mkdir(parents=True, exist_ok=True)
        write_atomic(where / PLAN, json.dumps(sides, sort_keys=True) + "\n")
    return sum(len(sides) > 1 for sides in saves.values())


def planned(where: Path) -> dict[str, dict[str, Any]]:
    """The saves the training in `where` makes: {save key: save side}; {} without a plan."""
    try:
        return json.loads((where / PLAN).read_text())
    except (OSError, ValueError):
        return {}


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


def publish(where: Path, save: str, result: Result, saved_in: Path) -> None:
    """The job process, its training done and this save made (saved_in/saved_model/): the cells
    of this save may load it now; or, a failed save (`result` failed), fail with its error."""
    owner = claimed_by(where)
    entry: dict[str, Any] = {"status": "trained", "job": owner.get("job"),
                             "output_dir": owner.get("output_dir", result["output_dir"]),
                             "saved_in": str(saved_in), "result": result}
    if result.get("error"):
        entry.update(status=result["status"], error=result["error"])
    (where / save).mkdir(parents=True, exist_ok=True)
    write_atomic(where / save / TRAINED, json.dumps(entry) + "\n")


def publish_failure(where: Path, save: str, result: Result) -> None:
    """The cell that trains ended without publishing some saves (its own, or every one where
    the training failed): its error and what its training recorded before it (a save that
    failed after the whole training: its curves), for the cells that wait."""
    owner = claimed_by(where)
    error = result.get("error") or {"type": "JobCrashed", "message": "the training's job ended "
                                    "without saving a model", "phase": result.get("phase")}
    for one in {save, *planned(where)}:
        if (where / one / TRAINED).exists():
            continue
        (where / one).mkdir(parents=True, exist_ok=True)
        write_atomic(where / one / TRAINED, json.dumps(
            {"status": result.get("status", "failed"), "job": owner.get("job"),
             "output_dir": result.get("output_dir"), "error": error,
             "result": result if "format_version" in result else None}) + "\n")


def trained(where: Path, save: str) -> dict[str, Any] | None:
    """What the training published of this save; None while it runs."""
    try:
        return json.loads((where / save / TRAINED).read_text())
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
    whose = f"job {published.get('job')}, {published.get('output_dir')}"
    what = (f"saving the shared training ({whose}) with this cell's save API failed"
            if error.get("phase") == "save" else f"the shared training ({whose}) failed")
    error["message"] = f"{what}: {error.get('type')}: {error.get('message')}"[:MESSAGE_LIMIT]
    result["status"] = "failed" if published.get("status") == "failed" else "interrupted"
    result["error"] = error  # type: ignore[typeddict-item]
    result["phase"] = error.get("phase") or "train"
    result["trained_by"] = trained_by(published)
    return result


def trained_by(published: dict[str, Any]) -> dict[str, Any]:
    """result.json's `trained_by`: the cell that trained, from what it published."""
    return {"job": published.get("job"), "output_dir": published.get("output_dir"),
            "mlflow_run_id": (published.get("result") or {}).get("mlflow_run_id")}
