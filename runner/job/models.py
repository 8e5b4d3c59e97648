"""The models: the seed's CNN in three forms (Sequential, functional, a Model subclass; optionally
with stateful layers: BatchNormalization, whose moving statistics are sync-on-read variables
under a multi-replica strategy, and Dropout, which draws random numbers while training), or the
user's own (`model._target_`); and their compile."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from runner.core import targets

INPUT_SHAPE = (28, 28, 1)


def build(name: str, batchnorm: bool = False, dropout: float = 0.0) -> tf.keras.Model:
    if name == "sequential":
        return tf.keras.Sequential([tf.keras.Input(INPUT_SHAPE), *_layers(batchnorm, dropout)])
    if name == "functional":
        inputs = tf.keras.Input(INPUT_SHAPE)
        x = inputs
        for layer in _layers(batchnorm, dropout):
            x = layer(x)
        return tf.keras.Model(inputs, x)
    if name == "subclassed":
        return SubclassedCNN(batchnorm=batchnorm, dropout=dropout)
    raise ValueError(f"unknown model {name!r}")


def build_from(options: Any) -> tf.keras.Model:
    """The model of a `model` config group, or of the dict saved_with.json keeps of it: the
    built-in CNN by name, or the user's `_target_` (runner.core.targets)."""
    if targets.is_target(options):
        return build_target(options)
    get = options.get
    return build(get("name"), bool(get("batchnorm", False)), float(get("dropout", 0.0) or 0.0))


def build_target(options: Any) -> tf.keras.Model:
    """The user's model: `_target_` called with the keys beside it (a `_partial_` one is then
    called with none)."""
    from hydra.utils import instantiate  # the job process only: Hydra's own instantiate

    arguments = targets.arguments(_container(options), "model")
    model = instantiate(arguments)
    if not isinstance(model, tf.keras.Model) and callable(model):
        model = model()
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"model._target_={arguments['_target_']} returned a "
                        f"{type(model).__name__}, not a tf.keras.Model (of this process's Keras: "
                        f"{tf.keras.__name__}); build it with tf.keras so that both keras=v3 and "
                        "keras=legacy use it")
    return model


@contextlib.contextmanager
def dtype_policy(precision: str | None) -> Iterator[None]:
    """Keras' global dtype policy while a model is built and compiled (each layer keeps the
    policy it was built with; compile wraps a mixed_float16 model's optimizer in a
    LossScaleOptimizer); the process's own policy afterwards."""
    if not precision or precision == "float32":
        yield
        return
    before = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(before)


def is_compiled(model: tf.keras.Model) -> bool:
    """Whether the builder compiled it (Keras 3: `compiled`; tf_keras: `_is_compiled`)."""
    return bool(getattr(model, "compiled", getattr(model, "_is_compiled", False)))


def build_variables(model: tf.keras.Model, example: Any = None,
                    optimizer: bool = True) -> None:
    """Create the model's and (optimizer=True) its optimizer's variables now (a subclassed model
    has none until called, an optimizer's slots none until its first step), so that a restore
    can match them all at once. `example`: a batch of the model's inputs (default: one of the
    CNN's)."""
    model(tf.zeros((1, *INPUT_SHAPE)) if example is None else example, training=False)
    if optimizer:
        model.optimizer.build(model.trainable_variables)


def compile_model(model: tf.keras.Model, train: Any = None, optimizer: str | None = None,
                  jit_compile: bool = False) -> None:
    """Compile with train.optimizer, .loss, .metrics (by default the seed's: Adam, logits and
    sparse labels, accuracy); `optimizer` overrides train.optimizer. jit_compile=True forces
    XLA; otherwise each Keras keeps its own default (Keras 3: XLA where there is a GPU)."""
    spec = _container(train) if train is not None else SEED_COMPILE
    model.compile(
        optimizer=_object(optimizer or spec.get("optimizer", "adam"), tf.keras.optimizers.get),
        loss=_object(spec.get("loss", SEED_COMPILE["loss"]), tf.keras.losses.get),
        metrics=[_object(m, tf.keras.metrics.get) if isinstance(m, dict) else m
                 for m in spec.get("metrics", SEED_COMPILE["metrics"])],
        **({"jit_compile": True} if jit_compile else {}),
    )


# The seed's compile, as train.optimizer/loss/metrics write it (conf/config.yaml).
SEED_COMPILE: dict[str, Any] = {
    "optimizer": "adam",
    "loss": {"_target_": "tensorflow.keras.losses.SparseCategoricalCrossentropy",
             "from_logits": True},
    "metrics": [{"_target_": "tensorflow.keras.metrics.SparseCategoricalAccuracy"}],
}


def compile_spec(train: Any) -> dict[str, Any]:
    """train.optimizer/loss/metrics as plain data (saved_with.json keeps it)."""
    spec = _container(train)
    return {key: spec.get(key, SEED_COMPILE[key]) for key in SEED_COMPILE}


# saved_with.json's `compile` when the user's builder compiled the model itself.
COMPILED_BY_MODEL = "model"


def compile_targets(spec: Any) -> list[str]:
    """The `_target_`s a train group or compile spec would instantiate (optimizer, loss,
    metrics); none for COMPILED_BY_MODEL."""
    if not hasattr(spec, "get"):
        return []
    return [item[targets.TARGET] for _, item in targets.compile_items(spec)
            if targets.is_target(item)]


def model_options(model: Any) -> dict[str, Any]:
    """What builds this `model` group again (saved_with.json's model_options): the user's target
    with its arguments as configured, or the built-in CNN's options."""
    if targets.is_target(model):
        return _container(model)
    return {"name": model.name, "batchnorm": model.batchnorm, "dropout": model.dropout}


def _object(spec: Any, by_name: Any) -> Any:
    """A Keras name through Keras' own lookup, or a `_target_` config instantiated."""
    if isinstance(spec, dict):
        from hydra.utils import instantiate

        return instantiate(spec)
    return by_name(spec)


def _container(node: Any) -> dict[str, Any]:
    if isinstance(node, dict):
        return node
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def _layers(batchnorm: bool = False, dropout: float = 0.0) -> list[tf.keras.layers.Layer]:
    return [
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        *([tf.keras.layers.BatchNormalization()] if batchnorm else []),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation="relu"),
        *([tf.keras.layers.Dropout(dropout)] if dropout else []),
        tf.keras.layers.Dense(10),
    ]


# Registered so that load_model can rebuild it from a .keras file, in this process or another.
@tf.keras.utils.register_keras_serializable(package="runner")
class SubclassedCNN(tf.keras.Model):
    """The same network as a Model subclass: no input shape until it is first called."""

    def __init__(self, batchnorm: bool = False, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.batchnorm, self.dropout = batchnorm, dropout
        self.stack = _layers(batchnorm, dropout)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.stack:
            x = layer(x, training=training)
        return x

    def get_config(self):  # so that load_model rebuilds it with the same layers
        return {**super().get_config(), "batchnorm": self.batchnorm, "dropout": self.dropout}


def predictor(model: tf.keras.Model):
    """images -> logits, in inference mode."""
    return lambda images: model(images, training=False)


def has_traced_call(model: tf.keras.Model) -> bool:
    """Whether saving can find the forward pass: save_spec() in Keras 2, `built` in Keras 3."""
    if hasattr(model, "save_spec"):
        return model.save_spec() is not None
    return model.built

