"""The save APIs and the load APIs: one entry each, the one table everything else derives from.

The schema's options for `save_api` and `load_api`, the `--help` lines, the save API that
save_api=auto pairs with each load API, the warning before a combination known to fail, the
hints attached to failures, and the job's dispatch (runner.job.saving and runner.job.loading,
which check at import that they implement every entry) all read these tables. Adding an API:
an entry here, its conf/<group>/<name>.yaml, its function in the job; tests/unit/test_registry.py
checks that the three agree. (Keras' own `saving/object_registration.py` keeps one registry the
same way.) Nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Format(str, Enum):
    """What a save API writes."""

    KERAS = "keras"
    SAVEDMODEL = "savedmodel"
    CHECKPOINT = "checkpoint"
    WEIGHTS = "weights"

    @property
    def words(self) -> str:
        return {"keras": "a .keras file", "savedmodel": "a SavedModel directory",
                "checkpoint": "a tf.train.Checkpoint",
                "weights": "a save_weights file"}[self.value]


@dataclass(frozen=True)
class Hint:
    """A failure that matches a known upstream issue or a documented API limit: in `phase` (None:
    any), an error whose "Type: message" contains every one of `words`, gets `text`."""

    phase: str | None
    words: tuple[str, ...]
    text: str

    def matches(self, text: str, phase: str) -> bool:
        return (self.phase is None or self.phase == phase) and all(w in text for w in self.words)


@dataclass(frozen=True)
class SaveApi:
    name: str
    call: str  # the public API it calls, as notes and docs name it
    writes: Format
    # Which options object takes io_device (and variable_policy): "SaveOptions" (both),
    # "CheckpointOptions" (io_device only), None (neither).
    options: str | None
    hints: tuple[Hint, ...] = ()
    callback: bool = False  # a Keras callback that saves during fit


def written(save_api: str, keras: str, weights_only: bool = False) -> Format:
    """What the save API writes under Keras generation `keras` (v3, legacy): ModelCheckpoint a
    .keras file, or weights; BackupAndRestore Keras 3's .weights.h5 or tf_keras' TensorFlow
    checkpoint (runner.job.callbacks)."""
    if save_api == "model_checkpoint" and weights_only:
        return Format.WEIGHTS
    if save_api == "backup_and_restore" and keras == "legacy":
        return Format.CHECKPOINT
    return SAVE_APIS[save_api].writes


@dataclass(frozen=True)
class LoadApi:
    name: str
    call: str
    reads: frozenset[Format]
    paired_save: str  # what save_api=auto saves with for this load API
    # A new Keras model compiled around what it loads (load_api.optimizer): none of the saved
    # optimizer state is used.
    new_model: bool = False
    # Restores into the model built afresh from saved_with.json (load_api.build_first).
    rebuilds: bool = False
    hints: tuple[Hint, ...] = ()


AUTO = "auto"  # save_api=auto: the save API paired with the load API

SAVE_APIS: dict[str, SaveApi] = {api.name: api for api in (
    SaveApi("keras", "Model.save to a .keras file", Format.KERAS, None, hints=(
        Hint("load", ("SavedModel file does not exist", ".keras"),
             "a .keras file is a Keras zip archive, not a SavedModel: load it with "
             "load_api=keras, or save with save_api=saved_model/export for the SavedModel load "
             "APIs"),)),
    SaveApi("saved_model", "tf.saved_model.save", Format.SAVEDMODEL, "SaveOptions"),
    SaveApi("keras_saved_model", "Model.save to a directory", Format.SAVEDMODEL, "SaveOptions",
            hints=(
        Hint("save", ("Invalid filepath extension for saving",),
             "Keras 3's Model.save writes only .keras/.h5 files; for a SavedModel use "
             "save_api=export or save_api=saved_model, or keras=legacy"),
        Hint("save", ("argument(s) are not supported", "options"),
             "Keras 3's Model.save takes no SaveOptions (and writes .keras/.h5 only): for the "
             "seed's io_device step use keras=legacy, or save_api=saved_model, which passes "
             "io_device to tf.saved_model.save"))),
    SaveApi("export", "Model.export", Format.SAVEDMODEL, None),
    SaveApi("checkpoint", "tf.train.Checkpoint", Format.CHECKPOINT, "CheckpointOptions"),
    SaveApi("weights", "Model.save_weights", Format.WEIGHTS, None),
    # Callbacks during fit (runner.job.callbacks): what they write depends on their options and
    # on the Keras generation, so `writes` is read through `written`.
    SaveApi("model_checkpoint", "tf.keras.callbacks.ModelCheckpoint", Format.KERAS, None,
            callback=True),
    SaveApi("backup_and_restore", "tf.keras.callbacks.BackupAndRestore", Format.WEIGHTS, None,
            callback=True, hints=(
        Hint("train", ("must be built before you call `fit()`",),
             "Keras 3's BackupAndRestore restores into the model before fit, so the model must "
             "be built first: call it on a batch (a subclassed model is not built until then; "
             "keras-team/keras#20712), or use a Sequential/functional model"),)),
)}

LOAD_APIS: dict[str, LoadApi] = {api.name: api for api in (
    LoadApi("keras", "tf.keras.models.load_model", frozenset({Format.KERAS, Format.SAVEDMODEL}),
            "keras", hints=(
        Hint("load", ("File format not supported", "Keras 3 only supports"),
             "Keras 3's load_model reads .keras/.h5 only; load a SavedModel with "
             "load_api=tfsm_layer or load_api=saved_model"),
        Hint("load", ("lacks the TF-Keras metadata",),
             "tf.saved_model.save writes no Keras metadata, so load_model cannot rebuild a Keras "
             "model: save with save_api=keras_saved_model, or load with load_api=saved_model or "
             "hub"),
        Hint("load", ("load_model returned",),
             "Model.export writes an inference-only SavedModel without Keras metadata: load it "
             "with load_api=saved_model or hub"),
        Hint("load", ("Argument(s) not recognized", "is_legacy_optimizer"),
             "a .keras file written by tf_keras (Keras 2) holds an optimizer config Keras 3 "
             "cannot read: load it with load_keras=legacy, or cross generations through a "
             "SavedModel (save_api=saved_model, load_api=saved_model)"),
        Hint("load", ("Error when deserializing class", "batch_shape"),
             "a .keras file written by Keras 3 uses layer configs tf_keras (Keras 2) cannot "
             "read: load it with load_keras=v3, or cross generations through a SavedModel "
             "(save_api=saved_model or export, load_api=saved_model)"))),
    LoadApi("saved_model", "tf.saved_model.load", frozenset({Format.SAVEDMODEL}), "saved_model",
            hints=(
        Hint("load", ("KeyError", "serving_default"),
             "the SavedModel has no serving_default signature: a subclassed model saved before "
             "it traced a call (the seed's caveat), or one with several inputs "
             "(tensorflow#69307)"),
        # Measured: model=subclassed save_api=saved_model strategy=mirrored under Keras 3 gives
        # a signature for batches of 64 (the probe's); the test set's last batch holds 39.
        Hint(None, ("Input to reshape is a tensor with", "signature_wrapper_serving_default"),
             "the SavedModel's serving signature takes batches of one fixed size only (a "
             "subclassed model's, traced on the first batch it was called with), and a batch of "
             "another size (the test set's last) does not fit; the probe's logits matched. Save "
             "with save_api=export, whose signature takes any batch, or use model=sequential or "
             "functional"),)),
    LoadApi("hub", "hub.KerasLayer", frozenset({Format.SAVEDMODEL}), "saved_model",
            new_model=True, hints=(
        Hint("load", ("Expected a string, got",),
             "hub.KerasLayer got a loaded object it cannot call: SavedModels from Model.export, "
             "and from tf.saved_model.save under Keras 3, have no __call__; and tensorflow_hub "
             "0.16 builds Keras 2 layers only (tensorflow/hub#903). Save with keras=legacy and "
             "save_api=saved_model or keras_saved_model, or use load_api=tfsm_layer under "
             "Keras 3"),
        Hint("load", ("KerasLayer", "KerasTensor is symbolic"),
             "tensorflow_hub 0.16's KerasLayer is a tf_keras (Keras 2) layer and cannot be "
             "called on a Keras 3 input (tensorflow/hub#903): load with load_keras=legacy, or "
             "use load_api=tfsm_layer or saved_model under Keras 3"))),
    LoadApi("tfsm_layer", "keras.layers.TFSMLayer", frozenset({Format.SAVEDMODEL}), "export",
            new_model=True, hints=(
        Hint("load", ("has no attribute 'TFSMLayer'",),
             "TFSMLayer exists in Keras 3 only; under keras=legacy wrap a SavedModel with "
             "load_api=hub"),
        Hint("continue", ("is not a valid scope name", "momentum"),
             "TFSMLayer's variable names contain ':0', which Keras 3's Adam puts into "
             "slot-variable scope names; load_api.optimizer=sgd trains"))),
    LoadApi("checkpoint", "tf.train.Checkpoint.restore", frozenset({Format.CHECKPOINT}),
            "checkpoint", rebuilds=True, hints=(
        Hint("load", ("CheckpointIncomplete", "outside tf.train.Checkpoint's object graph"),
             "measured: tf.train.Checkpoint reaches none of a Keras 3 subclassed model's "
             "layers; the trainable variables are saved only because the optimizer tracks them, "
             "so BatchNormalization's moving statistics are lost. Use save_api=keras or weights "
             "(Keras' own formats), or a Sequential/functional model"),
        Hint("load", ("not bound to checkpointed values",),
             "the checkpoint and the model built afresh to restore it do not match (another "
             "model or model.batchnorm; a checkpoint without the optimizer; "
             "tf.train.Checkpoint(model=...) read by load_weights, or the reverse): TensorFlow "
             "lists the objects that found no value"),
        Hint("load", ("Unresolved object in checkpoint",),
             "the checkpoint holds values the model built afresh has no place for (another "
             "model or model.batchnorm, or a checkpoint written by another API): TensorFlow "
             "lists them"))),
    LoadApi("weights", "Model.load_weights", frozenset({Format.WEIGHTS, Format.KERAS}),
            "weights", rebuilds=True),
)}

# Which registry holds each group's APIs.
REGISTRIES: dict[str, Mapping[str, Any]] = {"save_api": SAVE_APIS, "load_api": LOAD_APIS}


def options(group: str) -> list[str]:
    """The group's options in the order the help lists them (save_api=auto first)."""
    names = list(REGISTRIES[group])
    return [AUTO, *names] if group == "save_api" else names


def hints() -> list[Hint]:
    """Every API's hints: the save APIs' first, then the load APIs', in table order."""
    return [h for registry in REGISTRIES.values() for api in registry.values() for h in api.hints]


def option_notes(save_api: str, io_device: str | None,
                 variable_policy: str | None) -> list[str]:
    """The options the save API cannot apply, each said instead of dropped silently."""
    api = SAVE_APIS[save_api]
    notes = []
    if io_device is not None and api.options is None:
        notes.append(f"io_device={io_device} not applied: {api.call} takes no SaveOptions")
    if variable_policy is not None and api.options != "SaveOptions":
        why = (f"{api.call} takes no SaveOptions" if api.options is None
               else f"tf.train.{api.options} has no variable policy")
        notes.append(f"save_api.variable_policy={variable_policy} not applied: {why}")
    return notes


def registrar(implemented: dict[str, Any]) -> Callable[[str], Callable[[F], F]]:
    """A decorator factory for a job module's implementations: `@saver("keras")` puts the
    decorated function into `implemented` under the API's name (check_implemented then holds
    the table against the registry)."""
    def named(name: str) -> Callable[[F], F]:
        def register(function: F) -> F:
            implemented[name] = function
            return function

        return register

    return named


def check_implemented(group: str, implemented: Mapping[str, Any], where: str) -> None:
    """Every API of the group's table has its implementation in `where`, and nothing more:
    raised at import, so a gap fails every job at once, naming the fix."""
    missing = [name for name in REGISTRIES[group] if name not in implemented]
    extra = [name for name in implemented if name not in REGISTRIES[group]]
    if missing or extra:
        raise RuntimeError(
            f"{where} and runner.core.apis disagree on {group}: "
            + "; ".join([*(f"{group}={n} has no implementation" for n in missing),
                         *(f"{group}={n} is not in the registry" for n in extra)]))
