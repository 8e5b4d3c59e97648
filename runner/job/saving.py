"""The save APIs, one function each, and the seed's caveat (saving before training).

Every function is a plain call of the public API the seed tutorial shows (plus the two paths
users resume training with: tf.train.Checkpoint and Model.save_weights), registered under its
name in runner.core.apis' table, which checks at import that every API there has one. `io_device`
goes into SaveOptions/CheckpointOptions where the API takes options, and `variable_policy` into
SaveOptions(experimental_variable_policy=...); where an API takes neither, `save` says so in a
note (runner.core.apis.option_notes) instead of dropping it silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from runner.core import apis
from runner.core.files import BEFORE_FIT
from runner.job import callbacks, models, runtime, verify

# Each takes (model, folder, io_device, variable_policy) and returns (path, notes).
Saver = Callable[[Any, Path, "str | None", "str | None"], "tuple[Path, list[str]]"]
SAVERS: dict[str, Saver] = {}
saver = apis.registrar(SAVERS)  # @saver("keras"): the function of save_api=keras


def save(name: str, model: Any, out: Path, io_device: str | None,
         variable_policy: str | None) -> tuple[Path, list[str]]:
    """Save with save_api=`name` into `out`: the path written, and what to note about it."""
    path, notes = SAVERS[name](model, out, io_device, variable_policy)
    return path, [*notes, *apis.option_notes(name, io_device, variable_policy)]


@saver("keras")
def save_keras(model: tf.keras.Model, out: Path, io_device: str | None,
               variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """Model.save to the .keras zip archive."""
    path = out / "model.keras"
    model.save(path)
    return path, []


@saver("saved_model")
def save_saved_model(model: Any, out: Path, io_device: str | None,
                     variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """tf.saved_model.save: the low-level API."""
    path = out / "model"
    tf.saved_model.save(model, str(path), options=_save_options(io_device, variable_policy))
    return path, []


@saver("keras_saved_model")
def save_keras_saved_model(model: tf.keras.Model, out: Path, io_device: str | None,
                           variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """Model.save to a directory: Keras writes a SavedModel (the seed's mixed-API case)."""
    path = out / "model"
    if io_device is None and variable_policy is None:
        model.save(str(path))
    else:
        model.save(str(path), options=_save_options(io_device, variable_policy))
    return path, []


@saver("export")
def save_export(model: tf.keras.Model, out: Path, io_device: str | None,
                variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """Model.export: an inference SavedModel with a serving_default endpoint."""
    path = out / "model"
    model.export(str(path))
    return path, []


@saver("checkpoint")
def save_checkpoint(model: tf.keras.Model, out: Path, io_device: str | None,
                    variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """tf.train.Checkpoint(model, optimizer) through a CheckpointManager: the model's and the
    optimizer's variables, no graph; what users resume training from."""
    path = out / "model"
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(path), max_to_keep=1)
    manager.save(options=tf.train.CheckpointOptions(experimental_io_device=io_device))
    unreached, notes = verify.unreached_state(checkpoint, model)
    if unreached:
        notes.append(f"tf.train.Checkpoint does not reach {len(unreached)} of the model's "
                     f"variables, so they were not saved: {', '.join(unreached)}")
    return path, notes


@saver("weights")
def save_weights(model: tf.keras.Model, out: Path, io_device: str | None,
                 variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """Model.save_weights in the generation's own default format: Keras 3 `.weights.h5`;
    tf_keras a TensorFlow checkpoint (model/weights.index and .data-*)."""
    if runtime.keras_generation() == "keras":
        path = out / "model.weights.h5"
        model.save_weights(str(path))
        written = (f"{WEIGHTS_FORMAT_NOTE}h5: Keras 3's .weights.h5 (HDF5): the layers' "
                   "variables and, for a compiled model, the optimizer's")
    else:
        path = out / "model"
        path.mkdir()
        model.save_weights(str(path / "weights"))
        written = (f"{WEIGHTS_FORMAT_NOTE}tf: tf_keras' default TensorFlow checkpoint "
                   "(model/weights.index, .data-*): the model's object graph, its optimizer "
                   "included")
        return path, [written, *verify.unreached_state(model, model)[1]]
    return path, [written]


WEIGHTS_FORMAT_NOTE = "save_weights format: "  # the start of save_weights' note


@saver("model_checkpoint")
def save_model_checkpoint(model: tf.keras.Model, out: Path, io_device: str | None,
                          variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """What tf.keras.callbacks.ModelCheckpoint wrote during fit (runner.job.callbacks): `out`
    is the job's saved_model/ being made, in the job's output directory."""
    return callbacks.collect(callbacks.MODEL_CHECKPOINT, out.parent, out, model)


@saver("backup_and_restore")
def save_backup_and_restore(model: tf.keras.Model, out: Path, io_device: str | None,
                            variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """What tf.keras.callbacks.BackupAndRestore left after fit (delete_checkpoint=False)."""
    return callbacks.collect(callbacks.BACKUP_AND_RESTORE, out.parent, out, model)


apis.check_implemented("save_api", SAVERS, __name__)


def save_before_fit(model: tf.keras.Model, save_api: str, out: Path) -> dict[str, Any]:
    """The seed's caveat: save a model that has not traced a call yet, and record what happens."""
    report: dict[str, Any] = {"traced_before_fit": models.has_traced_call(model)}
    target = out / BEFORE_FIT
    target.mkdir(exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path, _ = save(save_api, model, target, None, None)
        except Exception as e:
            report["save_error"] = f"{type(e).__name__}: {e}"
        else:
            report["saved"] = str(path)
            if path.is_dir():
                report["signatures"] = sorted(tf.saved_model.load(str(path)).signatures.keys())
    report["warnings"] = [str(w.message) for w in caught]
    report["advice"] = (
        "Subclassed models have no traced forward pass until first called: train (or call) the "
        "model before saving; the job then saves it after fit."
    )
    return report


def _save_options(io_device: str | None,
                  variable_policy: str | None = None) -> tf.saved_model.SaveOptions:
    return tf.saved_model.SaveOptions(experimental_io_device=io_device,
                                      experimental_variable_policy=variable_policy)
