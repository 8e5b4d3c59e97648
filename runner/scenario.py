"""The seed tutorial's scenario, one function per step: train, evaluate, save, load, verify,
continue. `run` strings them together and fills in the result as it goes."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from runner import cluster, live, models, runtime, save_load, verify
from runner import data as datasets
from runner import result as results
from runner.save_load import LOADERS, SAVERS, Loaded, Stored, artifact_bytes


class VerificationError(AssertionError):
    """The loaded model does not compute what the saved one did."""


def run(cfg: Any, out: Path, result: dict[str, Any], side: str = "both") -> None:
    """Carry out the scenario, recording each phase in `result` (and result.json) as it starts.

    side: "both" in one process; "train" or "load" where the two sides need different Keras
    generations (each its own process) or the model comes from `load_from` ("load" only).
    """
    phase = _phase_recorder(out, result)
    tf.keras.utils.set_random_seed(cfg.seed)
    if side != "load":
        train_side(cfg, out, result, phase)
        if side == "train":
            result["phase"] = "load"  # next: the load side's process
            return
        fresh_keras_session()
    load_side(cfg, out, result, phase)
    result["status"] = "passed"


def train_side(cfg: Any, out: Path, result: dict[str, Any], phase: Callable) -> None:
    """Train, then save into saved_model/ with the probe logits the load side must reproduce."""
    with phase("train"):
        strategy = runtime.make_strategy(cfg.strategy, cfg.cluster)
        result["replicas"]["train"] = runtime.replicas(strategy)
        record_cluster(strategy, result)
        result["devices"] = [d.name for d in tf.config.list_logical_devices()]
        result["keras_module"] = runtime.keras_generation()
    global_batch = cfg.train.batch_size_per_replica * runtime.replicas(strategy)
    with phase("data"):
        data = datasets.load(cfg, global_batch)
        result["data_sizes"] = {"train": {"train": data.n_train, "test": data.n_test}}
    with phase("train"):
        model = build_model(cfg, strategy)
        if cfg.model.save_before_fit:
            result["caveat"] = save_before_fit(model, cfg.save_api.name, out)
        with timed(result, "train_s"):
            result["history"]["train"] = train(model, data.train, cfg.train.epochs, cfg,
                                               "train")
        result["throughput"]["train_examples_per_s"] = _rate(
            data.n_train * cfg.train.epochs, result["timings"]["train_s"])
        if cfg.model.save_before_fit:
            result["caveat"]["traced_after_fit"] = models.has_traced_call(model)
        result["accuracy"]["after_train"] = accuracy(models.predictor(model), data.test)
        saved_logits = model(data.probe, training=False).numpy()
        result["optimizer"]["saved"] = verify.optimizer_state(model)
        result["random_layers"] = verify.random_layers(model)
    with save_load.staged(out) as staging, phase("save"):
        # save_api.in_scope: inside the training strategy's scope (the seed saves outside it).
        scope = strategy.scope() if cfg.save_api.in_scope else contextlib.nullcontext()
        with timed(result, "save_s"), scope:
            path, notes = SAVERS[cfg.save_api.name](model, staging, cfg.io_device,
                                                    cfg.save_api.variable_policy)
        if (staging / path.name / "saved_model.pb").is_file():  # does its graph pin devices?
            result["pinned_devices"] = verify.pinned_devices(staging / path.name)
        path = out / save_load.FOLDER / path.name  # where it is once complete
        save_load.write_stored(staging, data.probe, saved_logits,
                               saved_with(cfg, path, result, model))
        result["artifact"] = str(path)
        result["artifact_bytes"] = artifact_bytes(staging / path.name)
        result["notes"] += notes
    log_model = cfg.mlflow.enabled and cfg.mlflow.log_model
    if log_model and cfg.strategy.name == cluster.MULTI_WORKER:
        result["notes"].append(
            "mlflow.log_model skipped: under MultiWorkerMirroredStrategy saving is a collective "
            "every worker must join, and only the chief records to MLflow")
    elif log_model and live.tracked():  # the chief only
        with phase("mlflow_model"), timed(result, "mlflow_model_s"):
            result["mlflow_model"] = live.save_mlflow_model(
                model, data.probe, saved_logits, result["versions"])
    if cfg.verify.resume_steps:  # every worker: the steps are collectives under multi-worker
        with phase("resume"), timed(result, "resume_s"):
            ref = verify.reference(model, data.ordered, data.probe, cfg.verify.resume_steps,
                                   global_batch, cfg.seed)
            save_load.add_reference(out / save_load.FOLDER, ref)


def load_side(cfg: Any, out: Path, result: dict[str, Any], phase: Callable) -> None:
    """Load what the train side (or `load_from`) saved, verify it, keep training or serving it."""
    with phase("load"):
        stored = stored_model(cfg, out, result)
        load_strategy = runtime.make_strategy(cfg.load_strategy, cfg.cluster)
        result["replicas"]["load"] = runtime.replicas(load_strategy)
        record_cluster(load_strategy, result)
        result["load_keras_module"] = runtime.keras_generation()
        with timed(result, "load_s"):
            loaded = load(stored.model, cfg, load_strategy, stored.saved_with)
        result["notes"] += loaded.notes
        record_loaded(loaded, stored, load_strategy, result)
    with phase("data"):
        data = datasets.load(
            cfg, cfg.train.batch_size_per_replica * runtime.replicas(load_strategy))
        result.setdefault("data_sizes", {})["load"] = {"train": data.n_train, "test": data.n_test}
    with phase("verify"):
        result["max_abs_diff"] = verify_logits(loaded, stored.probe, stored.logits,
                                               cfg.verify.tolerance)
        result["accuracy"]["after_load"] = accuracy(loaded.predict, data.test)
    with phase("continue"):  # the resume steps are the first steps of continuing
        result["resume"] = check_resume(loaded, stored, cfg, result)
        if result["resume"]["outcome"] == verify.ERROR:
            # A failed step can leave the model and its optimizer half-built: continue from a
            # fresh load, so that continuing meets what it would have met without the check.
            loaded = load(stored.model, cfg, load_strategy, stored.saved_with)
            result["notes"].append("resume check failed: the model was loaded again before "
                                   "continuing")
    if (result["resume"]["outcome"] in (verify.DRIFTED, verify.ERROR)
            and cfg.verify.resume == "require"):
        with phase("resume"):
            raise verify.ResumeDrift(resume_message(result["resume"]),
                                     hint=result["resume"]["hint"])
    with phase("continue"):
        with timed(result, "continue_s"):
            result["accuracy"]["after_continue"] = keep_going(
                loaded, data, load_strategy, cfg, result)
        examples = data.n_train * cfg.continue_epochs if loaded.model is not None else data.n_test
        result["throughput"]["continue_examples_per_s"] = _rate(
            examples, result["timings"]["continue_s"])
    if cfg.verify.resave:
        with phase("resave"):
            result["resave"] = resave(loaded, result["save_api"], cfg, load_strategy,
                                      stored.probe, stored.saved_with)


# ---- steps -----------------------------------------------------------------------------------

def build_model(cfg: Any, strategy: tf.distribute.Strategy) -> tf.keras.Model:
    """Build and compile inside the training strategy's scope, as the seed's get_model does."""
    with strategy.scope():
        model = models.build(cfg.model.name, cfg.model.batchnorm, cfg.model.dropout)
        models.compile_model(model, jit_compile=cfg.speed.jit_compile)
    return model


def train(model: tf.keras.Model, dataset: tf.data.Dataset, epochs: int, cfg: Any,
          name: str) -> dict[str, list[float]]:
    """model.fit; returns the per-epoch loss and accuracy. In a tracked job's chief, each epoch
    also goes to the MLflow run as it ends (`<name>_loss`, ...: runner.live)."""
    handover = live.epoch_callback(name)
    # shuffle=False: a tf.data dataset is shuffled by the pipeline; Keras ignores (and warns
    # about) shuffle=True for it.
    history = model.fit(dataset, epochs=epochs, verbose=cfg.verbose, shuffle=False,
                        callbacks=[handover] if handover else None).history
    return {("accuracy" if name.endswith("accuracy") else name): [float(v) for v in values]
            for name, values in history.items()}


def save_before_fit(model: tf.keras.Model, save_api: str, out: Path) -> dict[str, Any]:
    """The seed's caveat: save a model that has not traced a call yet, and record what happens."""
    report: dict[str, Any] = {"traced_before_fit": models.has_traced_call(model)}
    target = out / "before_fit"
    target.mkdir(exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path, _ = SAVERS[save_api](model, target, None, None)
        except Exception as e:
            report["save_error"] = f"{type(e).__name__}: {e}"
        else:
            report["saved"] = str(path)
            if path.is_dir():
                report["signatures"] = sorted(tf.saved_model.load(str(path)).signatures.keys())
    report["warnings"] = [str(w.message) for w in caught]
    report["advice"] = (
        "Subclassed models have no traced forward pass until first called: train (or call) the "
        "model before saving; the job then saves it after fit."
    )
    return report


def record_cluster(strategy: tf.distribute.Strategy | None, result: dict[str, Any]) -> None:
    """Under MultiWorkerMirroredStrategy: the cluster and which task this process was."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None:
        spec = resolver.cluster_spec().as_dict()
        result["cluster"] = {"workers": sum(len(tasks) for tasks in spec.values()),
                             "task": f"{resolver.task_type}:{resolver.task_id}", "spec": spec}


def saved_with(cfg: Any, path: Path, result: dict[str, Any],
               model: tf.keras.Model) -> dict[str, Any]:
    """What produced the model: a later `load_from` job reports these as its train side."""
    return {
        **{group: cfg[group].name for group in results.TRAIN_SIDE},
        # What load_api=checkpoint/weights build afresh to restore into.
        "model_options": {"name": cfg.model.name, "batchnorm": cfg.model.batchnorm,
                          "dropout": cfg.model.dropout},
        "save_api_options": {"in_scope": cfg.save_api.in_scope,
                             "variable_policy": cfg.save_api.variable_policy},
        "data": cfg.data.name,
        "keras_module": result["keras_module"],
        "replicas": result["replicas"]["train"],
        "model_file": path.name,
        "seed": cfg.seed,
        "optimizer": result["optimizer"]["saved"],
        "random_layers": result["random_layers"],
        "batchnorm_layers": verify.batchnorm_layers(model),
        "pinned_devices": result["pinned_devices"],
        "versions": result["versions"],
        "output_dir": result["output_dir"],
    }


def stored_model(cfg: Any, out: Path, result: dict[str, Any]) -> Stored:
    """This job's saved_model/, or the one `load_from` names (fetched from MLflow if a URI)."""
    if not cfg.load_from:
        return save_load.read_stored(out / save_load.FOLDER)
    location = Path(cfg.load_from).expanduser()
    if _is_uri(cfg.load_from):
        from runner import tracking

        location = tracking.download(cfg.load_from, out / "load_from", cfg.mlflow)
    stored = save_load.read_stored(location.resolve())
    result.update({group: stored.saved_with.get(group) for group in results.TRAIN_SIDE})
    result["keras_module"] = stored.saved_with.get("keras_module")
    result["replicas"]["train"] = stored.saved_with.get("replicas")
    result["saved_with"] = stored.saved_with
    result["artifact"] = str(stored.model)
    result["artifact_bytes"] = artifact_bytes(stored.model)
    result["notes"].append(
        f"load_from: strategy, save_api, model and keras are the loaded model's (its "
        f"{save_load.SAVED_WITH_FILE}: trained on data={stored.saved_with.get('data')}); "
        f"this job verified and continued on data={cfg.data.name}")
    return stored


def _is_uri(location: str) -> bool:
    """runs:/..., models:/..., s3://... : anything MLflow can download; plain paths are not."""
    return re.match(r"^[A-Za-z][\w+.-]*:/", location) is not None


def load(path: Path, cfg: Any, strategy: tf.distribute.Strategy | None,
         saved_with: dict[str, Any]) -> Loaded:
    """Load with the chosen API inside the load-side strategy's scope (none: no scope)."""
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        return LOADERS[cfg.load_api.name](path, cfg.io_device, cfg.load_api, saved_with)


def verify_logits(loaded: Loaded, probe: np.ndarray, saved_logits: np.ndarray,
                  tolerance: float) -> float:
    """Max |Δ| between the loaded and the saved model's logits on the probe batch."""
    loaded_logits = np.asarray(loaded.predict(tf.constant(probe)))
    if loaded_logits.shape != saved_logits.shape:
        raise VerificationError(
            f"loaded model gives logits of shape {loaded_logits.shape}, "
            f"the saved one {saved_logits.shape}")
    diff = float(np.max(np.abs(loaded_logits - saved_logits)))
    if not diff <= tolerance:
        raise VerificationError(
            f"max |Δ| of probe logits {diff:.3e} exceeds tolerance {tolerance:g}")
    return diff


def record_loaded(loaded: Loaded, stored: Stored, strategy: tf.distribute.Strategy | None,
                  result: dict[str, Any]) -> None:
    """What came back besides the weights: the optimizer's state against the saved one's and,
    under several replicas, how many variables are really distributed."""
    saved = stored.saved_with
    result["optimizer"] = {"saved": saved.get("optimizer"),
                           "loaded": verify.optimizer_state(loaded.model),
                           "new_optimizer": loaded.new_optimizer}
    result["random_layers"] = saved.get("random_layers")
    result["pinned_devices"] = saved.get("pinned_devices")
    if runtime.replicas(strategy) > 1:
        variables = verify.loaded_variables(loaded.model, loaded.keep_alive)
        result["distributed_variables"] = verify.distributed_variables(variables)
        if variables and result["distributed_variables"].startswith("0/"):
            result["notes"].append(
                f"none of the loaded model's {len(variables)} variables is distributed over the "
                f"{runtime.replicas(strategy)} replicas: it computes on one replica only (e.g. "
                "a subclassed SavedModel loaded under MirroredStrategy, tf-keras#520)")


def check_resume(loaded: Loaded, stored: Stored, cfg: Any,
                 result: dict[str, Any]) -> dict[str, Any]:
    """The resume check's outcome, and its cause when it drifted."""
    if not cfg.verify.resume_steps:
        return {"outcome": verify.NOT_APPLICABLE, "reason": "verify.resume_steps=0"}
    outcome = verify.resume(
        loaded.model, loaded.predict, stored.reference, stored.probe,
        cfg.verify.resume_tolerance,
        why_no_model=f"inference only: load_api={cfg.load_api.name} gives no trainable model")
    outcome["cause"], outcome["hint"] = verify.explain(
        outcome, stored.saved_with, result["optimizer"]["loaded"], loaded.new_optimizer,
        (stored.saved_with.get("replicas"), result["replicas"]["load"]))
    if outcome.get("seconds") is not None:
        result["timings"]["resume_s"] = round(
            (result["timings"].get("resume_s") or 0) + outcome["seconds"], 4)
    return outcome


def resume_message(outcome: dict[str, Any]) -> str:
    if outcome["outcome"] == verify.ERROR:
        return (f"the loaded model could not take the original's {outcome['steps']} training "
                f"steps: {outcome['error']}")
    return (f"the loaded model, trained {outcome['steps']} steps on the original's batches, "
            f"gives probe logits {outcome['max_abs_diff']:.3e} away from the original's "
            f"(verify.resume_tolerance={outcome['tolerance']:g}): {outcome['cause']}")


def resave(loaded: Loaded, save_api: str, cfg: Any, strategy: tf.distribute.Strategy | None,
           probe: np.ndarray, saved_with: dict[str, Any]) -> dict[str, Any]:
    """Save the continued model again with the same save API, load it with the same load API:
    how far its probe logits move (save -> load -> save -> load). A failure is recorded."""
    target = Path(tempfile.mkdtemp(prefix="runner-resave-"))
    try:
        subject = loaded.model if loaded.model is not None else loaded.keep_alive
        path, _ = SAVERS[save_api](subject, target, cfg.io_device, cfg.save_api.variable_policy)
        again = load(path, cfg, strategy, saved_with)
        before = np.asarray(loaded.predict(tf.constant(probe)))
        return {"max_abs_diff": verify.max_abs_diff(
            np.asarray(again.predict(tf.constant(probe))), before)}
    except Exception as e:  # noqa: BLE001 - data: which API cannot save what it loaded
        return {"max_abs_diff": None, "error": f"{type(e).__name__}: {results.first_line(e)}"}
    finally:
        shutil.rmtree(target, ignore_errors=True)


def keep_going(loaded: Loaded, data: datasets.Data, strategy: tf.distribute.Strategy | None,
               cfg: Any, result: dict[str, Any]) -> float | None:
    """Keep training a trainable model; otherwise run (distributed) inference. Test accuracy."""
    if loaded.model is not None:
        if cfg.continue_epochs == 0:
            return None
        result["history"]["continue"] = train(loaded.model, data.train, cfg.continue_epochs,
                                              cfg, "continue")
        return accuracy(loaded.predict, data.test)
    return distributed_accuracy(loaded.predict, data.test, strategy)


def fresh_keras_session() -> None:
    """Reset Keras' global state (layer names, legacy graph) before loading, as a new process."""
    tf.keras.backend.clear_session()
    gc.collect()


# ---- measurements ----------------------------------------------------------------------------

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


def _rate(examples: int, seconds: float) -> float | None:
    return round(examples / seconds, 1) if examples > 0 and seconds > 0 else None


def _hits(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.int64))


# ---- bookkeeping -----------------------------------------------------------------------------

# Fault injection for the test suite: the job stops at the start of this phase (once recorded)
# until a signal ends it, so that an interruption lands in a known phase.
STALL_ENV = "RUNNER_STALL_AT_PHASE"


def _phase_recorder(out: Path, result: dict[str, Any]):
    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        result["phase"] = name
        results.write(out, result)
        if os.environ.get(STALL_ENV) == name:
            print(f"{STALL_ENV}={name}: stalled", flush=True)
            time.sleep(3600)
        yield

    return phase


@contextlib.contextmanager
def timed(result: dict[str, Any], key: str) -> Iterator[None]:
    """Record the block's wall time in result["timings"][key], in seconds."""
    start = time.perf_counter()
    yield
    result["timings"][key] = round(time.perf_counter() - start, 4)
