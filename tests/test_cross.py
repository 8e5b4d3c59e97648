"""Cross-generation loading (load_keras) and cross-run loading (load_from), on real TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.run import FAST, read_result, runner
from mlflow.tracking import MlflowClient

MODULE = {"v3": "keras", "legacy": "tf_keras"}


def test_a_savedmodel_crosses_generations_both_ways(run_sweep, tmp_path):
    _, results = run_sweep("keras=v3,legacy", "load_keras=v3,legacy",
                           "save_api=saved_model", "load_api=saved_model")
    assert [(r["keras"], r["load_keras"]) for r in results] == [
        ("v3", "v3"), ("v3", "legacy"), ("legacy", "v3"), ("legacy", "legacy")]
    for r in results:
        where = f"{r['keras']} -> {r['load_keras']}: {r['error']}"
        assert r["status"] == "passed", where
        # Each side really ran under its own generation (two processes where they differ).
        assert (r["keras_module"], r["load_keras_module"]) == (
            MODULE[r["keras"]], MODULE[r["load_keras"]]), where
        assert r["max_abs_diff"] <= r["tolerance"], where
        assert r["accuracy"]["after_load"] == r["accuracy"]["after_train"], where
    # load_keras is a dimension of the matrix like any other.
    header = (tmp_path / "sweep" / "matrix.md").read_text().splitlines()[0]
    assert header == "| keras ↓ / load_keras → | v3 | legacy |"


@pytest.mark.parametrize("keras, load_keras, apis, error_type, words, remedy", [
    # a .keras file does not cross generations, either way
    ("legacy", "v3", [], "ValueError", "is_legacy_optimizer", "load_keras=legacy"),
    ("v3", "legacy", [], "TypeError", "Error when deserializing class 'InputLayer'",
     "load_keras=v3"),
    # hub's KerasLayer is a Keras 2 layer: a tf_keras SavedModel still cannot go through it
    ("legacy", "v3", ["save_api=saved_model", "load_api=hub"], "ValueError",
     "KerasTensor is symbolic", "load_keras=legacy"),
])
def test_what_does_not_cross_generations_fails_with_the_reason(
        run_job, tmp_path, keras, load_keras, apis, error_type, words, remedy):
    proc, r = run_job(f"keras={keras}", f"load_keras={load_keras}", *apis)
    assert proc.returncode == 1
    assert r["status"] == "failed" and r["keras_module"] == MODULE[keras]
    assert r["load_keras_module"] == MODULE[load_keras]
    assert (r["error"]["phase"], r["error"]["type"]) == ("load", error_type), r["error"]
    assert words in r["error"]["message"]
    assert remedy in r["error"]["hint"]
    # The train side's process saved a model and the probe before the load side's failed.
    assert (tmp_path / "run" / "saved_model" / "probe.npz").is_file()
    assert r["accuracy"]["after_train"] is not None


@pytest.fixture
def saved_run(tmp_path):
    """A tracked legacy job whose Model.save SavedModel later jobs load: (output dir, run id)."""
    store = tmp_path / "mlflow"
    job_dir = tmp_path / "saved"
    proc = runner(f"hydra.run.dir={job_dir}", *FAST[:-1], f"mlflow.store_dir={store}",
                  "mlflow.log_model=false", "keras=legacy", "save_api=keras_saved_model")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("runner-save-load").experiment_id])
    return job_dir, run.info.run_id


def load_from(tmp_path: Path, name: str, location: str, *overrides: str):
    job_dir = tmp_path / name
    proc = runner(f"hydra.run.dir={job_dir}", *FAST[:-1], f"mlflow.store_dir={tmp_path}/mlflow",
                  f"load_from={location}", *overrides)
    return proc, read_result(job_dir), job_dir


def test_load_from_a_previous_runs_artifact(saved_run, tmp_path):
    source_dir, source_run = saved_run
    source = read_result(source_dir)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")

    # From MLflow, under the other generation and another strategy.
    proc, r, job_dir = load_from(tmp_path, "from_mlflow", f"runs:/{source_run}",
                                 "load_keras=v3", "load_api=saved_model",
                                 "load_strategy=mirrored")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert r["status"] == "passed", r["error"]
    # The train side is the loaded model's, and nothing was trained or saved here.
    assert (r["save_api"], r["keras"], r["load_keras"]) == ("keras_saved_model", "legacy", "v3")
    assert (r["keras_module"], r["load_keras_module"]) == ("tf_keras", "keras")
    assert r["replicas"] == {"train": 1, "load": 2}
    assert "train" not in r["history"] and r["timings"]["train_s"] is None
    assert not (job_dir / "saved_model").exists()
    # Verified against the logits stored with the model, on its own stored probe.
    assert r["max_abs_diff"] <= r["tolerance"]
    assert r["accuracy"]["after_load"] == source["accuracy"]["after_train"]
    run = client.get_run(next(
        x.info.run_id for x in client.search_runs(
            [client.get_experiment_by_name("runner-save-load").experiment_id])
        if x.data.tags.get("output_dir") == str(job_dir)))
    assert run.info.status == "FINISHED"
    assert (run.data.tags["load_from"], run.data.tags["keras"]) == (
        f"runs:/{source_run}", "legacy")

    assert r["resume"]["outcome"] == "n/a" and run.data.tags["resume"] == "n/a"

    # From the job's directory on disk, and training goes on.
    proc, r, _ = load_from(tmp_path, "from_disk", str(source_dir), "keras=legacy",
                           "load_api=hub")
    assert r["status"] == "passed", r["error"]
    assert r["max_abs_diff"] <= r["tolerance"] and len(r["history"]["continue"]["loss"]) == 1
    assert (r["resume"]["outcome"], r["resume"]["cause"]) == ("drifted", "new optimizer")

    # The resume check against the reference stored with the model, from MLflow: the same
    # steps from the same stored state give exactly the drift the source job measured.
    proc, r, _ = load_from(tmp_path, "resume_from_mlflow", f"runs:/{source_run}",
                           "keras=legacy")
    assert r["status"] == "passed", r["error"]
    assert (r["resume"]["outcome"], r["resume"]["cause"]) == ("drifted", "iterations reset")
    assert r["resume"]["max_abs_diff"] == source["resume"]["max_abs_diff"]
    assert r["optimizer"]["saved"] == source["optimizer"]["saved"]


def test_load_from_fails_on_what_does_not_verify(saved_run, tmp_path):
    source_dir, _ = saved_run
    proc, r, _ = load_from(tmp_path, "missing", str(tmp_path / "no-such-run"))
    assert proc.returncode == 1
    assert (r["error"]["phase"], r["error"]["type"]) == ("load", "FileNotFoundError")
    assert str(tmp_path / "no-such-run") in r["error"]["message"]

    # Logits that the model does not compute fail verification: the check is real.
    probe = source_dir / "saved_model" / "probe.npz"
    with np.load(probe) as stored:
        images, logits = stored["images"], stored["logits"]
    np.savez(probe, images=images, logits=logits + 1e-3)
    proc, r, _ = load_from(tmp_path, "tampered", str(source_dir / "saved_model" / "model"),
                           "load_keras=legacy")
    assert proc.returncode == 1
    assert (r["error"]["phase"], r["error"]["type"]) == ("verify", "VerificationError")
    assert "exceeds tolerance" in r["error"]["message"]
