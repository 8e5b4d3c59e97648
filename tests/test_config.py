"""Config composition and validation: fast, and never importing TensorFlow."""

from __future__ import annotations

import sys

import pytest
from helpers.run import ROOT, runner
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from runner.core import schema
from runner.core.validate import ConfigError, validate
from runner.launcher import sweep

schema.register()
GROUPS = [d.name for d in sorted((ROOT / "conf").iterdir()) if d.is_dir() and d.name != "hydra"]


# Options that name what the user must give: their model's or data's target, a TFDS dataset.
NEEDS_A_VALUE = {"model=custom": "model._target_=", "data=custom": "data._target_=",
                 "data=tfds": "data.name=DATASET"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def compose_cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides),
                       return_hydra_config=hydra)


@pytest.mark.parametrize(
    "override", [f"{g}={o}" for g in GROUPS for o in options(g)]
)
def test_every_option_composes_and_validates(override):
    cfg = compose_cfg(override)
    group, option = override.split("=")
    if override in NEEDS_A_VALUE:  # the user's own: refused until given what it needs
        with pytest.raises(ConfigError, match=f"^{override} needs {NEEDS_A_VALUE[override]}"):
            validate(cfg)
        return
    validate(cfg)
    if group == "tutorial_step":  # a preset of other groups that names itself
        assert cfg.tutorial_step == option
    elif group == "strategy_pair":  # both sides' strategies, named train_load
        assert f"{cfg.strategy.name}_{cfg.load_strategy.name}" == option
    elif group == "resume_path":  # a save and load path, named by what it sets
        assert option.startswith(cfg.save_api.name) or option.endswith(cfg.save_api.name)
        assert cfg.load_api.name in ("keras", "checkpoint", "weights")
    elif override == "load_tf=same":  # the training side's release
        assert cfg.load_tf.name == cfg.tf.name
    elif group != "experiment":
        assert cfg[group].name == option


def test_defaults_are_the_documented_ones():
    cfg = compose_cfg()
    presets = ("experiment", "tutorial_step", "strategy_pair", "resume_path")  # set others
    chosen = {g: cfg[g].name for g in GROUPS if g not in presets}
    assert chosen == {
        "strategy": "default", "load_strategy": "none", "save_api": "auto", "load_api": "keras",
        "model": "sequential", "data": "digits", "keras": "v3", "load_keras": "v3",
        "cluster": "local", "tf": "installed", "load_tf": "installed",
    }
    assert (cfg.load_from, cfg.tutorial_step) == (None, None)
    assert (cfg.seed, cfg.train.epochs, cfg.train.batch_size_per_replica) == (0, 2, 64)
    assert (cfg.continue_epochs, cfg.verify.tolerance, cfg.io_device) == (2, 1e-5, None)
    v = cfg.verify
    assert (v.resume_steps, v.resume_tolerance, v.resume, v.resave) == (3, 1e-5, "record", False)
    assert compose_cfg("strategy=mirrored").strategy.replicas == 2


def test_load_keras_follows_keras_unless_chosen():
    assert compose_cfg("keras=legacy").load_keras.name == "legacy"
    cfg = compose_cfg("keras=legacy", "load_keras=v3")
    assert (cfg.keras.name, cfg.load_keras.name) == ("legacy", "v3")


def test_a_sweep_starts_a_fork_server_for_each_keras_generation_its_jobs_import():
    """What a basic-launcher sweep warms before its parent run opens (runner.launcher.sweep)."""
    assert sweep.swept_generations(compose_cfg("experiment=matrix", hydra=True)) == [
        "legacy", "v3"]
    assert sweep.swept_generations(compose_cfg("keras=legacy", hydra=True)) == ["legacy"]
    assert sweep.swept_generations(compose_cfg("load_keras=legacy", hydra=True)) == [
        "legacy", "v3"]
    assert sweep.swept_generations(compose_cfg("save_api=keras", hydra=True)) == ["v3"]


# Each step of the seed tutorial: (save_api, load_api, load_strategy, model, io_device).
TUTORIAL_STEPS = {
    "keras_load": ("keras", "keras", "none", "sequential", None),
    "keras_load_one_device": ("keras", "keras", "one_device", "sequential", None),
    "saved_model_load": ("saved_model", "saved_model", "none", "sequential", None),
    "saved_model_load_mirrored": ("saved_model", "saved_model", "mirrored", "sequential", None),
    "hub_keras_layer": ("saved_model", "hub", "mirrored", "sequential", None),
    "mixed_apis": ("keras_saved_model", "saved_model", "mirrored", "sequential", None),
    "io_device": ("keras_saved_model", "keras", "mirrored", "sequential", "/job:localhost"),
    "save_before_fit": ("keras_saved_model", "keras", "none", "subclassed", None),
}


def test_tutorial_all_sweeps_every_seed_step_under_both_generations():
    cfg = compose_cfg("experiment=tutorial_all", hydra=True)
    params = cfg.hydra.sweeper.params
    assert params.tutorial_step.split(",") == list(TUTORIAL_STEPS)
    assert sorted(TUTORIAL_STEPS) == options("tutorial_step")
    assert params.keras == "v3,legacy"
    assert (cfg.strategy.name, cfg.data.name) == ("mirrored", "mnist")
    for step, expected in TUTORIAL_STEPS.items():
        cfg = compose_cfg("experiment=tutorial_all", f"tutorial_step={step}")
        chosen = (cfg.save_api.name, cfg.load_api.name, cfg.load_strategy.name, cfg.model.name,
                  cfg.io_device)
        assert chosen == expected, step
        assert cfg.model.save_before_fit == (step == "save_before_fit")
        assert cfg.strategy.name == "mirrored"  # the step leaves the preset's training side


def test_tutorial_preset_is_the_seed():
    cfg = compose_cfg("experiment=tutorial")
    assert cfg.data.name == "mnist" and cfg.strategy.name == "mirrored"
    assert (cfg.train.epochs, cfg.continue_epochs, cfg.train.batch_size_per_replica) == (2, 2, 64)
    assert cfg.data.shuffle_buffer == 10000


@pytest.mark.parametrize(
    "override, text",
    [
        ("strategy.replicas=3", "Key 'replicas' not in 'DefaultStrategy'"),  # mirrored only
        ("strategy=mirrored strategy.replica=3", "Key 'replica' not in 'MirroredStrategy'"),
        ("train.epoch=3", "Key 'epoch' not in 'Train'"),
        ("train.epochs=two", "Value 'two' of type 'str' could not be converted to Integer"),
        ("load_api.optimizer=adam", "Key 'optimizer' not in 'LoadApi'"),  # hub/tfsm_layer only
        ("model.save_before_fit=maybe", "Value 'maybe' is not a valid bool"),
        ("verify.resume=always", "expected one of [record, require]"),
        ("load_api=hub load_api.optimizer=rmsprop", "expected one of [adam, sgd]"),
    ],
)
def test_schema_rejects_typos_and_types(override, text):
    with pytest.raises(Exception) as info:
        compose_cfg(*override.split())
    # Hydra wraps OmegaConf's error; the cause names the key and what is wrong.
    assert text in str(info.value.__cause__ or info.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size_per_replica=0", "train.batch_size_per_replica"),
        ("continue_epochs=-1", "continue_epochs"),
        ("verify.tolerance=-1e-3", "verify.tolerance"),
        ("verify.probe_size=0", "verify.probe_size"),
        ("verify.resume_steps=-1", "verify.resume_steps"),
        ("verify.resume_tolerance=-1", "verify.resume_tolerance"),
        ("verbose=3", "verbose"),
        ("io_device=localhost", "io_device"),
        ("io_device=''", "io_device"),
        ("mlflow.register_model=team/cnn", "mlflow.register_model"),
        ("mlflow.register_model=''", "mlflow.register_model"),
    ],
)
def test_ranges(override, key):
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize("override", ["strategy=mirrored", "load_strategy=mirrored"])
def test_replicas_range(override):
    side = override.split("=")[0]
    cfg = compose_cfg(override, f"{side}.replicas=0")
    with pytest.raises(ConfigError, match=f"{side}.replicas=0"):
        validate(cfg)


def test_valid_io_devices():
    for device in ("/job:localhost", "/cpu:0", "/job:worker/replica:0/task:1/device:GPU:0"):
        validate(compose_cfg(f"io_device={device}"))


def test_compose_does_not_import_tensorflow():
    compose_cfg("strategy=mirrored", "keras=legacy")
    assert "tensorflow" not in sys.modules


@pytest.fixture
def no_tensorflow(tmp_path):
    """A PYTHONPATH on which `import tensorflow` (or mlflow) fails loudly."""
    for name in ("tensorflow", "mlflow"):
        fake = tmp_path / "poison" / name
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(f"raise ImportError('{name} imported at config time')\n")
    return {"PYTHONPATH": str(tmp_path / "poison")}


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"], ["--cfg", "job", "keras=legacy"]])
def test_config_time_commands_answer_without_tensorflow(args, no_tensorflow):
    proc = runner(*args, env=no_tensorflow)
    assert proc.returncode == 0, proc.stderr
    assert "imported at config time" not in proc.stderr


def test_help_lists_every_option():
    proc = runner("--help")
    for group in GROUPS:
        lines = proc.stdout.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(group + " "))
        indent = len(lines[start]) - len(lines[start].lstrip()) + len(group) + 1
        line = lines[start] + "".join(  # with its continuation lines, indented under the options
            ln for ln in lines[start + 1:start + 3] if ln.startswith(" " * indent))
        for option in options(group):
            assert option in line, (group, option)


def test_out_of_range_value_fails_fast_and_clearly(tmp_path, no_tensorflow):
    proc = runner(f"hydra.run.dir={tmp_path}/run", "train.epochs=-1", env=no_tensorflow)
    assert proc.returncode == 2
    assert "train.epochs=-1" in proc.stderr and ">= 1" in proc.stderr
    assert not (tmp_path / "run" / "result.json").exists()


def test_unknown_option_names_the_valid_ones(no_tensorflow):
    proc = runner("save_api=pickle", env=no_tensorflow)
    assert proc.returncode != 0
    assert "save_api/pickle" in proc.stderr
    for option in options("save_api"):
        assert option in proc.stderr


def test_resolved_config_round_trips():
    cfg = compose_cfg("strategy=mirrored", "load_api=hub")
    again = OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    assert again.load_api.optimizer == "adam" and again.strategy.replicas == 2


@pytest.mark.parametrize("load_api, save_api", [
    ("keras", "keras"), ("saved_model", "saved_model"), ("hub", "saved_model"),
    ("tfsm_layer", "export"), ("checkpoint", "checkpoint"), ("weights", "weights")])
def test_save_api_auto_is_the_seeds_pairing(load_api, save_api):
    from runner.launcher.preflight import choose_save_api

    cfg = compose_cfg(f"load_api={load_api}")
    choose_save_api(cfg)
    assert (cfg.save_api.name, cfg.save_api.paired_with) == (save_api, load_api)


def test_a_combination_known_to_fail_is_warned_about_before_training(tmp_path, no_tensorflow):
    """Before anything is trained (TensorFlow is poisoned here: the job dies right after), one
    line names the failure to expect and the alternative; the job still runs."""
    proc = runner(f"hydra.run.dir={tmp_path}/run", "save_api=keras", "load_api=saved_model",
                  "mlflow.enabled=false", env=no_tensorflow)
    (warning,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("Warning:")]
    assert "save_api=keras load_api=saved_model" in warning
    assert "expected to fail in load" in warning and "save_api=saved_model" in warning
    assert (tmp_path / "run" / "result.json").exists()  # it ran anyway
    proc = runner(f"hydra.run.dir={tmp_path}/run2", "load_api=saved_model",
                  "mlflow.enabled=false", env=no_tensorflow)
    assert "Warning:" not in proc.stderr  # auto: nothing to warn about
