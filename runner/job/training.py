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
          hand_over: bool = True, first_step: int = 0) -> dict[str, list[float]]:
    """model.fit (with the save API's `callbacks`, runner.job.callbacks); returns the per-epoch
    loss and accuracy. In a tracked job's chief, each epoch also goes to the MLflow run as it
    ends (`loss`, `accuracy`, ... at step first_step + epoch: continuing's epochs follow
    training's on one curve; runner.tracking.handover), unless hand_over=False."""
    relay = handover.epoch_callback(name, first_step) if hand_over else None
    if cfg.verbose:  # which fit the progress bars below belong to
        print(fit_label(name, epochs, model), flush=True)
    # shuffle=False: a tf.data dataset is shuffled by the pipeline; Keras ignores (and warns
    # about) shuffle=True for it.
    history = model.fit(dataset, epochs=epochs, verbose=cfg.verbose, shuffle=False,
                        callbacks=[*(callbacks or []), *([relay] if relay else [])]).history
    return {("accuracy" if name.endswith("accuracy") else name): [float(v) for v in values]
            for name, values in history.items()}


def fit_label(name: str, epochs: int, model: tf.keras.Model) -> str:
    """The line above a fit's progress bars: 'train: 2 epochs, MirroredStrategy (2 replicas)'."""
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    where = type(strategy).__name__.replace("_DefaultDistributionStrategy", "no strategy")
    return (f"{name}: {epochs} epoch{'s' * (epochs != 1)}, {where}"
            + (f" ({replicas} replicas)" if replicas > 1 else ""))


def fit_params(model: tf.keras.Model, epochs: int, global_batch: int) -> dict[str, str]:
    """What MLflow's Keras autolog logs of a fit: epochs, batch_size (global) and the
    optimizer's config as optimizer_<key> (its name, learning_rate, ...)."""
    found = {"epochs": str(epochs), "batch_size": str(global_batch)}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        try:
            config = optimizer.get_config()
        except Exception:  # noqa: BLE001 - a custom optimizer without a config: none logged
            config = {}
        # Unset options (None) left out, as the config's are (record.params).
        found.update({f"optimizer_{k}": str(v) for k, v in config.items() if v is not None})
    return found


def model_summary(model: tf.keras.Model) -> str:
    """model.summary() as text, as MLflow's Keras autolog logs it (model_summary.txt)."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)


def keep_going(loaded: Loaded, data: Data, strategy: tf.distribute.Strategy | None,
               cfg: Config, result: Result) -> float | None:
    """Keep training a trainable model; otherwise run (distributed) inference. Test accuracy."""
    if loaded.model is not None:
        if cfg.continue_epochs == 0:
            return None
        result["history"]["continue"] = train(loaded.model, data.train, cfg.continue_epochs,
                                              cfg, "continue",
                                              first_step=result.get("continue_from_step", 0))
        return accuracy(loaded.predict, data.test)
    return distributed_accuracy(loaded.predict, data.test, strategy)
