"""The supervisor's watch loop (runner.launcher.supervise.watch), with fake processes where a
job's would be: a failed worker stops the others after the grace, a hung one after the timeout, a
cluster that never forms after the startup timeout, and a noted Ctrl-C is passed on. Then
`supervise` itself with two real, tiny processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from runner.core import interrupt
from runner.launcher import supervise as sv
from runner.launcher.supervise import Failure, FailureKind, Worker


class FakeProcess:
    """Answers like a Popen: runs until `ends_at` (monotonic; None: until signalled), then has
    `code`. A signal ends it at once with -signum."""

    def __init__(self, code: int = 0, after_s: float | None = 0.0) -> None:
        self.pid, self.code = -1, code
        self.ends_at = None if after_s is None else time.monotonic() + after_s
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        if self.returncode is None and self.ends_at is not None and (
                time.monotonic() >= self.ends_at):
            self.returncode = self.code
        return self.returncode

    def signal(self, signum: int) -> None:
        self.signals.append(signum)
        if self.returncode is None:
            self.returncode = -signum

    def wait(self, timeout: float | None = None) -> int:
        while self.poll() is None:
            time.sleep(0.01)
        return self.returncode


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    """Workers of fake processes; signals go to the fakes (never to a real process group)."""
    monkeypatch.setattr(sv, "POLL_S", 0.01)
    monkeypatch.setattr(sv, "_signal", lambda w, signum: w.process.signal(signum)
                        if w.process.poll() is None else None)

    def make(*processes: FakeProcess) -> list[Worker]:
        workers = []
        for i, process in enumerate(processes):
            (tmp_path / str(i)).mkdir()
            workers.append(Worker(i, tmp_path / str(i), tmp_path / f"worker-{i}.log", process))
        return workers

    yield make
    interrupt._received.clear()


def test_workers_that_all_pass_are_no_failure(fakes):
    assert sv.watch(fakes(FakeProcess(0, 0.05), FakeProcess(0, 0.1)), None, 1.0) is None


def test_a_failed_worker_stops_the_others_after_the_grace(fakes):
    workers = fakes(FakeProcess(after_s=None), FakeProcess(1, 0.05))
    start = time.monotonic()
    failure = sv.watch(workers, None, grace_s=0.2)
    assert 0.2 <= time.monotonic() - start < 2
    assert failure == Failure(FailureKind.EXITED, "worker 1 exited with code 1; see "
                                                  "worker-1.log; worker(s) [0] still running "
                                                  "0.2 s later: stopped")
    assert isinstance(failure.error(), sv.WorkerFailed)


def test_a_worker_killed_by_a_signal_is_named_first(fakes):
    workers = fakes(FakeProcess(1, 0.0), FakeProcess(-9, 0.0))
    failure = sv.watch(workers, None, grace_s=0.1)
    assert failure.message == ("worker 1 exited with code -9; see worker-1.log; worker 0 "
                               "(chief) exited with code 1; see worker-0.log")


def test_hung_workers_are_stopped_at_the_timeout(fakes):
    workers = fakes(FakeProcess(after_s=None), FakeProcess(after_s=None))
    failure = sv.watch(workers, timeout_s=0.1, grace_s=5.0)
    assert failure.kind is FailureKind.HUNG
    assert failure.message == ("worker(s) [0, 1] still running after cluster.timeout_s=0.1 s: a "
                               "hung worker; stopped")


def test_a_cluster_that_never_forms_is_stopped_naming_whom_it_waited_for(fakes):
    workers = fakes(FakeProcess(after_s=None))
    spec = {"worker": ["127.0.0.1:1001", "127.0.0.1:1002"]}
    (workers[0].output_dir / "result.json").write_text(json.dumps(
        {"cluster_start": {"spec": spec, "me": "127.0.0.1:1002", "joined": False}}))
    failure = sv.watch(workers, None, 5.0, startup_timeout_s=0.1)
    assert failure.kind is FailureKind.STARTUP
    assert "waited cluster.startup_timeout_s=0.1 s for the chief at 127.0.0.1:1001" in str(
        failure.message)
    assert str(failure).startswith("ClusterStartTimeout: worker 127.0.0.1:1002")
    assert isinstance(failure.error(), sv.ClusterStartTimeout)


def test_a_cluster_that_formed_is_not_watched_for_its_start(fakes):
    workers = fakes(FakeProcess(0, 0.3))
    (workers[0].output_dir / "result.json").write_text(json.dumps(
        {"cluster_start": {"spec": {}, "me": "a:1", "joined": True}}))
    assert sv.watch(workers, None, 5.0, startup_timeout_s=0.05) is None


def test_a_noted_interruption_is_passed_to_every_worker_then_stops_them(fakes):
    """The workers record it themselves: no failure of the supervisor's own."""
    workers = fakes(FakeProcess(after_s=None), FakeProcess(after_s=None))
    interrupt._received[:] = [signal.SIGTERM]
    assert sv.watch(workers, None, grace_s=0.1) is None
    assert [w.process.signals for w in workers] == [[signal.SIGTERM], [signal.SIGTERM]]


def test_supervise_runs_real_processes_keeps_their_output_and_masks_secrets(tmp_path,
                                                                             monkeypatch, capfd):
    monkeypatch.setenv("SOME_API_TOKEN", "tok-1234567")
    script = ("import os, sys; print('from', os.environ['WHO'], os.environ['SOME_API_TOKEN']); "
              "sys.exit(int(os.environ['CODE']))")
    workers = [Worker(0, tmp_path, tmp_path / "job.log"),
               Worker(1, tmp_path, tmp_path / "worker-1.log")]
    code, failure = sv.supervise(
        workers, [sys.executable, "-c", script], dict(os.environ), {"WHO": "chief"},
        timeout_s=60, grace_s=5, worker_env=lambda w: {"CODE": str(w.index * 3),
                                                       "WHO": f"w{w.index}"})
    assert code == 0
    assert failure == Failure(FailureKind.EXITED, "worker 1 exited with code 3; see "
                                                  "worker-1.log")
    # The chief's own env wins over the job's; each log has its process's output, masked.
    assert (tmp_path / "job.log").read_text() == "from w0 ***\n"
    assert (tmp_path / "worker-1.log").read_text() == "from w1 ***\n"
    assert capfd.readouterr().out == "from w0 ***\n"  # the chief's only, on the console
    assert all(w.process.returncode is not None for w in workers)


def test_output_dir_is_passed_to_each_process(tmp_path):
    seen = []

    def spawn(command, env):
        seen.append(command[-2:])
        return sv.new_process([sys.executable, "-c", "pass"], env)

    sv.supervise([Worker(0, Path("/x"), tmp_path / "job.log")], ["job"], {}, {}, None, 1,
                 spawn=spawn)
    assert seen == [["--output-dir", "/x"]]
