"""Test accuracy of a model's logits: over the test set, or distributed as the seed does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


def accuracy(predict: Callable[[Any], Any], test: tf.data.Dataset) -> float:
    correct = total = 0
    for images, labels in test:
        correct += int(_hits(predict(images), labels))
        total += int(labels.shape[0])
    return correct / total


def distributed_accuracy(predict: Callable[[Any], Any], test: tf.data.Dataset,
                         strategy: tf.distribute.Strategy | None) -> float:
    """Inference as the seed distributes it: experimental_distribute_dataset + strategy.run."""
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return accuracy(predict, test)

    def step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _hits(predict(images), labels), tf.size(labels, out_type=tf.int64)

    correct = total = 0
    for images, labels in strategy.experimental_distribute_dataset(test):
        hits, count = strategy.run(step, args=(images, labels))
        correct += int(strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None))
        total += int(strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None))
    return correct / total


def _hits(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.int64))
