"""The fork server: `python -m runner.launcher.fork_server SOCKET [MODULE ...]`, one per Keras
generation (fixed at import), started by runner.launcher.fork_client.

It imports TensorFlow, the job's modules and the MODULEs once, never starting the TensorFlow
runtime, then forks each job process it is asked for: the child gets the job's own argv,
environment, working directory, output pipe and session, and runs `runner.job` as a fresh
`python -m runner.job` would, with a runtime of its own. It dies with the process that started
it, and its children with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from runner.core.lifetime import PARENT_ENV, die_with_parent
from runner.core.result import STARTED_ENV
from runner.launcher import fork_wire as wire


def preload(extra: Sequence[str]) -> None:
    """What every job process imports, imported once here: TensorFlow (its Keras generation from
    TF_USE_LEGACY_KERAS), the scenario's modules and the `extra` modules its jobs will import
    (runner.launcher.job_process.server_imports). None of them starts the TensorFlow runtime at
    import, so each child still chooses its own devices."""
    import tensorflow  # noqa: F401

    from runner.job import main, scenario  # noqa: F401

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
    die_with_parent()
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
                        wire.send(conn, {"error": f"{type(e).__name__}: {e}"})
                    conn.close()
                    continue
                children[pid] = conn
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
        _reap(children)


def _fork(conn: socket.socket, listener: socket.socket, inherited: list[Any]) -> int:
    """Read one request (argv, env, cwd, and the pipe for the job's output), fork its process."""
    conn.settimeout(wire.ANSWER_TIMEOUT_S)
    request, out_fd = wire.receive_request(conn)
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
    wire.send(conn, {"pid": pid})
    return pid


def _become_job(request: Mapping[str, Any], out_fd: int, server: int) -> None:
    """In the forked child: the state a fresh `python -m runner.job ARGV` would have, then the
    job; exits with its code."""
    # First: die with the server, which dies with the runner. The server's pid, not getppid():
    # if the server died already, getppid() is 1 and die_with_parent exits at once.
    os.environ[PARENT_ENV] = str(server)
    die_with_parent()
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
    os.environ[PARENT_ENV] = str(server)  # job.main asks again: same answer
    os.environ[STARTED_ENV] = "forked"
    os.chdir(request["cwd"])
    import random

    import numpy as np

    random.seed()  # a fresh process's unseeded state, not the server's
    np.random.seed()
    from runner.job import main as job

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
                wire.send(conn, {"exit": os.waitstatus_to_exitcode(status)})
            conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
