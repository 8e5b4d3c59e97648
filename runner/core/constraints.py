"""Values valid alone that cannot work together on the job's data: checked in preflight where
the config alone gives the data's size, and again at the start of each side's `data` phase with
the sizes loaded (runner.job.scenario). No Hydra, no TensorFlow: the job process imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.core.schema import Config


class ConfigError(ValueError):
    """A config value that has the right type but is out of range (or out of reach of the
    others)."""


# scikit-learn's load_digits holds 1797 images (runner.job.data resizes and splits them).
DIGITS_IMAGES = 1797


def split_sizes(cfg: Config) -> tuple[int, int] | None:
    """(training, test) examples of the job's data, known without loading it; None where only
    loading tells (TFDS MNIST: a prepared copy may hold any number)."""
    name = cfg.data.get("name")  # the user's data (data._target_) may have none yet
    if name == "digits":
        n_test = int(round(DIGITS_IMAGES * cfg.data.test_fraction))
        return DIGITS_IMAGES - n_test, n_test
    if name == "synthetic":
        return cfg.data.n_train, cfg.data.n_test
    return None


def check_sizes(cfg: Config, n_train: int, n_test: int) -> None:
    """Values valid alone that cannot work together on this data: each side's global batch (the
    per-replica batch times the side's replicas) at most the training examples, the probe batch
    at most the test examples. (Measured: strategy.replicas=1000 on digits failed after 127 s,
    in training, with an AddN shape error.)"""
    per_replica = cfg.train.batch_size_per_replica
    sides = ("load_strategy",) if cfg.load_from else ("strategy", "load_strategy")
    for side in sides:
        replicas = _replicas(cfg, side)
        if replicas is not None and per_replica * replicas > n_train:
            fewer = (f"at most {n_train // per_replica} replicas, or "
                     if replicas > 1 and n_train >= per_replica else "")
            raise ConfigError(
                f"{side}={cfg[side].name} with {replicas} replica(s) x "
                f"train.batch_size_per_replica={per_replica} is a global batch of "
                f"{per_replica * replicas}, more than the {n_train} training examples of "
                f"data={cfg.data.name}: expected {fewer}train.batch_size_per_replica at most "
                f"{n_train // replicas}.")
    if cfg.verify.probe_size > n_test:
        raise ConfigError(f"verify.probe_size={cfg.verify.probe_size} is more than the {n_test} "
                          f"test examples of data={cfg.data.name}: expected at most {n_test}.")


def _replicas(cfg: Config, side: str) -> int | None:
    """The side's replicas, where the config alone says (a multi-worker cluster an orchestrator
    starts does not)."""
    name = cfg[side].name
    if name == "mirrored":
        return cfg[side].replicas
    if name == "multi_worker_mirrored":
        return cfg.cluster.workers if cfg.cluster.name == "local" else None
    return 1
