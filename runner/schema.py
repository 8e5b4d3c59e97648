"""Structured-config schema: the type of every key the YAML groups may set.

Hydra merges each group file into these dataclasses, so a typo'd key or a wrong type fails at
compose time with OmegaConf's message. `validate` adds the range checks types cannot express.
Nothing here imports TensorFlow: config errors must answer fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


# ---- one schema per group option: a key another option has is a typo here --------------------

@dataclass
class NoStrategy:
    name: str = "none"


@dataclass
class DefaultStrategy:
    name: str = "default"


@dataclass
class OneDeviceStrategy:
    name: str = "one_device"
    device: str = MISSING


@dataclass
class MirroredStrategy:
    name: str = "mirrored"
    replicas: int = MISSING


@dataclass
class MultiWorkerMirroredStrategy:
    name: str = "multi_worker_mirrored"


@dataclass
class LocalCluster:
    name: str = "local"
    workers: int = MISSING
    timeout_s: int = MISSING
    grace_s: int = MISSING
    startup_timeout_s: int = MISSING


@dataclass
class TfConfigCluster:
    name: str = "tf_config"
    startup_timeout_s: int = MISSING


@dataclass
class SlurmCluster:
    name: str = "slurm"
    port_base: int = MISSING
    gpus_per_node: int | None = MISSING
    startup_timeout_s: int = MISSING


@dataclass
class SaveApi:
    name: str = MISSING
    in_scope: bool = False  # call the save API inside the training strategy's scope
    # SaveOptions(experimental_variable_policy=...) for the SavedModel save APIs: null,
    # expand_distributed_variables or save_variable_devices.
    variable_policy: str | None = None
    # Set by the runner when the name was `auto`: the load API it was paired with.
    paired_with: str | None = None


@dataclass
class LoadApi:
    name: str = MISSING


@dataclass
class RetrainingLoadApi:
    """hub and tfsm_layer compile a new model around what they load."""

    name: str = MISSING
    optimizer: Optimizer = MISSING


@dataclass
class Model:
    name: str = MISSING
    save_before_fit: bool = False
    batchnorm: bool = False  # BatchNormalization after the convolution
    dropout: float = 0.0  # a Dropout layer of this rate after the hidden Dense; 0: none


@dataclass
class Digits:
    name: str = "digits"
    test_fraction: float = MISSING
    shuffle_buffer: int = MISSING


@dataclass
class Mnist:
    name: str = "mnist"
    data_dir: str | None = MISSING
    download: bool = MISSING
    shuffle_buffer: int = MISSING


@dataclass
class Synthetic:
    name: str = "synthetic"
    n_train: int = MISSING
    n_test: int = MISSING
    shuffle_buffer: int = MISSING


@dataclass
class Keras:
    name: str = MISSING


# ---- the primary config ----------------------------------------------------------------------

@dataclass
class Train:
    epochs: int = MISSING
    batch_size_per_replica: int = MISSING


class ResumePolicy(str, Enum):
    record = "record"  # a drift is recorded; the job still passes
    require = "require"  # a drift fails the job in phase `resume`


@dataclass
class Verify:
    tolerance: float = MISSING
    probe_size: int = MISSING
    resume_steps: int = MISSING
    resume_tolerance: float = MISSING
    resume: ResumePolicy = MISSING
    resave: bool = MISSING


@dataclass
class Speed:
    prefetch: bool = MISSING
    parallel_map: bool = MISSING
    jit_compile: bool = MISSING
    threads: int = MISSING


@dataclass
class Mlflow:
    enabled: bool = MISSING
    tracking_uri: str | None = MISSING
    store_dir: str | None = MISSING
    experiment_name: str = MISSING
    log_model: bool = MISSING
    system_metrics: bool = MISSING
    http_timeout_s: int = MISSING
    http_max_retries: int = MISSING
    # "continue" (a store that goes away after the start: go on untracked, sync later) or
    # "fail" (a failure in phase `tracking`; the work is on disk either way). Not an Enum:
    # `continue` cannot be a member's name.
    on_lost: str = MISSING


@dataclass
class Runner:
    fork_server: bool = MISSING


@dataclass
class Config:
    # Group nodes take the type of the option's own schema (see OPTION_SCHEMAS).
    strategy: Any = MISSING
    load_strategy: Any = MISSING
    cluster: Any = MISSING
    save_api: Any = MISSING
    load_api: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    keras: Any = MISSING
    load_keras: Any = MISSING
    seed: int = MISSING
    load_from: str | None = None
    tutorial_step: str | None = None
    train: Train = field(default_factory=Train)
    continue_epochs: int = MISSING
    verify: Verify = field(default_factory=Verify)
    io_device: str | None = None
    verbose: int = MISSING
    speed: Speed = field(default_factory=Speed)
    mlflow: Mlflow = field(default_factory=Mlflow)
    runner: Runner = field(default_factory=Runner)


# conf/<group>/<option>.yaml starts with `defaults: [/schema/<group>/<option>@_here_, _self_]`.
OPTION_SCHEMAS: dict[str, dict[str, type]] = {
    "strategy": {"default": DefaultStrategy, "one_device": OneDeviceStrategy,
                 "mirrored": MirroredStrategy,
                 "multi_worker_mirrored": MultiWorkerMirroredStrategy},
    "load_strategy": {"none": NoStrategy, "default": DefaultStrategy,
                      "one_device": OneDeviceStrategy, "mirrored": MirroredStrategy,
                      "multi_worker_mirrored": MultiWorkerMirroredStrategy},
    "cluster": {"local": LocalCluster, "tf_config": TfConfigCluster, "slurm": SlurmCluster},
    "save_api": dict.fromkeys(("auto", "keras", "saved_model", "keras_saved_model", "export",
                               "checkpoint", "weights"), SaveApi),
    "load_api": {"keras": LoadApi, "saved_model": LoadApi, "hub": RetrainingLoadApi,
                 "tfsm_layer": RetrainingLoadApi, "checkpoint": LoadApi, "weights": LoadApi},
    "model": dict.fromkeys(("sequential", "functional", "subclassed"), Model),
    "data": {"digits": Digits, "mnist": Mnist, "synthetic": Synthetic},
    "keras": dict.fromkeys(("v3", "legacy"), Keras),
    "load_keras": dict.fromkeys(("v3", "legacy"), Keras),
}


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for group, options in OPTION_SCHEMAS.items():
        for option, node in options.items():
            store.store(group=f"schema/{group}", name=option, node=node)


def valid_keys(overrides: list[str]) -> list[str]:
    """For each `a.b=value` override naming a key that `a` does not have: a line naming the keys
    it does have. Called after Hydra refused such an override (its message names the bad key,
    not the good ones); composes the config again with the overrides' group choices only."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig, OmegaConf

    plain = [o for o in overrides if "=" in o and not o.startswith(("+", "~", "hydra", "-"))]
    choices = [o for o in plain if "." not in o.split("=")[0] and "," not in o]
    keys = [o.split("=")[0] for o in plain if "." in o.split("=")[0]]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=choices)
    except Exception:  # the choices themselves are wrong: Hydra said so, and which are valid
        return []
    lines = []
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if isinstance(node, DictConfig) and leaf not in node:
            lines.append(f"Valid keys under '{parent}': {', '.join(map(str, node.keys()))}.")
    return lines


class ConfigError(ValueError):
    """A config value that has the right type but is out of range."""


# /job:localhost, /job:worker/replica:0/task:1, /cpu:0, /device:GPU:1, /job:localhost/device:CPU:0
_DEVICE = re.compile(
    r"^(/job:[A-Za-z_][\w-]*)?(/replica:\d+)?(/task:\d+)?"
    r"(/device:(CPU|GPU|TPU):\d+|/(cpu|gpu|tpu):\d+)?$"
)

_RANGES: list[tuple[str, Any, str]] = [
    ("train.epochs", lambda v: v >= 1, "an integer >= 1"),
    ("train.batch_size_per_replica", lambda v: v >= 1, "an integer >= 1"),
    ("continue_epochs", lambda v: v >= 0, "an integer >= 0"),
    ("strategy.replicas", lambda v: v is None or v >= 1, "an integer >= 1"),
    ("load_strategy.replicas", lambda v: v is None or v >= 1, "an integer >= 1"),
    ("verify.tolerance", lambda v: v >= 0, "a number >= 0"),
    ("verify.probe_size", lambda v: v >= 1, "an integer >= 1"),
    ("verify.resume_steps", lambda v: v >= 0, "an integer >= 0 (0: no resume check)"),
    ("verify.resume_tolerance", lambda v: v >= 0, "a number >= 0"),
    ("data.shuffle_buffer", lambda v: v >= 1, "an integer >= 1"),
    ("model.dropout", lambda v: 0 <= v < 1, "a rate in [0, 1)"),
    ("save_api.variable_policy",
     lambda v: v in (None, "expand_distributed_variables", "save_variable_devices"),
     "null, expand_distributed_variables or save_variable_devices"),
    ("data.test_fraction", lambda v: v is None or 0 < v < 1, "a number in (0, 1)"),
    ("data.n_train", lambda v: v is None or v >= 1, "an integer >= 1"),
    ("data.n_test", lambda v: v is None or v >= 1, "an integer >= 1"),
    ("verbose", lambda v: v in (0, 1, 2), "0, 1 or 2"),
    ("speed.threads", lambda v: v >= 0, "an integer >= 0 (0: TensorFlow's choice)"),
    ("cluster.workers", lambda v: v is None or v >= 1, "an integer >= 1"),
    ("cluster.timeout_s", lambda v: v is None or v >= 1, "an integer >= 1"),
    ("cluster.grace_s", lambda v: v is None or v >= 0, "an integer >= 0"),
    ("cluster.startup_timeout_s", lambda v: v is None or v >= 1, "an integer >= 1"),
    ("cluster.port_base", lambda v: v is None or 1 <= v <= 65535, "a port in 1..65535"),
    ("cluster.gpus_per_node", lambda v: v is None or v >= 0, "an integer >= 0"),
    ("mlflow.http_timeout_s", lambda v: v >= 1, "an integer >= 1"),
    ("mlflow.http_max_retries", lambda v: v >= 0, "an integer >= 0"),
    ("mlflow.on_lost", lambda v: v in ("continue", "fail"), "continue or fail"),
]


DEVICE_KEYS = ("io_device", "strategy.device", "load_strategy.device")


def validate(cfg: Any) -> None:
    """Raise ConfigError naming the key, its value and what is valid."""
    from omegaconf import OmegaConf

    for key in [*(key for key, _, _ in _RANGES), *DEVICE_KEYS]:
        check(key, OmegaConf.select(cfg, key))


def validate_sweep(overrides: list[str]) -> None:
    """Every value a sweep's overrides give a checked key (`train.epochs=1,0`), before any of
    its jobs starts: a bad one would otherwise fail only when its job's turn comes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if key in DEVICE_KEYS or any(key == k for k, _, _ in _RANGES):
            values = (list(override.sweep_iterator()) if override.is_sweep_override()
                      else [override.value()])
            for value in values:
                check(key, value)


def check(key: str, value: Any) -> None:
    """Raise ConfigError if `value` is out of range for `key`."""
    for range_key, ok, valid in _RANGES:
        if range_key == key and not _ok(ok, value):
            raise ConfigError(f"{key}={value!r} is out of range: expected {valid}.")
    if key in DEVICE_KEYS and value is not None and (
            not isinstance(value, str) or not value or not _DEVICE.match(value)):
        raise ConfigError(
            f"{key}={value!r} is not a TensorFlow device string: expected e.g. "
            "'/job:localhost', '/cpu:0', '/gpu:1' or '/job:worker/task:0/device:CPU:0'."
        )


def _ok(ok: Any, value: Any) -> bool:
    try:
        return bool(ok(value))
    except TypeError:  # a swept value of the wrong type: its job's schema will say so
        return True
