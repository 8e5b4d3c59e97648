"""Inputs and outputs that are nested (several inputs, several outputs, dicts): the probe, its
logits and the resume batches as NumPy trees, stored in probe.npz as flat arrays beside a JSON
skeleton of their structure, and compared output by output.

A single array stays a single array, stored under its own key as before: a model of one input
and one output reads and writes the probe.npz it always did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

Tree = Any  # an array, or a dict/list/tuple of trees
SEPARATOR = "__"  # images__0, images__1, images__structure


def to_numpy(tree: Tree) -> Tree:
    """Every leaf a NumPy array; strings as fixed-width bytes (`S`), since an object array
    would need pickle to be stored, and probe.npz is read with allow_pickle=False."""
    return tf.nest.map_structure(_array, tree)


def _array(t: Any) -> np.ndarray:
    array = np.asarray(t)
    return array.astype(np.bytes_) if array.dtype == object else array


def constant(tree: Tree) -> Tree:
    return tf.nest.map_structure(tf.constant, tree)


def leaves(tree: Tree) -> list[np.ndarray]:
    return [np.asarray(t) for t in tf.nest.flatten(tree)]


def is_single(tree: Tree) -> bool:
    return not isinstance(tree, (Mapping, list, tuple))


def example_shape(tree: Tree) -> list[int | None] | None:
    """The shape of one example of a single array's batch (saved_with.json's input_shape);
    None for a tree of inputs."""
    if not is_single(tree):
        return None
    return [None if d is None else int(d) for d in np.shape(tree)[1:]]


def example_dtype(tree: Tree) -> str | None:
    """The dtype of a single array's examples as Keras names it (saved_with.json's
    input_dtype: "float32", "int32", "string"); None for a tree of inputs."""
    if not is_single(tree):
        return None
    kind = np.asarray(tree).dtype
    return "string" if kind.kind in "SUO" else kind.name


def head(tree: Tree, n: int) -> Tree:
    """The first n examples of every leaf."""
    return tf.nest.map_structure(lambda t: t[:n], tree)


def examples(tree: Tree) -> int:
    return len(leaves(tree)[0])


def max_abs_diff(a: Tree, b: Tree) -> float:
    """The largest |a - b| over every output, matched in order; shapes must agree."""
    xs, ys = leaves(a), leaves(b)
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} outputs against {len(ys)}")
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if x.shape != y.shape:
            where = f"output {i} " if len(xs) > 1 else ""
            raise ValueError(f"{where}logits of shape {x.shape} against {y.shape}")
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(xs, ys, strict=True))


def pack(key: str, tree: Tree) -> dict[str, np.ndarray]:
    """What np.savez stores for `tree` under `key`."""
    if is_single(tree):
        return {key: np.asarray(tree)}
    flat = leaves(tree)
    arrays = {f"{key}{SEPARATOR}{i}": x for i, x in enumerate(flat)}
    arrays[f"{key}{SEPARATOR}structure"] = np.array(json.dumps(_skeleton(tree, iter(range(
        len(flat))))))
    return arrays


def unpack(npz: Mapping[str, np.ndarray], key: str) -> Tree | None:
    """The tree `pack` stored under `key`; None if there is none."""
    if key in npz:
        return npz[key]
    structure = f"{key}{SEPARATOR}structure"
    if structure not in npz:
        return None
    skeleton = json.loads(str(npz[structure]))
    return _fill(skeleton, lambda i: npz[f"{key}{SEPARATOR}{i}"])


def contains(npz: Mapping[str, np.ndarray], key: str) -> bool:
    return key in npz or f"{key}{SEPARATOR}structure" in npz


def _skeleton(tree: Tree, counter: Any) -> Any:
    """The structure with each leaf replaced by its index in tf.nest.flatten's order (dicts by
    sorted key)."""
    if isinstance(tree, Mapping):
        return {"dict": {k: _skeleton(tree[k], counter) for k in sorted(tree)}}
    if isinstance(tree, (list, tuple)):
        return {"tuple" if isinstance(tree, tuple) else "list":
                [_skeleton(t, counter) for t in tree]}
    return next(counter)


def _fill(skeleton: Any, leaf: Any) -> Tree:
    if isinstance(skeleton, int):
        return leaf(skeleton)
    (kind, value), = skeleton.items()
    if kind == "dict":
        return {k: _fill(v, leaf) for k, v in value.items()}
    items = [_fill(v, leaf) for v in value]
    return tuple(items) if kind == "tuple" else items
