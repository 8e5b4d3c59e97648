"""The seed tutorial's scenario, one function per step: train, evaluate, save, load, verify,
continue. `run` strings them together and fills in the result as it goes."""

from __future__ import annotations

import contextlib
import gc
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from runner import data as datasets
from runner import models, runtime
from runner import result as results
from runner.save_load import LOADERS, SAVERS, Loaded, artifact_bytes


class VerificationError(AssertionError):
    """The loaded model does not compute what the saved one did."""


def run(cfg: Any, out: Path, result: dict[str, Any]) -> None:
    """Carry out the scenario, recording each phase in `result` (and result.json) as it starts."""
    phase = _phase_recorder(out, result)
    tf.keras.utils.set_random_seed(cfg.seed)

    with phase("train"):
        strategy = runtime.make_strategy(cfg.strategy)
        result["replicas"]["train"] = runtime.replicas(strategy)
        result["devices"] = [d.name for d in tf.config.list_logical_devices()]
        result["keras_module"] = runtime.keras_generation()
    with phase("data"):
        data = datasets.load(cfg, cfg.train.batch_size_per_replica * runtime.replicas(strategy))
    with phase("train"):
        model = build_model(cfg, strategy)
        if cfg.model.save_before_fit:
            result["caveat"] = save_before_fit(model, cfg.save_api.name, out)
        result["timings"]["train_s"] = _timed(lambda: train(model, data, cfg.train.epochs, cfg))
        if cfg.model.save_before_fit:
            result["caveat"]["traced_after_fit"] = models.has_traced_call(model)
        result["accuracy"]["after_train"] = accuracy(lambda x: model(x, training=False), data.test)
        saved_logits = model(data.probe, training=False).numpy()
    with phase("save"):
        (path, notes), result["timings"]["save_s"] = _timed_value(
            lambda: SAVERS[cfg.save_api.name](model, out, cfg.io_device))
        result["artifact"] = str(path)
        result["artifact_bytes"] = artifact_bytes(path)
        result["notes"] += notes
    fresh_keras_session(model)

    with phase("load"):
        load_strategy = runtime.make_strategy(cfg.load_strategy)
        result["replicas"]["load"] = runtime.replicas(load_strategy)
        loaded, result["timings"]["load_s"] = _timed_value(
            lambda: load(path, cfg, load_strategy))
        result["notes"] += loaded.notes
    with phase("verify"):
        result["max_abs_diff"] = verify(loaded, data.probe, saved_logits, cfg.verify.tolerance)
        result["accuracy"]["after_load"] = accuracy(loaded.predict, data.test)
    with phase("continue"):
        load_data = datasets.load(
            cfg, cfg.train.batch_size_per_replica * runtime.replicas(load_strategy))
        result["accuracy"]["after_continue"], result["timings"]["continue_s"] = _timed_value(
            lambda: keep_going(loaded, load_data, load_strategy, cfg))
    result["status"] = "passed"


# ---- steps -----------------------------------------------------------------------------------

def build_model(cfg: Any, strategy: tf.distribute.Strategy) -> tf.keras.Model:
    """Build and compile inside the training strategy's scope, as the seed's get_model does."""
    with strategy.scope():
        model = models.build(cfg.model.name)
        models.compile_model(model)
    return model


def train(model: tf.keras.Model, data: datasets.Data, epochs: int, cfg: Any) -> None:
    model.fit(data.train, epochs=epochs, verbose=cfg.verbose)


def save_before_fit(model: tf.keras.Model, save_api: str, out: Path) -> dict[str, Any]:
    """The seed's caveat: save a model that has not traced a call yet, and record what happens."""
    report: dict[str, Any] = {"traced_before_fit": models.has_traced_call(model)}
    target = out / "before_fit"
    target.mkdir(exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path, _ = SAVERS[save_api](model, target, None)
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


def load(path: Path, cfg: Any, strategy: tf.distribute.Strategy | None) -> Loaded:
    """Load with the chosen API inside the load-side strategy's scope (none: no scope)."""
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        return LOADERS[cfg.load_api.name](path, cfg.io_device, cfg.load_api)


def verify(loaded: Loaded, probe: np.ndarray, saved_logits: np.ndarray, tolerance: float) -> float:
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


def keep_going(loaded: Loaded, data: datasets.Data, strategy: tf.distribute.Strategy | None,
               cfg: Any) -> float | None:
    """Keep training a trainable model; otherwise run (distributed) inference. Test accuracy."""
    if loaded.model is not None:
        if cfg.continue_epochs == 0:
            return None
        loaded.model.fit(data.train, epochs=cfg.continue_epochs, verbose=cfg.verbose)
        return accuracy(loaded.predict, data.test)
    return distributed_accuracy(loaded.predict, data.test, strategy)


def fresh_keras_session(model: tf.keras.Model) -> None:
    """Forget the trained model so that loading starts from what is on disk only."""
    del model
    tf.keras.backend.clear_session()
    gc.collect()


# ---- measurements ----------------------------------------------------------------------------

def accuracy(predict: Callable[[Any], Any], test: tf.data.Dataset) -> float:
    correct = total = 0
    for images, labels in test:
        logits = predict(images)
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.int64)))
        total += int(labels.shape[0])
    return correct / total


def distributed_accuracy(predict: Callable[[Any], Any], test: tf.data.Dataset,
                         strategy: tf.distribute.Strategy | None) -> float:
    """Inference as the seed distributes it: experimental_distribute_dataset + strategy.run."""
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return accuracy(predict, test)

    def step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        hits = tf.cast(tf.argmax(predict(images), -1) == labels, tf.int64)
        return tf.reduce_sum(hits), tf.size(labels, out_type=tf.int64)

    correct = total = 0
    for images, labels in strategy.experimental_distribute_dataset(test):
        hits, count = strategy.run(step, args=(images, labels))
        correct += int(strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None))
        total += int(strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None))
    return correct / total


# ---- bookkeeping -----------------------------------------------------------------------------

def _phase_recorder(out: Path, result: dict[str, Any]):
    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        result["phase"] = name
        results.write(out, result)
        yield

    return phase


def _timed(fn: Callable[[], Any]) -> float:
    return _timed_value(fn)[1]


def _timed_value(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 4)
