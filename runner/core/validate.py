"""What the schema's types cannot check: ranges, keys Hydra let in past the schema, group names
that are no option, values that cannot work together; and what a refused key could have been.

All answer before anything runs: `python -m runner train.epochs=0` exits 2 in well under a
second, and a key Hydra refused gets the list of valid ones (`valid_keys`).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from runner.core import releases, schema, targets
from runner.core.compose import compose
from runner.core.constraints import ConfigError, check_sizes, split_sizes

if TYPE_CHECKING:
    from runner.core.schema import Config


# /job:localhost, /job:worker/replica:0/task:1, /cpu:0, /device:GPU:1, /job:localhost/device:CPU:0
_DEVICE = re.compile(
    r"^(/job:[A-Za-z_][\w-]*)?(/replica:\d+)?(/task:\d+)?"
    r"(/device:(CPU|GPU|TPU):\d+|/(cpu|gpu|tpu):\d+)?$"
)

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # Keras' dtype policies

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
    ("mlflow.register_model", lambda v: v is None or (
        str(v).strip() != "" and not any(c in str(v) for c in "/:")),
     "a Model Registry name without '/' or ':' (or null: register nothing)"),
    ("train.precision", lambda v: v in PRECISIONS, ", ".join(PRECISIONS)),
    ("save_api.save_freq", lambda v: v is None or v == "epoch" or (
        isinstance(v, int) and not isinstance(v, bool) and v >= 1),
     "epoch, or an integer >= 1 (a backup every N batches)"),
    ("save_api.kill_at", lambda v: v is None or 0 <= v < 1,
     "a fraction of the last epoch's batches in [0, 1)"),
]


DEVICE_KEYS = ("io_device", "strategy.device", "load_strategy.device")
CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(schema.Config))


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the key, its value and what is valid."""
    check_keys(cfg)
    check_compile(cfg.train)
    for key in [*(key for key, _, _ in _RANGES), *DEVICE_KEYS]:
        check(key, OmegaConf.select(cfg, key))
    check_interruption(cfg)
    sizes = split_sizes(cfg)
    if sizes is not None:
        check_sizes(cfg, *sizes)


def check_interruption(cfg: Config) -> None:
    """save_api=backup_and_restore's kill and restart runs one training process of its own
    (runner.job.interruption): not a cluster of workers."""
    save_api = cfg.save_api
    if (save_api.name == "backup_and_restore" and save_api.get("interrupt")
            and cfg.strategy.name == "multi_worker_mirrored"):
        raise ConfigError(
            "save_api=backup_and_restore with save_api.interrupt=true kills and restarts one "
            "training process; under strategy=multi_worker_mirrored every worker would have to "
            "be killed and restarted together, which the runner does not do: set "
            "save_api.interrupt=false (BackupAndRestore still backs up, every worker taking "
            "part), or train under strategy=mirrored.")


def check_keys(cfg: Config) -> None:
    """Every key is the schema's, and every group's `name` the option its schema is for.

    Hydra lets `+key=...` and `++key=...` add keys to a structured config (it opens the struct
    flag for them), and `group.name=...` rename an option: the job would then silently ignore
    the key (`+strategy.replica=4` ran on 2 replicas) or fail seconds later (`model.name=mine`
    in `train`)."""
    for key, node in cfg.items():
        if key == "hydra" or key in schema.OPTION_SCHEMAS:  # Hydra's own; the groups: below
            continue
        if key not in CONFIG_KEYS:
            raise ConfigError(f"{key} is not a key of the runner's config (+{key}=... adds keys "
                              f"the runner never reads): its keys are {', '.join(CONFIG_KEYS)}.")
        if dataclasses.is_dataclass(OmegaConf.get_type(node)):  # train, verify, mlflow, ...
            _check_fields(node, str(key), str(key))
    for group, options in schema.OPTION_SCHEMAS.items():
        node = cfg[group]
        if group in schema.TARGET_GROUPS and targets.is_target(node):
            check_target_option(group, node)
            continue
        if group == "data" and OmegaConf.get_type(node) is schema.Tfds:
            check_tfds(node)
            _check_fields(node, group, "data=tfds")
            continue
        name = node.get("name")
        if name not in options:
            raise ConfigError(f"{group}.name={name!r} is not a {group} option: expected one of "
                              f"{', '.join(options)} (chosen with {group}=OPTION).")
        if OmegaConf.get_type(node) is not options[name]:
            raise ConfigError(f"{group}.name={name} renames another {group} option: choose it "
                              f"with {group}={name} instead.")
        _check_fields(node, group, f"{group}={name}")


def check_target_option(group: str, node: Any) -> None:
    """A model or data option of the user's own: its target exists (found, not imported) and
    the runner's own keys beside it have their types."""
    if OmegaConf.is_missing(node, targets.TARGET):
        raise ConfigError(f"{group}=custom needs {group}.{targets.TARGET}=my_pkg.module.function "
                          f"(a function or class of your package; +{group}.ARG=VALUE for its "
                          "arguments), or choose a built-in option: "
                          f"{', '.join(schema.OPTION_SCHEMAS[group])}.")
    targets.check_target(node[targets.TARGET], f"{group}.{targets.TARGET}")
    name = node.get("name")
    if name is not None and (not isinstance(name, str) or name in schema.OPTION_SCHEMAS[group]):
        raise ConfigError(f"{group}.name={name!r}: a model of your own needs a name of its own "
                          f"(not a built-in option's: {', '.join(schema.OPTION_SCHEMAS[group])}).")
    if group == "model":
        if not isinstance(node.get("save_before_fit", False), bool):
            raise ConfigError(f"model.save_before_fit={node.get('save_before_fit')!r}: "
                              "expected true or false.")
        targets.check_custom_objects(node.get("custom_objects"))


def check_tfds(node: Any) -> None:
    """data=tfds: a dataset name (any TFDS dataset; whether it exists, only TFDS can say, in
    the job), and features as [inputs, labels]."""
    if OmegaConf.is_missing(node, "name") or not node.name:
        raise ConfigError("data=tfds needs data.name=DATASET, a TFDS dataset name (e.g. "
                          "fashion_mnist), and data.data_dir=DIR for a prepared copy.")
    features = node.get("features")
    if features is not None and len(features) != 2:
        raise ConfigError(f"data.features={list(features)}: expected two feature names, "
                          "[inputs, labels], or null for the dataset's supervised keys.")


def check_compile(train: Any) -> None:
    """train.optimizer, .loss, .metrics: Keras names or `_target_` configs that exist."""
    for where, item in targets.compile_items(train):
        if where == "train.metrics":  # not a list
            raise ConfigError(f"train.metrics={item!r}: expected a list, e.g. [accuracy].")
        if isinstance(item, str) and item:
            continue
        if targets.is_target(item):
            targets.check_target(item[targets.TARGET], f"{where}.{targets.TARGET}")
            continue
        raise ConfigError(f"{where}={item!r}: expected a Keras name (e.g. adam, "
                          "sparse_categorical_crossentropy, accuracy) or a config with "
                          f"{targets.TARGET}.")


def _check_fields(node: Any, prefix: str, what: str) -> None:
    allowed = [f.name for f in dataclasses.fields(OmegaConf.get_type(node))]
    for key in node:
        if key not in allowed:
            raise ConfigError(f"{prefix}.{key} is not a key of {what} (+{prefix}.{key}=... adds "
                              f"a key the runner never reads): its keys are {', '.join(allowed)}.")



def validate_sweep(overrides: list[str]) -> None:
    """Every value a sweep's overrides give a checked key (`train.epochs=1,0`), before any of
    its jobs starts: a bad one would otherwise fail only when its job's turn comes."""
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


def valid_keys(overrides: list[str]) -> list[str]:
    """For each `a.b=value` override naming a key that `a` does not have: a line naming the keys
    it does have. Called after Hydra refused such an override (its message names the bad key,
    not the good ones); composes the config again with the overrides' group choices only."""
    plain = [o for o in overrides if "=" in o and not o.startswith(("+", "~", "hydra", "-"))]
    choices = [o for o in plain if "." not in o.split("=")[0] and "," not in o]
    keys = [o.split("=")[0] for o in plain if "." in o.split("=")[0]]
    try:
        cfg = compose(choices)
    except Exception:  # the choices themselves are wrong: Hydra said so, and which are valid
        return []
    lines = []
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if isinstance(node, DictConfig) and leaf not in node:
            lines.append(f"Valid keys under '{parent}': {', '.join(map(str, node.keys()))}.")
    return lines


# ---- the releases each side runs in (tf, load_tf) ------------------------------------------

# What decides a side's set and whether it can run: the sides' releases, Keras generations and
# Keras 3 releases.
RELEASE_KEYS = ("tf", "load_tf", "keras", "load_keras", "tf.keras_version", "load_tf.keras_version")


def release_combinations(cfg: Config, overrides: list[str] | None = None,
                         load_tf_choice: str | None = None) -> list[dict[str, Any]]:
    """Each distinct combination of RELEASE_KEYS the jobs take: the config's, or a sweep's
    product of the values its overrides give (sweeper params first, then the command line's).
    load_tf_choice: Hydra's choice for load_tf (`same` follows tf, whatever tf a job takes)."""
    given: dict[str, list[Any]] = {}
    for o in OverridesParser.create().parse_overrides(list(overrides or [])):
        key = o.get_key_element().lstrip("+~")
        if key in RELEASE_KEYS:
            given[key] = ([str(v) if v is not None else None for v in o.sweep_iterator()]
                          if o.is_sweep_override() else [o.value()])
    base = {"tf": cfg.tf.name, "keras": cfg.keras.name, "tf.keras_version": cfg.tf.keras_version,
            "load_keras": cfg.load_keras.name, "load_tf": cfg.load_tf.name,
            "load_tf.keras_version": cfg.load_tf.keras_version}
    # What follows the training side unless set: load_keras (${keras}), load_tf (same) and its
    # keras_version. Set means given here, or composed to a value of its own.
    same_tf = load_tf_choice == releases.SAME if load_tf_choice else base["load_tf"] == base["tf"]
    follows = {
        "load_keras": "keras" if base["load_keras"] == base["keras"] else None,
        "load_tf": "tf" if same_tf else None,
        "load_tf.keras_version": "tf.keras_version" if same_tf else None,
    }
    if given.get("load_tf") and given["load_tf"] != [releases.SAME]:
        follows["load_tf"] = follows["load_tf.keras_version"] = None
    own = [k for k in RELEASE_KEYS if not follows.get(k) or k in given]
    found = []
    for values in itertools.product(*(given.get(k, [base[k]]) for k in own)):
        combo = dict(zip(own, values, strict=True))
        for key, leader in follows.items():
            if leader and (key not in combo or combo[key] == releases.SAME):
                combo[key] = combo[leader]
        if combo not in found:
            found.append(combo)
    return found


def check_releases(cfg: Config, overrides: list[str] | None = None,
                   load_tf_choice: str | None = None) -> list[releases.LibrarySet]:
    """The library sets the jobs need (none for `installed`); ConfigError naming the first
    combination that cannot run, and why."""
    needed: list[releases.LibrarySet] = []
    for combo in release_combinations(cfg, overrides, load_tf_choice):
        for key, generation in (("tf", combo["keras"]), ("load_tf", combo["load_keras"])):
            option, version = combo[key], combo[f"{key}.keras_version"]
            if option == releases.INSTALLED and version:
                raise ConfigError(
                    f"{key}.keras_version={version} with {key}=installed: the installed "
                    f"environment's Keras is what it is; choose a release, e.g. {key}=v2.16")
            if key == "tf" and cfg.get("load_from"):
                continue  # a load_from job has no training side
            found = releases.library_set(option, version)
            why = releases.problem(found, generation, key)
            if why:
                raise ConfigError(why)
            if found is not None and found not in needed:
                needed.append(found)
    return needed
