"""The seed's CNN in three forms: Sequential, functional, and a Model subclass; optionally with
stateful layers (BatchNormalization, whose moving statistics are sync-on-read variables under a
multi-replica strategy, and Dropout, which draws random numbers while training)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

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
    """build() from a `model` config group or the dict saved_with.json keeps of it."""
    get = options.get
    return build(get("name"), bool(get("batchnorm", False)), float(get("dropout", 0.0) or 0.0))


def build_variables(model: tf.keras.Model) -> None:
    """Create the model's and its optimizer's variables now (a subclassed model has none until
    called, an optimizer's slots none until its first step), so that a restore can match them
    all at once."""
    model(tf.zeros((1, *INPUT_SHAPE)), training=False)
    model.optimizer.build(model.trainable_variables)


def compile_model(model: tf.keras.Model, optimizer: str = "adam",
                  jit_compile: bool = False) -> None:
    """The seed's compile: logits, sparse labels, Adam. jit_compile=True forces XLA; otherwise
    each Keras keeps its own default (Keras 3: XLA where there is a GPU)."""
    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=tf.keras.optimizers.get(optimizer),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        **({"jit_compile": True} if jit_compile else {}),
    )


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

