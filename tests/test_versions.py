"""A side in another TensorFlow/Keras release (tf=, load_tf=): its environment built with uv from
an empty cache inside the test, from the repository's lock file, the job's sides in their own
interpreters; the reverse direction failing as data naming the release; parallel jobs building
one environment; an unreachable index failing before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from helpers.run import FAST, ROOT, read_result, runner, sweep_results
from mlflow.tracking import MlflowClient

from runner.core.releases import LibrarySet
from runner.launcher import environments

OLD = LibrarySet("2.15")  # the most different release offered: Keras 2 as tf.keras
PINS = environments.pins(environments.repository_lock(OLD).read_text())
INSTALLED = {"tensorflow": version("tensorflow"), "tf-keras": version("tf-keras")}
LEGACY = ["keras=legacy", "load_keras=legacy"]


def cache(tmp_path: Path) -> dict[str, str]:
    """An empty environment cache for this test (uv's own cache stays shared: its wheels)."""
    return {environments.ENVS_DIR_ENV: str(tmp_path / "envs")}


def test_a_model_trained_in_an_older_release_loads_and_resumes_in_the_installed_one(tmp_path):
    job_dir, store_dir = tmp_path / "run", tmp_path / "mlflow"
    proc = runner(f"hydra.run.dir={job_dir}", *FAST, *LEGACY, "tf=v2.15", "load_tf=installed",
                  "mlflow.enabled=true", f"mlflow.store_dir={store_dir}", env=cache(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Built once, from the lock file, with a line saying so.
    assert proc.stdout.count(f"environment tf2.15 (tensorflow {PINS['tensorflow']}") == 1
    assert proc.stdout.count("environment tf2.15: built in ") == 1
    [(env_dir, record)] = environments.built(tmp_path / "envs")
    assert record["lock"] == "repository" and record["versions"]["tensorflow"] == PINS[
        "tensorflow"]
    r = read_result(job_dir)
    assert r["status"] == "passed", r["error"]
    assert (r["tf"], r["load_tf"]) == ("v2.15", None)
    # Each side's libraries, read in its own process.
    assert (r["versions"]["tensorflow"], r["versions"]["tf-keras"]) == (
        PINS["tensorflow"], PINS["tf-keras"])
    assert (r["load_versions"]["tensorflow"], r["load_versions"]["tf-keras"]) == (
        INSTALLED["tensorflow"], INSTALLED["tf-keras"])
    assert r["keras_module"] == r["load_keras_module"] == "tf_keras"
    assert r["max_abs_diff"] <= r["tolerance"] and r["resume"]["outcome"] == "exact"
    words = (f"(tensorflow {PINS['tensorflow']}, tf-keras {PINS['tf-keras']} → tensorflow "
             f"{INSTALLED['tensorflow']}, tf-keras {INSTALLED['tf-keras']})")
    assert words in next(line for line in proc.stdout.splitlines() if line.startswith("PASSED"))
    # MLflow: both sides' versions; the older environment holds no MLflow to save its model.
    client = MlflowClient(f"sqlite:///{store_dir}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("runner-save-load").experiment_id])
    assert run.data.tags["tf"] == "v2.15" and "load_tf" not in run.data.tags
    assert run.data.tags["tensorflow_version"] == PINS["tensorflow"]
    assert run.data.tags["load_tensorflow_version"] == INSTALLED["tensorflow"]
    assert any("mlflow.log_model skipped" in n for n in r["notes"])
    # The next job reuses it: no build.
    again = runner(f"hydra.run.dir={tmp_path / 'again'}", *FAST, *LEGACY, "tf=v2.15",
                   "load_tf=installed", env=cache(tmp_path))
    assert again.returncode == 0 and "building" not in again.stdout
    # python -m runner.envs lists and removes it.
    env = {**os.environ, **cache(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "runner.envs", "list"], cwd=ROOT, text=True,
                            capture_output=True, env=env)
    assert env_dir.name in listed.stdout
    removed = subprocess.run([sys.executable, "-m", "runner.envs", "remove", "v2.15"], cwd=ROOT,
                             text=True, capture_output=True, env=env)
    assert removed.returncode == 0 and not env_dir.exists()


def test_a_model_saved_by_the_installed_release_loaded_in_an_older_one(tmp_path):
    """tf-keras 2.21 writes `optional` into an InputLayer's config, which tf-keras 2.15 cannot
    read: the cell fails as data naming the release; a TensorFlow checkpoint loads and resumes."""
    sweep_dir = tmp_path / "sweep"
    proc = runner("-m", f"hydra.sweep.dir={sweep_dir}", *FAST, *LEGACY, "load_tf=v2.15",
                  "load_api=keras,checkpoint", env=cache(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    keras_file, checkpoint = sweep_results(sweep_dir)
    assert (keras_file["status"], keras_file["error"]["phase"]) == ("failed", "load")
    assert "Error when deserializing class 'InputLayer'" in keras_file["error"]["message"]
    assert keras_file["error"]["release"] == (
        f"load_tf=v2.15: tensorflow {PINS['tensorflow']}, tf-keras {PINS['tf-keras']}")
    assert "raised in load_tf=v2.15" in proc.stdout
    assert checkpoint["status"] == "passed", checkpoint["error"]
    assert checkpoint["resume"]["outcome"] == "exact"
    assert checkpoint["load_versions"]["tensorflow"] == PINS["tensorflow"]
    matrix = (sweep_dir / "matrix.md").read_text()
    assert "failed in load: TypeError" in matrix and "passed, resume exact" in matrix


def test_two_jobs_asking_at_once_build_the_environment_once(tmp_path):
    env = {**os.environ, **cache(tmp_path)}
    jobs = [subprocess.Popen(
        [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path / str(i)}", *FAST, *LEGACY,
         "tf=v2.15", f"seed={i}"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    joined = "\n".join(outputs)
    assert joined.count("): building in ") == 1, joined
    assert len(environments.built(tmp_path / "envs")) == 1
    assert [read_result(tmp_path / str(i))["versions"]["tensorflow"] for i in range(2)] == [
        PINS["tensorflow"]] * 2


def test_an_unreachable_index_fails_before_anything_runs(tmp_path):
    run_dir = tmp_path / "run"
    proc = runner(f"hydra.run.dir={run_dir}", *FAST, "tf=v2.16", env={
        **cache(tmp_path), "UV_INDEX_URL": "http://127.0.0.1:9/simple",
        "UV_CACHE_DIR": str(tmp_path / "uv")})  # no wheel at hand: uv must ask the index
    assert proc.returncode == 2
    assert "Environment error: building tf2.16: the package index could not be reached" in (
        proc.stderr)
    assert "python -m runner.envs build tf2.16" in proc.stderr
    assert not run_dir.exists()  # no job started
    left = [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # no half-built environment
    assert environments.built(tmp_path / "envs") == []


def test_a_file_written_outside_the_runner_is_loaded_in_the_generation_it_says(tmp_path):
    """load_from a tf_keras SavedModel with load_tf=v2.15: the load side takes the generation the
    file names (load_keras=legacy) before its release is checked; TensorFlow 2.15 with Keras 3
    would be refused."""
    saved = tmp_path / "native"
    subprocess.run([sys.executable, "-c", (
        "import tensorflow as tf\n"
        "m = tf.keras.Sequential([tf.keras.layers.Input((28, 28, 1)), tf.keras.layers.Flatten(),"
        " tf.keras.layers.Dense(10)])\n"
        f"m.save({str(saved)!r})\n")], check=True, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    job_dir = tmp_path / "run"
    proc = runner(f"hydra.run.dir={job_dir}", *FAST, f"load_from={saved}",
                  "load_api=saved_model", "load_tf=v2.15", env=cache(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "written by keras=legacy; loading it in a load_keras=legacy process" in proc.stdout
    r = read_result(job_dir)
    assert (r["status"], r["load_keras"], r["load_tf"]) == ("passed", "legacy", "v2.15")
    assert r["load_versions"]["tensorflow"] == PINS["tensorflow"]
    assert f"loaded with tensorflow {PINS['tensorflow']}, tf-keras {PINS['tf-keras']}" in (
        proc.stdout)
