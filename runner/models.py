"""The seed's CNN in three forms: Sequential, functional, and a Model subclass."""

from __future__ import annotations

import tensorflow as tf

INPUT_SHAPE = (28, 28, 1)


def build(name: str) -> tf.keras.Model:
    if name == "sequential":
        return tf.keras.Sequential([tf.keras.Input(INPUT_SHAPE), *_layers()])
    if name == "functional":
        inputs = tf.keras.Input(INPUT_SHAPE)
        x = inputs
        for layer in _layers():
            x = layer(x)
        return tf.keras.Model(inputs, x)
    if name == "subclassed":
        return SubclassedCNN()
    raise ValueError(f"unknown model {name!r}")


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


def _layers() -> list[tf.keras.layers.Layer]:
    return [
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(10),
    ]


# Registered so that load_model can rebuild it from a .keras file, in this process or another.
@tf.keras.utils.register_keras_serializable(package="runner")
class SubclassedCNN(tf.keras.Model):
    """The same network as a Model subclass: no input shape until it is first called."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stack = _layers()

    def call(self, inputs):
        x = inputs
        for layer in self.stack:
            x = layer(x)
        return x


def predictor(model: tf.keras.Model):
    """images -> logits, in inference mode."""
    return lambda images: model(images, training=False)


def has_traced_call(model: tf.keras.Model) -> bool:
    """Whether saving can find the forward pass: save_spec() in Keras 2, `built` in Keras 3."""
    if hasattr(model, "save_spec"):
        return model.save_spec() is not None
    return model.built

