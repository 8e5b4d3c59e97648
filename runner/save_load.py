"""The save APIs and the load APIs, one function each.

Every function is a plain call of the public API the seed tutorial shows (plus the two paths
users resume training with: tf.train.Checkpoint and Model.save_weights). `io_device` goes into
SaveOptions/LoadOptions/CheckpointOptions where the API takes options, and `variable_policy` into
SaveOptions(experimental_variable_policy=...); where an API takes none, the returned note says so
instead of dropping it silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from runner import models, runtime, verify

SERVING_KEY = "serving_default"
# A job's saved_model/ folder: the model as the save API wrote it, and what it must compute.
FOLDER = "saved_model"
PARTIAL = ".partial"  # the suffix of a saved_model/ folder still being written (see `staged`)
PROBE_FILE = "probe.npz"  # the probe images and the trained model's logits on them
SAVED_WITH_FILE = "saved_with.json"  # the choices and versions that produced the model


# ---- save ------------------------------------------------------------------------------------

# Each takes (model, folder, io_device, variable_policy) and returns (path, notes).

def save_keras(model: tf.keras.Model, out: Path, io_device: str | None,
               variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """Model.save to the .keras zip archive."""
    path = out / "model.keras"
    model.save(path)
    return path, _no_options(io_device, variable_policy, "Model.save to a .keras file")


def save_saved_model(model: Any, out: Path, io_device: str | None,
                     variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """tf.saved_model.save: the low-level API."""
    path = out / "model"
    tf.saved_model.save(model, str(path), options=_save_options(io_device, variable_policy))
    return path, []


def save_keras_saved_model(model: tf.keras.Model, out: Path, io_device: str | None,
                           variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """Model.save to a directory: Keras writes a SavedModel (the seed's mixed-API case)."""
    path = out / "model"
    if io_device is None and variable_policy is None:
        model.save(str(path))
    else:
        model.save(str(path), options=_save_options(io_device, variable_policy))
    return path, []


def save_export(model: tf.keras.Model, out: Path, io_device: str | None,
                variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """Model.export: an inference SavedModel with a serving_default endpoint."""
    path = out / "model"
    model.export(str(path))
    return path, _no_options(io_device, variable_policy, "Model.export")


def save_checkpoint(model: tf.keras.Model, out: Path, io_device: str | None,
                    variable_policy: str | None = None) -> tuple[Path, list[str]]:
    """tf.train.Checkpoint(model, optimizer) through a CheckpointManager: the model's and the
    optimizer's variables, no graph; what users resume training from."""
    path = out / "model"
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(path), max_to_keep=1)
    manager.save(options=tf.train.CheckpointOptions(experimental_io_device=io_device))
    notes = _not_applied(variable_policy, "save_api.variable_policy",
                         "tf.train.CheckpointOptions has no variable policy")
    unreached = verify.unreached_variables(checkpoint, model.variables)
    if unreached:
        notes.append(f"tf.train.Checkpoint does not reach {len(unreached)} of the model's "
                     f"variables, so they were not saved: {', '.join(unreached)}")
    return path, notes


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
    return path, [written, *_no_options(io_device, variable_policy, "Model.save_weights")]


WEIGHTS_FORMAT_NOTE = "save_weights format: "

SAVERS: dict[str, Callable[..., tuple[Path, list[str]]]] = {
    "keras": save_keras,
    "saved_model": save_saved_model,
    "keras_saved_model": save_keras_saved_model,
    "export": save_export,
    "checkpoint": save_checkpoint,
    "weights": save_weights,
}
# The save APIs that write a SavedModel, and so take SaveOptions' variable policy.
SAVED_MODEL_APIS = ("saved_model", "keras_saved_model", "export")


# ---- load ------------------------------------------------------------------------------------

@dataclass
class Loaded:
    """What a load API gives back, reduced to what the scenario needs."""

    predict: Callable[[Any], tf.Tensor]  # images -> logits
    model: tf.keras.Model | None = None  # a compiled, trainable Keras model, if the API gives one
    keep_alive: Any = None  # the loaded object its functions' variables belong to
    notes: list[str] = field(default_factory=list)
    new_optimizer: bool = False  # a new model compiled around what was loaded (hub, tfsm_layer)


def load_keras(path: Path, io_device: str | None, options: Any,
               saved_with: Mapping[str, Any]) -> Loaded:
    """tf.keras.models.load_model: a compiled Keras model, trainable as it is."""
    if io_device is not None and runtime.keras_generation() == "tf_keras":
        model = tf.keras.models.load_model(str(path), options=_load_options(io_device))
        notes = [] if path.is_dir() else ["io_device: tf_keras uses LoadOptions for SavedModel "
                                          "directories only, not for .keras files"]
    else:
        model = tf.keras.models.load_model(str(path))
        notes = _not_applied(io_device, "io_device", "Keras 3 load_model takes no LoadOptions")
    if not isinstance(model, tf.keras.Model):
        # tf_keras falls back to a plain restored object when the SavedModel has no Keras metadata.
        raise TypeError(f"load_model returned a {type(model).__name__}, not a Keras model")
    return Loaded(predict=models.predictor(model), model=model, notes=notes)


def load_saved_model(path: Path, io_device: str | None, options: Any,
                     saved_with: Mapping[str, Any]) -> Loaded:
    """tf.saved_model.load + signatures['serving_default']: inference only."""
    loaded = tf.saved_model.load(str(path), options=_load_options(io_device))
    serve = loaded.signatures[SERVING_KEY]
    return Loaded(predict=lambda x: single_output(serve(x)), keep_alive=loaded)


def load_hub(path: Path, io_device: str | None, options: Any,
             saved_with: Mapping[str, Any]) -> Loaded:
    """hub.KerasLayer(tf.saved_model.load(dir), trainable=True) in a new model, as the seed does."""
    import tensorflow_hub as hub

    loaded = tf.saved_model.load(str(path), options=_load_options(io_device))
    inputs = tf.keras.layers.Input(shape=models.INPUT_SHAPE, name="input_x")
    outputs = hub.KerasLayer(loaded, trainable=True)(inputs)
    model = tf.keras.Model(inputs, outputs)
    models.compile_model(model, options.optimizer)
    return Loaded(predict=models.predictor(model), model=model, keep_alive=loaded,
                  new_optimizer=True)


def load_tfsm_layer(path: Path, io_device: str | None, options: Any,
                    saved_with: Mapping[str, Any]) -> Loaded:
    """keras.layers.TFSMLayer(dir, trainable=True) in a new model: Keras 3's hub.KerasLayer."""
    layer = tf.keras.layers.TFSMLayer(str(path), call_endpoint=SERVING_KEY, trainable=True)
    inputs = tf.keras.layers.Input(shape=models.INPUT_SHAPE)
    model = tf.keras.Model(inputs, single_output(layer(inputs)))
    models.compile_model(model, options.optimizer)
    notes = _not_applied(io_device, "io_device", "TFSMLayer takes no LoadOptions")
    return Loaded(predict=models.predictor(model), model=model, notes=notes, new_optimizer=True)


def load_checkpoint(path: Path, io_device: str | None, options: Any,
                    saved_with: Mapping[str, Any]) -> Loaded:
    """The same model built afresh (saved_with.json says which) and compiled, its variables and
    its optimizer's slots created, then tf.train.Checkpoint.restore. assert_consumed: every
    value in the checkpoint was used and every variable restored, or TensorFlow's list of those
    that were not."""
    model = fresh_model(saved_with)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
    if prefix is None:
        raise ArtifactError(f"{path} holds no checkpoint (no 'checkpoint' file naming one)")
    status = checkpoint.restore(
        prefix, options=tf.train.CheckpointOptions(experimental_io_device=io_device))
    names_first(status.assert_consumed)
    unreached = verify.unreached_variables(checkpoint, model.variables)
    if unreached:
        raise CheckpointIncomplete(
            f"{len(unreached)} of the model's variables are outside tf.train.Checkpoint's object "
            f"graph, so they were neither saved nor restored (assert_consumed cannot see them): "
            f"{', '.join(unreached)}")
    return Loaded(predict=models.predictor(model), model=model)


# A variable in TensorFlow's list: tf_keras' `<tf.Variable 'name:0' ...>`, Keras 3's
# `<Variable path=adam/..., ...>`.
VARIABLE = re.compile(r"<(?:tf\.)?Variable (?:'([^']+)'|path=([^,>]+))")


def names_first(check: Callable[[], Any]) -> None:
    """TensorFlow's own restore check. Its failure lists the unmatched objects with their values,
    thousands of characters in no fixed order: the variables' names are put first, sorted, so
    that the start of the message (what result.json and the summary keep) names them."""
    try:
        check()
    except AssertionError as e:
        text = str(e)
        names = sorted({a or b for a, b in VARIABLE.findall(text)})
        if not names:
            raise
        head, _, rest = text.partition(" Showing ")
        raise AssertionError(f"{head} Variables among them: {', '.join(names)}. "
                             f"TensorFlow's list: {rest or text}") from e


class CheckpointIncomplete(AssertionError):
    """Variables of the model that a tf.train.Checkpoint of it does not reach."""


def load_weights(path: Path, io_device: str | None, options: Any,
                 saved_with: Mapping[str, Any]) -> Loaded:
    """The same model built afresh and compiled, then Model.load_weights: a `.weights.h5`
    file, or a TensorFlow checkpoint folder (tf_keras' default save_weights format)."""
    model = fresh_model(saved_with)
    if path.is_dir():
        status = model.load_weights(tf.train.latest_checkpoint(str(path)) or str(path / "weights"))
        # tf_keras restores a TensorFlow checkpoint by matching object graphs, silently skipping
        # what does not match (e.g. a tf.train.Checkpoint whose root is not the model):
        # TensorFlow's own list of the model's objects that found no value.
        if status is not None:
            names_first(status.assert_existing_objects_matched)
    else:
        model.load_weights(str(path))
    return Loaded(predict=models.predictor(model), model=model,
                  notes=_not_applied(io_device, "io_device", "Model.load_weights takes no "
                                                             "LoadOptions"))


def fresh_model(saved_with: Mapping[str, Any]) -> tf.keras.Model:
    """The model saved_with.json describes, built and compiled as the train side did, with every
    variable (its optimizer's slots included) created, ready to be restored into."""
    model = models.build_from(saved_with.get("model_options") or {"name": saved_with["model"]})
    models.compile_model(model)
    models.build_variables(model)
    return model


# Each takes (path, io_device, the load_api group's options, the model's saved_with.json).
LOADERS: dict[str, Callable[[Path, str | None, Any, Mapping[str, Any]], Loaded]] = {
    "keras": load_keras,
    "saved_model": load_saved_model,
    "hub": load_hub,
    "tfsm_layer": load_tfsm_layer,
    "checkpoint": load_checkpoint,
    "weights": load_weights,
}


# ---- the saved_model/ folder: the model plus what verifies it, wherever it is loaded -----------

class ArtifactError(ValueError):
    """A saved model (or what verifies it) that is missing, incomplete or not what it claims."""


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A folder that becomes out/saved_model/ only once everything is in it: written under a
    temporary name and renamed into place, so a save that fails or is interrupted never leaves
    a saved_model/ that looks valid. On failure the temporary folder is removed."""
    staging = out / f".{FOLDER}.{os.getpid()}{PARTIAL}"  # mkdir: the usual permissions
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging, out / FOLDER)


@dataclass
class Stored:
    model: Path  # model.keras or the SavedModel directory `model`
    probe: np.ndarray
    logits: np.ndarray
    saved_with: dict[str, Any]
    reference: verify.Reference | None = None  # the resume check's, if it was stored


def write_stored(folder: Path, probe: np.ndarray, logits: np.ndarray,
                 saved_with: Mapping[str, Any]) -> None:
    np.savez_compressed(folder / PROBE_FILE, images=probe, logits=logits)
    (folder / SAVED_WITH_FILE).write_text(json.dumps(saved_with, indent=2) + "\n")


def add_reference(folder: Path, ref: verify.Reference) -> None:
    """The resume check's reference, added to probe.npz once the train side has it (after the
    save: it continues the original). Rewritten under a temporary name and renamed into place,
    so probe.npz is always whole: without the reference, or with it."""
    with np.load(folder / PROBE_FILE) as probe:
        arrays = dict(probe)
    tmp = folder / f".{PROBE_FILE}.{os.getpid()}.tmp.npz"
    np.savez_compressed(tmp, **arrays, resume_images=ref.images, resume_labels=ref.labels,
                        resumed_logits=ref.logits,
                        resume_global_batch=np.int64(ref.global_batch),
                        resume_seed=np.int64(ref.seed))
    os.replace(tmp, folder / PROBE_FILE)


def read_stored(location: Path) -> Stored:
    """The model at `location`: a job's output directory, its saved_model/ folder or the model
    file/directory inside that folder. Every problem names the file it is in."""
    if not location.exists():
        raise FileNotFoundError(f"load_from: {location} does not exist")
    if any(p.name.endswith(PARTIAL) for p in (location, *location.parents)):
        raise ArtifactError(f"{location} is an unfinished save (a *{PARTIAL} folder): the job "
                            "that wrote it failed or was interrupted while saving")
    candidates = [location / FOLDER, location, location.parent]
    folder = next((c for c in candidates if (c / PROBE_FILE).is_file()), None)
    if folder is None:
        raise FileNotFoundError(
            f"load_from: no {PROBE_FILE} in or beside {location}: expected a runner job's output "
            f"directory, its {FOLDER}/ folder, or the model inside that folder")
    try:
        saved_with = json.loads((folder / SAVED_WITH_FILE).read_text())
        model = location if folder == location.parent else folder / saved_with["model_file"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{folder / SAVED_WITH_FILE} is unreadable: "
                            f"{type(e).__name__}: {e}") from e
    try:
        with np.load(folder / PROBE_FILE) as probe:
            stored = Stored(model, probe["images"], probe["logits"], saved_with)
            if "resumed_logits" in probe:
                stored.reference = verify.Reference(
                    probe["resume_images"], probe["resume_labels"],
                    int(probe["resume_global_batch"]), int(probe["resume_seed"]),
                    probe["resumed_logits"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ArtifactError(f"{folder / PROBE_FILE} is unreadable: "
                            f"{type(e).__name__}: {e}") from e
    check_model(model)
    return stored


def check_model(path: Path) -> None:
    """The model's files are complete, before any load API reads them: load APIs report a
    truncated or foreign file misleadingly (Keras 3: 'File not found' for a file that exists)."""
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    if path.is_dir():
        if (path / "checkpoint").is_file():  # tf.train.Checkpoint, tf_keras save_weights
            prefix = tf.train.latest_checkpoint(str(path))
            if prefix is None or not Path(prefix + ".index").is_file():
                raise ArtifactError(f"{path} is an incomplete checkpoint: its 'checkpoint' file "
                                    "names no checkpoint whose .index exists")
            return
        if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise ArtifactError(f"{path} is not a SavedModel directory (no saved_model.pb) "
                                "nor a checkpoint (no 'checkpoint' file)")
        return
    if path.suffix == ".h5":
        with open(path, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                raise ArtifactError(f"{path} is not an HDF5 file: truncated, or a file of "
                                    "another format")
        return
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ArtifactError(f"{path} is not a .keras archive (not a zip file): truncated, "
                                "or a file of another format")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise ArtifactError(f"{path} is a damaged .keras archive: {e}") from e
        if bad is not None:
            raise ArtifactError(f"{path} is a damaged .keras archive: {bad} fails its CRC check")


# ---- helpers ---------------------------------------------------------------------------------

def single_output(outputs: Any) -> Any:
    """A signature returns {name: tensor}; the name differs by generation (output_0, dense_1...)."""
    if isinstance(outputs, dict):
        (value,) = outputs.values()
        return value
    return outputs


def artifact_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _save_options(io_device: str | None,
                  variable_policy: str | None = None) -> tf.saved_model.SaveOptions:
    return tf.saved_model.SaveOptions(experimental_io_device=io_device,
                                      experimental_variable_policy=variable_policy)


def _load_options(io_device: str | None) -> tf.saved_model.LoadOptions:
    return tf.saved_model.LoadOptions(experimental_io_device=io_device)


def _not_applied(value: str | None, key: str, why: str) -> list[str]:
    return [] if value is None else [f"{key}={value} not applied: {why}"]


def _no_options(io_device: str | None, variable_policy: str | None, api: str) -> list[str]:
    return [*_not_applied(io_device, "io_device", f"{api} takes no SaveOptions"),
            *_not_applied(variable_policy, "save_api.variable_policy",
                          f"{api} takes no SaveOptions")]
