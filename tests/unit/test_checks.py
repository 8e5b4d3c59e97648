"""Config checks the schema's types cannot make (runner.core.validate, runner.core.constraints),
and the private job configs a killed runner left."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runner.core.compose import compose
from runner.core.validate import ConfigError, validate
from runner.launcher import job_process


@pytest.mark.parametrize("overrides, words", [
    (["strategy=mirrored", "+strategy.replica=4"], "strategy.replica is not a key of "
                                                   "strategy=mirrored (+strategy.replica=... "
                                                   "adds a key the runner never reads): its keys "
                                                   "are name, replicas."),
    (["++verify.extra=1"], "verify.extra is not a key of verify"),
    (["+seedx=1"], "seedx is not a key of the runner's config"),
    (["data.name=imagenet"], "data.name='imagenet' is not a data option: expected one of "
                             "digits, mnist, synthetic"),
    (["strategy=mirrored", "strategy.name=default"], "strategy.name=default renames another "
                                                     "strategy option"),
    (["load_strategy=mirrored", "load_strategy.replicas=23"], "load_strategy=mirrored with 23 "
                                                              "replica(s)"),
    (["data=synthetic", "data.n_train=50"], "is a global batch of 64, more than the 50 "
                                            "training examples of data=synthetic: expected "
                                            "train.batch_size_per_replica at most 50."),
    (["verify.probe_size=360"], "verify.probe_size=360 is more than the 359 test examples"),
    # The user's own model and data (runner.core.targets), and the compile keys.
    (["model=custom"], "model=custom needs model._target_=my_pkg.module.function"),
    (["data=custom"], "data=custom needs data._target_="),
    (["model=custom", "model._target_=nope.build"], "model._target_=nope.build: no module"),
    (["model=custom", "model._target_=os.path.join", "+model.name=sequential"],
     "model.name='sequential': a model of your own needs a name of its own"),
    (["model=custom", "model._target_=os.path.join", "+model.save_before_fit=3"],
     "model.save_before_fit=3: expected true or false"),
    (["data=tfds"], "data=tfds needs data.name=DATASET"),
    (["data=tfds", "data.name=fashion_mnist", "data.features=[image]"],
     "data.features=['image']: expected two feature names"),
    (["train.loss=5"], "train.loss=5: expected a Keras name"),
    (["train.metrics=accuracy"], "train.metrics='accuracy': expected a list"),
    (["train.optimizer={_target_: nope.Opt}"], "train.optimizer._target_=nope.Opt: no module"),
    # The families' paths (#25): options of their own, and what cannot work together.
    (["train.precision=float16"], "train.precision='float16' is out of range: expected "
                                  "float32, mixed_float16, mixed_bfloat16"),
    (["save_api=backup_and_restore", "save_api.save_freq=0"], "save_api.save_freq=0 is out of"),
    (["save_api=backup_and_restore", "save_api.kill_at=1.0"], "save_api.kill_at=1.0 is out of"),
    (["save_api=backup_and_restore", "strategy=multi_worker_mirrored"],
     "set save_api.interrupt=false"),
    (["save_api=keras", "+save_api.weights_only=true"], "save_api.weights_only is not a key of "
                                                        "save_api=keras"),
])
def test_what_the_types_let_through_is_refused_naming_it(overrides, words):
    with pytest.raises(ConfigError) as info:
        validate(compose(overrides))
    assert words in str(info.value)


@pytest.mark.parametrize("overrides", [
    [], ["strategy=mirrored", "strategy.replicas=22"], ["data=mnist", "strategy=mirrored",
                                                        "strategy.replicas=1000"],
    ["load_from=/x", "strategy=mirrored", "strategy.replicas=1000"],  # no train side
    ["strategy=multi_worker_mirrored", "cluster=slurm"],
    ["model=custom", "model._target_=os.path.join", "+model.units=3"],
    ["data=custom", "data._target_=os.path.join", "+data.n=3"],
    ["data=tfds", "data.name=fashion_mnist", "data.features=[image,label]"],
    ["data=mnist"],
    ["train.optimizer=sgd", "train.loss=mse", "train.metrics=[mae]"],
    ["save_api=backup_and_restore", "strategy=multi_worker_mirrored", "save_api.interrupt=false",
     "save_api.save_freq=5", "keras=legacy"],
    ["resume_path=mixed_float16_weights", "model=text"], ["strategy_pair=mirrored_default"]])
def test_what_can_work_or_cannot_be_known_yet_passes(overrides):
    validate(compose(overrides))  # mnist's size is known once loaded: checked in `data`


def test_a_killed_runners_private_config_is_removed_by_the_next(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f"{job_process.CONFIG_PREFIX}{gone}-abc.yaml"
    mine = tmp_path / f"{job_process.CONFIG_PREFIX}{__import__('os').getpid()}-def.yaml"
    other = tmp_path / "runner-job-notapid.yaml"
    for path in (stale, mine, other):
        path.write_text("secret")
    assert job_process.remove_stale_configs(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()
