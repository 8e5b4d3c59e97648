"""Job processes forked from a process that has TensorFlow imported and its runtime not started.

Importing TensorFlow costs seconds a job; starting its runtime, choosing the logical devices and
the rest of a job's state cost well under one. A fork server (`python -m runner.fork_server
SOCKET [MODULE ...]`, one per Keras generation, which is fixed at import) imports TensorFlow, the
job's modules and the MODULEs once, then forks each job process it is asked for: the child gets
the job's own argv, environment, working directory, output pipe and session, and runs
`runner.job` as a fresh `python -m runner.job` would, with a runtime of its own.

`Spawner` is what `cluster.supervise` calls to start a job process; it returns a `ForkedProcess`,
which answers like the `subprocess.Popen` it stands for (pid, stdout, poll, wait, returncode).
A server that cannot start, dies or does not answer is replaced for the next job and this job
runs in a plain new process, with a note. No server or forked process outlives the runner: the
server dies with the process that started it, and its children with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from runner.result import STARTED_ENV

# How long a new server may take to import TensorFlow and the job's modules (a busy machine
# measured 20 s), and how long one that is up may take to answer a request before it counts as
# hung.
START_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 10.0
JOB_MODULE = "runner.job"
PREAMBLE_BYTES = 16384


def supported() -> bool:
    """Linux only: the forked processes rely on PR_SET_PDEATHSIG, and forking a process that
    has imported TensorFlow was measured here, not on macOS (where fork after import is unsafe)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


# ---- the server ---------------------------------------------------------------------------------

def preload(extra: Sequence[str]) -> None:
    """What every job process imports, imported once here: TensorFlow (its Keras generation from
    TF_USE_LEGACY_KERAS), the scenario's modules and the `extra` modules its jobs will import
    (app.server_imports). None of them starts the TensorFlow runtime at import, so each child
    still chooses its own devices."""
    import tensorflow  # noqa: F401

    from runner import job, scenario  # noqa: F401

    for module in extra:
        importlib.import_module(module)
    if "mlflow.tensorflow" in extra:
        # Saving an MLflow model checks its requirements against what is installed, from a map
        # of modules to packages MLflow builds once per process: 0.7 s of each job's, measured.
        from mlflow.utils import requirements_utils

        with contextlib.suppress(AttributeError):  # MLflow's own; only a warm-up if renamed
            requirements_utils._init_packages_to_modules_map()
    # What is imported lives as long as the server: out of the collector's sight, a job's
    # gc.collect (Keras' clear_session, the scenario's fresh session) walks only its own objects
    # (0.4-0.5 s less each, measured), and its pages stay shared with the server.
    gc.freeze()


def serve(path: str, extra: Sequence[str]) -> None:
    """Accept requests on the Unix socket `path` and fork a job process for each; tell each
    requester its process's pid, then its exit status. Single-threaded, so that each child's
    PR_SET_PDEATHSIG refers to this process's one lasting thread."""
    from runner import cluster

    cluster.die_with_parent()
    for s in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C and scancel are for the jobs, not for us:
        signal.signal(s, signal.SIG_IGN)      # dying here would kill every child (PDEATHSIG)
    preload(extra)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    os.dup2(2, 1)  # nobody reads the pipe after this line: later output goes to the log
    while True:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    pid = _fork(conn, listener, [wake_r, wake_w, *children.values()])
                except Exception as e:  # a bad request ends that request, not the server
                    with contextlib.suppress(OSError):
                        _send(conn, {"error": f"{type(e).__name__}: {e}"})
                    conn.close()
                    continue
                children[pid] = conn
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
        _reap(children)


def _fork(conn: socket.socket, listener: socket.socket, inherited: list[Any]) -> int:
    """Read one request (argv, env, cwd, and the pipe for the job's output), fork its process."""
    conn.settimeout(ANSWER_TIMEOUT_S)
    request, out_fd = _receive_request(conn)
    conn.settimeout(None)
    sys.stdout.flush()
    sys.stderr.flush()
    server = os.getpid()
    pid = os.fork()
    if pid == 0:  # the job process
        try:
            listener.close()
            for item in inherited:
                if isinstance(item, int):
                    os.close(item)
                else:
                    item.close()
            conn.close()
            _become_job(request, out_fd, server)
        finally:
            os._exit(70)  # _become_job never returns; an error before the job is EX_SOFTWARE
    os.close(out_fd)
    _send(conn, {"pid": pid})
    return pid


def _become_job(request: Mapping[str, Any], out_fd: int, server: int) -> None:
    """In the forked child: the state a fresh `python -m runner.job ARGV` would have, then the
    job; exits with its code."""
    from runner import cluster

    # First: die with the server, which dies with the runner. The server's pid, not getppid():
    # if the server died already, getppid() is 1 and die_with_parent exits at once.
    os.environ[cluster.PARENT_ENV] = str(server)
    cluster.die_with_parent()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()  # its own process group, as Popen(start_new_session=True) gives
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[cluster.PARENT_ENV] = str(server)  # job.main asks again: same answer
    os.environ[STARTED_ENV] = "forked"
    os.chdir(request["cwd"])
    import random

    import numpy as np

    random.seed()  # a fresh process's unseeded state, not the server's
    np.random.seed()
    from runner import job

    sys.argv = [job.__file__, *request["argv"]]
    code = 1
    try:
        code = job.main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - as Python reports an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(children: dict[int, socket.socket]) -> None:
    """Tell the requester of each child that ended its exit status (as Popen.returncode)."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
            conn.close()


# ---- the wire: length-prefixed JSON, the output pipe passed along the request -----------------

def _send(conn: socket.socket, message: Mapping[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(conn, [frame], fds)
    else:
        conn.sendall(frame)


def _receive_request(conn: socket.socket) -> tuple[dict[str, Any], int]:
    chunk, fds, _, _ = socket.recv_fds(conn, 1 << 16, 1)
    if len(fds) != 1:
        raise ValueError("a request comes with one file descriptor, the job's output")
    data = chunk
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        more = conn.recv(1 << 16)
        if not more:
            raise ValueError("the request ended early")
        data += more
    (size,) = struct.unpack("!I", data[:4])
    return json.loads(data[4:4 + size]), fds[0]


class _Reader:
    """Messages from the server on one connection, without blocking unless asked to."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.buffer, self.closed = conn, b"", False

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message; None if none came within `timeout` (0: do not wait) or the server
        closed the connection (then `closed`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 4:
                (size,) = struct.unpack("!I", self.buffer[:4])
                if len(self.buffer) >= 4 + size:
                    message = json.loads(self.buffer[4:4 + size])
                    self.buffer = self.buffer[4 + size:]
                    return message
            if self.closed:
                return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.conn.settimeout(left)
            try:
                data = self.conn.recv(1 << 16)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError:
                data = b""
            self.buffer += data
            if not data:
                self.closed = True


# ---- the runner's side ------------------------------------------------------------------------

class ServerFailed(RuntimeError):
    """The fork server did not start, died, or did not answer in time."""


class ForkedProcess:
    """A job process the server forked, as `supervise` uses a Popen: pid (also its process
    group), stdout (its output, until it exits), poll(), wait(), returncode (negative: killed
    by that signal)."""

    def __init__(self, conn: socket.socket, pid: int, stdout: IO[bytes]) -> None:
        self.pid, self.stdout, self.returncode = pid, stdout, None
        self._reader = _Reader(conn)
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

    def __init__(self, generation: str, extra: Sequence[str]) -> None:
        self.generation = generation
        self.directory = Path(tempfile.mkdtemp(prefix=f"runner-fork-{generation}-"))
        self.path = str(self.directory / "socket")
        self.log = self.directory / "server.log"
        from runner import cluster, redact

        env = {**redact.environ(), "TF_USE_LEGACY_KERAS": "1" if generation == "legacy" else "0",
               "PYTHONUNBUFFERED": "1", cluster.PARENT_ENV: str(os.getpid())}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # as runtime.prepare sets it
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runner.fork_server", self.path, *extra], env=env,
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
            _send(conn, {"argv": argv, "env": dict(env), "cwd": cwd}, [write_end])
            os.close(write_end)
            write_end = -1
            answer = _Reader(conn).next(timeout=ANSWER_TIMEOUT_S)
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


_servers: dict[str, ForkServer] = {}
_broken: dict[str, str] = {}  # generation -> why its server could not start: not tried again


def _start(generation: str, extra: Sequence[str]) -> ForkServer | None:
    try:
        server = ForkServer(generation, extra)
    except OSError as e:  # no temporary folder, no process: as a server that never started
        _broken[generation] = f"{type(e).__name__}: {e}"
        return None
    _servers[generation] = server
    return server


def warm(generations: list[str], extra: Sequence[str]) -> None:
    """Start the servers these generations need, if not started yet: they import while the
    runner does its own start (MLflow's run, the job's config); `extra`: modules the jobs import."""
    for generation in generations:
        if generation not in _servers and generation not in _broken:
            _start(generation, extra)


@atexit.register
def stop_all() -> None:
    while _servers:
        _servers.popitem()[1].stop()
    _broken.clear()


class Spawner:
    """Starts a job process for `supervise`: forked by the generation's server, or a plain new
    process when there is none or it fails. `notes`: what failed, for the job's result."""

    def __init__(self, generation: str, extra: Sequence[str] = ()) -> None:
        self.generation, self.extra = generation, tuple(extra)
        self.notes: list[str] = []

    def __call__(self, command: list[str], env: Mapping[str, str]) -> Any:
        if command[1:3] == ["-m", JOB_MODULE] and self.generation not in _broken:
            warm([self.generation], self.extra)
            server = _servers.get(self.generation)
            try:
                if server is None:
                    raise ServerFailed(_broken[self.generation])
                if not server.alive():
                    raise ServerFailed(f"it exited with code {server.process.returncode}")
                return server.spawn(command[3:], env, os.getcwd())
            except ServerFailed as e:
                self._replace(server, str(e))
        from runner import cluster

        return cluster.new_process(command, env)

    def _replace(self, server: ForkServer | None, why: str) -> None:
        """This job runs in a new process; the next gets a new server (started now, so that it
        imports while this job runs), unless this one never started: then none is tried again."""
        never_ready = server is None or not server.ready
        if server is not None:
            server.stop()
            _servers.pop(self.generation, None)
        if never_ready:
            _broken[self.generation] = why
            after = f"no fork server for keras={self.generation} in this process from now on"
        else:
            _start(self.generation, self.extra)
            after = "a new server takes the next job"
        note = (f"fork server (keras={self.generation}) failed: {why}; this job process "
                f"started anew, {after}")
        print(f"Note: {note}", file=sys.stderr, flush=True)
        self.notes.append(note)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
