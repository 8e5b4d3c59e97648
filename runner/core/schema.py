"""Structured-config schema: the type of every key the YAML groups may set.

Hydra merges each group file into these dataclasses, so a typo'd key or a wrong type fails at
compose time with OmegaConf's message. runner.core.validate adds the range checks types cannot
express. Nothing here imports TensorFlow: config errors must answer fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from runner.core import apis, releases


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
class ModelCheckpointSaveApi(SaveApi):
    """tf.keras.callbacks.ModelCheckpoint during fit, saving at the end of every epoch."""

    weights_only: bool = False  # save_weights_only: the weights (and optimizer) only


@dataclass
class BackupAndRestoreSaveApi(SaveApi):
    """tf.keras.callbacks.BackupAndRestore during fit (delete_checkpoint=False)."""

    save_freq: Any = "epoch"  # "epoch", or a backup every N batches
    # Kill the training process in the middle of the last epoch (after this fraction of its
    # batches) and start it again, as a preemption would; false: fit once, uninterrupted.
    interrupt: bool = True
    kill_at: float = 0.5


@dataclass
class LoadApi:
    name: str = MISSING
    # checkpoint, weights: create the optimizer's variables before restoring (as the runner
    # always did); false: restore as most code does (compile, then load), which Keras 3 answers
    # with "Skipping variable loading for optimizer" for a .weights.h5. A key of every load API
    # so that a sweep over load_api can set it; the others note that it does not apply.
    build_first: bool = True


@dataclass
class RetrainingLoadApi(LoadApi):
    """hub and tfsm_layer compile a new model around what they load."""

    optimizer: Optimizer = MISSING


@dataclass
class Model:
    name: str = MISSING
    save_before_fit: bool = False
    batchnorm: bool = False  # BatchNormalization after the convolution
    dropout: float = 0.0  # a Dropout layer of this rate after the hidden Dense; 0: none
    # What load_model needs to find a loaded model's classes (a `load_from` model of the user's):
    # modules to import first ([my_pkg.layers]) or {ClassName: my_pkg.layers.ClassName}.
    custom_objects: Any = None


@dataclass
class Digits:
    name: str = "digits"
    test_fraction: float = MISSING
    shuffle_buffer: int = MISSING


@dataclass
class Tfds:
    """Any TFDS dataset (data=tfds data.name=DATASET); data=mnist is its preset for the seed's."""

    name: str = MISSING  # the TFDS dataset: tfds.load(name)
    data_dir: str | None = MISSING
    download: bool = MISSING
    train_split: str = "train"
    test_split: str = "test"
    # [inputs, labels]: the feature names; null: the dataset's supervised keys (as_supervised).
    features: list[str] | None = None
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


@dataclass
class TensorFlowRelease:
    """A side's TensorFlow and Keras (runner.core.releases): `installed`, or an environment of
    another release that the side runs in."""

    name: str = MISSING
    tensorflow: str | None = None  # the TensorFlow minor ("2.16"); null: installed
    keras_version: str | None = None  # a Keras 3 release of its own ("3.3.3"); null: the lock's


# ---- the primary config ----------------------------------------------------------------------

@dataclass
class Train:
    epochs: int = MISSING
    batch_size_per_replica: int = MISSING
    # The compile of a model its builder returns uncompiled (and of the built-in CNN): each a
    # Keras name ("adam", "mse", "accuracy") or a `_target_` config; metrics a list of them.
    optimizer: Any = MISSING
    loss: Any = MISSING
    metrics: Any = MISSING
    # Keras' dtype policy while the model is built: float32, or mixed_float16 (whose compile
    # wraps the optimizer in a LossScaleOptimizer) or mixed_bfloat16.
    precision: str = MISSING


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
    # A Model Registry name: each passed job's logged model becomes a version of it, its choices
    # as the version's tags. null: nothing registered.
    register_model: str | None = None


@dataclass
class Runner:
    fork_server: bool = MISSING
    # In a sweep, cells with the same training side train one model (runner.core.trainings).
    share_training: bool = True
    # Where environments of other releases (tf=, load_tf=) are built and kept; null:
    # $RUNNER_ENVS_DIR, else ~/.cache/runner/envs (runner.launcher.environments.root).
    envs_dir: str | None = None


@dataclass
class Load:
    # Load a model although it carries what could run code on this machine (runner.core.trust):
    # a Lambda layer's Python, ops that may touch files, processes or the network.
    trust: bool = MISSING


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
    tf: Any = MISSING
    load_tf: Any = MISSING
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
    load: Load = field(default_factory=Load)


# Groups whose options may be the user's own: a config with `_target_` (runner.core.targets),
# from conf/<group>/custom.yaml or the user's own --config-dir, checked by its target.
TARGET_GROUPS = ("model", "data")
# The runner's own `_target_` options (runner/job/families): the model families and their data.
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "model": ("text", "mobilenet_v2", "transformer", "stateful_custom"),
    "data": ("sentences", "colour_digits", "token_sequences", "features"),
}

# The tf/load_tf options (runner.core.releases): installed, v2.15 ... v2.21, v2.16-keras3.3.3.
TF_OPTIONS = (releases.INSTALLED, *(releases.OPTION_PREFIX + r for r in releases.RELEASES),
              *releases.PINNED_KERAS)

# conf/<group>/<option>.yaml starts with `defaults: [/schema/<group>/<option>@_here_, _self_]`.
OPTION_SCHEMAS: dict[str, dict[str, type]] = {
    "strategy": {"default": DefaultStrategy, "one_device": OneDeviceStrategy,
                 "mirrored": MirroredStrategy,
                 "multi_worker_mirrored": MultiWorkerMirroredStrategy},
    "load_strategy": {"none": NoStrategy, "default": DefaultStrategy,
                      "one_device": OneDeviceStrategy, "mirrored": MirroredStrategy,
                      "multi_worker_mirrored": MultiWorkerMirroredStrategy},
    "cluster": {"local": LocalCluster, "tf_config": TfConfigCluster, "slurm": SlurmCluster},
    "save_api": {**dict.fromkeys(apis.options("save_api"), SaveApi),
                 "model_checkpoint": ModelCheckpointSaveApi,
                 "backup_and_restore": BackupAndRestoreSaveApi},
    "load_api": {name: RetrainingLoadApi if api.new_model else LoadApi
                 for name, api in apis.LOAD_APIS.items()},
    "model": dict.fromkeys(("sequential", "functional", "subclassed"), Model),
    "data": {"digits": Digits, "mnist": Tfds, "synthetic": Synthetic, "tfds": Tfds},
    "keras": dict.fromkeys(("v3", "legacy"), Keras),
    "load_keras": dict.fromkeys(("v3", "legacy"), Keras),
    "tf": dict.fromkeys(TF_OPTIONS, TensorFlowRelease),
    "load_tf": dict.fromkeys(("same", *TF_OPTIONS), TensorFlowRelease),
}


def register() -> None:
    """The schemas into Hydra's ConfigStore, and the help's resolver (`group_options`)."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for group, options in OPTION_SCHEMAS.items():
        for option, node in options.items():
            store.store(group=f"schema/{group}", name=option, node=node)
    if not OmegaConf.has_resolver(OPTIONS_RESOLVER):
        OmegaConf.register_new_resolver(OPTIONS_RESOLVER, group_options)


OPTIONS_RESOLVER = "runner.options"  # ${runner.options:save_api} in conf/hydra/help/runner.yaml


def group_options(group: str) -> str:
    """A group's options as the help lists them: 'auto | keras | saved_model | ...'."""
    return " | ".join([*OPTION_SCHEMAS[group], *TARGET_PRESETS.get(group, ()),
                       *(["custom"] if group in TARGET_GROUPS else [])])
