"""`model=stateful_custom`: a registered custom layer with a non-trainable state variable it
updates in `call` while training (a running mean of its inputs), holding a nested model
(tensorflow/tensorflow#62483); `data=features`: seeded Gaussian blobs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def features(n_train: int = 800, n_test: int = 200, features: int = 16, classes: int = 4,
             seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each class a Gaussian around its own centre, off zero (so the running mean matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(2.0, 2.0, size=(classes, features))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, size=n)
        x = centres[labels] + rng.normal(0.0, 1.5, size=(n, features))
        return x.astype(np.float32), labels.astype(np.int64)

    return {"train": split(n_train), "test": split(n_test)}


def _mean_aggregation() -> dict:
    """Averaged over replicas when assigned under a strategy; each generation's spelling."""
    if tf.keras.__name__.startswith("tf_keras") or not hasattr(tf.keras, "ops"):
        return {"aggregation": tf.VariableAggregation.MEAN}
    return {"aggregation": "mean"}


@tf.keras.utils.register_keras_serializable(package="runner_families")
class CentredBlock(tf.keras.layers.Layer):
    """Subtracts a running mean of its inputs (updated while training: state outside the
    gradients), then applies a nested Sequential model."""

    def __init__(self, units: int = 32, momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.units, self.momentum = units, momentum
        self.inner = tf.keras.Sequential([tf.keras.layers.Dense(units, activation="relu"),
                                          tf.keras.layers.Dense(units, activation="relu")],
                                         name="inner")

    def build(self, input_shape):
        self.running_mean = self.add_weight(name="running_mean", shape=(input_shape[-1],),
                                            initializer="zeros", trainable=False,
                                            **_mean_aggregation())
        self.inner.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        if training:
            batch_mean = tf.cast(tf.reduce_mean(inputs, axis=0), self.running_mean.dtype)
            self.running_mean.assign(self.momentum * self.running_mean
                                     + (1.0 - self.momentum) * batch_mean)
        return self.inner(inputs - tf.cast(self.running_mean, inputs.dtype))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "momentum": self.momentum}


def build(features: int = 16, units: int = 32, classes: int = 4) -> tf.keras.Model:
    inputs = tf.keras.Input(shape=(features,), name="features")
    x = CentredBlock(units)(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(classes)(x), name="stateful_custom")
