"""`model=transformer`: a small encoder block (a registered positional embedding,
MultiHeadAttention, LayerNormalization, a feed-forward block) on `data=token_sequences`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def token_sequences(n_train: int = 1000, n_test: int = 200, length: int = 16,
                    vocabulary: int = 50, classes: int = 4,
                    seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random token ids; the label is which of the tokens 1..classes occurs most (ties: the
    first), planted so that it is learnable."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = rng.integers(classes + 1, vocabulary, size=(n, length))
        labels = rng.integers(0, classes, size=n)
        for row, label in zip(tokens, labels, strict=True):
            row[rng.choice(length, size=4, replace=False)] = label + 1
        return tokens.astype(np.int32), labels.astype(np.int64)

    return {"train": split(n_train), "test": split(n_test)}


@tf.keras.utils.register_keras_serializable(package="runner_families")
class PositionalEmbedding(tf.keras.layers.Layer):
    """Token embedding plus a learned embedding of each position."""

    def __init__(self, vocabulary: int, length: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary, self.length, self.dim = vocabulary, length, dim
        self.tokens = tf.keras.layers.Embedding(vocabulary, dim)
        self.positions = tf.keras.layers.Embedding(length, dim)

    def build(self, input_shape):
        self.tokens.build(input_shape)
        self.positions.build((self.length,))
        super().build(input_shape)

    def call(self, inputs):
        return self.tokens(inputs) + self.positions(tf.range(tf.shape(inputs)[-1]))

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "length": self.length,
                "dim": self.dim}


def build(classes: int = 4, length: int = 16, vocabulary: int = 50, dim: int = 32,
          heads: int = 2, hidden: int = 64) -> tf.keras.Model:
    inputs = tf.keras.Input(shape=(length,), dtype=tf.int32, name="tokens")
    x = PositionalEmbedding(vocabulary, length, dim)(inputs)
    attended = tf.keras.layers.MultiHeadAttention(heads, dim // heads)(x, x)
    x = tf.keras.layers.LayerNormalization()(x + attended)
    forward = tf.keras.layers.Dense(dim)(tf.keras.layers.Dense(hidden, activation="relu")(x))
    x = tf.keras.layers.LayerNormalization()(x + forward)
    x = tf.keras.layers.GlobalAveragePooling1D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(classes)(x), name="transformer")
