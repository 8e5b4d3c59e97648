"""A real `mlflow server` on 127.0.0.1 for the tests, which can stop and start again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


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
