"""runner.launcher.fork_server: job processes forked from a process that imported TensorFlow
once. The numbers must not change, and a server that dies or hangs must cost a job nothing but
time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from helpers.run import FAST, ROOT, read_result, runner, sweep_results

from runner.launcher import fork_client
from runner.tracking import matrix

# What a job measures; nothing of it may depend on how its process started.
MEASURED = ("status", "accuracy", "max_abs_diff", "history", "resume", "replicas", "optimizer",
            "distributed_variables", "keras_module", "load_keras_module")


def untimed(value):
    """A measurement without its wall-clock fields (`seconds`): those differ run to run."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "seconds"}
    return value


def test_forked_and_new_job_processes_give_bit_identical_results(tmp_path):
    """One sweep, each combination twice: forked (runner.fork_server=true) and in a new process
    (false). Keras 3 and tf_keras, one and two replicas: the same numbers to the last bit."""
    sweep_dir = tmp_path / "sweep"
    proc = runner("-m", f"hydra.sweep.dir={sweep_dir}", *FAST, "keras=v3,legacy",
                  "strategy=default,mirrored", "runner.fork_server=true,false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "fork server" not in proc.stdout + proc.stderr  # no note: no server failed
    results = sweep_results(sweep_dir)
    assert len(results) == 8
    by_start: dict[str, dict[tuple, dict]] = {"forked": {}, "new": {}}
    for r in results:
        assert r["status"] == "passed", r["error"]
        forked = "runner.fork_server=true" in [o.lower() for o in r["overrides"]]
        assert r["process"]["start"] == ("forked" if forked else "new")
        by_start[r["process"]["start"]][(r["keras"], r["strategy"])] = r
    assert by_start["forked"].keys() == by_start["new"].keys()
    assert {r["replicas"]["train"] for r in results} == {1, 2}
    for combination, forked in by_start["forked"].items():
        new = by_start["new"][combination]
        for key in MEASURED:
            assert untimed(forked[key]) == untimed(new[key]), (combination, key)
        assert matrix.outcome(matrix.record_from_result(forked)) == matrix.outcome(
            matrix.record_from_result(new))


def test_a_dead_or_hung_server_costs_the_job_a_new_process_not_its_result(tmp_path):
    """The server is killed between jobs: the next job runs in a new process, with a note, and
    the one after is forked again, by a new server. A server that hangs (SIGSTOP) likewise, once
    ANSWER_TIMEOUT_S has passed."""
    command = [sys.executable, "-m", fork_client.JOB_MODULE, "--help"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    spawner = fork_client.Spawner("v3")
    try:
        forked = spawner(command, env)
        assert isinstance(forked, fork_client.ForkedProcess)
        assert b"usage: python -m runner.job" in forked.stdout.read()
        assert forked.wait() == 0
        first = fork_client._servers[("v3", None)]
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()

        fallback = spawner(command, env)
        assert isinstance(fallback, subprocess.Popen)  # a new process: this job is not lost
        assert fallback.wait(timeout=120) == 0 and b"usage:" in fallback.stdout.read()
        assert len(spawner.notes) == 1 and "keras=v3" in spawner.notes[0]
        second = fork_client._servers[("v3", None)]  # started at once, for the next job
        assert second.process.pid != first.process.pid

        again = spawner(command, env)
        assert isinstance(again, fork_client.ForkedProcess)
        assert again.wait() == 0

        os.kill(second.process.pid, signal.SIGSTOP)  # alive, but answers nothing
        start = time.monotonic()
        hung = spawner(command, env)
        assert isinstance(hung, subprocess.Popen)
        assert time.monotonic() - start < fork_client.ANSWER_TIMEOUT_S + 10
        assert hung.wait(timeout=120) == 0
        assert len(spawner.notes) == 2 and "no answer" in spawner.notes[1]
        assert second.process.poll() is not None  # the hung server was stopped, not left
    finally:
        fork_client.stop_all()


def test_no_process_or_file_of_the_server_is_left_after_a_job(tmp_path):
    """The runner stops its fork server when it ends: no process, no socket folder."""
    temporary = tmp_path / "t"  # the runner's TMPDIR: where the server's socket folder goes
    temporary.mkdir()
    proc = subprocess.run([sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path}/run",
                           *FAST], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(temporary)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert read_result(tmp_path / "run")["process"]["start"] == "forked"
    assert not [p.name for p in temporary.iterdir() if p.name.startswith("runner-fork-")]
    servers = subprocess.run(["pgrep", "-f", f"runner.launcher.fork_server {temporary}"],
                             capture_output=True, text=True).stdout
    assert not servers
