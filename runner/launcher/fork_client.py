"""Job processes forked from a process that has TensorFlow imported and its runtime not
started: the runner's side of the fork server (runner.launcher.fork_server).

Importing TensorFlow costs seconds a job; starting its runtime, choosing the logical devices and
the rest of a job's state cost well under one. So the runner starts one server per Keras
generation (fixed at import), which imports TensorFlow and the job's modules once, and asks it
for each job process.

`Spawner` is what `supervise` calls to start a job process; it returns a `ForkedProcess`,
which answers like the `subprocess.Popen` it stands for (pid, stdout, poll, wait, returncode).
A server that cannot start, dies or does not answer is replaced for the next job and this job
runs in a plain new process, with a note. No server or forked process outlives the runner: the
server dies with the process that started it, and its children with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from runner.core import redact
from runner.core.lifetime import PARENT_ENV
from runner.launcher import fork_wire as wire
from runner.launcher.supervise import new_process

SERVER_MODULE = "runner.launcher.fork_server"
JOB_MODULE = "runner.job"
# How long a new server may take to import TensorFlow and the job's modules (a busy machine
# measured 20 s).
START_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = wire.ANSWER_TIMEOUT_S
PREAMBLE_BYTES = 16384
# The Keras generations a local sweep's jobs import: each job's process starts their servers
# at its first job (runner.launcher.sweep sets it).
GENERATIONS_ENV = "RUNNER_SWEEP_GENERATIONS"


def supported() -> bool:
    """Linux only: the forked processes rely on PR_SET_PDEATHSIG, and forking a process that
    has imported TensorFlow was measured here, not on macOS (where fork after import is unsafe)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")



class ServerFailed(RuntimeError):
    """The fork server did not start, died, or did not answer in time."""


class ForkedProcess:
    """A job process the server forked, as `supervise` uses a Popen: pid (also its process
    group), stdout (its output, until it exits), poll(), wait(), returncode (negative: killed
    by that signal)."""

    def __init__(self, conn: socket.socket, pid: int, stdout: IO[bytes]) -> None:
        self.pid, self.stdout, self.returncode = pid, stdout, None
        self._reader = wire.Reader(conn)
        self._ended_at: float | None = None  # when it was first seen ended, its exit untold

    def poll(self) -> int | None:
        if self.returncode is None:
            self._update(self._reader.next(timeout=0))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code; a server that is gone, or says nothing for ANSWER_TIMEOUT_S after the
        process was killed, counts as the process killed (PDEATHSIG kills it with the server)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"forked job process {self.pid}", timeout)
            self._update(self._reader.next(timeout=left if left is not None else 1.0))
        return self.returncode

    def _update(self, message: dict[str, Any] | None) -> None:
        if message is not None and "exit" in message:
            self.returncode = int(message["exit"])
        elif self._reader.closed:  # the server died: so did its children
            self.returncode = -signal.SIGKILL
        elif self._hung_server():
            self.returncode = -signal.SIGKILL
        if self.returncode is not None:
            self._reader.conn.close()

    def _hung_server(self) -> bool:
        """The process ended (a zombie, or gone) and the server has not said so for
        ANSWER_TIMEOUT_S: the server hangs; the job counts as killed."""
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = "gone"
        if state not in ("Z", "gone"):
            self._ended_at = None
            return False
        self._ended_at = self._ended_at or time.monotonic()
        return time.monotonic() - self._ended_at > ANSWER_TIMEOUT_S


class ForkServer:
    """One server process for one Keras generation, started by this process; it imports the
    `extra` modules too."""

    def __init__(self, generation: str, extra: Sequence[str], python: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.generation = generation
        self.directory = Path(tempfile.mkdtemp(prefix=f"runner-fork-{generation}-"))
        self.path = str(self.directory / "socket")
        self.log = self.directory / "server.log"
        environ = {**redact.environ(), **(env or {}),
                   "TF_USE_LEGACY_KERAS": "1" if generation == "legacy" else "0",
                   "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
        environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # as runtime.prepare sets it
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [python or sys.executable, "-m", SERVER_MODULE, self.path, *extra], env=environ,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True)  # Ctrl-C goes to the runner, which passes it on
        self.ready = False
        self.preamble = b""

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until the server says "ready" (it imported everything and listens)."""
        if self.ready:
            return
        deadline, seen, fd = time.monotonic() + timeout, b"", self.process.stdout.fileno()
        while b"ready" not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerFailed(f"it was not ready after {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            data = os.read(fd, 1024) if readable else b""
            seen += data
            if readable and not data:
                self.process.wait()
                raise ServerFailed(f"it exited with code {self.process.returncode} while "
                                   f"starting: {self.tail()}")
        self.ready = True
        # What importing printed (TensorFlow's start-up lines): each forked job's output begins
        # with it, as a new process's would, so job.log keeps it.
        with contextlib.suppress(OSError):
            self.preamble = self.log.read_bytes()[-PREAMBLE_BYTES:]

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-3:]) or "no output"
        return "no output"

    def spawn(self, argv: list[str], env: Mapping[str, str], cwd: str) -> ForkedProcess:
        self.wait_ready()
        read_end, write_end = os.pipe()
        os.write(write_end, self.preamble)  # below a pipe's capacity (PREAMBLE_BYTES)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(ANSWER_TIMEOUT_S)
            conn.connect(self.path)
            wire.send(conn, {"argv": argv, "env": dict(env), "cwd": cwd}, [write_end])
            os.close(write_end)
            write_end = -1
            answer = wire.Reader(conn).next(timeout=ANSWER_TIMEOUT_S)
        except OSError as e:
            conn.close()
            os.close(read_end)
            raise ServerFailed(f"{type(e).__name__}: {e}") from e
        finally:
            if write_end >= 0:
                os.close(write_end)
        if not answer or "pid" not in answer:
            conn.close()
            os.close(read_end)
            why = answer.get("error") if answer else f"no answer in {ANSWER_TIMEOUT_S:g} s"
            raise ServerFailed(why)
        return ForkedProcess(conn, int(answer["pid"]), os.fdopen(read_end, "rb"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill the server (its children, if any were left, die with it) and remove its socket."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process.stdout.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            self.log.unlink()
            self.directory.rmdir()


# A server per Keras generation and interpreter: ("v3", None) is this environment's Keras 3;
# ("legacy", "/…/envs/tf2.15-…/bin/python") another release's environment
# (runner.launcher.environments).
Kind = tuple[str, str | None]
_servers: dict[Kind, ForkServer] = {}
_broken: dict[Kind, str] = {}  # why its server could not start: not tried again


def _start(kind: Kind, extra: Sequence[str],
           env: Mapping[str, str] | None = None) -> ForkServer | None:
    try:
        server = ForkServer(kind[0], extra, kind[1], env)
    except OSError as e:  # no temporary folder, no process: as a server that never started
        _broken[kind] = f"{type(e).__name__}: {e}"
        return None
    _servers[kind] = server
    return server


def warm(generations: list[str], extra: Sequence[str], python: str | None = None,
         env: Mapping[str, str] | None = None) -> None:
    """Start the servers these generations need, if not started yet: they import while the
    runner does its own start (MLflow's run, the job's config); `extra`: modules the jobs import;
    `python`: another environment's interpreter (`env`: what it needs to find the runner)."""
    for generation in generations:
        kind = (generation, python)
        if kind not in _servers and kind not in _broken:
            _start(kind, extra, env)


@atexit.register
def stop_all() -> None:
    while _servers:
        _servers.popitem()[1].stop()
    _broken.clear()


class Spawner:
    """Starts a job process for `supervise`: forked by the generation's server, or a plain new
    process when there is none or it fails. `notes`: what failed, for the job's result."""

    def __init__(self, generation: str, extra: Sequence[str] = (), python: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.generation, self.extra = generation, tuple(extra)
        self.kind: Kind = (generation, python)
        self.env = dict(env or {})
        self.notes: list[str] = []

    def __call__(self, command: list[str], env: Mapping[str, str]) -> Any:
        if command[1:3] == ["-m", JOB_MODULE] and self.kind not in _broken:
            warm([self.generation], self.extra, self.kind[1], self.env)
            server = _servers.get(self.kind)
            try:
                if server is None:
                    raise ServerFailed(_broken[self.kind])
                if not server.alive():
                    raise ServerFailed(f"it exited with code {server.process.returncode}")
                return server.spawn(command[3:], env, os.getcwd())
            except ServerFailed as e:
                self._replace(server, str(e))
        return new_process(command, env)

    def _replace(self, server: ForkServer | None, why: str) -> None:
        """This job runs in a new process; the next gets a new server (started now, so that it
        imports while this job runs), unless this one never started: then none is tried again."""
        never_ready = server is None or not server.ready
        if server is not None:
            server.stop()
            _servers.pop(self.kind, None)
        if never_ready:
            _broken[self.kind] = why
            after = f"no fork server for keras={self.generation} in this process from now on"
        else:
            _start(self.kind, self.extra, self.env)
            after = "a new server takes the next job"
        note = (f"fork server (keras={self.generation}) failed: {why}; this job process "
                f"started anew, {after}")
        print(f"Note: {note}", file=sys.stderr, flush=True)
        self.notes.append(note)

