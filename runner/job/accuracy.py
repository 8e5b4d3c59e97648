"""Test accuracy of a model's logits: over the test set, or distributed as the seed does.

The accuracy is the argmax of the logits against integer class labels, as the seed computes it;
for a model of the user's whose outputs are not that (a regression, one-hot or multi-label
targets), it is None: no number that would look right and mean nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


def accuracy(predict: Callable[[Any], Any], test: tf.data.Dataset) -> float | None:
    correct = total = 0
    for images, labels in test:
        logits = predict(images)
        if total == 0 and not argmax_fits(logits, labels):
            return None
        correct += int(_hits(logits, labels))
        total += int(labels.shape[0])
    return correct / total


def argmax_fits(logits: Any, labels: Any) -> bool:
    """Class scores (batch, classes) against integer labels (batch,): one output, one label."""
    if isinstance(logits, (dict, list, tuple)) or isinstance(labels, (dict, list, tuple)):
        return False
    logits, labels = tf.convert_to_tensor(logits), tf.convert_to_tensor(labels)
    return (logits.shape.rank == 2 and labels.shape.rank == 1 and labels.dtype.is_integer
            and logits.shape[-1] is not None and logits.shape[-1] > 1)


def distributed_accuracy(predict: Callable[[Any], Any], test: tf.data.Dataset,
                         strategy: tf.distribute.Strategy | None) -> float | None:
    """Inference as the seed distributes it: experimental_distribute_dataset + strategy.run."""
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return accuracy(predict, test)
    images, labels = next(iter(test))
    if not argmax_fits(predict(images), labels):
        return None

    def step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _hits(predict(images), labels), tf.size(labels, out_type=tf.int64)

    correct = total = 0
    for images, labels in strategy.experimental_distribute_dataset(test):
        hits, count = strategy.run(step, args=(images, labels))
        correct += int(strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None))
        total += int(strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None))
    return correct / total


def compiled_metrics(model: Any, test: tf.data.Dataset) -> dict[str, float] | None:
    """The model's own compiled loss and metrics on the test set (model.evaluate), where the
    argmax accuracy does not fit its outputs; None without a compiled Keras model."""
    if model is None or getattr(model, "optimizer", None) is None:
        return None
    values = model.evaluate(test, verbose=0, return_dict=True)
    return {str(k): float(v) for k, v in values.items()}


def _hits(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.int64))
