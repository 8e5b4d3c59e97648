"""Training and continuing: the model built and compiled in the strategy's scope, fit, and
the loaded model kept training (or serving) on this side's data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tensorflow as tf

from runner.core.result import Result
from runner.job import models
from runner.job.accuracy import accuracy, distributed_accuracy
from runner.job.data import Data
from runner.job.loading import Loaded
from runner.tracking import handover

if TYPE_CHECKING:
    from runner.core.schema import Config


def build_model(cfg: Config, strategy: tf.distribute.Strategy) -> tuple[tf.keras.Model, bool]:
    """Build and compile inside the training strategy's scope, as the seed's get_model does: the
    built-in CNN or the user's `model._target_`. A model its builder compiled keeps its own
    compile. Returns the model and whether the builder had compiled it."""
    with strategy.scope(), models.dtype_policy(cfg.train.precision):
        model = models.build_from(cfg.model)
        compiled = models.is_compiled(model)
        if not compiled:
            models.compile_model(model, cfg.train, jit_compile=cfg.speed.jit_compile)
    return model, compiled


def train(model: tf.keras.Model, dataset: tf.data.Dataset, epochs: int, cfg: Config,
          name: str, callbacks: list[Any] | None = None,
          hand_over: bool = True) -> dict[str, list[float]]:
    """model.fit (with the save API's `callbacks`, runner.job.callbacks); returns the per-epoch
    loss and accuracy. In a tracked job's chief, each epoch also goes to the MLflow run as it
    ends (`<name>_loss`, ...: runner.tracking.handover), unless hand_over=False."""
    relay = handover.epoch_callback(name) if hand_over else None
    # shuffle=False: a tf.data dataset is shuffled by the pipeline; Keras ignores (and warns
    # about) shuffle=True for it.
    history = model.fit(dataset, epochs=epochs, verbose=cfg.verbose, shuffle=False,
                        callbacks=[*(callbacks or []), *([relay] if relay else [])]).history
    return {("accuracy" if name.endswith("accuracy") else name): [float(v) for v in values]
            for name, values in history.items()}


def keep_going(loaded: Loaded, data: Data, strategy: tf.distribute.Strategy | None,
               cfg: Config, result: Result) -> float | None:
    """Keep training a trainable model; otherwise run (distributed) inference. Test accuracy."""
    if loaded.model is not None:
        if cfg.continue_epochs == 0:
            return None
        result["history"]["continue"] = train(loaded.model, data.train, cfg.continue_epochs,
                                              cfg, "continue")
        return accuracy(loaded.predict, data.test)
    return distributed_accuracy(loaded.predict, data.test, strategy)
