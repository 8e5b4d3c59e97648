"""MLflow tracking against a real store: a sqlite file, and a real `mlflow server`."""

from __future__ import annotations

import getpass
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers.run import ROOT, as_users_run, fitting, read_result, runner
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

TRACKED = ["verbose=0", "train.epochs=2", "continue_epochs=2"]


def only_run(client: MlflowClient):
    experiment = client.get_experiment_by_name("runner-save-load")
    (run,) = client.search_runs([experiment.experiment_id])
    return run


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.fixture
def store(tmp_path):
    """An embedded store in tmp_path; returns (overrides, client)."""
    store_dir = tmp_path / "mlflow"
    return [f"mlflow.store_dir={store_dir}"], MlflowClient(f"sqlite:///{store_dir}/mlflow.db")


@pytest.mark.parametrize("keras", ["v3", "legacy"])
def test_passed_job_is_a_complete_run(tmp_path, store, keras):
    overrides, client = store
    # MLflow's telemetry on, as users have it (tests turn it off unless told): its thread
    # changes os.environ while the run starts (test_telemetry_race_is_survived).
    proc = runner(f"hydra.run.dir={tmp_path}/run", *TRACKED, f"keras={keras}", *overrides,
                  users_env=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = read_result(tmp_path / "run")
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"keras→keras {keras} default→none"  # short; defaults left out
    # The UI opens the experiment on its runs table (a model-training experiment).
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # The end of the job says where its run is.
    assert result["mlflow_run_url"] == f"runs:/{run.info.run_id}"
    summary = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PASSED "))
    assert summary.endswith(f"| runs:/{run.info.run_id}")
    assert (f"MLflow run: mlflow ui --backend-store-uri {client.tracking_uri} --port 5000, then "
            f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/"
            f"{run.info.run_id}?workflowType=machine_learning") in proc.stdout
    # Each side's data is an MLflow dataset input: the runs table's Dataset column.
    sizes = result["data_sizes"]["train"]
    assert result["data_sizes"]["load"] == sizes  # both sides on the same data: one input
    inputs = [(d.dataset.name, d.tags[0].value) for d in run.inputs.dataset_inputs]
    assert inputs == [(f"digits (train {sizes['train']}, test {sizes['test']})", "training")]
    # MLflow's system metrics, sampled while the job ran.
    assert any(key.startswith("system/cpu") for key in run.data.metrics), run.data.metrics
    # A quiet console: TensorFlow's start-up lines once, no cuInit without a GPU, and no
    # Keras warning about an argument our own fit passes.
    if not glob.glob("/dev/nvidia[0-9]*"):
        assert "cuInit" not in proc.stdout
    assert proc.stdout.count("All log messages before absl::InitializeLog") <= 1
    assert "shuffle=True" not in proc.stdout + proc.stderr

    params = run.data.params
    assert params["train.epochs"] == "2" and params["strategy.name"] == "default"
    # Choices as written in the config, not Python's names of them (`ResumePolicy.record`).
    assert params["verify.resume"] == "record"
    assert params["mlflow.store_dir"] == str(tmp_path / "mlflow")
    tags = run.data.tags
    for group in ("strategy", "load_strategy", "save_api", "load_api", "model", "data", "keras"):
        assert tags[group] == result[group]
    assert tags["status"] == "passed" and "error_type" not in tags
    assert tags["tensorflow_version"] == result["versions"]["tensorflow"]
    assert tags["output_dir"] == str(tmp_path / "run")
    assert "train.epochs=2" in tags["overrides"]
    # Who ran which code, as mlflow.start_run records it (the run page's User and Source).
    assert tags["mlflow.user"] == run.info.user_id == getpass.getuser()
    assert tags["mlflow.source.name"] == str(ROOT / "runner" / "__main__.py")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert tags.get("mlflow.source.git.commit") == (head.stdout.strip() or None)

    # Curves as Keras users read them: one `loss` and one `accuracy` series, continuing's
    # epochs after training's (where it begins: a param), validation accuracy where the job
    # evaluated the test split (the end of each phase).
    history, boundary = result["history"], result["continue_from_step"]
    assert params["continue_from_step"] == str(boundary) == "2"
    for key in ("loss", "accuracy"):
        series = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in series] == [0, 1, 2, 3], key
        assert [m.value for m in series] == pytest.approx(
            history["train"][key] + history["continue"][key])
    val = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    assert val == pytest.approx({boundary - 1: result["accuracy"]["after_train"],
                                 3: result["accuracy"]["after_continue"]})
    assert not [k for k in run.data.metrics if k.startswith(("train_", "continue_"))
                and not k.endswith(("_s", "_per_s"))]
    # The outcome, first of the run's metrics (the compare page plots it by default).
    assert run.data.metrics["outcome"] == 3 and run.data.metrics["passed"] == 1
    # Keras autolog's params and model summary.
    assert (params["epochs"], params["batch_size"]) == ("2", "64")
    assert params["optimizer_name"] == ("adam" if keras == "v3" else "Adam")
    assert float(params["optimizer_learning_rate"]) == pytest.approx(1e-3)
    assert not [k for k, v in params.items() if v == "None"]
    summary_text = Path(client.download_artifacts(run.info.run_id, "model_summary.txt",
                                                  str(tmp_path))).read_text()
    assert "Total params" in summary_text and "conv2d" in summary_text.lower()
    m = run.data.metrics
    assert m["accuracy_after_load"] == pytest.approx(result["accuracy"]["after_load"])
    assert m["max_abs_diff"] == result["max_abs_diff"]
    assert m["artifact_bytes"] == result["artifact_bytes"]
    assert m["train_examples_per_s"] > 0 and m["save_s"] > 0 and m["load_s"] > 0

    artifacts = artifact_paths(client, run.info.run_id)
    assert {"result.json", "job.log", "curves.png", "saved_model/model.keras",
            ".hydra/config.yaml", ".hydra/overrides.yaml"} <= artifacts
    assert "traceback.txt" not in artifacts

    # The MLflow model: in the run's own experiment and store, linked to the run, logged with a
    # signature, servable by pyfunc in a fresh process.
    model_uri = result["mlflow_model"]["model_uri"]
    assert tags["mlflow_model_uri"] == model_uri
    (logged,) = client.search_logged_models([run.info.experiment_id])
    assert logged.model_id == model_uri.split("/")[-1] and logged.source_run_id == run.info.run_id
    # The Hydra process logs the model the job process saved, while the job goes on: it is
    # whole (READY) and in the run before the run's status is set, as every metric is.
    assert logged.status == LoggedModelStatus.READY
    assert logged.last_updated_timestamp <= run.info.end_time
    assert_all_in_before_the_end(client, run)
    assert logged.artifact_location.startswith((tmp_path / "mlflow").as_uri())
    assert [o.model_id for o in run.outputs.model_outputs] == [logged.model_id]
    # Named by its cell, linked to the data its metrics were measured on.
    assert logged.name == f"keras-{keras}-default-sequential"
    test_set = f"digits (train {sizes['train']}, test {sizes['test']})"
    on_data = [metric for metric in logged.metrics if metric.key == "accuracy_after_load"]
    assert [metric.dataset_name for metric in on_data] == [test_set]
    # The model's page shows what the job measured of it, as after MLflow's fluent log_metric.
    on_model = {metric.key: metric.value for metric in logged.metrics}
    assert on_model["accuracy_after_load"] == m["accuracy_after_load"]
    assert on_model["max_abs_diff"] == m["max_abs_diff"]
    assert not (ROOT / "mlruns").exists()
    serve = (
        "import sys, mlflow, numpy as np; mlflow.set_tracking_uri(sys.argv[1]);"
        "m = mlflow.pyfunc.load_model(sys.argv[2]);"
        "print(m.metadata.signature.inputs.to_json());"
        "print(np.asarray(m.predict(np.zeros((3, 28, 28, 1), np.float32))).shape)"
    )
    # A tf_keras model is served by a process that selects tf_keras too (result says so).
    serving_env = result["mlflow_model"].get("serving_env", {})
    assert serving_env == ({"TF_USE_LEGACY_KERAS": "1"} if keras == "legacy" else {})
    proc = subprocess.run([sys.executable, "-c", serve, client.tracking_uri, model_uri],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **serving_env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "(3, 10)"


def test_a_passed_job_registers_its_model_when_asked(tmp_path, store):
    """mlflow.register_model on the embedded store (the default): a version, linked both ways,
    and nothing written where the job was started from."""
    overrides, client = store
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = runner(f"hydra.run.dir={tmp_path}/run", *TRACKED, "mlflow.register_model=digits-cnn",
                  *overrides, cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result, run = read_result(tmp_path / "run"), only_run(client)
    (version,) = client.search_model_versions("name = 'digits-cnn'")
    assert result["mlflow_model"]["registered"] == {"name": "digits-cnn", "version": 1}
    assert (str(version.version), version.run_id) == ("1", run.info.run_id)
    assert version.tags["save_api"] == "keras" and version.tags["verdict"].startswith("loads")
    logged = client.get_logged_model(result["mlflow_model"]["model_uri"].split("/")[-1])
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "digits-cnn", "version": "1"}]
    assert not list(elsewhere.iterdir())


def test_failed_job_is_a_failed_run_with_its_traceback(tmp_path, store):
    overrides, client = store
    proc = runner(f"hydra.run.dir={tmp_path}/run", *TRACKED, "save_api=keras_saved_model",
                  *overrides)
    assert proc.returncode == 1
    run = only_run(client)
    assert run.info.status == "FAILED"
    tags = run.data.tags
    assert (tags["status"], tags["error_type"], tags["error_phase"]) == (
        "failed", "ValueError", "save")
    assert "Invalid filepath extension" in tags["error_message"] and tags["error_hint"]
    assert "traceback.txt" in artifact_paths(client, run.info.run_id)
    assert "accuracy_after_train" in run.data.metrics  # what ran before the failure counts
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    assert run.data.metrics["outcome"] == 0 and run.data.metrics["passed"] == 0
    assert_all_in_before_the_end(client, run)
    assert not client.search_logged_models([run.info.experiment_id])  # it failed before one


def assert_all_in_before_the_end(client: MlflowClient, run) -> None:
    """No metric of the run was logged after its status was set."""
    for key in run.data.metrics:
        history = client.get_metric_history(run.info.run_id, key)
        assert max(m.timestamp for m in history) <= run.info.end_time, key


@pytest.mark.parametrize("fork_server", ["true", "false"])
def test_killed_job_process_never_leaves_a_running_run(tmp_path, store, fork_server):
    """SIGKILL to the job process, forked (runner.fork_server) or new: a crash in its phase."""
    overrides, client = store
    job_dir = tmp_path / "run"
    parent = subprocess.Popen(
        [sys.executable, "-m", "runner", f"hydra.run.dir={job_dir}", "verbose=0",
         "train.epochs=50", f"runner.fork_server={fork_server}", *overrides],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not fitting(job_dir):  # the job process trains
        time.sleep(0.5)
    process = read_result(job_dir)["process"]
    assert process["start"] == ("forked" if fork_server == "true" else "new")
    job = psutil.Process(process["pid"])
    assert job in psutil.Process(parent.pid).children(recursive=True)
    job.send_signal(signal.SIGKILL)
    out, _ = parent.communicate(timeout=120)
    assert parent.returncode == 1, out[-2000:]
    result = read_result(job_dir)
    assert result["error"]["type"] == "JobCrashed" and result["error"]["phase"] == "train"
    assert "-9" in result["error"]["message"]
    run = only_run(client)
    assert run.info.status == "FAILED" and run.data.tags["error_type"] == "JobCrashed"


def test_job_against_a_real_tracking_server(tmp_path, mlflow_server):
    url, artifacts_dir = mlflow_server
    proc = runner(f"hydra.run.dir={tmp_path}/run", *TRACKED, f"mlflow.tracking_uri={url}",
                  "mlflow.register_model=digits-cnn")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    client = MlflowClient(url)
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 4
    # mlflow.register_model: the passed job's model is a version of it, its choices as tags.
    result = read_result(tmp_path / "run")
    (version,) = client.search_model_versions("name = 'digits-cnn'")
    assert result["mlflow_model"]["registered"] == {"name": "digits-cnn",
                                                    "version": int(version.version)}
    assert version.run_id == run.info.run_id
    assert f"Model Registry: digits-cnn version {version.version}" in proc.stdout
    # The logged model links to its version, as mlflow.register_model leaves it.
    logged = client.get_logged_model(result["mlflow_model"]["model_uri"].split("/")[-1])
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "digits-cnn", "version": version.version}]
    assert version.source == logged.artifact_location
    assert {k: version.tags[k] for k in ("save_api", "load_api", "strategy", "keras")} == {
        k: result[k] for k in ("save_api", "load_api", "strategy", "keras")}
    assert version.tags["verdict"].startswith("loads and serves the same logits")
    assert {"result.json", "saved_model/model.keras", "curves.png"} <= artifact_paths(
        client, run.info.run_id)
    # The artifacts went through the server into its --artifacts-destination.
    local = client.download_artifacts(run.info.run_id, "result.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == read_result(tmp_path / "run")
    assert any(artifacts_dir.rglob("model.keras"))
    assert run.data.tags["mlflow_model_uri"].startswith("models:/")
    # The model went into the run's experiment, its files through the server too.
    (logged,) = client.search_logged_models([run.info.experiment_id])
    assert logged.source_run_id == run.info.run_id
    assert any(artifacts_dir.rglob("MLmodel"))
    link = (f"{url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            "?workflowType=machine_learning")  # the UI's "Model training" mode
    assert f"MLflow run: {link}" in proc.stdout
    assert next(ln for ln in proc.stdout.splitlines() if ln.startswith("PASSED ")).endswith(link)


def test_unreachable_server_fails_fast_and_clearly(tmp_path):
    """A server that accepts connections but never answers: the job ends within the bound its
    mlflow.http_* settings give (here 2 tries of 3 s and a 1 s backoff; with the defaults, 4 of
    10 s; MLflow's own would be 8 of 120 s), naming the URI."""
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        start = time.monotonic()
        proc = runner(f"hydra.run.dir={tmp_path}/run", "verbose=0", f"mlflow.tracking_uri={url}",
                      "mlflow.http_timeout_s=3", "mlflow.http_max_retries=1")
        elapsed = time.monotonic() - start
    assert proc.returncode == 1
    assert f"MLflow tracking at {url} is unavailable" in proc.stdout
    result = read_result(tmp_path / "run")
    assert result["status"] == "failed" and result["error"]["phase"] == "tracking"
    assert elapsed < 40, f"took {elapsed:.0f} s"


# MLflow's telemetry thread, started by the first create_run, deletes
# _MLFLOW_TELEMETRY_SESSION_ID from os.environ once it finds no network; masking secrets (which
# reads the environment) for the run's params while that happens raised KeyError (issue #15,
# fault 1). Here the masking loops in a thread across create_run, with telemetry really on.
TELEMETRY_RACE = """
import os, sys, threading, time
from mlflow.tracking import MlflowClient
from runner.core import redact
assert os.environ.get("_MLFLOW_TELEMETRY_SESSION_ID"), "telemetry is off: nothing to race"
client = MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db")
experiment = client.create_experiment("race", artifact_location=f"file://{sys.argv[1]}/a")
errors, done = [], threading.Event()
def mask():
    while not done.is_set():
        try:
            redact.text("some param value")
        except Exception as e:
            errors.append(repr(e))
masking = threading.Thread(target=mask)
masking.start()
client.create_run(experiment)
deadline = time.monotonic() + 10
while "_MLFLOW_TELEMETRY_SESSION_ID" in os.environ and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.2)
done.set()
masking.join()
print("deleted" if "_MLFLOW_TELEMETRY_SESSION_ID" not in os.environ else "still set")
print(f"errors {len(errors)} {errors[:1]}")
"""


def test_telemetry_race_is_survived(tmp_path):
    """Before the fix this printed 'errors 1 [KeyError(...)]' in 6 runs of 6 on this machine."""
    proc = subprocess.run([sys.executable, "-c", TELEMETRY_RACE, str(tmp_path)], cwd=ROOT,
                          env=as_users_run(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    if lines[-2] == "still set":
        pytest.skip("MLflow's telemetry kept its session (a network that answered)")
    assert lines[-1] == "errors 0 []"


def test_a_failure_after_the_run_is_created_is_a_recorded_failure(tmp_path, store):
    """Whatever fails once the run exists (here: logging its params to a store that was
    made read-only) ends the job as a failure in phase `tracking`: result.json, exit 1, the run
    closed FAILED rather than left RUNNING."""
    from omegaconf import OmegaConf

    from runner.launcher import tracked
    from runner.tracking import runs

    overrides, client = store
    cfg = OmegaConf.create({"mlflow": {
        "tracking_uri": None, "store_dir": str(tmp_path / "mlflow"), "experiment_name": "x",
        "http_timeout_s": 5, "http_max_retries": 0}})
    run = runs._create_run(cfg.mlflow, "a job", {})
    cause = PermissionError("attempt to write a readonly database")
    job = tmp_path / "job"
    compose_cfg = compose_default(overrides)
    result = tracked.not_tracked(compose_cfg, job, [], runs.StartFailed(run, cause))
    assert result["status"] == "failed" and result["error"]["phase"] == "tracking"
    assert result["error"]["type"] == "PermissionError"
    assert read_result(job) == result and result["mlflow_run_id"] == run.run_id
    closed = client.get_run(run.run_id)
    assert closed.info.status == "FAILED"
    assert closed.data.tags["error_type"] == "PermissionError"
    assert "result.json" in artifact_paths(client, run.run_id)


def compose_default(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from runner.core import schema

    schema.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_a_store_opened_the_moment_it_appears_is_whole(tmp_path):
    """A reader that opens the sqlite store as soon as its file exists (`mlflow ui`, a script
    polling it) while the runner creates it finds every table. When MLflow created them in place,
    the reader created them too, at once: it failed in 3 tries of 3 ('table ... already exists',
    alembic's 'expected to match one row'). (Two processes creating a store together once broke
    it for good.)"""
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    (tmp_path / "nothing").mkdir()
    maker = subprocess.Popen(  # the runner's cheapest way to open a store: a sync of nothing
        [sys.executable, "-m", "runner.sync", str(tmp_path / "nothing"), "--store-dir",
         str(db.parent)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not db.exists() and maker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    experiments = MlflowClient(f"sqlite:///{db}").search_experiments()
    out, _ = maker.communicate(timeout=120)
    assert maker.returncode == 0, out
    names = [e.name for e in MlflowClient(f"sqlite:///{db}").search_experiments()]
    assert sorted(names) == ["Default", "runner-save-load"]
    assert "Default" in [e.name for e in experiments]
    # MLflow's default experiment keeps its artifacts in the store, not in ./mlruns.
    default = MlflowClient(f"sqlite:///{db}").get_experiment("0")
    assert default.artifact_location == (db.parent / "artifacts" / "0").as_uri()
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db", "mlflow.lock"]


def test_metrics_arrive_while_the_job_runs_and_nothing_lands_outside_the_store(tmp_path):
    """Run from another working directory: each epoch's loss is in the run while it is still
    RUNNING (the UI draws the curve live); no `mlruns/` appears anywhere."""
    store, elsewhere = tmp_path / "mlflow", tmp_path / "elsewhere"
    elsewhere.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path}/run", "verbose=0",
         "data=synthetic", "data.n_train=6000", "data.n_test=500", "train.epochs=8",
         "continue_epochs=1", f"mlflow.store_dir={store}"],
        cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The client only once the store exists: MlflowClient(uri) makes a missing sqlite store in
    # place at construction (4 s of migrations), which the job's own start then collided with.
    client = None
    seen_while_running = []
    try:
        deadline = time.monotonic() + 300
        while job.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
            if not (store / "mlflow.db").exists():
                continue
            client = client or MlflowClient(f"sqlite:///{store}/mlflow.db")
            experiment = client.get_experiment_by_name("runner-save-load")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and (tmp_path / "run" / "result.json").exists():
                history = client.get_metric_history(runs[0].info.run_id, "loss")
                # Counted only while the job process itself is still at work.
                if read_result(tmp_path / "run")["status"] == "running":
                    seen_while_running.append(len(history))
        out, _ = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0, out[-3000:]
    assert max(seen_while_running) >= 2, seen_while_running  # epochs logged as they ended
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = only_run(client)
    history = client.get_metric_history(run.info.run_id, "loss")
    # once each, not again at the end; continuing's one epoch after training's eight
    assert [m.step for m in history] == list(range(9))
    assert len({m.timestamp for m in history}) > 1  # real times, not one stamp at the end
    assert not list(tmp_path.rglob("mlruns")) and not (ROOT / "mlruns").exists()
