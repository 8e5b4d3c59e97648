"""The user's own model and data: examples/own_model, a small package of its own (a functional
model with a registered custom layer, a subclassed variant, data as NumPy and as tf.data) with
its own conf/, run from its folder exactly as its README says, with no PYTHONPATH; and models
saved outside the runner by a plain Keras script, loaded through `load_from`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.run import FAST, ROOT, read_result, runner, sweep_results

PROJECT = ROOT / "examples" / "own_model"
OWN = ["--config-dir", "./conf", "data=blobs"]
NO_PYTHONPATH = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def own(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """`python -m runner --config-dir ./conf ...` from the project's folder, as its README says."""
    flags = [a for a in args if a == "-m"]  # Hydra's flags before the overrides
    args = tuple(a for a in args if a != "-m")
    return subprocess.run([sys.executable, "-m", "runner", *flags, *OWN, *args], cwd=PROJECT,
                          env=env or NO_PYTHONPATH, capture_output=True, text=True,
                          timeout=timeout)


def job(tmp_path: Path, name: str, *args: str, fail: bool = False) -> dict:
    out = tmp_path / name
    proc = own(f"hydra.run.dir={out}", *FAST, *args)
    assert (out / "result.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = read_result(out)
    assert (result["status"] == "failed") == fail, (result.get("error"), proc.stdout[-2000:])
    assert proc.returncode == (1 if fail else 0)
    return result


def test_the_projects_model_under_every_api_pair_default_to_mirrored(tmp_path):
    """One sweep from the project's folder, tracked in a store of its own: each save API with
    the load API it pairs with, trained under the default strategy, loaded under 2 replicas."""
    sweep, store = tmp_path / "sweep", tmp_path / "store"
    proc = own("-m", f"hydra.sweep.dir={sweep}", *FAST, "model=classifier",
               "load_api=keras,saved_model,tfsm_layer,checkpoint,weights",
               "load_strategy=mirrored", "load_strategy.replicas=2", "mlflow.enabled=true",
               f"mlflow.store_dir={store}", "mlflow.log_model=false",
               "mlflow.system_metrics=false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r["load_api"]: r for r in sweep_results(sweep)}
    assert {k: (r["status"], r["save_api"]) for k, r in results.items()} == {
        "keras": ("passed", "keras"), "saved_model": ("passed", "saved_model"),
        "tfsm_layer": ("passed", "export"), "checkpoint": ("passed", "checkpoint"),
        "weights": ("passed", "weights")}
    for r in results.values():
        assert r["model"] == "classifier" and r["data"] == "blobs"
        assert r["replicas"] == {"train": 1, "load": 2}
        assert r["max_abs_diff"] <= 1e-5
        assert r["distributed_variables"].split("/")[0] != "0", r["distributed_variables"]
    for api in ("keras", "checkpoint", "weights"):
        assert results[api]["resume"]["outcome"] == "exact", (api, results[api]["resume"])
    assert results["saved_model"]["resume"]["outcome"] == "n/a"
    saved_with = read_result(sweep / "0")["output_dir"]
    import json

    recorded = json.loads((Path(saved_with) / "saved_model" / "saved_with.json").read_text())
    assert recorded["model_options"] == {"_target_": "my_models.models.build_classifier",
                                         "features": 16, "units": 32, "classes": 4,
                                         "name": "classifier"}
    assert recorded["input_shape"] == [16]
    # MLflow: the model by its option's name, its target and arguments as params.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.get_run(results["checkpoint"]["mlflow_run_id"])
    assert run.data.tags["model"] == "classifier"
    assert {k: run.data.params[k] for k in ("model._target_", "model.units", "data._target_")} \
        == {"model._target_": "my_models.models.build_classifier", "model.units": "32",
            "data._target_": "my_models.data.blobs"}


def test_the_subclassed_variant_and_tf_data_under_mirrored_on_both_sides(tmp_path):
    r = job(tmp_path, "sub", "model=classifier_subclassed", "data=blobs_tf",
            "strategy=mirrored", "load_strategy=mirrored")
    assert (r["model"], r["data"], r["resume"]["outcome"]) == (
        "classifier_subclassed", "blobs_tf", "exact")


def test_a_model_its_builder_compiled_keeps_its_compile(tmp_path):
    r = job(tmp_path, "compiled", "model=classifier_compiled", "load_api=checkpoint")
    assert any("came back compiled" in n for n in r["notes"])
    assert r["resume"]["outcome"] == "exact"
    saved_with = Path(r["output_dir"]) / "saved_model" / "saved_with.json"
    assert '"compile": "model"' in saved_with.read_text()


def test_a_target_on_the_command_line_and_its_arguments(tmp_path):
    r = job(tmp_path, "cli", "model=custom", "model._target_=my_models.models.build_classifier",
            "+model.units=8", "load_api=weights", "runner.fork_server=false")
    assert r["model"] == "build_classifier"  # the target's short name
    assert r["resume"]["outcome"] == "exact"


def test_a_target_that_does_not_resolve_fails_in_preflight_without_tensorflow():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", *OWN,
                           "model=custom", "model._target_=my_models.models.build_clasifier"],
                          cwd=PROJECT, env=NO_PYTHONPATH, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert ("Config error: model._target_=my_models.models.build_clasifier: module "
            "my_models.models") in proc.stderr
    assert "did you mean my_models.models.build_classifier, " in proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "my_models")}
    # Its speed is what that buys: measured in the session note, not asserted here (a shared
    # machine's timing is noise).


def test_a_class_nobody_registered_fails_in_load_with_the_hint_and_passes_when_named(tmp_path):
    r = job(tmp_path, "unregistered", "model=custom",
            "model._target_=my_models.models.build_unregistered", fail=True)
    assert r["error"]["phase"] == "load"
    assert r["error"]["hint"].startswith("Shift (module my_models.models): not a Keras class")
    assert "model.custom_objects={Shift: my_models.models.Shift}" in r["error"]["hint"]
    r = job(tmp_path, "named", "model=custom", "model._target_=my_models.models.build_unregistered",
            "+model.custom_objects={Shift: my_models.models.Shift}")
    assert r["resume"]["outcome"] == "exact"


# A plain Keras script, the runner nowhere in it: what a user saved before coming to the runner.
PLAIN = """
import sys
import tensorflow as tf
from my_models.data import blobs
from my_models.models import build_classifier
(x, y), _ = blobs()
model = build_classifier()
model.compile(optimizer="adam", metrics=["accuracy"],
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, epochs=1, verbose=0)
model.save(sys.argv[1] + "/mine.keras")
model.save(sys.argv[1] + "/mine.h5")
tf.saved_model.save(model, sys.argv[1] + "/mine_savedmodel")
"""


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plain")
    proc = subprocess.run([sys.executable, "-c", PLAIN, str(folder)], cwd=PROJECT,
                          env={**NO_PYTHONPATH, "PYTHONPATH": str(PROJECT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.mark.parametrize("artifact, overrides, resume", [
    ("mine.keras", ["load_api=keras", "load_strategy=mirrored"], "exact"),
    ("mine.h5", ["load_api=keras"], None),  # Keras 3 cannot train what it read from .h5
    ("mine_savedmodel", ["load_api=saved_model", "load_strategy=mirrored"], "n/a"),
])
def test_a_model_saved_by_a_plain_script_is_verified_against_itself_loaded_natively(
        tmp_path, plain, artifact, overrides, resume):
    out = tmp_path / "run"
    proc = own(f"hydra.run.dir={out}", *FAST, f"load_from={plain / artifact}",
               "model=classifier", *overrides)
    r = read_result(out)
    assert r["reference"] == "native"
    assert r["model"] == artifact and r["strategy"] is None and r["save_api"] is None
    line = next(x for x in proc.stdout.splitlines() if x.startswith(("PASSED", "FAILED")))
    assert f" model={artifact} " in line and " strategy=" not in line and "save_api=" not in line
    assert r["max_abs_diff"] is not None and r["max_abs_diff"] <= 1e-5
    if resume is None:  # measured: load_model(.h5) in Keras 3 gives an optimizer it cannot step
        assert r["status"] == "failed" and r["error"]["phase"] == "continue"
        assert "optimizer can only be called for the variables it was originally built with" \
            in r["error"]["message"]
        return
    assert r["status"] == "passed", r["error"]
    assert r["resume"]["outcome"] == resume, r["resume"]


def test_a_registered_layer_in_a_new_process_needs_the_module_its_config_names(tmp_path, plain):
    """load_from in a process that never built the model: the class is found once the model
    option's module is imported, and its absence is named with the key to set."""
    r = job(tmp_path, "without", f"load_from={plain / 'mine.keras'}", fail=True)
    assert r["error"]["phase"] == "reference"
    assert "my_models>Scale (module my_models.models)" in r["error"]["hint"]
    assert "model.custom_objects=[my_models.models]" in r["error"]["hint"]
    r = job(tmp_path, "with", f"load_from={plain / 'mine.keras'}",
            "+model.custom_objects=[my_models.models]")
    assert r["resume"]["outcome"] == "exact"


def test_a_tfds_dataset_by_name_from_a_prepared_copy(tmp_path):
    """data=tfds data.name=...: any TFDS dataset (here fashion_mnist, prepared offline by TFDS
    itself), with its supervised keys or the features named."""
    prepare = ("import sys, numpy as np, tensorflow as tf, tensorflow_datasets as tfds\n"
               "rng = np.random.default_rng(0)\n"
               "split = lambda n: tf.data.Dataset.from_tensor_slices({'image': rng.integers("
               "0, 256, (n, 28, 28, 1), dtype=np.uint8), 'label': rng.integers(0, 10, n)})\n"
               "tfds.dataset_builders.store_as_tfds_dataset(name='fashion_mnist', "
               "version='3.0.1', features=tfds.builder('fashion_mnist').info.features, "
               "split_datasets={'train': split(256), 'test': split(128)}, "
               "data_dir=sys.argv[1])\n")
    data_dir = tmp_path / "tfds"
    subprocess.run([sys.executable, "-c", prepare, str(data_dir)], check=True,
                   capture_output=True, timeout=300)
    out = tmp_path / "run"
    proc = runner(f"hydra.run.dir={out}", *FAST, "data=tfds", "data.name=fashion_mnist",
                  f"data.data_dir={data_dir}", "data.download=false",
                  "data.features=[image,label]", "load_api=checkpoint")
    r = read_result(out)
    assert r["status"] == "passed", (r["error"], proc.stdout[-2000:])
    assert r["data"] == "fashion_mnist"
    assert r["data_sizes"]["train"] == {"train": 256, "test": 128}


def test_two_inputs_and_two_outputs_are_compared_output_by_output(tmp_path):
    """Named inputs and outputs, compiled by the builder with a loss per output: every output
    is compared; where argmax accuracy does not fit, the model's own compiled loss is reported."""
    sweep = tmp_path / "sweep"
    proc = own("-m", f"hydra.sweep.dir={sweep}", *FAST, "model=two_headed",
               "data=blobs_two_headed", "load_api=keras,checkpoint,saved_model",
               "load_strategy=mirrored")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r["load_api"]: r for r in sweep_results(sweep)}
    assert {k: (r["status"], r["resume"]["outcome"]) for k, r in results.items()} == {
        "keras": ("passed", "exact"), "checkpoint": ("passed", "exact"),
        "saved_model": ("passed", "n/a")}
    r = results["keras"]
    assert r["accuracy"] == {"after_train": None, "after_load": None, "after_continue": None}
    assert {"loss", "class_loss", "score_loss"} <= set(r["metrics"]["after_load"])
    assert abs(r["metrics"]["after_load"]["loss"] - r["metrics"]["after_train"]["loss"]) < 1e-4
    assert "| loss train/load/continue " in proc.stdout
    import numpy as np

    with np.load(Path(r["output_dir"]) / "saved_model" / "probe.npz") as probe:
        assert {"images__structure", "logits__structure", "resume_labels__structure"} <= set(probe)


def test_a_tree_of_arrays_is_stored_flat_and_read_back_whole(tmp_path):
    import numpy as np

    from runner.job import nested

    tree = {"b": np.arange(6.0).reshape(3, 2), "a": [np.zeros(3), (np.ones((3, 1)),)]}
    np.savez(tmp_path / "p.npz", **nested.pack("images", tree), **nested.pack("logits", np.ones(2)))
    with np.load(tmp_path / "p.npz") as npz:
        back, single = nested.unpack(dict(npz), "images"), nested.unpack(dict(npz), "logits")
        assert set(npz) == {"images__0", "images__1", "images__2", "images__structure", "logits"}
    assert nested.max_abs_diff(back, tree) == 0.0 and isinstance(back["a"][1], tuple)
    assert single.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="output 0 logits of shape"):
        nested.max_abs_diff({"a": np.zeros((2, 3)), "b": np.zeros(1)},
                            {"a": np.zeros((2, 4)), "b": np.zeros(1)})


def test_the_package_is_found_in_a_second_generations_process_and_in_every_worker(tmp_path):
    """The load side's process of the other Keras generation rebuilds the user's model
    (load_api=weights calls my_models there); both workers of a local multi-worker cluster
    build it too."""
    r = job(tmp_path, "generations", "model=classifier", "keras=v3", "load_keras=legacy",
            "load_api=weights")
    assert (r["keras_module"], r["load_keras_module"]) == ("keras", "tf_keras")
    assert r["max_abs_diff"] <= 1e-5
    r = job(tmp_path, "workers", "model=classifier", "keras=legacy",
            "strategy=multi_worker_mirrored", "cluster.workers=2")
    assert r["cluster"]["workers"] == 2 and r["resume"]["outcome"] == "exact"


@pytest.mark.slow
def test_the_projects_readme_commands_run_as_written(tmp_path):
    """Every bash block of examples/own_model/README.md, run from the project's folder as one
    shell script (its sweep alone is 20 jobs: `slow`). /tmp/mine.* are the README's paths."""
    import re

    text = (PROJECT / "README.md").read_text()
    script = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    script = script.replace("cd examples/own_model\n", "")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=PROJECT,
                          env=NO_PYTHONPATH,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count("PASSED ") >= 4 + 20 - 2, proc.stdout[-4000:]
