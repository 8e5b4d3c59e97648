"""The seed tutorial's scenario: train, save, load, verify, continue, in that order, each step
recorded in the result (and result.json) as it starts, so that a failure names its phase.
`run` strings the steps together; each step's code lives in the module its name says."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from runner.core import cluster, trainings
from runner.core.constraints import check_sizes
from runner.core.files import MODEL_SUMMARY, SAVED_MODEL, tree_bytes
from runner.core.result import Result, write
from runner.core.resume import DRIFTED, ERROR
from runner.job import (
    artifact,
    callbacks,
    interruption,
    models,
    native,
    nested,
    resume,
    runtime,
    shared_saves,
    verify,
)
from runner.job import data as datasets
from runner.job.accuracy import accuracy, compiled_metrics
from runner.job.artifact import Stored
from runner.job.callbacks import BACKUP_AND_RESTORE
from runner.job.data import Data
from runner.job.loading import Loaded, load
from runner.job.resave import resave
from runner.job.saving import save, save_before_fit
from runner.job.training import (
    build_model,
    fit_params,
    keep_going,
    model_summary,
    train,
)
from runner.tracking import handover

if TYPE_CHECKING:
    from runner.core.schema import Config

# What `run` records a step with: `with phase("save"): ...`.
Phase = Callable[[str], AbstractContextManager[None]]


def run(cfg: Config, out: Path, result: Result, side: str = "both") -> None:
    """Carry out the scenario, recording each phase in `result` (and result.json) as it starts.

    side: "both" in one process; "train" or "load" where the two sides need different Keras
    generations (each its own process) or the model comes from `load_from` ("load" only).
    """
    phase = _phase_recorder(out, result)
    tf.keras.utils.set_random_seed(cfg.seed)
    if side != "load":
        train_side(cfg, out, result, phase)
        result["phase"] = "load"  # next: the load side, here or in its own process
        shared = shared_saves.shared()
        if shared is not None:  # a sweep's shared training: others load it
            trainings.publish(*shared, result, out)
        if side == "train":
            return
        fresh_keras_session()
        # As a load side's own process starts: its numbers do not depend on whether it ran
        # after the training in one process or in a process of its own (a shared training).
        tf.keras.utils.set_random_seed(cfg.seed)
    load_side(cfg, out, result, phase)
    result["status"] = "passed"


def train_side(cfg: Config, out: Path, result: Result, phase: Phase) -> None:
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
        check_sizes(cfg, data.n_train, data.n_test)  # preflight could not, for some data
    with phase("train"):
        model, compiled = build_model(cfg, strategy)
        if compiled:
            result["notes"].append(
                "the model came back compiled from model._target_: its own optimizer, loss and "
                "metrics are used (train.optimizer, .loss, .metrics are not)")
        if cfg.model.get("save_before_fit", False):
            result["caveat"] = save_before_fit(model, cfg.save_api.name, out)
        killed = None
        if cfg.save_api.name == BACKUP_AND_RESTORE and cfg.save_api.interrupt:
            point = interruption.kill_point(cfg, data.n_train, global_batch)
            with timed(result, "interrupted_s"):
                killed = interruption.run_killed(cfg, out, point)
        with timed(result, "train_s"):  # with the save API's callback, if it is one
            result["history"]["train"] = train(model, data.train, cfg.train.epochs, cfg,
                                               "train", callbacks.for_fit(cfg, out))
        result["continue_from_step"] = cfg.train.epochs  # continuing's first epoch on the curve
        result["fit_params"] = fit_params(model, cfg.train.epochs, global_batch)
        with contextlib.suppress(Exception):  # a model that cannot summarise itself: no file
            (out / MODEL_SUMMARY).write_text(model_summary(model))
        if cfg.save_api.name == BACKUP_AND_RESTORE:
            result["notes"] += callbacks.leftovers(model)
        if killed is not None:
            with timed(result, "uninterrupted_s"):
                result["interruption"] = interruption.compare(
                    cfg, strategy, model, result["history"]["train"], killed, global_batch)
        epochs_run = len(result["history"]["train"].get("loss", [])) or cfg.train.epochs
        result["throughput"]["train_examples_per_s"] = _rate(
            data.n_train * epochs_run, result["timings"]["train_s"])
        if cfg.model.get("save_before_fit", False):
            result["caveat"]["traced_after_fit"] = models.has_traced_call(model)
        result["accuracy"]["after_train"] = accuracy(models.predictor(model), data.test)
        own_metrics(result, "after_train", model, data)
        saved_logits = nested.to_numpy(model(nested.constant(data.probe), training=False))
        verify.check_finite(saved_logits, model, result["history"]["train"])
        result["optimizer"]["saved"] = verify.optimizer_state(model)
        result["random_layers"] = verify.random_layers(model)
    save_side(cfg, out, result, phase, Trained(model, strategy, compiled, data, saved_logits,
                                                global_batch))


@dataclass
class Trained:
    """The train side's model, as its saves and the resume reference need it."""

    model: tf.keras.Model
    strategy: tf.distribute.Strategy | None
    compiled: bool
    data: Data
    logits: Any  # the probe's, which the load side must reproduce
    global_batch: int


def save_side(cfg: Config, out: Path, result: Result, phase: Phase, trained: Trained) -> None:
    """Save into saved_model/, then log the MLflow model and add the resume reference. A
    sweep's shared training saves once more per other save its cells need (runner.job.
    shared_saves), each before the resume reference, which continues the in-memory model;
    its own save failing fails the job only once the others are made and published."""
    others = shared_saves.others(cfg, result)
    own_error = None
    try:
        save_model(cfg, out, result, phase, trained)
    except Exception as e:
        if not others:
            raise
        own_error = e
    for other in others:
        try:
            save_model(other.cfg, other.folder, other.result, other.phase, trained)
        except Exception as e:  # noqa: BLE001 - that save's cells fail with it
            other.fail(e)
    made = [other for other in others if other.saved]
    lead, ref = result, None
    if own_error is None:
        ref = after_save(cfg, out, result, phase, trained, own_run=True)
    elif made:  # the others' cells still get what follows a save; this cell's run does not
        lead = made[0].result
        ref = after_save(cfg, made[0].folder, lead, made[0].phase, trained, own_run=False)
    for other in made:
        if other.result is not lead:
            follow(other.result, lead)
            if ref is not None:
                artifact.add_reference(other.folder / SAVED_MODEL, ref)
    shared_saves.publish(others)
    if own_error is not None:
        result["phase"] = "save"
        raise own_error


def save_model(cfg: Config, out: Path, result: Result, phase: Phase, trained: Trained) -> None:
    """The save API's files and the probe into out/saved_model/, whole or not at all."""
    model, probe = trained.model, trained.data.probe
    with artifact.staged(out) as staging, phase("save"):
        # save_api.in_scope: inside the training strategy's scope (the seed saves outside it).
        scope = trained.strategy.scope() if cfg.save_api.in_scope else contextlib.nullcontext()
        with timed(result, "save_s"), scope:
            path, notes = save(cfg.save_api.name, model, staging, cfg.io_device,
                               cfg.save_api.variable_policy)
        if (staging / path.name / "saved_model.pb").is_file():  # does its graph pin devices?
            result["pinned_devices"] = verify.pinned_devices(staging / path.name)
        path = out / SAVED_MODEL / path.name  # where it is once complete
        artifact.write_stored(staging, probe, trained.logits,
                              artifact.saved_with(cfg, path, result, model, trained.compiled,
                                                  nested.example_shape(probe),
                                                  nested.example_dtype(probe)))
        saved_bytes = tree_bytes(staging / path.name)
        result["notes"] += notes
    # Only now is it there: a save that failed names no artifact.
    result["artifact"], result["artifact_bytes"] = str(path), saved_bytes


def after_save(cfg: Config, out: Path, result: Result, phase: Phase, trained: Trained,
               own_run: bool) -> artifact.Reference | None:
    """The MLflow model (own_run=False: for the other cells of a shared training only), then
    the resume reference, which continues the in-memory model: after every save. Returns the
    reference, added to out/saved_model/ (None: verify.resume_steps=0)."""
    model, data = trained.model, trained.data
    log_model = cfg.mlflow.enabled and cfg.mlflow.log_model
    if log_model and cfg.strategy.name == cluster.MULTI_WORKER:
        result["notes"].append(
            "mlflow.log_model skipped: under MultiWorkerMirroredStrategy saving is a collective "
            "every worker must join, and only the chief records to MLflow")
    elif log_model and handover.tracked() and not handover.mlflow_here():
        result["notes"].append(
            "mlflow.log_model skipped: the training side ran in another release's environment "
            "(tf=...), which holds no MLflow; the saved model is in the run's artifacts")
    elif log_model and handover.tracked():  # the chief only
        with phase("mlflow_model"), timed(result, "mlflow_model_s"):
            result["mlflow_model"] = handover.save_mlflow_model(
                model, data.probe, trained.logits, result["versions"], own_run)
    if cfg.verify.resume_steps:  # every worker: the steps are collectives under multi-worker
        with phase("resume"), timed(result, "resume_s"):
            ref = resume.reference(model, data.ordered, data.probe, cfg.verify.resume_steps,
                                   trained.global_batch, cfg.seed)
            artifact.add_reference(out / SAVED_MODEL, ref)
        return ref
    return None


def follow(result: Result, lead: Result) -> None:
    """Another save's result gets what followed the lead save: its notes, MLflow model, times."""
    result["notes"] += [n for n in lead["notes"] if n.startswith("mlflow.log_model skipped")]
    if "mlflow_model" in lead:
        result["mlflow_model"] = lead["mlflow_model"]
    for timing in ("mlflow_model_s", "resume_s"):
        if timing in lead["timings"]:
            result["timings"][timing] = lead["timings"][timing]


def load_side(cfg: Config, out: Path, result: Result, phase: Phase) -> None:
    """Load what the train side (or `load_from`) saved, verify it, keep training or serving it.
    A model saved outside the runner gets its reference first (runner.job.native), from the
    job's data."""
    with phase("load"):
        stored = artifact.stored_model(cfg, out, result)
        result["notes"] += stored.notes
        load_strategy = runtime.make_strategy(cfg.load_strategy, cfg.cluster)
        result["replicas"]["load"] = runtime.replicas(load_strategy)
        record_cluster(load_strategy, result)
        result["load_keras_module"] = runtime.keras_generation()
    global_batch = cfg.train.batch_size_per_replica * runtime.replicas(load_strategy)
    if stored.native:
        data = _load_data(cfg, global_batch, result, phase)
        with phase("reference"):
            result["notes"] += native.reference(stored, data, cfg, global_batch)
    with phase("load"):
        with timed(result, "load_s"):
            loaded = load(stored.model, cfg, load_strategy, stored.saved_with, stored.probe)
        # The save side may have said the same of the same files (a checkpoint's gaps).
        result["notes"] += [n for n in loaded.notes if n not in result["notes"]]
        record_loaded(loaded, stored, load_strategy, result)
    if not stored.native:
        data = _load_data(cfg, global_batch, result, phase)
    with phase("verify"):
        try:
            result["max_abs_diff"] = verify.verify_logits(loaded.predict, stored.probe,
                                                          stored.logits, cfg.verify.tolerance)
        except verify.VerificationError as e:
            e.hint = verify.precision_hint(stored.saved_with, loaded.model)
            raise
        result["accuracy"]["after_load"] = accuracy(loaded.predict, data.test)
        own_metrics(result, "after_load", loaded.model, data)
    with phase("continue"):  # the resume steps are the first steps of continuing
        result["resume"] = resume.check_resume(loaded, stored, cfg, result)
        if result["resume"]["outcome"] == ERROR:
            # A failed step can leave the model and its optimizer half-built: continue from a
            # fresh load, so that continuing meets what it would have met without the check.
            loaded = load(stored.model, cfg, load_strategy, stored.saved_with,
                          stored.probe)
            result["notes"].append("resume check failed: the model was loaded again before "
                                   "continuing")
    if (result["resume"]["outcome"] in (DRIFTED, ERROR)
            and cfg.verify.resume == "require"):
        with phase("resume"):
            raise resume.ResumeDrift(resume.resume_message(result["resume"]),
                                     hint=result["resume"]["hint"])
    with phase("continue"):
        with timed(result, "continue_s"):
            result["accuracy"]["after_continue"] = keep_going(
                loaded, data, load_strategy, cfg, result)
        if cfg.continue_epochs:
            own_metrics(result, "after_continue", loaded.model, data)
        examples = data.n_train * cfg.continue_epochs if loaded.model is not None else data.n_test
        result["throughput"]["continue_examples_per_s"] = _rate(
            examples, result["timings"]["continue_s"])
    if cfg.verify.resave:
        with phase("resave"):
            result["resave"] = resave(loaded, result["save_api"], cfg, load_strategy,
                                      stored.probe, stored.saved_with)


def _load_data(cfg: Config, global_batch: int, result: Result, phase: Phase) -> datasets.Data:
    with phase("data"):
        data = datasets.load(cfg, global_batch)
        result.setdefault("data_sizes", {})["load"] = {"train": data.n_train, "test": data.n_test}
        check_sizes(cfg, data.n_train, data.n_test)
    return data


def record_cluster(strategy: tf.distribute.Strategy | None, result: Result) -> None:
    """Under MultiWorkerMirroredStrategy: the cluster and which task this process was."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None:
        spec = resolver.cluster_spec().as_dict()
        result["cluster"] = {"workers": sum(len(tasks) for tasks in spec.values()),
                             "task": f"{resolver.task_type}:{resolver.task_id}", "spec": spec}


def record_loaded(loaded: Loaded, stored: Stored, strategy: tf.distribute.Strategy | None,
                  result: Result) -> None:
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


def fresh_keras_session() -> None:
    """Reset Keras' global state (layer names, legacy graph) before loading, as a new process."""
    tf.keras.backend.clear_session()
    gc.collect()


def own_metrics(result: Result, when: str, model: tf.keras.Model | None, data: Data) -> None:
    """Where the argmax accuracy does not fit the model's outputs (several outputs, a
    regression): its own compiled loss and metrics, in result["metrics"][when]."""
    if result["accuracy"][when] is None and model is not None:
        found = compiled_metrics(model, data.test)
        if found is not None:
            result.setdefault("metrics", {})[when] = found


def _rate(examples: int, seconds: float) -> float | None:
    return round(examples / seconds, 1) if examples > 0 and seconds > 0 else None


# Fault injection for the test suite: the job stops at the start of this phase (once recorded)
# until a signal ends it, so that an interruption lands in a known phase.
STALL_ENV = "RUNNER_STALL_AT_PHASE"


def _phase_recorder(out: Path, result: Result) -> Phase:
    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        result["phase"] = name
        write(out, result)
        if os.environ.get(STALL_ENV) == name:
            print(f"{STALL_ENV}={name}: stalled", flush=True)
            time.sleep(3600)
        yield

    return phase


@contextlib.contextmanager
def timed(result: Result, key: str) -> Iterator[None]:
    """Record the block's wall time in result["timings"][key], in seconds."""
    start = time.perf_counter()
    yield
    result["timings"][key] = round(time.perf_counter() - start, 4)
