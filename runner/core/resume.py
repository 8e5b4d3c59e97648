"""The resume check's vocabulary, and why a resume drifted, read from what was measured.

The job process measures (runner.job.resume); this says what the numbers mean, without
TensorFlow, so that the summary, the matrix and the tests share one reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# error: the steps themselves failed on the loaded model (the job goes on to continue, where the
# same failure, if it is one of the model's, fails it).
EXACT, DRIFTED, ERROR, NOT_APPLICABLE = "exact", "drifted", "error", "n/a"
# The start of an n/a outcome's reason when the load API gives no trainable model.
INFERENCE_ONLY = "inference only"
RECIPE = "the first {n} examples of the training split, unshuffled, in {steps} batches of {batch}"


def inference_only(resume: Mapping[str, Any] | None) -> bool:
    """Whether the check was not made because the loaded model can only serve."""
    return bool(resume) and str(resume.get("reason", "")).startswith(INFERENCE_ONLY)


def explain(outcome: dict[str, Any], saved: Mapping[str, Any], loaded: Mapping[str, Any] | None,
            new_optimizer: bool, replicas: tuple[Any, Any],
            build_first: bool = True) -> tuple[str | None, str | None]:
    """A drift's (or a failed step's) cause in a word or two, and a hint, from what was
    measured (not guessed). build_first=False: the load API restored into a model whose
    optimizer had no variables yet (load_api.build_first=false)."""
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
    if loaded is not None and "loss_scale" in saved_opt and "loss_scale" not in loaded:
        return "loss scale optimizer lost", (
            f"the model was saved with a LossScaleOptimizer (mixed_float16) and came back with "
            f"a plain {loaded.get('class') or 'optimizer'}: iterations "
            f"{saved_opt.get('iterations')} saved, {loaded.get('iterations')} loaded; variables "
            f"{saved_opt.get('variables')} saved, {loaded.get('variables')} loaded; no loss "
            "scale, so the gradients are no longer scaled as they were "
            "(keras-team/keras#18112, #17275). Restore into the model built afresh under the "
            "same policy (load_api=weights or checkpoint), which keeps it")
    if (not build_first and loaded is not None
            and saved_opt.get("iterations") not in (None, loaded.get("iterations"))):
        return "optimizer not built", (
            f"the weights were restored before the optimizer had variables (compile, then "
            f"load, as most code does): its saved state was skipped (Keras 3: 'Skipping "
            f"variable loading for optimizer'), iterations {saved_opt['iterations']} saved, "
            f"{loaded.get('iterations')} loaded. Build it first: "
            "model.optimizer.build(model.trainable_variables) before load_weights/restore "
            "(load_api.build_first=true)")
    if loaded is not None and saved_opt.get("iterations") not in (None, loaded.get("iterations")):
        return "iterations reset", (
            f"the loaded optimizer restarted: iterations {saved_opt['iterations']} saved, "
            f"{loaded.get('iterations')} loaded; variables {saved_opt.get('variables')} saved, "
            f"{loaded.get('variables')} loaded (tf_keras' SavedModel format does not restore "
            "the optimizer's slots; a .keras file does)")
    # build_first=false: the slots are made at the first step (and restored then, where the
    # format allows), so fewer variables right after loading says nothing.
    if build_first and loaded is not None and (
            (loaded.get("variables") or 0) < (saved_opt.get("variables") or 0)):
        return "slots missing", (
            f"the loaded optimizer has {loaded.get('variables')} variables, the saved one had "
            f"{saved_opt.get('variables')}: its slots (e.g. Adam's moments) were not restored")
    if loaded is not None and saved_opt.get("loss_scale") not in (None, loaded.get("loss_scale")):
        return "loss scale reset", (
            f"the LossScaleOptimizer's loss scale came back {loaded.get('loss_scale')}, the "
            f"saved one was {saved_opt['loss_scale']} (mixed_float16): the scaled gradients, "
            "and the steps skipped on overflow, differ from the original's "
            "(keras-team/keras#18112)")
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
