"""Nothing lost when tracking goes away: a real `mlflow server` stopped during a sweep and
started again on the same store; `python -m runner.sync` brings it up to date, once."""

from __future__ import annotations

import subprocess
import sys
import time

from helpers.mlflow_server import MlflowServer, free_port
from helpers.run import ROOT, read_result, runner, sweep_results
from mlflow.tracking import MlflowClient

SWEEP = ["save_api=keras,saved_model", "load_api=keras,saved_model", "verbose=0",
         "train.epochs=2", "continue_epochs=1", "mlflow.log_model=false"]


def sync(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner.sync", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def runs_by_dir(client: MlflowClient) -> dict[str, list]:
    experiment = client.get_experiment_by_name("runner-save-load")
    found: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        found.setdefault(run.data.tags.get("output_dir") or run.data.tags.get("sweep_dir"),
                         []).append(run)
    return found


def assert_complete(client: MlflowClient, results: list[dict], sweep_dir) -> None:
    """Every job exactly one run, closed, holding what its result.json holds; the parent one
    run with the matrix, its children linked."""
    runs = runs_by_dir(client)
    (parent,) = runs[str(sweep_dir)]
    # The sweep's outcome on the parent, as the sweep itself would have left it.
    failed = sum(r["status"] != "passed" for r in results)
    assert parent.info.status == ("FAILED" if failed else "FINISHED")
    assert parent.data.metrics["failed"] == failed
    assert parent.data.tags["summary"].startswith(f"{len(results) - failed}/{len(results)} passed")
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "matrix")} >= {
        "matrix/matrix.md", "matrix/matrix.html"}
    for r in results:
        (run,) = runs[r["output_dir"]]
        assert run.info.status == ("FINISHED" if r["status"] == "passed" else "FAILED"), r
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["status"] == r["status"]
        m = run.data.metrics
        assert m["accuracy_after_train"] == r["accuracy"]["after_train"]
        if r["status"] == "passed":
            assert m["max_abs_diff"] == r["max_abs_diff"]
        history = client.get_metric_history(run.info.run_id, "loss")  # once each
        assert [h.value for h in history] == [
            *r["history"]["train"]["loss"], *(r["history"].get("continue") or {}).get("loss", [])]
        assert [h.step for h in history] == list(range(len(history)))
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"result.json", "job.log", "saved_model", ".hydra", "curves.png"} <= artifacts
        assert run.data.params["train.epochs"] == "2"


def test_a_server_that_goes_away_during_a_sweep_loses_nothing(tmp_path):
    server = MlflowServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    server.start()
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.Popen(
        # 3 jobs (save_api=auto pairs each load API): 0 recorded, 1 loses the store while it
        # trains, 2 runs without it. Each trains its own: shared, jobs 1 and 2 would only load
        # job 0's (test_push_an_embedded_sweep_into_a_fresh_server syncs such a sweep).
        [sys.executable, "-m", "runner", "-m", f"hydra.sweep.dir={sweep_dir}",
         "load_api=keras,saved_model,tfsm_layer", *SWEEP[2:], f"mlflow.tracking_uri={server.url}",
         "runner.share_training=false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        job1 = sweep_dir / "1" / "result.json"
        while not (job1.exists() and read_result(sweep_dir / "1").get("phase") == "train"
                   and read_result(sweep_dir / "1").get("devices")):
            assert time.monotonic() < deadline and proc.poll() is None, "job 1 did not train"
            time.sleep(0.2)
        server.stop()  # while job 1 trains; not started again during the sweep
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill()
        server.stop()
    assert proc.returncode == 0, out[-3000:]
    results = sweep_results(sweep_dir)
    assert len(results) == 3
    assert all(r["accuracy"]["after_train"] is not None for r in results)  # every job worked
    pending = [r for r in results if (r.get("tracking") or {}).get("status") == "pending"]
    assert len(pending) == 2, [r.get("tracking") for r in results]  # jobs 1 and 2
    assert (sweep_dir / ".tracking-lost").exists()  # job 2 looked with one try only
    for r in pending:  # the reason, said once, naming the URI
        assert r["tracking"]["reason"].count(f"MLflow tracking at {server.url} is unavailable") \
            == 1, r["tracking"]
    assert "record pending: python -m runner.sync" in out
    assert f"when the store is back: python -m runner.sync {sweep_dir}" in out

    server.start()  # back, on the same store
    start = time.monotonic()
    proc = sync(str(sweep_dir), "--tracking-uri", server.url)
    print(f"sync took {time.monotonic() - start:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert sum(ln.startswith(("created", "completed")) for ln in lines) == 3, proc.stdout
    client = MlflowClient(server.url)
    try:
        assert_complete(client, results, sweep_dir)
        again = sync(str(sweep_dir), "--tracking-uri", server.url)  # idempotent
        assert again.returncode == 0 and "(nothing to do)" in again.stdout, again.stdout
        assert sum(ln.startswith("up to date") for ln in again.stdout.splitlines()) == 4
        assert_complete(client, results, sweep_dir)
        assert all(read_result(sweep_dir / str(i))["tracking"]["status"] == "recorded"
                   for i in range(3))
    finally:
        server.stop()


def test_push_an_embedded_sweep_into_a_fresh_server(tmp_path, server):
    sweep_dir, store = tmp_path / "sweep", tmp_path / "laptop"
    # save_api=auto: a .keras file for load_api=keras, a SavedModel for load_api=saved_model;
    # each job logs its MLflow model into the laptop's store (mlflow.log_model's default).
    proc = runner("-m", f"hydra.sweep.dir={sweep_dir}", f"mlflow.store_dir={store}",
                  "load_api=keras,saved_model", *SWEEP[2:-1])
    assert proc.returncode == 0, proc.stdout[-3000:]
    results = sweep_results(sweep_dir)
    pushed = sync(str(sweep_dir), "--tracking-uri", server.url)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    lines = pushed.stdout.splitlines()
    assert sum(ln.startswith("created") for ln in lines) == 2
    client = MlflowClient(server.url)
    assert_complete(client, results, sweep_dir)
    # The model: rebuilt from the .keras file into the server's run; from a SavedModel it cannot
    # be, and the line says why.
    runs = runs_by_dir(client)
    (keras_job,) = [r for r in results if r["load_api"] == "keras"]
    (keras_run,) = runs[keras_job["output_dir"]]
    models = client.search_logged_models([keras_run.info.experiment_id])
    assert [m.source_run_id for m in models] == [keras_run.info.run_id]
    # The job's numbers are linked to the model rebuilt here, not to the laptop's model id.
    on_model = {metric.key: metric.value for metric in models[0].metrics}
    assert on_model["accuracy_after_load"] == keras_job["accuracy"]["after_load"]
    rebuilt = (f"{keras_job['output_dir']}: runs:/{keras_run.info.run_id} (MLflow model rebuilt "
               "from saved_model/)")
    assert any(ln.endswith(rebuilt) for ln in lines), lines
    assert any("MLflow model not rebuilt: no .keras file" in ln for ln in lines), lines
    # The laptop's own record is unchanged: each job still says where it was recorded first.
    assert [read_result(sweep_dir / str(i))["mlflow_run_id"] for i in range(2)] == [
        r["mlflow_run_id"] for r in results]
    again = sync(str(sweep_dir), "--tracking-uri", server.url)
    assert "(nothing to do)" in again.stdout
    assert sum(len(v) for v in runs_by_dir(client).values()) == 3  # never pushed twice


def test_sync_to_a_store_still_away_fails_within_the_http_bounds(tmp_path, run_job):
    run_job()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    start = time.monotonic()
    proc = sync(str(tmp_path / "run"), "--tracking-uri", url)
    took = time.monotonic() - start
    assert proc.returncode == 1
    assert f"MLflow tracking at {url} is unavailable" in proc.stdout
    assert took < 60, f"took {took:.0f} s"
