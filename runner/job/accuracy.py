"""Test accuracy of a model's logits: over the test set, or distributed as the seed does.

The accuracy is the argmax of the logits against integer class labels, as the seed computes it;
for a model of the user's whose outputs are not that (a regression, one-hot or multi-label
targets), it is None: no number that would look right and mean nothing.

A long test set runs compiled: the first batch eagerly (does argmax fit the outputs at all?),
then the batches of that shape through one `tf.function` step traced once, and a batch of
another shape (the last, smaller one) eagerly again. Measured (bench/run.py --only accuracy):
MNIST's 10,000 test images in x0.43 of the eager loop's time, the same counts; on digits' 359
images (6 batches) tracing costs more than it saves, hence MIN_COMPILED_BATCHES. A batch the
compiled step cannot run (a SavedModel signature of one fixed batch size fails while tracing,
with another message) runs eagerly, as do the rest: its error is the one users would meet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import tensorflow as tf

# Below this many batches a pass stays eager. One trace per pass (a few per job) then never
# reaches TensorFlow's "5 out of the last 10 calls triggered retracing" warning either.
MIN_COMPILED_BATCHES = 16


def accuracy(predict: Callable[[Any], Any], test: tf.data.Dataset) -> float | None:
    batches = iter(test)
    first = next(batches, None)
    if first is None:
        return None
    images, labels = first
    logits = predict(images)
    if not argmax_fits(logits, labels):
        return None
    correct, total = int(_hits(logits, labels)), int(tf.size(labels))

    def eager(images: Any, labels: tf.Tensor) -> tuple[Any, Any]:
        return _hits(predict(images), labels), tf.size(labels, out_type=tf.int64)

    for hits, count in _steps(eager, batches, first, _long(test)):
        correct += int(hits)
        total += int(count)
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
    first = next(iter(test))
    if not argmax_fits(predict(first[0]), first[1]):
        return None

    def step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _hits(predict(images), labels), tf.size(labels, out_type=tf.int64)

    def replicated(images: Any, labels: Any) -> tuple[Any, Any]:
        hits, count = strategy.run(step, args=(images, labels))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None))

    correct = total = 0
    batches = iter(strategy.experimental_distribute_dataset(test))
    head = next(batches)
    for hits, count in [replicated(*head), *_steps(replicated, batches, head, _long(test))]:
        correct += int(hits)
        total += int(count)
    return correct / total


def compiled_metrics(model: Any, test: tf.data.Dataset) -> dict[str, float] | None:
    """The model's own compiled loss and metrics on the test set (model.evaluate), where the
    argmax accuracy does not fit its outputs; None without a compiled Keras model."""
    if model is None or getattr(model, "optimizer", None) is None:
        return None
    values = model.evaluate(test, verbose=0, return_dict=True)
    return {str(k): float(v) for k, v in values.items()}


def _long(test: tf.data.Dataset) -> bool:
    n = int(test.cardinality())
    return n == tf.data.UNKNOWN_CARDINALITY or n >= MIN_COMPILED_BATCHES


def _steps(eager: Callable[[Any, Any], tuple[Any, Any]], batches: Iterable[Any],
           first: Any, compile_: bool) -> Iterator[tuple[Any, Any]]:
    """(hits, count) of each batch: through one compiled step where the batch has the first
    batch's shapes (compile_), eagerly otherwise or once the compiled step failed."""
    step = tf.function(eager) if compile_ and first is not None else None
    shapes = _shapes(first) if step is not None else None
    for images, labels in batches:
        if step is not None and _shapes((images, labels)) == shapes:
            try:
                yield step(images, labels)
                continue
            except Exception:  # noqa: BLE001 - eagerly, below: the error users would meet
                step = None
        yield eager(images, labels)


def _shapes(batch: Any) -> list[Any]:
    """The batch's shapes; a distributed batch's, replica by replica."""
    found = []
    for t in tf.nest.flatten(batch):
        parts = getattr(t, "values", None)  # PerReplica
        found.append(tuple(tuple(p.shape) for p in parts) if isinstance(parts, tuple)
                     else tuple(getattr(t, "shape", ())))
    return found


def _hits(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.int64))
