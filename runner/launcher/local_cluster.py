"""cluster=local: a multi-worker job's workers as processes on this machine, on free ports of
127.0.0.1, each with its own TF_CONFIG, watched together (runner.launcher.supervise)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.cluster import multi_worker
from runner.core.files import JOB_LOG, WORKERS, worker_log
from runner.launcher.supervise import Failure, Spawn, Worker, supervise

if TYPE_CHECKING:
    from runner.core.schema import Config


@contextlib.contextmanager
def local_workers(cfg: Config, output_dir: Path) -> Iterator[list[Worker]]:
    """The job's workers for cluster=local ([] otherwise): the chief writes into `output_dir`,
    the others into temporary directories removed afterwards (they save too: saving is a
    collective), their logs kept as worker-<i>.log."""
    if not (multi_worker(cfg) and cfg.cluster.name == "local"):
        yield []
        return
    workers = [Worker(0, output_dir, output_dir / JOB_LOG)]
    try:
        for i in range(1, cfg.cluster.workers):
            temporary = Path(tempfile.mkdtemp(prefix=f"runner-worker{i}-"))
            workers.append(Worker(i, temporary, output_dir / worker_log(i)))
        yield workers
    finally:
        for w in workers[1:]:
            shutil.rmtree(w.output_dir, ignore_errors=True)


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now (held together, so never the same twice)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def run_local(workers: list[Worker], command: list[str], env: Mapping[str, str],
              chief_env: Mapping[str, str], cluster: Any,
              quiet: bool = True, spawn: Spawn = None) -> tuple[int, Failure | None]:
    """Run `command` (without --output-dir) as every worker, each with its TF_CONFIG on a free
    port; workers.json lists them. See `supervise` for how they are watched and stopped."""
    ports = free_ports(len(workers))
    return supervise(
        workers, command, env, chief_env, timeout_s=cluster.timeout_s, grace_s=cluster.grace_s,
        worker_env=lambda w: {"TF_CONFIG": tf_config(ports, w.index)}, quiet=quiet,
        startup_timeout_s=cluster.startup_timeout_s, spawn=spawn,
        on_start=lambda: (workers[0].output_dir / WORKERS).write_text(json.dumps([
            {"index": w.index, "pid": w.process.pid, "port": port, "log": str(w.log),
             "output_dir": str(w.output_dir)} for w, port in zip(workers, ports, strict=True)],
            indent=2) + "\n"))
