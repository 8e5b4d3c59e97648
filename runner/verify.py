"""Checks beyond "the loaded model computes the saved logits": can it keep training with the
same numbers (resume), what of the optimizer came back, are its variables really distributed,
does the saved graph pin devices, and is saving it again stable.

The resume check: after saving, the train side continues the original for a few optimizer
steps on fixed training batches and stores the probe logits that gives (`Reference`, in
probe.npz); the load side takes the same steps on the same global batches from the loaded model
and compares. Everything it needs travels in saved_model/, so it works across processes, Keras
generations and `load_from`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

# error: the steps themselves failed on the loaded model (the job goes on to continue, where the
# same failure, if it is one of the model's, fails it).
EXACT, DRIFTED, ERROR, NOT_APPLICABLE = "exact", "drifted", "error", "n/a"
# Layer classes that draw random numbers while training: their stream after loading is not the
# original's, so training cannot continue step for step.
RANDOM_LAYER_WORDS = ("Dropout", "Noise", "Random")
RECIPE = "the first {n} examples of the training split, unshuffled, in {steps} batches of {batch}"


class ResumeDrift(AssertionError):
    """verify.resume=require, and training the loaded model did not give the original's numbers."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class Reference:
    """What the original model gave after `steps` more optimizer steps on these batches."""

    images: np.ndarray
    labels: np.ndarray
    global_batch: int
    seed: int
    logits: np.ndarray  # the probe's logits after the steps

    @property
    def steps(self) -> int:
        return -(-len(self.labels) // self.global_batch)

    def recipe(self) -> str:
        return RECIPE.format(n=len(self.labels), steps=self.steps, batch=self.global_batch)


# ---- resume ----------------------------------------------------------------------------------

def resume_batches(ordered: tf.data.Dataset, steps: int, global_batch: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The first steps x global_batch examples of the unshuffled training split."""
    images, labels = next(iter(ordered.take(steps * global_batch).batch(steps * global_batch)))
    return images.numpy(), labels.numpy()


def take_steps(model: tf.keras.Model, images: np.ndarray, labels: np.ndarray,
               global_batch: int, seed: int) -> None:
    """One optimizer step per global batch, in order, under the model's strategy, from the same
    random state on both sides."""
    tf.keras.utils.set_random_seed(seed)
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(global_batch)
    model.fit(batches, epochs=1, verbose=0, shuffle=False)


def reference(model: tf.keras.Model, ordered: tf.data.Dataset, probe: np.ndarray, steps: int,
              global_batch: int, seed: int) -> Reference:
    """The train side's part: continue the in-memory original and note where it gets to."""
    images, labels = resume_batches(ordered, steps, global_batch)
    take_steps(model, images, labels, global_batch, seed)
    logits = model(tf.constant(probe), training=False).numpy()
    return Reference(images, labels, global_batch, seed, logits)


def resume(model: tf.keras.Model | None, predict: Callable[[Any], Any], ref: Reference | None,
           probe: np.ndarray, tolerance: float, why_no_model: str) -> dict[str, Any]:
    """The load side's part: the same steps from the loaded model; exact, drifted or n/a."""
    if model is None:
        return {"outcome": NOT_APPLICABLE, "reason": why_no_model}
    if ref is None:
        return {"outcome": NOT_APPLICABLE,
                "reason": "no resume reference stored with the model (verify.resume_steps=0 "
                          "when it was saved, or saved by an older runner)"}
    start = time.perf_counter()
    found: dict[str, Any] = {"tolerance": tolerance, "steps": ref.steps,
                             "global_batch": ref.global_batch, "recipe": ref.recipe()}
    try:
        take_steps(model, ref.images, ref.labels, ref.global_batch, ref.seed)
    except Exception as e:  # noqa: BLE001 - data; `continue` meets it again if it is the model's
        message = " ".join(str(e).split())[:300]
        return {"outcome": ERROR, "max_abs_diff": None, "error": f"{type(e).__name__}: {message}",
                **found, "seconds": round(time.perf_counter() - start, 4)}
    diff = max_abs_diff(np.asarray(predict(tf.constant(probe))), ref.logits)
    return {"outcome": EXACT if diff <= tolerance else DRIFTED, "max_abs_diff": diff, **found,
            "seconds": round(time.perf_counter() - start, 4)}


def explain(outcome: dict[str, Any], saved: Mapping[str, Any], loaded: Mapping[str, Any] | None,
            new_optimizer: bool, replicas: tuple[Any, Any]) -> tuple[str | None, str | None]:
    """A drift's (or a failed step's) cause in a word or two, and a hint, from what was
    measured (not guessed)."""
    if outcome.get("outcome") not in (DRIFTED, ERROR):
        return None, None
    batch, load_replicas = outcome.get("global_batch"), replicas[1]
    uneven = bool(batch and load_replicas and batch % load_replicas)
    if outcome["outcome"] == ERROR:
        if uneven:
            return "uneven split", _uneven_hint(batch, load_replicas) + (
                "; here the training step itself failed on it")
        return outcome["error"].split(":")[0], None
    saved_opt = saved.get("optimizer") or {}
    if new_optimizer:
        return "new optimizer", (
            "the load API wraps the SavedModel in a new Keras model compiled with a new "
            "optimizer: none of the saved optimizer state (iterations, Adam's moments) is used. "
            "To resume exactly, save and load a Keras model (save_api=keras, load_api=keras)")
    if loaded is not None and saved_opt.get("iterations") not in (None, loaded.get("iterations")):
        return "iterations reset", (
            f"the loaded optimizer restarted: iterations {saved_opt['iterations']} saved, "
            f"{loaded.get('iterations')} loaded; variables {saved_opt.get('variables')} saved, "
            f"{loaded.get('variables')} loaded (tf_keras' SavedModel format does not restore "
            "the optimizer's slots; a .keras file does)")
    if loaded is not None and (loaded.get("variables") or 0) < (saved_opt.get("variables") or 0):
        return "slots missing", (
            f"the loaded optimizer has {loaded.get('variables')} variables, the saved one had "
            f"{saved_opt.get('variables')}: its slots (e.g. Adam's moments) were not restored")
    random_layers = saved.get("random_layers") or []
    if random_layers:
        return "random layers", (
            f"{', '.join(random_layers)} draw random numbers while training; after loading "
            "their random stream is not the original's, so training differs step by step "
            "even from the same seed")
    if uneven:
        return "uneven split", _uneven_hint(batch, load_replicas)
    if replicas[0] != replicas[1] and saved.get("batchnorm_layers"):
        return "per-replica batchnorm", (
            f"{', '.join(saved['batchnorm_layers'])} normalize each replica's share of the "
            f"global batch (synchronized=False, the default): trained on {replicas[0]} "
            f"replica(s), each saw {batch // replicas[0]} examples a step; resumed on "
            f"{replicas[1]}, {batch // replicas[1]}: other batch statistics, other steps. "
            "The same replica count resumes exactly")
    if replicas[0] != replicas[1]:
        return "replica count", (
            f"trained on {replicas[0]} replica(s), resumed on {replicas[1]}: gradients are "
            "summed in another order; if the difference is float noise, raise "
            "verify.resume_tolerance")
    return "unknown", None


def _uneven_hint(batch: int, replicas: int) -> str:
    return (f"the original's global batch of {batch} does not split evenly over {replicas} "
            "replicas: each replica averages its own share, so the step is not the original's; "
            "resume with a replica count that divides the global batch (or a global batch the "
            "new replica count divides)")


# ---- what came back --------------------------------------------------------------------------

def optimizer_state(model: tf.keras.Model | None) -> dict[str, int] | None:
    """The optimizer's step count and number of variables (iterations and slots included)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    variables = optimizer.variables
    variables = variables() if callable(variables) else variables  # tf_keras: a method
    return {"iterations": int(optimizer.iterations.numpy()), "variables": len(variables)}


def random_layers(model: tf.keras.Model) -> list[str]:
    """The classes of the model's layers that draw random numbers while training."""
    found = []
    for layer in _layers(model):
        name = type(layer).__name__
        if any(word in name for word in RANDOM_LAYER_WORDS) and name not in found:
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

    return [getattr(v, "path", None) or v.name for v in variables
            if id(v) not in reached and id(inner(v)) not in reached]


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

    def called(node: Any) -> list[str]:
        return [name for a in node.attr.values()
                for name in ([a.func.name] if a.HasField("func") else []) + [
                    f.name for f in a.list.func]]

    def visit_function(name: str) -> None:
        if name in seen_functions or name not in functions:
            return
        seen_functions.add(name)
        for n in functions[name].node_def:
            if n.device:
                pinned.append(f"{n.name}: {n.device}")
            for f in called(n):
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
        for f in called(node):
            visit_function(f)
        stack.extend(node.input)
    return {"count": len(pinned), "first": sorted(pinned)[:first]}


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"logits of shape {a.shape} against {b.shape}")
    return float(np.max(np.abs(a - b)))
