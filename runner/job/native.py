"""The reference of a model saved outside the runner (`load_from=` a .keras or .h5 file, or a
SavedModel folder, written by the user's own script): it carries no probe logits, so the
artifact itself, loaded with its own format's native API outside any strategy, gives them on
the job's data; and, where it comes back compiled with an optimizer, the resume check's
reference too. The chosen load API under the load strategy is then compared with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tensorflow as tf

from runner.core.text import first_line
from runner.job import nested, resume
from runner.job.artifact import Stored
from runner.job.data import Data
from runner.job.loading import SERVING_KEY, custom_objects, hinting_unregistered, serving

if TYPE_CHECKING:
    from runner.core.schema import Config

def reference(stored: Stored, data: Data, cfg: Config, global_batch: int) -> list[str]:
    """Fill in `stored`'s probe, its logits and (for a compiled Keras model) the resume
    reference, from the artifact loaded natively. Returns notes."""
    objects = custom_objects(cfg.model)
    with hinting_unregistered(stored.model, objects):
        model, predict = load_native(stored, objects, cfg.load.trust)
    stored.probe = data.probe
    stored.logits = nested.to_numpy(predict(nested.constant(data.probe)))
    if nested.is_single(data.probe):
        stored.saved_with["input_shape"] = nested.example_shape(data.probe)
        stored.saved_with["input_dtype"] = nested.example_dtype(data.probe)
    if model is None or getattr(model, "optimizer", None) is None:
        return [f"reference: {stored.model.name} loaded natively carries no compiled optimizer: "
                "no resume reference"]
    stored.saved_with["optimizer"] = {"iterations": int(model.optimizer.iterations.numpy())}
    if not cfg.verify.resume_steps:
        return []
    try:
        stored.reference = resume.reference(model, data.ordered, data.probe,
                                            cfg.verify.resume_steps, global_batch, cfg.seed)
    except Exception as e:  # noqa: BLE001 - data: the artifact cannot be trained as loaded
        return [f"reference: {stored.model.name} loaded natively could not take the resume "
                f"check's training steps, so there is no resume reference: "
                f"{type(e).__name__}: {first_line(e)}"]
    return []


def load_native(stored: Stored, objects: dict[str, Any],
                trust: bool) -> tuple[tf.keras.Model | None, Any]:
    """.keras, .h5: load_model (a Keras model, compiled if it was saved compiled); a SavedModel:
    tf.saved_model.load and its serving signature (inference only)."""
    if stored.saved_with.get("format") == "saved_model":
        loaded = tf.saved_model.load(str(stored.model))
        if SERVING_KEY in loaded.signatures:
            return None, serving(loaded)
        return None, loaded  # a plain tf.Module with a __call__
    model = tf.keras.models.load_model(str(stored.model), safe_mode=not trust,
                                       custom_objects=objects or None)
    return model, lambda x: model(x, training=False)
