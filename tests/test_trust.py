"""A saved model is input from someone else: loading one runs no code it carries unless the user
says load.trust=true. Each model here is written by a plain script, as an attacker would, and
loaded through `load_from` as a user would; each carries code that writes a marker file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.run import FAST, ROOT, read_result, runner

# Writes a model folder as `load_from` takes one: the model, probe.npz (the probe images and
# the model's logits on them) and saved_with.json. argv: KIND FOLDER MARKER. Computing the
# logits runs the model's code once here: the marker is removed afterwards.
WRITE = r"""
import json, os, sys
from pathlib import Path
kind, folder, marker = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
os.environ["TF_USE_LEGACY_KERAS"] = "1" if kind.startswith("tf_keras") else "0"
import numpy as np, tensorflow as tf
folder.mkdir(parents=True)
images = np.zeros((8, 28, 28, 1), np.float32)
if kind.startswith("tf_keras"):
    code = "lambda x: (__import__('pathlib').Path(%r).write_text('ran') and x)" % marker
    model = tf.keras.Sequential([tf.keras.Input((28, 28, 1)), tf.keras.layers.Lambda(eval(code)),
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
    model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  optimizer="adam", metrics=["accuracy"])
    logits = model(images).numpy()
    name = "model.h5" if kind == "tf_keras_h5" else "model"
    model.save(str(folder / name))
else:  # a SavedModel whose serving signature writes a file
    class Writer(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.zeros((784, 10)))
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
        def serve(self, x):
            tf.io.write_file(marker, "ran")
            return {"logits": tf.matmul(tf.reshape(x, (-1, 784)), self.w)}
    module = Writer()
    logits = module.serve(tf.constant(images))["logits"].numpy()
    name = "model"
    tf.saved_model.save(module, str(folder / name), signatures={"serving_default": module.serve})
Path(marker).unlink()
np.savez_compressed(folder / "probe.npz", images=images, logits=logits)
(folder / "saved_with.json").write_text(json.dumps({
    "model_file": name, "model": "sequential", "strategy": "default", "save_api": "keras",
    "keras": "legacy" if kind.startswith("tf_keras") else "v3", "replicas": 1}))
"""


def write_model(kind: str, folder: Path, marker: Path) -> Path:
    proc = subprocess.run([sys.executable, "-c", WRITE, kind, str(folder), str(marker)],
                          cwd=folder.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists()
    return folder


@pytest.mark.parametrize("kind, load", [("tf_keras_h5", ["load_api=keras"]),
                                        ("tf_keras_saved_model", ["load_api=keras"])])
def test_a_lambda_that_writes_a_file_is_refused_unless_trusted(tmp_path, kind, load):
    marker = tmp_path / "marker"
    folder = write_model(kind, tmp_path / "from-someone", marker)
    legacy = ["keras=legacy", "load_keras=legacy"]
    proc = runner(f"hydra.run.dir={tmp_path}/job", *FAST, *legacy, f"load_from={folder}", *load)
    r = read_result(tmp_path / "job")
    assert (r["status"], r["error"]["phase"], r["error"]["type"]) == (
        "failed", "load", "UntrustedArtifact"), r["error"]
    assert "Lambda layer" in r["error"]["message"] and "load.trust=true" in r["error"]["message"]
    assert proc.returncode == 1 and not marker.exists()  # nothing of it ran
    proc = runner(f"hydra.run.dir={tmp_path}/trusted", *FAST, *legacy, f"load_from={folder}",
                  *load, "load.trust=true")
    r = read_result(tmp_path / "trusted")
    assert r["status"] == "passed", r["error"]
    assert marker.exists()  # trusted: its code ran, as the user asked
    assert any(n.startswith("load.trust=true: loaded although") for n in r["notes"])


def test_a_saved_model_whose_graph_writes_a_file_is_refused_naming_the_op(tmp_path):
    marker = tmp_path / "marker"
    folder = write_model("saved_model", tmp_path / "from-someone", marker)
    runner(f"hydra.run.dir={tmp_path}/job", *FAST, f"load_from={folder}",
           "load_api=saved_model")
    r = read_result(tmp_path / "job")
    assert (r["status"], r["error"]["phase"], r["error"]["type"]) == (
        "failed", "load", "UntrustedArtifact"), r["error"]
    assert "op WriteFile" in r["error"]["message"]
    assert not marker.exists()
    runner(f"hydra.run.dir={tmp_path}/trusted", *FAST, f"load_from={folder}",
           "load_api=saved_model", "load.trust=true")
    assert read_result(tmp_path / "trusted")["status"] == "passed"
    assert marker.exists()


@pytest.mark.slow  # 12 jobs; every default-run test that saves a model scans it too
def test_every_model_the_runner_saves_passes_the_scan(run_sweep):
    """The allow-list holds every op the runner's own models need, both Keras generations,
    every save API, stateful layers and two replicas (each job scans what it saved)."""
    _, results = run_sweep("save_api=keras,saved_model,keras_saved_model,export,checkpoint,"
                           "weights", "load_api=saved_model", "keras=v3,legacy",
                           "model.batchnorm=true", "model.dropout=0.2", "strategy=mirrored")
    refused = [(r["save_api"], r["keras"], r["error"]["message"]) for r in results
               if r["error"] and r["error"]["type"] == "UntrustedArtifact"]
    assert refused == []
    assert {(r["save_api"], r["keras"]) for r in results if r["status"] == "passed"} >= {
        ("saved_model", "v3"), ("saved_model", "legacy"), ("export", "v3"),
        ("export", "legacy")}


def test_keys_past_the_schema_and_values_that_cannot_work_together_fail_in_preflight(tmp_path):
    for overrides, words in [
            (["strategy=mirrored", "+strategy.replica=4"],
             "strategy.replica is not a key of strategy=mirrored"),
            (["++train.foo=1"], "train.foo is not a key of train"),
            (["model.name=mine"], "model.name='mine' is not a model option"),
            (["strategy=mirrored", "strategy.replicas=1000"],
             "strategy=mirrored with 1000 replica(s) x train.batch_size_per_replica=64 is a "
             "global batch of 64000, more than the 1438 training examples of data=digits")]:
        proc = runner(f"hydra.run.dir={tmp_path}/run", *FAST, *overrides)
        assert proc.returncode == 2, (overrides, proc.stderr[-2000:])
        assert words in proc.stderr, (overrides, proc.stderr[-2000:])
        assert not (tmp_path / "run").exists()  # nothing made


def test_a_run_dir_holding_a_saved_model_is_refused_before_training(tmp_path):
    (tmp_path / "run" / "saved_model").mkdir(parents=True)
    (tmp_path / "run" / "saved_model" / "mine.txt").write_text("the user's")
    proc = runner(f"hydra.run.dir={tmp_path}/run", *FAST)
    assert proc.returncode == 2 and "already holds a saved_model/ folder" in proc.stderr
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["saved_model"]


def test_a_runs_uri_with_tracking_off_creates_no_store(tmp_path):
    store = tmp_path / "store"
    runner(f"hydra.run.dir={tmp_path}/run", *FAST, "load_from=runs:/0123456789abcdef",
           f"mlflow.store_dir={store}", "load_api=saved_model")
    r = read_result(tmp_path / "run")
    assert (r["status"], r["error"]["phase"]) == ("failed", "load")
    assert "which does not exist" in r["error"]["message"]
    assert not store.exists()


def test_secrets_stay_off_command_lines_and_out_of_every_file(tmp_path):
    """A credential in the overrides: never on a process's command line while the job runs
    (every local user can read those), never in a file of the job, on the failure path too."""
    import psutil

    secret = "pw-7319-secret"
    uri = f"mlflow.tracking_uri=http://alice:{secret}@127.0.0.1:9"
    typed = [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path}/run", *FAST, uri,
             "runner.fork_server=false"]
    proc = subprocess.Popen(typed, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen_jobs, leaked = 0, []
    while proc.poll() is None:
        for p in psutil.process_iter(["cmdline"]):
            # The command the user typed is theirs to keep secrets out of; a child the runner
            # forked shows it too until it execs its own (seen under load).
            if p.info["cmdline"] == typed:
                continue
            line = " ".join(p.info["cmdline"] or [])
            seen_jobs += "runner.job" in line
            if secret in line:
                leaked.append(line)
    out = proc.communicate()[0].decode()
    assert proc.returncode == 0, out[-3000:]
    assert seen_jobs and leaked == []
    # The failure path: tracking on, the server unreachable at the start.
    failed = runner(f"hydra.run.dir={tmp_path}/failed", *FAST, "mlflow.enabled=true", uri)
    assert failed.returncode == 1 and read_result(tmp_path / "failed")["error"]["phase"] == (
        "tracking")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"config.yaml", "hydra.yaml", "overrides.yaml",
                                         "result.json", "job.log"}
    assert [p for p in written if secret.encode() in p.read_bytes()] == []


def test_a_fixed_batch_signature_is_named_and_not_blamed_on_the_logits(run_job):
    """A Keras 3 subclassed model saved with tf.saved_model.save under MirroredStrategy gets a
    serving signature for batches of 64 only; the test set's last batch holds 39."""
    proc, r = run_job("model=subclassed", "save_api=saved_model", "load_api=saved_model",
                      "strategy=mirrored")
    assert (r["status"], r["error"]["phase"]) == ("failed", "verify"), r["error"]
    assert "takes batches of one fixed size only" in r["error"]["hint"]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
    assert "| probe logits matched (max|Δ| 0.0e+00) |" in line and "(hint: " in line


def test_a_database_uri_store_keeps_its_artifacts_beside_it_not_in_the_working_dir(tmp_path):
    """mlflow.tracking_uri=sqlite:///...: a new experiment's artifacts go beside the database,
    whatever folder the runner is started from (MLflow's own default is ./mlruns)."""
    from mlflow.tracking import MlflowClient

    database, elsewhere = tmp_path / "db" / "mlflow.db", tmp_path / "project"
    database.parent.mkdir()
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path}/run", *FAST[:-1],
         f"mlflow.tracking_uri=sqlite:///{database}", "mlflow.log_model=false"],
        cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{database}")
    experiment = client.get_experiment_by_name("runner-save-load")
    assert experiment.artifact_location == (database.parent / "artifacts").as_uri()
    (run,) = client.search_runs([experiment.experiment_id])
    assert "result.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert list(tmp_path.rglob("mlruns")) == []
