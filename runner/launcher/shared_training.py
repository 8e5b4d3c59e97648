"""A sweep cell's share of a training (runner.core.trainings), in the launching process: claim
the training or wait for it, and start the cell's load side from its model.

Works wherever the cells' processes see one sweep directory: the basic launcher, joblib's
workers (a cell waits for the training another worker runs), SLURM with a shared folder.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, open_dict

from runner.core import interrupt, trainings
from runner.core import result as results
from runner.core.files import JOB_LOG, MODEL_SUMMARY, SAVED_MODEL, TRACEBACK
from runner.core.result import Result
from runner.tracking.handover import MODEL_DIR_ENV, RUN_ID_ENV

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.core.schema import Config

POLL_S = 0.2
# A training's job that ended without publishing (killed with SIGKILL, its launching process
# too): how long its claim is given before the waiting cells fail, naming it.
ENDED_GRACE_S = 10.0


@dataclass
class Share:
    folder: Path
    save: str  # which of the training's saves is this cell's
    trains: bool  # this cell trains the model; the others wait for it


def plan(sweep_dir: Path, composed: list[DictConfig | None]) -> int:
    """Before any cell starts: each training's saves listed (trainings.plan) from every cell's
    composed config (runner.launcher.cells), settled as the cell's task will settle it, so that
    one training saves for every save API its cells need. Returns how many trainings serve
    several saves."""
    from runner.core.compose import name_own_options, pair_save_api

    settled = []
    for cfg in composed:
        if cfg is None:
            continue
        try:
            choices = dict(cfg.hydra.runtime.choices)
            with open_dict(cfg):
                del cfg["hydra"]
            name_own_options(cfg, choices)
            pair_save_api(cfg)
            trainings.key(cfg)  # type: ignore[arg-type]  # resolves, or it is left out
        except Exception:  # noqa: BLE001 - that cell trains as if unplanned, or fails itself
            continue
        settled.append(cfg)
    return trainings.plan(sweep_dir, settled)  # type: ignore[arg-type]


def join(cfg: Config, sweep: Path | None, output_dir: Path) -> Share | None:
    """This cell's share of its training, in a sweep with runner.share_training; None: the
    cell trains its own (a single job, sharing off, load_from, multi-worker)."""
    found = trainings.locate(cfg, sweep) if sweep is not None else None
    if found is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    folder, save = found
    return Share(folder, save, trainings.claim(folder, HydraConfig.get().job.num, output_dir))


def adopt(share: Share, cfg: Config, output_dir: Path, overrides: list[str],
          env: Mapping[str, str]) -> Result:
    """Wait for the shared training, then give this cell its model and its training's record:
    a result still `running`, for the load side, or failed with the training's error."""
    published = wait(share, output_dir)
    run_id = env.get(RUN_ID_ENV)
    output_dir.mkdir(parents=True, exist_ok=True)
    if published is None:  # interrupted while waiting
        stopped = interrupt.received()
        assert stopped is not None
        result = results.not_started(cfg, output_dir, overrides, stopped, phase="train")
    elif published["status"] != "trained":
        result = trainings.failed_result(cfg, output_dir, overrides, published, run_id)
        # Its traceback: the save's (made for this cell) or the training's.
        where = published.get("saved_in") or published.get("output_dir")
        if where and (Path(where) / TRACEBACK).is_file():
            shutil.copy(Path(where) / TRACEBACK, output_dir / TRACEBACK)
    else:
        source = Path(published.get("saved_in") or published["output_dir"])
        try:
            _take(share.folder, source, Path(published["output_dir"]), output_dir, env)
        except OSError as e:  # its folder moved or removed meanwhile: this cell cannot load it
            result = results.new_result(cfg, output_dir, overrides, run_id)
            results.set_error(result, OSError(
                f"the shared training's model (job {published.get('job')}, {source}) could "
                f"not be taken: {e}"), "load", "runner.share_training=false trains each cell "
                "its own model")
        else:
            result = trainings.adopted_result(cfg, output_dir, overrides, published, run_id)
            _say(output_dir, f"train: shared with job {published.get('job')} "
                             f"({published['output_dir']})")
    if run_id:  # new_result reads it from the job process's environment; here it is in env
        result["mlflow_run_url"] = env.get(results.RUN_URL_ENV)
    results.write(output_dir, result)
    return result


def _take(folder: Path, source: Path, trained: Path, output_dir: Path,
          env: Mapping[str, str]) -> None:
    """The saved model (in `source`) and the training's summary (in `trained`) into this cell's
    folder; its MLflow model where this cell's relay logs it into the cell's run."""
    _copy_tree(source / SAVED_MODEL, output_dir / SAVED_MODEL)
    if (trained / MODEL_SUMMARY).is_file():
        shutil.copy(trained / MODEL_SUMMARY, output_dir / MODEL_SUMMARY)
    model = folder / trainings.MLFLOW_MODEL
    if env.get(MODEL_DIR_ENV) and model.is_dir():
        target = Path(env[MODEL_DIR_ENV])
        partial = target.with_name(f"{target.name}.partial")
        shutil.copytree(model, partial)
        partial.rename(target)


def wait(share: Share, output_dir: Path) -> dict | None:
    """What the training published of this cell's save, once it has; None when interrupted
    meanwhile."""
    said = False
    ended_at = None
    while True:
        published = trainings.trained(share.folder, share.save)
        if published is not None:
            return published
        if interrupt.received() is not None:
            return None
        owner = trainings.claimed_by(share.folder)
        if owner and not said:
            _say(output_dir, f"train: waiting for job {owner.get('job')}'s training, shared "
                             "with this cell")
            said = True
        if owner and _ended(Path(owner["output_dir"])):
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > ENDED_GRACE_S:
                return {"status": "failed", "job": owner.get("job"),
                        "output_dir": owner["output_dir"],
                        "error": {"type": "JobCrashed", "phase": "train", "hint": None,
                                  "message": "its job ended without publishing a model"}}
        time.sleep(POLL_S)


def _say(output_dir: Path, line: str) -> None:
    """On the console and in the job's log, as the job process's own lines."""
    print(line, flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / JOB_LOG, "a") as log:
        log.write(line + "\n")


def _ended(job_dir: Path) -> bool:
    try:
        return results.read(job_dir).get("status") in results.ENDED
    except (OSError, ValueError):
        return False


def _copy_tree(source: Path, target: Path) -> None:
    """Hard links where the file system allows (a saved model is never written again)."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)
