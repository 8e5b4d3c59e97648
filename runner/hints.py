"""Short hints for failures that match a known upstream issue or a documented API limit.

A hint never replaces the real exception: result.json keeps its type and message, and the hint
says why it happens and what to use instead.
"""

from __future__ import annotations

# (phase, or None for any; words that must all appear in "Type: message"; hint)
KNOWN: list[tuple[str | None, tuple[str, ...], str]] = [
    ("save", ("Invalid filepath extension for saving",),
     "Keras 3's Model.save writes only .keras/.h5 files; for a SavedModel use save_api=export "
     "or save_api=saved_model, or keras=legacy"),
    ("save", ("argument(s) are not supported", "options"),
     "Keras 3's Model.save takes no SaveOptions (and writes .keras/.h5 only): for the seed's "
     "io_device step use keras=legacy, or save_api=saved_model, which passes io_device to "
     "tf.saved_model.save"),
    ("load", ("SavedModel file does not exist", ".keras"),
     "a .keras file is a Keras zip archive, not a SavedModel: load it with load_api=keras, or "
     "save with save_api=saved_model/export for the SavedModel load APIs"),
    ("load", ("File format not supported", "Keras 3 only supports"),
     "Keras 3's load_model reads .keras/.h5 only; load a SavedModel with load_api=tfsm_layer "
     "or load_api=saved_model"),
    ("load", ("lacks the TF-Keras metadata",),
     "tf.saved_model.save writes no Keras metadata, so load_model cannot rebuild a Keras model: "
     "save with save_api=keras_saved_model, or load with load_api=saved_model or hub"),
    ("load", ("load_model returned",),
     "Model.export writes an inference-only SavedModel without Keras metadata: load it with "
     "load_api=saved_model or hub"),
    ("load", ("Expected a string, got",),
     "hub.KerasLayer got a loaded object it cannot call: SavedModels from Model.export, and "
     "from tf.saved_model.save under Keras 3, have no __call__; and tensorflow_hub 0.16 builds "
     "Keras 2 layers only (tensorflow/hub#903). Save with keras=legacy and save_api=saved_model "
     "or keras_saved_model, or use load_api=tfsm_layer under Keras 3"),
    ("load", ("Argument(s) not recognized", "is_legacy_optimizer"),
     "a .keras file written by tf_keras (Keras 2) holds an optimizer config Keras 3 cannot "
     "read: load it with load_keras=legacy, or cross generations through a SavedModel "
     "(save_api=saved_model, load_api=saved_model)"),
    ("load", ("Error when deserializing class", "batch_shape"),
     "a .keras file written by Keras 3 uses layer configs tf_keras (Keras 2) cannot read: load "
     "it with load_keras=v3, or cross generations through a SavedModel (save_api=saved_model "
     "or export, load_api=saved_model)"),
    ("load", ("KerasLayer", "KerasTensor is symbolic"),
     "tensorflow_hub 0.16's KerasLayer is a tf_keras (Keras 2) layer and cannot be called on a "
     "Keras 3 input (tensorflow/hub#903): load with load_keras=legacy, or use "
     "load_api=tfsm_layer or saved_model under Keras 3"),
    ("load", ("has no attribute 'TFSMLayer'",),
     "TFSMLayer exists in Keras 3 only; under keras=legacy wrap a SavedModel with load_api=hub"),
    ("continue", ("is not a valid scope name", "momentum"),
     "TFSMLayer's variable names contain ':0', which Keras 3's Adam puts into slot-variable "
     "scope names; load_api.optimizer=sgd trains"),
    (None, ("Attempt to convert a value", "PerReplica"),
     "Keras 3 fit under MultiWorkerMirroredStrategy (keras-team/keras#20585); keras=legacy works"),
    (None, ("stopped sending heartbeats",),
     "another worker of the cluster died or hung: see its log (worker-<i>.log) and the "
     "'cluster:' note"),
    ("load", ("CheckpointIncomplete", "outside tf.train.Checkpoint's object graph"),
     "measured: tf.train.Checkpoint reaches none of a Keras 3 subclassed model's layers; the "
     "trainable variables are saved only because the optimizer tracks them, so "
     "BatchNormalization's moving statistics are lost. Use save_api=keras or weights (Keras' own "
     "formats), or a Sequential/functional model"),
    ("load", ("not bound to checkpointed values",),
     "the checkpoint and the model built afresh to restore it do not match (another model or "
     "model.batchnorm; a checkpoint without the optimizer; tf.train.Checkpoint(model=...) read "
     "by load_weights, or the reverse): TensorFlow lists the objects that found no value"),
    ("load", ("Unresolved object in checkpoint",),
     "the checkpoint holds values the model built afresh has no place for (another model or "
     "model.batchnorm, or a checkpoint written by another API): TensorFlow lists them"),
    ("load", ("KeyError", "serving_default"),
     "the SavedModel has no serving_default signature: a subclassed model saved before it "
     "traced a call (the seed's caveat), or one with several inputs (tensorflow#69307)"),
]


def hint_for(e: BaseException, phase: str) -> str | None:
    text = f"{type(e).__name__}: {e}"
    for where, words, hint in KNOWN:
        if (where is None or where == phase) and all(w in text for w in words):
            return hint
    return None


# ---- before a job: the save API the seed pairs with each load API, and known mismatches -------

# save_api=auto: the save API the seed (and the matrices) pair with each load API.
PAIRED_SAVE_API = {"keras": "keras", "saved_model": "saved_model", "hub": "saved_model",
                   "tfsm_layer": "export", "checkpoint": "checkpoint", "weights": "weights"}
# What each save API writes, and which of those each load API reads (the measured matrices).
WRITES = {"keras": "keras", "saved_model": "savedmodel", "keras_saved_model": "savedmodel",
          "export": "savedmodel", "checkpoint": "checkpoint", "weights": "weights"}
FORMAT_WORDS = {"keras": "a .keras file", "savedmodel": "a SavedModel directory",
                "checkpoint": "a tf.train.Checkpoint", "weights": "a save_weights file"}
READS = {"keras": {"keras", "savedmodel"}, "saved_model": {"savedmodel"},
         "hub": {"savedmodel"}, "tfsm_layer": {"savedmodel"}, "checkpoint": {"checkpoint"},
         "weights": {"weights", "keras"}}


def expected_failure(save_api: str, load_api: str, keras: str, load_keras: str) -> str | None:
    """Why an explicitly chosen save API x load API is known to fail, with the alternative; None
    when it is not known to. Measured: the README's compatibility matrices."""
    if save_api == "keras_saved_model" and keras == "v3":
        return ("expected to fail in save: Keras 3's Model.save writes .keras/.h5 files only; "
                "save_api=export or saved_model write a SavedModel")
    written = WRITES.get(save_api)
    readable = set(READS.get(load_api, ()))
    if load_api == "keras" and (load_keras == "v3" or save_api != "keras_saved_model"):
        readable.discard("savedmodel")  # only tf_keras reads a SavedModel it wrote with Model.save
    if written is None or written in readable:
        return None
    return (f"expected to fail in load: save_api={save_api} writes {FORMAT_WORDS[written]}, "
            f"which load_api={load_api} cannot read; save_api={PAIRED_SAVE_API[load_api]} (or "
            "save_api=auto) writes what it reads")
