"""A job's processes, started and watched: its one process, or (cluster=local) its worker
processes on this machine. Ctrl-C/SIGTERM is passed on, a failed or hung worker stops the
others after a grace, and no process outlives `supervise`.

What went wrong comes back as a `Failure`, a kind and a message, for the job's result.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

from runner.core import console, interrupt, redact
from runner.core.cluster import chief_address
from runner.core.files import RESULT
from runner.core.lifetime import PARENT_ENV


class WorkerFailed(RuntimeError):
    """A worker of a multi-worker job died, failed or hung; the others were stopped."""


class ClusterStartTimeout(RuntimeError):
    """The cluster did not come together within cluster.startup_timeout_s."""


class FailureKind(Enum):
    EXITED = "exited"  # a worker exited with an error (or was killed)
    HUNG = "hung"  # workers still running after cluster.timeout_s
    STARTUP = "startup"  # the cluster did not come together in cluster.startup_timeout_s


@dataclass
class Failure:
    """What `supervise` saw go wrong with the job's processes."""

    kind: FailureKind
    message: str

    def error(self) -> RuntimeError:
        """The exception a job's result records for it."""
        if self.kind is FailureKind.STARTUP:
            return ClusterStartTimeout(self.message)
        return WorkerFailed(self.message)

    def __str__(self) -> str:
        """As a note says it: 'worker 1 exited with code -9; see worker-1.log'."""
        if self.kind is FailureKind.STARTUP:
            return f"{ClusterStartTimeout.__name__}: {self.message}"
        return self.message


@dataclass
class Worker:
    index: int
    output_dir: Path  # the chief's: the job's output dir; the others': temporary
    log: Path
    process: Any = None  # a subprocess.Popen, or what answers like one (a ForkedProcess)


# Starts one job process: (command, env) -> a Popen or what answers like one (its pid is its
# process group, as with start_new_session=True). None: subprocess.Popen, `new_process`.
Spawn = Callable[[list[str], Mapping[str, str]], Any] | None


def new_process(command: list[str], env: Mapping[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def supervise(workers: list[Worker], command: list[str], env: Mapping[str, str],
              chief_env: Mapping[str, str], timeout_s: float | None, grace_s: float,
              worker_env: Callable[[Worker], Mapping[str, str]] = lambda w: {},
              on_start: Callable[[], Any] = lambda: None,
              quiet: bool = True,
              startup_timeout_s: float | None = None,
              spawn: Spawn = None) -> tuple[int, Failure | None]:
    """Run `command --output-dir DIR` as each worker (a job's one process, or its local
    cluster), each in its own process group and set to die with this process.

    The chief's output goes to the console and its job.log, each other worker's to its
    worker-<i>.log. When one worker fails, the others get `grace_s` to record their own error,
    then all are stopped; so are workers still running after `timeout_s`. A SIGINT/SIGTERM this
    process noted (runner.core.interrupt) is passed on to every worker, which records it, with
    the same grace. A multi-worker job whose first process has not seen its cluster come
    together within `startup_timeout_s` (its result.json's `cluster_start`) is stopped too:
    TensorFlow would wait an hour. No worker outlives this call. `spawn` starts each process (a
    new one, or one forked by the fork server). Returns the chief's exit code and, if a worker
    failed or hung, what happened."""
    copiers = []
    spawn = spawn or new_process
    try:
        for w in workers:
            w.process = spawn(
                [*command, "--output-dir", str(w.output_dir)],
                {**env, **(chief_env if w.index == 0 else {}), **worker_env(w),
                 PARENT_ENV: str(os.getpid())})
            copiers.append(threading.Thread(
                target=copy_output, args=(w.process.stdout, w.log, w.index == 0, quiet),
                daemon=True))
            copiers[-1].start()
        on_start()
        failure = watch(workers, timeout_s, grace_s, startup_timeout_s)
    finally:
        for w in workers:
            _stop(w)
        for copier in copiers:
            copier.join(timeout=5)
    return workers[0].process.returncode, failure


POLL_S = 0.1


def watch(workers: list[Worker], timeout_s: float | None, grace_s: float,
          startup_timeout_s: float | None = None) -> Failure | None:
    """Wait for every worker; the first failure (or the timeout, the startup timeout, or an
    interruption), and stop waiting after grace."""
    deadline = time.monotonic() + timeout_s if timeout_s is not None else float("inf")
    # The startup window opens when the chief's job process starts forming the cluster (its
    # result.json's cluster_start), not at its launch: importing TensorFlow on a busy machine
    # can take longer than a short window (cluster.timeout_s bounds that part).
    watch_startup, startup, looked = bool(startup_timeout_s), None, 0.0
    stop_at: float | None = None
    failure: Failure | None = None
    forwarded = False
    while any(w.process.poll() is None for w in workers):
        now = time.monotonic()
        stopped = interrupt.received()
        if stopped is not None and not forwarded:
            forwarded = True
            for w in workers:
                _signal(w, stopped.signum)
            stop_at = min(stop_at or float("inf"), now + grace_s)
        if failure is None and stopped is None:
            failure = _failed(workers)
            if failure is not None:
                stop_at = now + grace_s
            elif now > deadline:
                running = [w.index for w in workers if w.process.poll() is None]
                failure = Failure(FailureKind.HUNG, f"worker(s) {running} still running after "
                                                    f"cluster.timeout_s={timeout_s:g} s: a hung "
                                                    "worker; stopped")
                stop_at = now
            elif watch_startup and now - looked >= 0.5:
                looked = now
                waiting = _still_waiting(workers[0], startup_timeout_s)
                if waiting is None:
                    watch_startup = False  # joined: nothing more to watch for
                elif waiting != NOT_FORMING:
                    startup = startup or now + startup_timeout_s
                    if now > startup:
                        failure, stop_at = Failure(FailureKind.STARTUP, waiting), now
        if stop_at is not None and now >= stop_at:
            running = [w.index for w in workers if w.process.poll() is None]
            if running and failure is not None and failure.kind is FailureKind.EXITED:
                failure.message += (f"; worker(s) {running} still running {grace_s:g} s later: "
                                    "stopped")
            break
        time.sleep(POLL_S)
    if failure is None and interrupt.received() is None:
        failure = _failed(workers)  # all ended between two looks: one may have died first
    return failure


NOT_FORMING = "not forming the cluster yet"


def _still_waiting(worker: Worker, seconds: float) -> str | None:
    """What the worker's job process still waits for after `seconds`, from its result.json; None
    once its cluster came together."""
    try:
        start = json.loads((worker.output_dir / RESULT).read_text()).get("cluster_start")
    except (OSError, ValueError):
        start = None
    if start and start.get("joined"):
        return None
    if not start:
        return NOT_FORMING
    me, spec = start["me"], start["spec"]
    others = ", ".join(a for tasks in spec.values() for a in tasks if a != me)
    whom = (f"the chief at {chief_address(spec)}" if me != chief_address(spec)
            else f"the other workers ({others})")
    return (f"worker {me} waited cluster.startup_timeout_s={seconds:g} s for {whom}: it never "
            "joined (not started, dead, or unreachable); stopped")


def _failed(workers: list[Worker]) -> Failure | None:
    """Which workers exited with an error; one killed by a signal first, the likely cause."""
    failed = sorted((w for w in workers if w.process.poll() not in (None, 0)),
                    key=lambda w: (w.process.returncode >= 0, w.index))
    message = "; ".join(
        f"worker {w.index}{' (chief)' if w.index == 0 else ''} exited with code "
        f"{w.process.returncode}; see {w.log.name}" for w in failed)
    return Failure(FailureKind.EXITED, message) if message else None


def _signal(w: Worker, signum: int) -> None:
    if w.process is not None and w.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(w.process.pid, signum)


def _stop(w: Worker) -> None:
    """Kill the worker's whole process group (TensorFlow starts threads, not children, but a
    process group leaves nothing behind either way) and reap it."""
    if w.process is None:
        return
    _signal(w, signal.SIGKILL)
    w.process.wait()


def copy_output(stream: IO[bytes], log: Path, to_console: bool, quiet: bool = True) -> None:
    """A process's output, secrets masked, into `log` (appended, all of it) and, for the chief,
    the console (quiet: without TensorFlow's repeated start-up noise, runner.core.console)."""
    masked = redact.Stream()
    noise = console.Filter() if quiet else None
    with open(log, "ab") as out:
        # Chunks, not lines: Keras progress bars rewrite one line with '\r'.
        while True:
            chunk = stream.read1(65536)
            data = masked.feed(chunk) if chunk else masked.flush()
            if to_console:
                shown = data if noise is None else (
                    noise.feed(data) + (b"" if chunk else noise.flush()))
                sys.stdout.buffer.write(shown)
                sys.stdout.buffer.flush()
            out.write(data)
            out.flush()  # job.log is read while the job runs (tail -f, the tests)
            if not chunk:
                break
