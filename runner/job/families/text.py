"""`model=text`: TextVectorization adapted on the training sentences, Embedding, a
bidirectional LSTM (or GRU); `data=sentences`: seeded synthetic sentences, one topic each."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

COMMON = ("the a of and to in is that it was for on with as at by this from".split())
TOPIC_WORDS = 12  # words of each topic's own


def _topics(classes: int) -> list[list[str]]:
    return [[f"t{c}w{i}" for i in range(TOPIC_WORDS)] for c in range(classes)]


def _sentences(n: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    topics = _topics(classes)
    labels = rng.integers(0, classes, size=n)
    texts = []
    for label in labels:
        length = int(rng.integers(6, 14))
        words = [topics[label][rng.integers(TOPIC_WORDS)] if rng.random() < 0.35
                 else (COMMON[rng.integers(len(COMMON))] if rng.random() < 0.8
                       else topics[rng.integers(classes)][rng.integers(TOPIC_WORDS)])
                 for _ in range(length)]
        texts.append(" ".join(words))
    return np.array(texts), labels.astype(np.int64)


def sentences(n_train: int = 2000, n_test: int = 200, classes: int = 4,
              seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(text, topic) pairs: NumPy strings and int labels, the same for the same seed."""
    rng = np.random.default_rng(seed)
    train = _sentences(n_train, classes, rng)
    return {"train": train, "test": _sentences(n_test, classes, rng)}


def build(classes: int = 4, max_tokens: int = 200, sequence_length: int = 16,
          embedding: int = 16, units: int = 16, rnn: str = "lstm", n_train: int = 2000,
          seed: int = 0) -> tf.keras.Model:
    """The vocabulary is adapted on the same training sentences data=sentences gives (same
    n_train, classes and seed), so a rebuild (load_api=weights, checkpoint) has the same."""
    texts, _ = sentences(n_train, 0, classes, seed)["train"]
    vectorize = tf.keras.layers.TextVectorization(max_tokens=max_tokens,
                                                  output_sequence_length=sequence_length)
    vectorize.adapt(texts)
    cell = {"lstm": tf.keras.layers.LSTM, "gru": tf.keras.layers.GRU}[rnn]
    inputs = tf.keras.Input(shape=(), dtype=tf.string, name="text")
    x = vectorize(inputs)
    x = tf.keras.layers.Embedding(max_tokens, embedding)(x)
    x = tf.keras.layers.Bidirectional(cell(units))(x)
    outputs = tf.keras.layers.Dense(classes)(x)
    return tf.keras.Model(inputs, outputs, name="text")
