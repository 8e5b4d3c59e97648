"""The job process's side of its MLflow run: hand it over, never talk to the store.

The Hydra process holds the run, with MLflow imported and its store open, and has nothing else
to do while the job runs. So the job process only hands it what the job alone has: each epoch's
loss and accuracy as the epoch ends (a JSON line in EPOCHS_ENV's file) and the trained model as
an MLflow model saved on disk (MODEL_DIR_ENV). The Hydra process (runner.tracking.relay) logs the
epochs as they come, so that the UI draws curves while the job runs, and logs the model into
the run while the job goes on to load and continue it. The job process thus never imports the
store's database layer (SQLAlchemy, alembic: 1.3 s) nor waits for it. MLflow itself is imported
only to save the model.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.core import trainings
from runner.core.text import first_line

RUN_ID_ENV = "MLFLOW_RUN_ID"  # set by the Hydra process for the chief of a tracked job only
EPOCHS_ENV = "RUNNER_EPOCHS_FILE"
MODEL_DIR_ENV = "RUNNER_MLFLOW_MODEL_DIR"
MODEL_NAME_ENV = "RUNNER_MLFLOW_MODEL_NAME"  # runner.sync: the logged model's name (its cell)


def tracked() -> bool:
    """Whether this process is a tracked job's chief: it hands the run its epochs and model."""
    return bool(os.environ.get(RUN_ID_ENV))


def mlflow_here() -> bool:
    """Whether MLflow is in this process's environment (not in another release's: tf=, load_tf=)."""
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


def epoch_callback(phase: str, first_step: int = 0) -> Any:
    """A Keras callback handing each epoch's metrics to the Hydra process (`loss`, `accuracy`,
    ..., at step first_step + epoch: training and continuing make one curve); None when the job
    is not tracked here."""
    path = os.environ.get(EPOCHS_ENV)
    if not (tracked() and path):
        return None
    import tensorflow as tf

    class Callback(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            values = {("accuracy" if k.endswith("accuracy") else k): float(v)
                      for k, v in (logs or {}).items()}
            line = json.dumps({"phase": phase, "step": first_step + epoch, "values": values,
                               "time_ms": int(time.time() * 1000)})
            with open(path, "a") as f:  # one write of one line: the reader sees whole lines
                f.write(line + "\n")

    return Callback()


def requirements(versions: Mapping[str, str | None]) -> list[str]:
    """The MLflow model's pip requirements. Given, MLflow need not infer them by loading the
    model in a subprocess (about 15 s)."""
    return [f"{dist}=={versions[dist]}" for dist in ("tensorflow", "keras", "tf-keras")
            if versions.get(dist)]


def serving_env(model: Any) -> dict[str, str]:
    """What a process serving the model must set. Measured: Keras 3 cannot read tf_keras' saved
    optimizer config ('Argument(s) not recognized: jit_compile, is_legacy_optimizer'); the
    serving process needs tf_keras too."""
    return {"TF_USE_LEGACY_KERAS": "1"} if type(model).__module__.startswith("tf_keras") else {}


def save_mlflow_model(model: Any, probe: Any, logits: Any,
                      versions: Mapping[str, str | None], own_run: bool = True) -> dict[str, Any]:
    """Save the trained model as an MLflow model (TensorFlow flavour, signature inferred from the
    probe) where the Hydra process logs it from. Returns what result.json records until the Hydra
    process says where it was logged: that it was saved, or why it could not be. own_run=False:
    for the other cells of a shared training only (this job's own save failed)."""
    import mlflow.tensorflow
    from mlflow.models import infer_signature

    target = Path(os.environ[MODEL_DIR_ENV])
    partial = target.with_name(f"{target.name}.partial")
    try:
        mlflow.tensorflow.save_model(model, str(partial), signature=infer_signature(probe, logits),
                                     pip_requirements=requirements(versions))
        for pycache in partial.rglob("__pycache__"):
            shutil.rmtree(pycache, ignore_errors=True)
        shared = os.environ.get(trainings.FOLDER_ENV)
        if shared:  # a sweep's shared training: the other cells' runs log it too
            shutil.copytree(partial, Path(shared) / trainings.MLFLOW_MODEL, dirs_exist_ok=True)
        if own_run:
            partial.rename(target)  # whole, or not there: the Hydra process logs what it finds
        else:
            shutil.rmtree(partial)
    except Exception as e:  # recorded, not fatal: the scenario's own save/load is the subject
        shutil.rmtree(partial, ignore_errors=True)
        return not_logged(e)
    saved: dict[str, Any] = {"logged": None, "saved": True}
    if serving_env(model):
        saved["serving_env"] = serving_env(model)
    return saved


def not_logged(e: Exception) -> dict[str, Any]:
    """What result.json's `mlflow_model` says of a model that could not be saved or logged."""
    return {"logged": False, "error": f"{type(e).__name__}: {first_line(e) or repr(e)}"}


def log_keras_model(model: Any, probe: Any, logits: Any,
                    versions: Mapping[str, str | None]) -> dict[str, Any]:
    """Log a model to MLFLOW_RUN_ID's run with MLflow's TensorFlow flavour, signature inferred
    from the probe (runner.sync, rebuilding the model of a job whose store was away). Returns
    what result.json records: the model URI, or why it could not be logged."""
    import mlflow.tensorflow
    from mlflow.models import Model, infer_signature

    try:
        info = Model.log(
            None, name=os.environ.get(MODEL_NAME_ENV) or "model", flavor=mlflow.tensorflow,
            run_id=os.environ[RUN_ID_ENV],
            model=model, signature=infer_signature(probe, logits),
            pip_requirements=requirements(versions))
    except Exception as e:  # recorded, not fatal: the scenario's own save/load is the subject
        return not_logged(e)
    logged: dict[str, Any] = {"logged": True, "model_uri": info.model_uri}
    if serving_env(model):
        logged["serving_env"] = serving_env(model)
    return logged
