"""Multi-worker training on TensorFlow's distributed runtime: local workers, TF_CONFIG, SLURM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.run import FAST, ROOT, read_result, runner
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from runner.core import cluster, schema
from runner.job.runtime import resolver
from runner.launcher import local_cluster

MULTI_WORKER = ["strategy=multi_worker_mirrored", "keras=legacy"]


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_two_local_workers_train_save_load_and_continue(tmp_path):
    job, store = tmp_path / "run", tmp_path / "mlflow"
    proc = runner(f"hydra.run.dir={job}", *MULTI_WORKER, "load_strategy=multi_worker_mirrored",
                  *FAST[:-1], f"mlflow.store_dir={store}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = read_result(job)
    assert r["status"] == "passed", r["error"]
    assert r["replicas"] == {"train": 2, "load": 2}
    assert (r["cluster"]["workers"], r["cluster"]["task"]) == (2, "worker:0")
    assert r["max_abs_diff"] <= r["tolerance"]  # the saved model loads and its logits match
    assert r["accuracy"]["after_continue"] is not None
    workers = json.loads((job / "workers.json").read_text())
    assert [w["index"] for w in workers] == [0, 1]
    assert workers[0]["output_dir"] == str(job)
    # Worker 1 saved too (a collective), into a temporary directory that is gone now; its log
    # stays; the chief alone wrote the result and the one MLflow run.
    assert not Path(workers[1]["output_dir"]).exists()
    assert (job / "worker-1.log").stat().st_size > 0
    assert all(gone(w["pid"]) for w in workers)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("runner-save-load").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["strategy"] == "multi_worker_mirrored"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "job.log", "worker-1.log", "workers.json", "saved_model"} <= artifacts
    assert any("mlflow.log_model skipped" in note for note in r["notes"])


@pytest.mark.parametrize("path", ["resume_path=model_checkpoint",
                                  "resume_path=backup_and_restore_checkpoint"])
def test_callbacks_save_on_every_worker_and_leave_one_artifact(tmp_path, path):
    """ModelCheckpoint and BackupAndRestore (uninterrupted: a kill of one process is no
    multi-worker restart) under two workers: every worker takes part in the save, tf_keras
    keeps the chief's files only, and the other worker saves its own copy for its load side
    (the chief joining that save's collective); nothing hangs, one artifact results."""
    job = tmp_path / "run"
    extra = ["save_api.interrupt=false"] if "backup" in path else []
    proc = runner(f"hydra.run.dir={job}", *MULTI_WORKER, path, *extra, *FAST, "train.epochs=2",
                  timeout=300)
    r = read_result(job)
    assert proc.returncode == 0, (r.get("error"), proc.stdout[-2000:])
    assert r["replicas"]["train"] == 2 and r["resume"]["outcome"] == "exact"
    assert [p.name for p in (job / "callback").iterdir()] == (
        ["model.keras"] if "model_checkpoint" in path else ["backup"])
    workers = json.loads((job / "workers.json").read_text())
    assert not Path(workers[1]["output_dir"]).exists()
    assert "save its own copy" not in (job / "job.log").read_text()  # the chief copied its own


def test_backup_and_restore_refuses_to_kill_a_cluster(tmp_path):
    proc = runner(f"hydra.run.dir={tmp_path / 'run'}", *MULTI_WORKER,
                  "save_api=backup_and_restore", "load_api=checkpoint")
    assert proc.returncode == 2 and "set save_api.interrupt=false" in proc.stderr
    assert not (tmp_path / "run" / "result.json").exists()


def test_keras3_fails_in_fit_with_the_hint(run_job):
    proc, r = run_job("strategy=multi_worker_mirrored", "keras=v3")
    assert proc.returncode == 1
    assert (r["error"]["phase"], r["error"]["type"]) == ("train", "ValueError")
    assert "PerReplica" in r["error"]["message"]
    assert "keras-team/keras#20585" in r["error"]["hint"]


@pytest.mark.parametrize("sig, names_the_worker", [
    (signal.SIGKILL, "worker 1 exited with code -9"),  # a worker that dies
    (signal.SIGSTOP, "worker(s) [1] still running"),  # a worker that hangs
], ids=["killed", "hung"])
def test_a_dead_or_hung_worker_fails_the_job_within_the_bound(tmp_path, sig, names_the_worker):
    job = tmp_path / "run"
    command = [sys.executable, "-m", "runner", f"hydra.run.dir={job}", *MULTI_WORKER,
               "train.epochs=500", "verbose=2", "mlflow.enabled=false", "cluster.grace_s=5"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Epoch 3/" not in _read(job / "job.log"):  # both workers are training
            assert time.monotonic() < deadline and proc.poll() is None, _read(job / "job.log")
            time.sleep(0.2)
        workers = json.loads((job / "workers.json").read_text())
        os.kill(workers[1]["pid"], sig)
        signalled = time.monotonic()
        proc.wait(timeout=120)
        took = time.monotonic() - signalled
    finally:
        proc.kill()
    assert proc.returncode == 1
    r = read_result(job)
    assert r["status"] == "failed" and r["error"]["phase"] == "train"
    # The runner's watch names the worker: in the error, or in the notes beside the chief's own
    # error when TensorFlow's heartbeat check failed the chief first (its message names task:1).
    assert any(names_the_worker in text for text in [r["error"]["message"], *r["notes"]]), r
    if r["error"]["type"] != "WorkerFailed":
        assert "task:1" in r["error"]["message"], r["error"]
    # Bounded: TensorFlow's heartbeat check (about 10 s here) plus cluster.grace_s.
    assert took < 5 + 40, f"the job took {took:.0f} s to fail"
    assert all(gone(w["pid"]) for w in workers)
    assert not Path(workers[1]["output_dir"]).exists()


def test_no_worker_outlives_a_killed_runner(tmp_path):
    job = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", f"hydra.run.dir={job}", *MULTI_WORKER,
         "train.epochs=500", "verbose=2", "mlflow.enabled=false"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "Epoch 3/" not in _read(job / "job.log"):
            assert time.monotonic() < deadline and proc.poll() is None, _read(job / "job.log")
            time.sleep(0.2)
    finally:
        proc.kill()  # SIGKILL: the runner gets no chance to clean up
        proc.wait()
    workers = json.loads((job / "workers.json").read_text())
    deadline = time.monotonic() + 10
    while not all(gone(w["pid"]) for w in workers):
        assert time.monotonic() < deadline, "a worker outlived the runner"
        time.sleep(0.1)


def test_workers_an_orchestrator_starts_with_tf_config(tmp_path):
    """cluster=tf_config: the runner started once per worker, as Kubernetes or Vertex AI do."""
    ports = local_cluster.free_ports(2)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path}/w{i}", *MULTI_WORKER,
             "cluster=tf_config", *FAST],
            cwd=ROOT, env={**os.environ, "TF_CONFIG": local_cluster.tf_config(ports, i)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    chief = read_result(tmp_path / "w0")
    assert chief["status"] == "passed" and chief["cluster"]["task"] == "worker:0"
    assert chief["replicas"]["train"] == 2
    # The other worker records nothing but its log.
    assert not (tmp_path / "w1" / "result.json").exists()
    assert not (tmp_path / "w1" / "saved_model").exists()
    assert (tmp_path / "w1" / "worker-1.log").stat().st_size > 0


def test_slurm_resolver_builds_the_cluster_from_slurms_variables(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[07-08]")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "2(x2)")
    cfg = OmegaConf.create({"name": "slurm", "port_base": 8888, "gpus_per_node": 0})
    found = resolver(cfg)
    assert found.cluster_spec().as_dict() == {"worker": [
        "node07:8888", "node07:8889", "node08:8888", "node08:8889"]}
    assert (found.task_type, found.task_id) == ("worker", 3)
    assert not found.num_accelerators()  # CPU nodes: MultiWorkerMirroredStrategy uses the CPU
    assert not cluster.is_chief(cfg)
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert cluster.is_chief(cfg)


@pytest.mark.parametrize("tf_config, chief", [
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}},
     True),
])
def test_the_chief_of_a_tf_config_cluster_records_the_job(tf_config, chief):
    cfg = OmegaConf.create({"name": "tf_config"})
    assert cluster.is_chief(cfg, {"TF_CONFIG": json.dumps(tf_config)}) == chief


def test_slurm_preset_runs_one_worker_per_submitit_task():
    schema.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=slurm_multi_worker"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (cfg.hydra.launcher.nodes, cfg.hydra.launcher.tasks_per_node) == (2, 1)
    assert (cfg.strategy.name, cfg.cluster.name, cfg.keras.name) == (
        "multi_worker_mirrored", "slurm", "legacy")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_worker_whose_chief_never_appears_gives_up_naming_it(tmp_path):
    """cluster=tf_config: an orchestrator started worker 1, never the chief. Worker 1 gives up
    after cluster.startup_timeout_s, saying whose address it waited for."""
    ports = local_cluster.free_ports(2)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path}/w1", *MULTI_WORKER,
         "cluster=tf_config", "cluster.startup_timeout_s=15", *FAST],
        cwd=ROOT, env={**os.environ, "TF_CONFIG": local_cluster.tf_config(ports, 1)},
        capture_output=True, text=True, timeout=300)
    took = time.monotonic() - start
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr + _read(tmp_path / "w1" / "worker-1.log")
    assert (f"waited cluster.startup_timeout_s=15 s for the chief at 127.0.0.1:{ports[0]}: it "
            "never joined") in out, out[-3000:]
    assert "ClusterStartTimeout" in out
    # The window opens once the worker forms the cluster, after its TensorFlow import.
    assert took < 15 + 90, f"took {took:.0f} s"


def test_a_worker_whose_chief_dies_mid_training_ends_within_a_bound(tmp_path):
    """Both workers train; the chief's whole job is killed. TensorFlow's own heartbeat check
    ends the other worker (measured here: its error names the chief's task)."""
    ports = local_cluster.free_ports(2)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path}/w{i}", *MULTI_WORKER,
         "cluster=tf_config", "train.epochs=500", "verbose=2", "mlflow.enabled=false"],
        cwd=ROOT, env={**os.environ, "TF_CONFIG": local_cluster.tf_config(ports, i)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        for i in range(2)]
    try:
        deadline = time.monotonic() + 180
        while "Epoch 3/" not in _read(tmp_path / "w0" / "job.log"):
            assert time.monotonic() < deadline, _read(tmp_path / "w0" / "job.log")[-2000:]
            time.sleep(0.2)
        os.killpg(procs[0].pid, signal.SIGKILL)  # the chief and its job process
        killed = time.monotonic()
        procs[1].wait(timeout=300)
        took = time.monotonic() - killed
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
    assert procs[1].returncode != 0
    log = _read(tmp_path / "w1" / "worker-1.log")
    print(f"worker 1 ended {took:.1f} s after the chief was killed")
    assert took < 60, f"worker 1 took {took:.0f} s"
    assert any(w in log.lower() for w in ("task:0", "heartbeat", "unavailable")), log[-2000:]
