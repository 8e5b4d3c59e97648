"""Checks of a loaded model beyond the resume check: does it compute the saved logits, what of
the optimizer came back, which of its layers draw random numbers or normalize per replica, are
its variables really distributed, does the saved graph pin devices, which variables a
checkpoint does not reach.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from runner.job import nested
from runner.job.scan import functions_called


class VerificationError(AssertionError):
    """The loaded model does not compute what the saved one did."""


def verify_logits(predict: Callable[[Any], Any], probe: Any, saved_logits: Any,
                  tolerance: float) -> float:
    """Max |Δ| between the loaded (`predict`) and the saved model's logits on the probe batch,
    over every output."""
    loaded_logits = nested.to_numpy(predict(nested.constant(probe)))
    try:
        diff = nested.max_abs_diff(loaded_logits, saved_logits)
    except ValueError as e:
        raise VerificationError(f"the loaded model's outputs differ from the saved one's: {e}"
                                ) from e
    if not diff <= tolerance:
        raise VerificationError(
            f"max |Δ| of probe logits {diff:.3e} exceeds tolerance {tolerance:g}")
    return diff


class TrainingDiverged(RuntimeError):
    """The trained model computes NaN or inf: there is nothing to save and compare."""


def check_finite(logits: Any, model: Any, history: dict[str, list[float]]) -> None:
    """The trained model's probe logits are finite, or TrainingDiverged with what was seen."""
    import numpy as np

    if all(np.isfinite(np.asarray(x, dtype=np.float64)).all() for x in nested.leaves(logits)):
        return
    state = optimizer_state(model) or {}
    losses = history.get("loss") or []
    scale = (f"; its LossScaleOptimizer's loss scale ended at {state['loss_scale']:g}"
             if "loss_scale" in state else "")
    raise TrainingDiverged(
        f"the trained model's probe logits are not finite (NaN or inf): training diverged "
        f"(last epoch's loss {losses[-1] if losses else 'unknown'}){scale}")


def low_precision_layers(model: Any) -> list[str]:
    """The layers that compute in float16 or bfloat16 (train.precision=mixed_*)."""
    return [layer.name for layer in _layers(model)
            if str(getattr(layer, "compute_dtype", "")) in ("float16", "bfloat16")]


def precision_hint(saved_with: dict[str, Any], model: Any) -> str | None:
    """Why a mixed-precision model's logits changed on loading, where fewer of its layers
    compute in half precision than when it was saved (measured, not guessed)."""
    saved = saved_with.get("low_precision_layers")
    if not saved or model is None:
        return None
    loaded = low_precision_layers(model)
    if len(loaded) >= saved:
        return None
    return (f"{saved} of the model's layers computed in half precision when it was saved, "
            f"{len(loaded)} after loading: layers a custom layer makes in __init__ without "
            "passing its dtype policy take the loading process's global policy (float32 here), "
            "so the model computes otherwise (autocast lost on reload, keras-team/keras#17362). "
            "Give sublayers dtype=self.dtype_policy, or call "
            "tf.keras.mixed_precision.set_global_policy('mixed_float16') before loading")


# Layer classes that draw random numbers while training: their stream after loading is not the
# original's, so training cannot continue step for step.
RANDOM_LAYER_WORDS = ("Dropout", "Noise", "Random")


def optimizer_state(model: tf.keras.Model | None) -> dict[str, Any] | None:
    """The optimizer's step count and number of variables (iterations and slots included);
    for mixed_float16's LossScaleOptimizer also its loss scale and the steps since the scale
    last changed (its growth counter)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    variables = optimizer.variables
    variables = variables() if callable(variables) else variables  # tf_keras: a method
    state: dict[str, Any] = {"class": type(optimizer).__name__,
                             "iterations": int(optimizer.iterations.numpy()),
                             "variables": len(variables)}
    # Keras 3: dynamic_scale, step_counter; tf_keras: loss_scale, dynamic_counter.
    scale = getattr(optimizer, "dynamic_scale", None)
    scale = getattr(optimizer, "loss_scale", None) if scale is None else scale
    counter = getattr(optimizer, "step_counter", getattr(optimizer, "dynamic_counter", None))
    if scale is not None and not callable(scale):
        state["loss_scale"] = float(tf.convert_to_tensor(scale).numpy())
        if counter is not None:
            state["loss_scale_steps"] = int(tf.convert_to_tensor(counter).numpy())
    return state


def random_layers(model: tf.keras.Model) -> list[str]:
    """The classes of the model's layers that draw random numbers while training."""
    found = []
    for layer in _layers(model):
        name = type(layer).__name__
        # A Dropout of rate 0 draws nothing (MultiHeadAttention holds one by default).
        idle = any(getattr(layer, key, None) == 0 for key in ("rate", "stddev"))
        if any(word in name for word in RANDOM_LAYER_WORDS) and not idle and name not in found:
            found.append(name)
    return found


def batchnorm_layers(model: tf.keras.Model) -> list[str]:
    """The BatchNormalization layers whose batch statistics are each replica's own."""
    return [layer.name for layer in _layers(model)
            if type(layer).__name__ == "BatchNormalization"
            and not getattr(layer, "synchronized", False)]


def _layers(model: Any) -> list[Any]:
    if hasattr(model, "_flatten_layers"):  # tf_keras and Keras 3: every nested layer
        return list(model._flatten_layers(include_self=False))
    return list(getattr(model, "layers", []))


def distributed_variables(variables: list[Any]) -> str:
    """How many of these variables are really distributed over the strategy's replicas."""
    def distributed(v: Any) -> bool:
        inner = v.value if isinstance(getattr(type(v), "value", None), property) else v
        return isinstance(inner, tf.distribute.DistributedValues) or isinstance(
            v, tf.distribute.DistributedValues)

    return f"{sum(distributed(v) for v in variables)}/{len(variables)}"


def loaded_variables(model: tf.keras.Model | None, keep_alive: Any,
                     key: str = "serving_default") -> list[Any]:
    """The loaded model's variables: the Keras model's, or, for what tf.saved_model.load gave,
    those its serving signature computes with (Keras 3's SavedModels track none on the object)."""
    if model is not None:
        return list(model.variables)
    signatures = getattr(keep_alive, "signatures", {})
    if key in signatures:
        return list(signatures[key].variables)
    return list(getattr(keep_alive, "variables", []))


def unreached_variables(root: Any, variables: list[Any]) -> list[str]:
    """The variables tf.train.Checkpoint's object graph from `root` does not reach: it neither
    saves nor restores them, and assert_consumed cannot name them (measured: it reaches none of
    a Keras 3 subclassed model's layers; only what the optimizer tracks, the trainable
    variables)."""
    reached = {id(t) for t in tf.train.TrackableView(root).descendants()}

    def inner(v: Any) -> Any:
        return v.value if isinstance(getattr(type(v), "value", None), property) else v

    return [getattr(v, "path", None) or getattr(v, "name", None) or type(v).__name__
            for v in variables if id(v) not in reached and id(inner(v)) not in reached]


# Keras 3's SeedGenerator state (an LSTM's, a Dropout's): where a random stream stands, not what
# the model computes. tf.train.Checkpoint does not reach it (measured: model=text's LSTMs).
RNG_STATE = "seed_generator_state"


def unreached_state(root: Any, model: Any) -> tuple[list[str], list[str]]:
    """What of the model's state a TensorFlow checkpoint from `root` leaves out: (the variables
    it does not reach, notes on the rest it does not reach: random streams' states, and
    vocabularies tf_keras saves only into .keras/.h5 files through a weight handler)."""
    names = unreached_variables(root, model.variables)
    streams = [n for n in names if n.endswith(RNG_STATE)]
    handlers = [v for v in model.variables if not hasattr(v, "numpy") and hasattr(v, "_layer")]
    handled = {type(v).__name__ for v in handlers}
    unreached = [n for n in names if not n.endswith(RNG_STATE) and n not in handled]
    notes = []
    if streams:
        notes.append(f"the checkpoint does not hold {len(streams)} random-stream state(s) "
                     f"({', '.join(streams)}): the layers' random streams restart after loading")
    if handlers:
        layers = ", ".join(dict.fromkeys(getattr(v._layer, "name", "?") for v in handlers))
        notes.append(
            f"the checkpoint does not hold the vocabulary of {layers} (tf_keras saves it into "
            f".keras/.h5 files only, through a {', '.join(sorted(handled))}): the model built "
            "afresh to restore into keeps the vocabulary its builder adapted; verify compares "
            "the logits, so a builder that adapts another vocabulary fails there")
    return unreached, notes

def pinned_devices(saved_model_dir: Path, key: str = "serving_default",
                   first: int = 5) -> dict[str, Any] | None:
    """The ops of the SavedModel's serving signature (and the functions it calls) whose device
    is pinned: such a graph may not load where that device does not exist. None: no such
    signature."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0]
    if key not in graph.signature_def:
        return None
    nodes = {n.name: n for n in graph.graph_def.node}
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    pinned: list[str] = []
    seen_nodes: set[str] = set()
    seen_functions: set[str] = set()

    def visit_function(name: str) -> None:
        if name in seen_functions or name not in functions:
            return
        seen_functions.add(name)
        for n in functions[name].node_def:
            if n.device:
                pinned.append(f"{n.name}: {n.device}")
            for f in functions_called(n):
                visit_function(f)

    stack = [t.name for t in graph.signature_def[key].outputs.values()]
    while stack:
        name = stack.pop().lstrip("^").split(":")[0]
        if name in seen_nodes or name not in nodes:
            continue
        seen_nodes.add(name)
        node = nodes[name]
        if node.device:
            pinned.append(f"{node.name}: {node.device}")
        for f in functions_called(node):
            visit_function(f)
        stack.extend(node.input)
    return {"count": len(pinned), "first": sorted(pinned)[:first]}
