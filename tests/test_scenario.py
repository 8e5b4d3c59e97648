"""The scenario end to end, through `python -m runner` in a subprocess, on real TensorFlow."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.data import PREPARE_MNIST
from helpers.run import FAST, ROOT, read_result
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from runner.core import result as results
from runner.core import schema
from runner.launcher.preflight import choose_save_api

CONTRACT = {
    "status", "strategy", "load_strategy", "save_api", "load_api", "model", "data", "keras",
    "replicas", "error", "max_abs_diff", "accuracy", "timings", "artifact_bytes", "versions",
}


def test_default_job_passes_and_keeps_the_contract(run_job, tmp_path):
    proc, r = run_job()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert CONTRACT <= r.keys()
    assert r["status"] == "passed" and r["error"] is None and "phase" not in r
    assert (r["strategy"], r["load_strategy"], r["keras"]) == ("default", "none", "v3")
    assert r["replicas"] == {"train": 1, "load": 1}
    assert set(r["accuracy"]) == {"after_train", "after_load", "after_continue"}
    assert set(r["timings"]) == {"train_s", "save_s", "load_s", "continue_s", "resume_s"}
    assert r["accuracy"]["after_train"] > 0.5  # digits, one epoch: well above chance (0.1)
    assert r["max_abs_diff"] <= 1e-5
    # Trained on: the loaded model, given the original's next 3 steps, gives its numbers.
    assert r["resume"]["outcome"] == "exact" and r["resume"]["max_abs_diff"] <= 1e-5
    assert (r["resume"]["steps"], r["resume"]["global_batch"]) == (3, 64)
    assert r["optimizer"]["loaded"] == r["optimizer"]["saved"]
    assert r["optimizer"]["saved"]["iterations"] > 0 and r["timings"]["resume_s"] > 0
    assert r["versions"]["tensorflow"].startswith("2.21")
    job = tmp_path / "run"
    assert Path(r["artifact"]) == job / "saved_model" / "model.keras" and r["artifact_bytes"] > 0
    assert {p.name for p in (job / "saved_model").iterdir()} == {
        "model.keras", "probe.npz", "saved_with.json"}
    with np.load(job / "saved_model" / "probe.npz") as probe:  # the resume reference travels
        assert probe["resume_images"].shape == (192, 28, 28, 1)
        assert probe["resumed_logits"].shape == probe["logits"].shape
    # The one-line summary is what users see, and the log keeps it with the Keras output.
    summary = [ln for ln in proc.stdout.splitlines() if ln.startswith("PASSED ")]
    assert len(summary) == 1 and "save_api=keras" in summary[0]
    assert summary[0].startswith("PASSED — loads and serves the same logits; resumes exactly: "
                                 "training continues where it stopped | ")
    assert summary[0] in (job / "job.log").read_text()


def test_failed_job_exits_nonzero_with_the_real_error(run_job, tmp_path):
    proc, r = run_job("save_api=keras", "load_api=saved_model")
    assert proc.returncode == 1
    assert r["status"] == "failed"
    assert r["error"]["phase"] == "load" and r["error"]["type"] == "OSError"
    assert "hint: a .keras file is a Keras zip archive" in proc.stdout
    assert "OSError" in (tmp_path / "run" / "traceback.txt").read_text()
    # What ran before the failure is still measured.
    assert r["accuracy"]["after_train"] is not None and r["timings"]["save_s"] is not None


def test_mirrored_training_runs_two_replicas_on_logical_cpus(run_job):
    proc, r = run_job("strategy=mirrored")
    assert r["status"] == "passed", r["error"]
    assert r["replicas"] == {"train": 2, "load": 1}
    assert sum("CPU" in d for d in r["devices"]) == 2
    # Trained on 2 replicas, resumed on 1 on the same global batches: the same numbers, up to
    # the order in which the replicas' gradients are summed.
    assert r["resume"]["outcome"] == "exact", r["resume"]
    assert r["resume"]["global_batch"] == 128


def test_resume_across_replicas_and_resave(run_job):
    """Keras 3 .keras under mirrored on both sides: exact, every variable distributed, and a
    second save -> load of the continued model computes what it computed."""
    proc, r = run_job("strategy=mirrored", "load_strategy=mirrored", "verify.resave=true")
    assert r["status"] == "passed", r["error"]
    assert (r["resume"]["outcome"], r["resume"]["max_abs_diff"]) == ("exact", 0.0)
    assert r["distributed_variables"] == "6/6"
    assert r["resave"] == {"max_abs_diff": 0.0}


def test_verify_resume_require_fails_a_drifting_job(run_job):
    """tf_keras' SavedModel brings Adam back empty: recorded by default, a failure on demand."""
    proc, r = run_job("keras=legacy", "save_api=keras_saved_model", "verify.resume=require")
    assert proc.returncode == 1
    assert (r["status"], r["error"]["phase"], r["error"]["type"]) == (
        "failed", "resume", "ResumeDrift")
    assert "iterations reset" in r["error"]["message"]
    assert "0 loaded" in r["error"]["hint"]
    assert r["accuracy"]["after_load"] is not None and r["accuracy"]["after_continue"] is None


@pytest.mark.parametrize(
    "overrides, replicas",
    [
        # The seed's distributed inference: experimental_distribute_dataset + strategy.run.
        (("save_api=saved_model", "load_api=saved_model", "load_strategy=mirrored"),
         {"train": 1, "load": 2}),
        # The seed's hub.KerasLayer under MirroredStrategy (Keras 2 only).
        (("keras=legacy", "save_api=saved_model", "load_api=hub", "load_strategy=mirrored"),
         {"train": 1, "load": 2}),
        # More replicas on the load side than on the training side, in one process.
        (("strategy=mirrored", "load_strategy=mirrored", "load_strategy.replicas=3",
          "save_api=export", "load_api=saved_model"), {"train": 2, "load": 3}),
    ],
)
def test_mirrored_load_side(run_job, overrides, replicas):
    proc, r = run_job(*overrides)
    assert r["status"] == "passed", r["error"]
    assert r["replicas"] == replicas
    # Loaded under MirroredStrategy, every variable is a distributed one.
    assert r["distributed_variables"] == "6/6"
    # A SavedModel saved under a strategy pins no device in its serving signature (default
    # variable policy; save_api.variable_policy=save_variable_devices would).
    assert r["pinned_devices"] == {"count": 0, "first": []}
    if r["load_api"] == "saved_model":
        # Distributed inference over the whole test set agrees with the plain loop.
        assert r["accuracy"]["after_continue"] == r["accuracy"]["after_load"]
        assert r["resume"] == {"outcome": "n/a", "cause": None, "hint": None,
                               "reason": "inference only: load_api=saved_model gives no "
                                         "trainable model"}
    else:  # hub: a new model around the loaded one, with a new optimizer
        assert (r["resume"]["outcome"], r["resume"]["cause"]) == ("drifted", "new optimizer")


def test_one_device_load_strategy(run_job):
    proc, r = run_job("load_strategy=one_device")
    assert r["status"] == "passed", r["error"]
    assert r["replicas"]["load"] == 1


@pytest.mark.parametrize("model", [
    pytest.param("functional", marks=pytest.mark.slow),  # a graph network, as the default
    "subclassed"])
@pytest.mark.parametrize("keras", ["v3", "legacy"])
def test_model_types(run_job, model, keras):
    proc, r = run_job(f"model={model}", f"keras={keras}")
    assert r["status"] == "passed", r["error"]
    assert r["model"] == model and r["max_abs_diff"] <= 1e-5


def test_tfsm_layer_trains_with_sgd_under_keras3(run_job):
    """The hint for TFSMLayer + Adam says SGD trains: measured here. A new model and a new
    optimizer by construction: training does not go on where it stopped."""
    proc, r = run_job("save_api=export", "load_api=tfsm_layer", "load_api.optimizer=sgd")
    assert r["status"] == "passed", r["error"]
    assert (r["resume"]["outcome"], r["resume"]["cause"]) == ("drifted", "new optimizer")
    assert r["optimizer"]["new_optimizer"] is True


def test_io_device_is_applied_or_said_not_to_be(run_job):
    proc, r = run_job("io_device=/job:localhost")  # .keras save and Keras 3 load take no options
    assert r["status"] == "passed", r["error"]
    assert any("Model.save to a .keras file takes no SaveOptions" in n for n in r["notes"])
    assert any("Keras 3 load_model takes no LoadOptions" in n for n in r["notes"])


def test_io_device_seed_case_under_keras2(run_job):
    """The seed's local-device section: SaveOptions/LoadOptions with a SavedModel directory."""
    proc, r = run_job("keras=legacy", "save_api=keras_saved_model", "load_strategy=mirrored",
                      "io_device=/job:localhost")
    assert r["status"] == "passed", r["error"]
    assert r["notes"] == [] and r["io_device"] == "/job:localhost"


@pytest.mark.parametrize(
    "keras, save_api, before_fit",
    [
        # Keras 2: Model.save(dir) refuses an untraced subclassed model (the seed's ValueError).
        ("legacy", "keras_saved_model", {"save_error": "ValueError: Model <runner.job.models."
                                                       "SubclassedCNN"}),
        # Keras 3: tf.saved_model.save writes a SavedModel without any signature.
        ("v3", "saved_model", {"signatures": []}),
    ],
)
def test_subclassed_caveat_save_before_fit(run_job, keras, save_api, before_fit):
    proc, r = run_job("model=subclassed", "model.save_before_fit=true", f"keras={keras}",
                      f"save_api={save_api}", "load_api=saved_model")
    assert r["status"] == "passed", r["error"]  # training first fixes it
    caveat = r["caveat"]
    assert caveat["traced_before_fit"] is False and caveat["traced_after_fit"] is True
    for key, value in before_fit.items():
        assert (caveat[key].startswith(value) if isinstance(value, str) else caveat[key] == value)
    assert "train (or call) the model before saving" in caveat["advice"]


MOCKED_JOB = """
import sys
import tensorflow_datasets as tfds
from runner.job import main as job
with tfds.testing.mock_data(num_examples=256):
    code = job.main(sys.argv[1:])
raise SystemExit(code)
"""


def test_mnist_path_with_mocked_tfds(tmp_path):
    """data=mnist through the real TFDS call, its data mocked (no network in tests)."""
    schema.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=mnist", "strategy=mirrored", *FAST])
    choose_save_api(cfg)  # as the runner does before writing a job's config
    config = tmp_path / "job.yaml"
    OmegaConf.save(cfg, config, resolve=True)
    proc = subprocess.run(
        [sys.executable, "-c", MOCKED_JOB, str(config), "--output-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    r = read_result(tmp_path)
    assert proc.returncode == 0 and r["status"] == "passed", (r["error"], proc.stderr[-2000:])
    assert r["data"] == "mnist" and r["replicas"]["train"] == 2


def test_mnist_from_a_prepared_data_dir_needs_no_network(run_job, tmp_path):
    """The remedy the offline message names: a prepared TFDS data_dir, read by the real builder."""
    data_dir = tmp_path / "tfds"
    subprocess.run([sys.executable, "-c", PREPARE_MNIST, str(data_dir)], check=True,
                   capture_output=True, timeout=300)
    proc, r = run_job("data=mnist", f"data.data_dir={data_dir}")  # download=true: not needed
    assert r["status"] == "passed", r["error"]
    assert r["data"] == "mnist"


def network_reachable() -> bool:
    """Whether MNIST's download host (runner.job.data.MNIST_HOST) answers. Not imported from
    there: runner.job.data imports TensorFlow, which this pytest process must not."""
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(network_reachable(), reason="the download host is reachable: not offline")
def test_mnist_offline_ends_in_one_clear_paragraph(run_job, tmp_path):
    proc, r = run_job("data=mnist", f"data.data_dir={tmp_path / 'empty'}")
    assert proc.returncode == 1
    assert r["error"]["phase"] == "data" and r["error"]["type"] == "DataUnavailableError"
    message = r["error"]["message"]
    for remedy in ("data.data_dir=DIR data.download=false", "data=digits", str(tmp_path)):
        assert remedy in message
    assert message in proc.stdout  # the whole paragraph on the console
    assert "Traceback" not in proc.stdout + proc.stderr


def test_crashed_job_is_recorded_as_failed(tmp_path):
    """A job process that dies leaves `running` in result.json; the runner turns it into a
    failure naming the phase."""
    results.write(tmp_path, {"status": "running", "phase": "save", "error": None})
    r = results.read_or_crashed(tmp_path, -9)
    assert r["status"] == "failed"
    assert r["error"]["phase"] == "save" and r["error"]["type"] == "JobCrashed"
    assert "-9" in r["error"]["message"]
    assert read_result(tmp_path) == r
