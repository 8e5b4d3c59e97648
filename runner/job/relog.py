"""`python -m runner.job.relog JOB`: log a job's saved .keras model to MLFLOW_RUN_ID's run.

runner.sync runs it, in a process of the model's Keras generation (TF_USE_LEGACY_KERAS set by
the caller), for a job whose store was away when it would have logged its MLflow model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tensorflow as tf

from runner.core.files import SAVED_MODEL
from runner.job import models  # noqa: F401 - registers the subclassed model for load_model
from runner.job.artifact import read_stored
from runner.tracking.handover import log_keras_model


def log_model_of(job: Path) -> int:
    stored = read_stored(job / SAVED_MODEL)
    model = tf.keras.models.load_model(str(stored.model), safe_mode=True)
    logged = log_keras_model(model, stored.probe, stored.logits,
                             stored.saved_with.get("versions") or {})
    if not logged.get("logged"):
        print(logged.get("error"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(log_model_of(Path(sys.argv[1])))
