"""The load APIs, one function each, and loading inside the load-side strategy's scope.

Each is registered under its name in runner.core.apis' table, which checks at import that every
API there has one. `io_device` goes into LoadOptions/CheckpointOptions where the API takes
options; where it takes none, the returned note says so.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from runner.core import apis, targets
from runner.core.files import SAVED_WITH
from runner.core.trust import TRUST_KEY
from runner.job import models, nested, runtime, verify
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


@dataclass
class Request:
    """What a load API is called with: the model's path and what the job's config and the
    model's saved_with.json say about loading it."""

    path: Path
    io_device: str | None
    options: Any  # the load_api group (hub, tfsm_layer: its optimizer)
    saved_with: Mapping[str, Any]
    trust: bool = False  # load.trust, for Keras' own safe_mode too
    model: Any = None  # the job's model group: whose `_target_` may be rebuilt, unless trust
    train: Any = None  # the job's train group: the compile of a model built around a layer
    custom_objects: dict[str, Any] = field(default_factory=dict)  # for load_model
    example: Any = None  # a batch of the model's inputs, to create a rebuilt model's variables


Loader = Callable[[Request], Loaded]
LOADERS: dict[str, Loader] = {}
loader = apis.registrar(LOADERS)  # @loader("keras"): the function of load_api=keras


@loader("keras")
def load_keras(request: Request) -> Loaded:
    """tf.keras.models.load_model: a compiled Keras model, trainable as it is."""
    path, io_device = request.path, request.io_device
    # safe_mode (both generations, .keras files): no Python lambda is deserialized unless
    # load.trust; runner.job.scan refused what else could run code before this.
    kwargs = {"safe_mode": not request.trust, "custom_objects": request.custom_objects or None}
    if io_device is not None and runtime.keras_generation() == "tf_keras":
        model = tf.keras.models.load_model(str(path), options=_load_options(io_device), **kwargs)
        notes = [] if path.is_dir() else ["io_device: tf_keras uses LoadOptions for SavedModel "
                                          "directories only, not for .keras files"]
    else:
        model = tf.keras.models.load_model(str(path), **kwargs)
        notes = _not_applied(io_device, "io_device", "Keras 3 load_model takes no LoadOptions")
    if not isinstance(model, tf.keras.Model):
        # tf_keras falls back to a plain restored object when the SavedModel has no Keras metadata.
        raise TypeError(f"load_model returned a {type(model).__name__}, not a Keras model")
    return Loaded(predict=models.predictor(model), model=model, notes=notes)


@loader("saved_model")
def load_saved_model(request: Request) -> Loaded:
    """tf.saved_model.load + signatures['serving_default']: inference only."""
    loaded = tf.saved_model.load(str(request.path), options=_load_options(request.io_device))
    return Loaded(predict=serving(loaded), keep_alive=loaded)


def serving(loaded: Any) -> Callable[[Any], Any]:
    """inputs -> outputs through the loaded SavedModel's serving_default signature."""
    serve = loaded.signatures[SERVING_KEY]
    return lambda x: single_output(call_signature(serve, x))


def call_signature(serve: Any, inputs: Any) -> Any:
    """A serving signature takes its inputs by name. Several inputs: by their own names where
    the signature kept them, else in tf.nest's order onto the names tf.saved_model.save made
    up (`inputs`, `inputs_1`, ...: measured, Keras 3's functional model of a dict of inputs)."""
    if nested.is_single(inputs):
        return serve(inputs)
    names = list(serve.structured_input_signature[1])
    if isinstance(inputs, Mapping) and set(inputs) == set(names):
        return serve(**inputs)
    flat = tf.nest.flatten(inputs)
    if len(flat) != len(names):
        raise TypeError(f"the serving signature takes {len(names)} inputs ({', '.join(names)}); "
                        f"the probe has {len(flat)}")
    ordered = sorted(names, key=lambda n: (n.rstrip("0123456789").rstrip("_"),
                                           int(n[len(n.rstrip("0123456789")):] or 0)))
    return serve(**dict(zip(ordered, flat, strict=True)))


@loader("hub")
def load_hub(request: Request) -> Loaded:
    """hub.KerasLayer(tf.saved_model.load(dir), trainable=True) in a new model, as the seed does."""
    import tensorflow_hub as hub

    loaded = tf.saved_model.load(str(request.path), options=_load_options(request.io_device))
    inputs = tf.keras.layers.Input(shape=input_shape(request.saved_with),
                                   dtype=input_dtype(request.saved_with), name="input_x")
    outputs = hub.KerasLayer(loaded, trainable=True)(inputs)
    model = tf.keras.Model(inputs, outputs)
    models.compile_model(model, request.train, optimizer=request.options.optimizer)
    return Loaded(predict=models.predictor(model), model=model, keep_alive=loaded,
                  new_optimizer=True)


@loader("tfsm_layer")
def load_tfsm_layer(request: Request) -> Loaded:
    """keras.layers.TFSMLayer(dir, trainable=True) in a new model: Keras 3's hub.KerasLayer."""
    layer = tf.keras.layers.TFSMLayer(str(request.path), call_endpoint=SERVING_KEY,
                                      trainable=True)
    inputs = tf.keras.layers.Input(shape=input_shape(request.saved_with),
                                   dtype=input_dtype(request.saved_with))
    model = tf.keras.Model(inputs, single_output(layer(inputs)))
    models.compile_model(model, request.train, optimizer=request.options.optimizer)
    notes = _not_applied(request.io_device, "io_device", "TFSMLayer takes no LoadOptions")
    return Loaded(predict=models.predictor(model), model=model, notes=notes, new_optimizer=True)


@loader("checkpoint")
def load_checkpoint(request: Request) -> Loaded:
    """The same model built afresh (saved_with.json says which) and compiled, its variables and
    its optimizer's slots created, then tf.train.Checkpoint.restore. assert_consumed: every
    value in the checkpoint was used and every variable restored, or TensorFlow's list of those
    that were not (build_first=false: assert_existing_objects_matched)."""
    path, io_device = request.path, request.io_device
    model = fresh_model(request)
    counters = {}
    if request.saved_with.get("save_api") == "backup_and_restore":
        # tf_keras' BackupAndRestore checkpoints the model (its optimizer with it) beside its own
        # epoch and batch counters (tf_keras/src/distribute/worker_training_state.py).
        counters = {name: tf.Variable(-1, dtype=tf.int64)
                    for name in ("ckpt_saved_epoch", "ckpt_saved_batch")}
        trained = getattr(model, "_train_counter", None)  # tf_keras' step count of fit
        checkpoint = tf.train.Checkpoint(
            model=model, **counters, **({"train_counter": trained} if trained is not None
                                        else {}))
    else:
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
    if prefix is None:
        raise ArtifactError(f"{path} holds no checkpoint (no 'checkpoint' file naming one)")
    status = checkpoint.restore(
        prefix, options=tf.train.CheckpointOptions(experimental_io_device=io_device))
    # build_first=false: the optimizer has no slots yet; what exists must match, and TensorFlow
    # restores the rest when it is created, where it can (deferred restoration).
    names_first(status.assert_consumed if request.options.get("build_first", True)
                else status.assert_existing_objects_matched)
    unreached, notes = verify.unreached_state(checkpoint, model)
    if unreached:
        raise CheckpointIncomplete(
            f"{len(unreached)} of the model's variables are outside tf.train.Checkpoint's object "
            f"graph, so they were neither saved nor restored (assert_consumed cannot see them): "
            f"{', '.join(unreached)}")
    if counters:
        notes.append("BackupAndRestore's counters in the checkpoint: epoch "
                     f"{int(counters['ckpt_saved_epoch'].numpy())}, batch "
                     f"{int(counters['ckpt_saved_batch'].numpy())} (restored beside the model; "
                     "a new fit starts at epoch 0 unless given initial_epoch)")
    return Loaded(predict=models.predictor(model), model=model, notes=notes)


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
def load_weights(request: Request) -> Loaded:
    """The same model built afresh and compiled, then Model.load_weights: a `.weights.h5`
    file, or a TensorFlow checkpoint folder (tf_keras' default save_weights format)."""
    path, io_device = request.path, request.io_device
    model = fresh_model(request)
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


def fresh_model(request: Request) -> tf.keras.Model:
    """The model saved_with.json describes, built and compiled as the train side did (under its
    dtype policy), with every variable (its optimizer's slots included, unless
    load_api.build_first=false) created, ready to be restored into. A target of
    the user's is called only where the job's own config names it, or load.trust: a model
    file's saved_with.json is not to choose what code runs here."""
    saved_with = request.saved_with
    options = saved_with.get("model_options") or {"name": saved_with["model"]}
    compile_spec = saved_with.get("compile") or models.SEED_COMPILE
    own = [getattr(request.model, "get", lambda *_: None)(targets.TARGET),
           *models.compile_targets(request.train)]
    foreign = [t for t in [options.get(targets.TARGET), *models.compile_targets(compile_spec)]
               if t and targets.root(t) not in targets.LIBRARY_ROOTS and t not in own]
    if foreign and not request.trust:
        raise ArtifactError(
            f"rebuilding this model calls {', '.join(foreign)} ({SAVED_WITH} names it): the "
            "runner calls only what your config names. Choose the model that builds it "
            f"(model=YOUR_OPTION, or model=custom model._target_={foreign[0]}), or set "
            f"{TRUST_KEY}=true if you trust where the model came from.")
    with models.dtype_policy(saved_with.get("precision")):
        model = models.build_from(options)
        if compile_spec != models.COMPILED_BY_MODEL and not models.is_compiled(model):
            models.compile_model(model, compile_spec)
    models.build_variables(model, request.example,
                           optimizer=request.options.get("build_first", True))
    return model


def input_shape(saved_with: Mapping[str, Any]) -> tuple[int | None, ...]:
    """The shape of one example of the model's inputs (the seed's CNN's, for a model saved
    before the runner recorded it)."""
    shape = saved_with.get("input_shape")  # [] for one string per example (model=text)
    return tuple(shape) if shape is not None else models.INPUT_SHAPE


def input_dtype(saved_with: Mapping[str, Any]) -> str | None:
    """The dtype of the model's inputs (None: Keras' float32, as for a model saved before the
    runner recorded it)."""
    return saved_with.get("input_dtype")


def custom_objects(model: Any) -> dict[str, Any]:
    """The modules of the job's model option imported, so that the classes they register
    deserialize, and its `custom_objects` {name: dotted path} looked up, for load_model."""
    import importlib

    for module in targets.custom_object_modules(model):
        importlib.import_module(module)
    objects = model.get("custom_objects") if hasattr(model, "get") else None
    if not hasattr(objects, "items"):
        return {}
    from hydra.utils import get_object

    return {str(name): get_object(str(path)) for name, path in objects.items()}


apis.check_implemented("load_api", LOADERS, __name__)


def load(path: Path, cfg: Config, strategy: tf.distribute.Strategy | None,
         saved_with: dict[str, Any], probe: Any = None) -> Loaded:
    """Load with the chosen API inside the load-side strategy's scope (none: no scope)."""
    request = Request(path=path, io_device=cfg.io_device, options=cfg.load_api,
                      saved_with=saved_with, trust=cfg.load.trust, model=cfg.model,
                      train=cfg.train, custom_objects=custom_objects(cfg.model),
                      example=None if probe is None else nested.head(probe, 1))
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with hinting_unregistered(path, request.custom_objects), scope:
        loaded = LOADERS[cfg.load_api.name](request)
    if not cfg.load_api.get("build_first", True) and not apis.LOAD_APIS[cfg.load_api.name].rebuilds:
        loaded.notes.append(f"load_api.build_first=false not applied: load_api="
                            f"{cfg.load_api.name} builds no model to restore into")
    return loaded


@contextlib.contextmanager
def hinting_unregistered(path: Path, custom_objects: Mapping[str, Any]) -> Iterator[None]:
    """A load that fails gets, as its hint, the classes of the model's config this process
    cannot find (`unregistered_hint`); the job records it beside the real exception."""
    try:
        yield
    except Exception as e:
        hint = unregistered_hint(path, custom_objects)
        if hint and not getattr(e, "hint", None):
            e.hint = hint
        raise


def unregistered_hint(path: Path, custom_objects: Mapping[str, Any]) -> str | None:
    """Which classes of the model's Keras config this process cannot find by name, and how to
    make them found. Keras' own message often names another class (keras-team/keras#20167:
    'Functional could not be deserialized properly'; tf_keras: "'str' object is not
    callable")."""
    from runner.job.scan import custom_classes, keras_configs

    try:
        missing = [(name, module) for config in keras_configs(path)
                   for name, module in custom_classes(config)
                   if name not in custom_objects and name.split(">")[-1] not in custom_objects
                   and tf.keras.utils.get_registered_object(name) is None]
    except (OSError, ValueError):
        return None
    if not missing:
        return None
    missing = list(dict.fromkeys(missing))
    name, module = missing[0]
    short = name.split(">")[-1]
    where = f" (module {module})" if module else ""
    modules = ", ".join(sorted({m for _, m in missing if m})) or "MODULE"
    return (f"{', '.join(n for n, _ in missing)}{where}: not a Keras class this process can "
            "find by name. Register it (@tf.keras.utils.register_keras_serializable()) and "
            f"import its module before loading: model.custom_objects=[{modules}] "
            "(or the model option that builds it); or name it: "
            f"model.custom_objects={{{short}: {module or 'MODULE'}.{short}}}")


def single_output(outputs: Any) -> Any:
    """A signature returns {name: tensor}; the name differs by generation (output_0, dense_1...).
    Several outputs stay a dict: compared output by output, in the order of their names."""
    if isinstance(outputs, dict) and len(outputs) == 1:
        (value,) = outputs.values()
        return value
    return outputs


def _load_options(io_device: str | None) -> tf.saved_model.LoadOptions:
    return tf.saved_model.LoadOptions(experimental_io_device=io_device)


def _not_applied(value: str | None, key: str, why: str) -> list[str]:
    return [] if value is None else [f"{key}={value} not applied: {why}"]
