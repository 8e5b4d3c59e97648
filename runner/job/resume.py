"""The resume check: can the loaded model keep training with the original's numbers?

After saving, the train side continues the original for a few optimizer steps on fixed training
batches and stores the probe logits that gives (`Reference`, in probe.npz); the load side takes
the same steps on the same global batches from the loaded model and compares. Everything it
needs travels in saved_model/, so it works across processes, Keras generations and `load_from`.
What a drift means is read from what was measured by runner.core.resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from runner.core.result import Result, Resume
from runner.core.resume import DRIFTED, ERROR, EXACT, INFERENCE_ONLY, NOT_APPLICABLE, explain
from runner.job import nested
from runner.job.artifact import Reference, Stored
from runner.job.loading import Loaded

if TYPE_CHECKING:
    from runner.core.schema import Config


class ResumeDrift(AssertionError):
    """verify.resume=require, and training the loaded model did not give the original's numbers."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def resume_batches(ordered: tf.data.Dataset, steps: int, global_batch: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The first steps x global_batch examples of the unshuffled training split."""
    images, labels = next(iter(ordered.take(steps * global_batch).batch(steps * global_batch)))
    return nested.to_numpy(images), nested.to_numpy(labels)


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
    logits = nested.to_numpy(model(nested.constant(probe), training=False))
    return Reference(images, labels, global_batch, seed, logits)


def resume(model: tf.keras.Model | None, predict: Callable[[Any], Any], ref: Reference | None,
           probe: np.ndarray, tolerance: float, why_no_model: str) -> Resume:
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
    diff = nested.max_abs_diff(nested.to_numpy(predict(nested.constant(probe))), ref.logits)
    return {"outcome": EXACT if diff <= tolerance else DRIFTED, "max_abs_diff": diff, **found,
            "seconds": round(time.perf_counter() - start, 4)}


def check_resume(loaded: Loaded, stored: Stored, cfg: Config, result: Result) -> Resume:
    """The resume check's outcome, and its cause when it drifted."""
    if not cfg.verify.resume_steps:
        return {"outcome": NOT_APPLICABLE, "reason": "verify.resume_steps=0"}
    outcome = resume(
        loaded.model, loaded.predict, stored.reference, stored.probe,
        cfg.verify.resume_tolerance,
        why_no_model=f"{INFERENCE_ONLY}: load_api={cfg.load_api.name} gives no trainable model")
    outcome["cause"], outcome["hint"] = explain(
        outcome, stored.saved_with, result["optimizer"]["loaded"], loaded.new_optimizer,
        (stored.saved_with.get("replicas"), result["replicas"]["load"]),
        build_first=cfg.load_api.get("build_first", True))
    if outcome.get("seconds") is not None:
        result["timings"]["resume_s"] = round(
            (result["timings"].get("resume_s") or 0) + outcome["seconds"], 4)
    return outcome


def resume_message(outcome: Resume) -> str:
    """What a drift (or a failed step) fails the job with under verify.resume=require."""
    if outcome["outcome"] == ERROR:
        return (f"the loaded model could not take the original's {outcome['steps']} training "
                f"steps: {outcome['error']}")
    return (f"the loaded model, trained {outcome['steps']} steps on the original's batches, "
            f"gives probe logits {outcome['max_abs_diff']:.3e} away from the original's "
            f"(verify.resume_tolerance={outcome['tolerance']:g}): {outcome['cause']}")
