"""The load APIs, one function each, and loading inside the load-side strategy's scope.

Each is registered under its name in runner.core.apis' table, which checks at import that every
API there has one. `io_device` goes into LoadOptions/CheckpointOptions where the API takes
options; where it takes none, the returned note says so.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from runner.core import apis
from runner.job import models, runtime, verify
from runner.job.artifact import ArtifactError

if TYPE_CHECKING:
    from runner.core.schema import Config

SERVING_KEY = "serving_default"


@dataclass
class Loaded:
    """What a load API gives back, reduced to what the scenario needs."""

    predict: Callable[[Any], tf.Tensor]  # images -> logits
    model: tf.keras.Model | None = None  # a compiled, trainable Keras model, if the API gives one
    keep_alive: Any = None  # the loaded object its functions' variables belong to
    notes: list[str] = field(default_factory=list)
    new_optimizer: bool = False  # a new model compiled around what was loaded (hub, tfsm_layer)


# Each takes (path, io_device, the load_api group's options, the model's saved_with.json) and
# `trust`: load.trust, for Keras' own safe_mode.
Loader = Callable[..., Loaded]
LOADERS: dict[str, Loader] = {}
loader = apis.registrar(LOADERS)  # @loader("keras"): the function of load_api=keras


@loader("keras")
def load_keras(path: Path, io_device: str | None, options: Any,
               saved_with: Mapping[str, Any], trust: bool = False) -> Loaded:
    """tf.keras.models.load_model: a compiled Keras model, trainable as it is."""
    # safe_mode (both generations, .keras files): no Python lambda is deserialized unless
    # load.trust; runner.job.scan refused what else could run code before this.
    if io_device is not None and runtime.keras_generation() == "tf_keras":
        model = tf.keras.models.load_model(str(path), options=_load_options(io_device),
                                           safe_mode=not trust)
        notes = [] if path.is_dir() else ["io_device: tf_keras uses LoadOptions for SavedModel "
                                          "directories only, not for .keras files"]
    else:
        model = tf.keras.models.load_model(str(path), safe_mode=not trust)
        notes = _not_applied(io_device, "io_device", "Keras 3 load_model takes no LoadOptions")
    if not isinstance(model, tf.keras.Model):
        # tf_keras falls back to a plain restored object when the SavedModel has no Keras metadata.
        raise TypeError(f"load_model returned a {type(model).__name__}, not a Keras model")
    return Loaded(predict=models.predictor(model), model=model, notes=notes)


@loader("saved_model")
def load_saved_model(path: Path, io_device: str | None, options: Any,
                     saved_with: Mapping[str, Any], trust: bool = False) -> Loaded:
    """tf.saved_model.load + signatures['serving_default']: inference only."""
    loaded = tf.saved_model.load(str(path), options=_load_options(io_device))
    serve = loaded.signatures[SERVING_KEY]
    return Loaded(predict=lambda x: single_output(serve(x)), keep_alive=loaded)


@loader("hub")
def load_hub(path: Path, io_device: str | None, options: Any,
             saved_with: Mapping[str, Any], trust: bool = False) -> Loaded:
    """hub.KerasLayer(tf.saved_model.load(dir), trainable=True) in a new model, as the seed does."""
    import tensorflow_hub as hub

    loaded = tf.saved_model.load(str(path), options=_load_options(io_device))
    inputs = tf.keras.layers.Input(shape=models.INPUT_SHAPE, name="input_x")
    outputs = hub.KerasLayer(loaded, trainable=True)(inputs)
    model = tf.keras.Model(inputs, outputs)
    models.compile_model(model, options.optimizer)
    return Loaded(predict=models.predictor(model), model=model, keep_alive=loaded,
                  new_optimizer=True)


@loader("tfsm_layer")
def load_tfsm_layer(path: Path, io_device: str | None, options: Any,
                    saved_with: Mapping[str, Any], trust: bool = False) -> Loaded:
    """keras.layers.TFSMLayer(dir, trainable=True) in a new model: Keras 3's hub.KerasLayer."""
    layer = tf.keras.layers.TFSMLayer(str(path), call_endpoint=SERVING_KEY, trainable=True)
    inputs = tf.keras.layers.Input(shape=models.INPUT_SHAPE)
    model = tf.keras.Model(inputs, single_output(layer(inputs)))
    models.compile_model(model, options.optimizer)
    notes = _not_applied(io_device, "io_device", "TFSMLayer takes no LoadOptions")
    return Loaded(predict=models.predictor(model), model=model, notes=notes, new_optimizer=True)


@loader("checkpoint")
def load_checkpoint(path: Path, io_device: str | None, options: Any,
                    saved_with: Mapping[str, Any], trust: bool = False) -> Loaded:
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


@loader("weights")
def load_weights(path: Path, io_device: str | None, options: Any,
                 saved_with: Mapping[str, Any], trust: bool = False) -> Loaded:
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


apis.check_implemented("load_api", LOADERS, __name__)


def load(path: Path, cfg: Config, strategy: tf.distribute.Strategy | None,
         saved_with: dict[str, Any]) -> Loaded:
    """Load with the chosen API inside the load-side strategy's scope (none: no scope)."""
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        return LOADERS[cfg.load_api.name](path, cfg.io_device, cfg.load_api, saved_with,
                                          trust=cfg.load.trust)


def single_output(outputs: Any) -> Any:
    """A signature returns {name: tensor}; the name differs by generation (output_0, dense_1...)."""
    if isinstance(outputs, dict):
        (value,) = outputs.values()
        return value
    return outputs


def _load_options(io_device: str | None) -> tf.saved_model.LoadOptions:
    return tf.saved_model.LoadOptions(experimental_io_device=io_device)


def _not_applied(value: str | None, key: str, why: str) -> list[str]:
    return [] if value is None else [f"{key}={value} not applied: {why}"]
