"""Helpers that run the runner the way users do: `python -m runner` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tiny but real: digits, one epoch each side, quiet Keras. MLflow tracking is tested on its own
# (tests/test_tracking.py) and off elsewhere, so that tests never write the repository's store.
FAST = ["train.epochs=1", "continue_epochs=1", "verbose=0", "mlflow.enabled=false"]

# A TFDS data_dir holding a small prepared `mnist` (random pixels), written by TFDS itself, which
# the real builder then reads offline: `python -c PREPARE_MNIST DIR`.
PREPARE_MNIST = """
import sys
import numpy as np, tensorflow as tf, tensorflow_datasets as tfds
rng = np.random.default_rng(0)
def split(n):
    return tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
        "label": rng.integers(0, 10, n)})
tfds.dataset_builders.store_as_tfds_dataset(
    name="mnist", version="3.0.1", features=tfds.builder("mnist").info.features,
    split_datasets={"train": split(256), "test": split(128)}, data_dir=sys.argv[1])
"""


# What MLflow reads as "a CI or a test": with any of them set it turns its telemetry off
# (mlflow/telemetry/utils.py). pytest sets PYTEST_CURRENT_TEST, which every `python -m runner`
# a test starts inherits; as_users_run() leaves them out, so that telemetry runs as users have it.
CI_VARIABLES = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "CIRCLECI", "GITLAB_CI",
                "JENKINS_URL", "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER",
                "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION",
                "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID",
                "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


# Test files whose tests must all run on one xdist worker: test_slurm.py's module fixture starts
# and stops one SLURM cluster, which a second worker's copy of the fixture would stop under the
# first one's jobs (CI once failed so).
ONE_WORKER = ("tests/test_slurm.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """ONE_WORKER's files first: their tests run one after another on one worker, which should
    not be the last thing the suite waits for."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in ONE_WORKER)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` with ONE_WORKER's files as groups. The `xdist_group` mark would say it,
    but pytest-xdist 3.8 marks a group by rewriting node ids, which pytest 9.2 no longer allows:
    the mark groups nothing (pytest-dev/pytest-xdist#1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FilesOnOneWorker(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return path if path in ONE_WORKER else super()._split_scope(nodeid)

    return FilesOnOneWorker(config, log)


def as_users_run(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell: os.environ without what marks a test or a CI."""
    return {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in CI_VARIABLES}


# RUNNER_TESTS_FORK_SERVER=false: every job the tests start that does not choose for itself
# runs in a new process (runner.fork_server=false), e.g. to run the scenario tests as before
# the fork server: RUNNER_TESTS_FORK_SERVER=false python -m pytest -n 2 tests/test_scenario.py
FORK_SERVER = os.environ.get("RUNNER_TESTS_FORK_SERVER")


def runner(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
           users_env: bool = False):
    """`python -m runner ARGS` from the repository root; returns the CompletedProcess.
    users_env=True: with MLflow's telemetry on, as in a user's shell (see as_users_run)."""
    chosen = any(a.startswith("runner.fork_server=") for a in args)
    forced = [f"runner.fork_server={FORK_SERVER}"] if FORK_SERVER and not chosen else []
    return subprocess.run(
        [sys.executable, "-m", "runner", *args, *forced],
        cwd=ROOT, env=as_users_run(env) if users_env else {**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )


def read_result(job_dir: Path) -> dict:
    return json.loads((job_dir / "result.json").read_text())


def fitting(job_dir: Path) -> bool:
    """Whether the job's process is past its data and in `train` again (building and fitting
    the model): a signal now lands in phase `train`. (Its first phase is `train` too, before the
    data: a signal sent then may land in `data`.)"""
    if not (job_dir / "result.json").exists():
        return False
    result = read_result(job_dir)
    return result.get("phase") == "train" and bool(result.get("data_sizes"))


def sweep_results(sweep_dir: Path) -> list[dict]:
    """Every job's result of a multirun, in job order."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [read_result(job) for job in jobs]


@pytest.fixture
def run_job(tmp_path):
    """Run one job into tmp_path/run; return (CompletedProcess, result)."""

    def _run(*overrides: str, env: dict[str, str] | None = None):
        job_dir = tmp_path / "run"
        proc = runner(f"hydra.run.dir={job_dir}", *FAST, *overrides, env=env)
        assert (job_dir / "result.json").exists(), proc.stdout + proc.stderr
        return proc, read_result(job_dir)

    return _run


@pytest.fixture
def run_sweep(tmp_path):
    """Run a multirun into tmp_path/sweep; return (CompletedProcess, [result per job])."""

    def _run(*overrides: str):
        sweep_dir = tmp_path / "sweep"
        proc = runner("-m", f"hydra.sweep.dir={sweep_dir}", *FAST, *overrides)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc, sweep_results(sweep_dir)

    return _run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# MLflow 3.17's server also starts a job runner and seven huey consumers (GenAI evaluation jobs,
# which the runner never uses): measured here, they keep a 2-core machine busy for seconds after
# start and made requests of the tests' servers time out. Off, except where a test says
# jobs=True to meet the server as users start it.
NO_SERVER_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class MlflowServer:
    """A real `mlflow server` (sqlite backend, proxied artifacts) on 127.0.0.1, which a test
    can stop and start again on the same port and store (a server that goes away)."""

    def __init__(self, base: Path, jobs: bool = False) -> None:
        self.base, self.port, self.jobs = base, free_port(), jobs
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts = base / "server-artifacts"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--backend-store-uri", f"sqlite:///{self.base}/server.db",
             "--artifacts-destination", str(self.artifacts), "--workers", "1"],
            env={**os.environ, **NO_SERVER_JOBS} if not self.jobs else None,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail("mlflow server did not become healthy")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (a server and its workers), SIGKILL if it outlives 20 s
    (a loaded machine can keep uvicorn's workers from shutting down in time)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    """A running MlflowServer, stopped at the end."""
    s = MlflowServer(tmp_path)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def mlflow_server(tmp_path):
    """(url, artifacts dir) of a running real `mlflow server`, started as users start it."""
    s = MlflowServer(tmp_path, jobs=True)
    s.start()
    yield s.url, s.artifacts
    s.stop()
