"""The job's processes and multi-worker clusters: `supervise` starts and watches a job's
process (or, for cluster=local, its worker processes on this machine), passes Ctrl-C/SIGTERM
on and leaves none behind; the rest is the cluster MultiWorkerMirroredStrategy runs on.

No TensorFlow at import: the Hydra process starts and watches the workers; only `resolver` (in
a job process) imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runner import console, interrupt, redact

MULTI_WORKER = "multi_worker_mirrored"


def multi_worker(cfg: Any) -> bool:
    """Whether either side of the job trains or loads under MultiWorkerMirroredStrategy."""
    return MULTI_WORKER in (cfg.strategy.name, cfg.load_strategy.name)


# A SLURM job's tasks listen on job_port_base(...) + their index on the node: a stride per job
# (room for this many tasks on one node), cycling over this many strides.
PORT_STRIDE, PORT_SLOTS = 64, 500


def job_port_base(port_base: int, environ: Mapping[str, str] = os.environ) -> int:
    """The first port of this SLURM job's tasks on each node: port_base moved by the job's id,
    so that two jobs on one node (array tasks, a sweep's jobs) never share ports; every task of
    the job computes the same one without talking to the others."""
    job_id = int(environ.get("SLURM_JOB_ID") or 0)
    return port_base + (job_id % PORT_SLOTS) * PORT_STRIDE


def resolver(cluster: Any) -> Any:
    """The TensorFlow cluster resolver for `cluster` (in a job process)."""
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver
    if cluster.name == "slurm" and cluster.gpus_per_node == 0:
        # tensorflow#56894: SlurmClusterResolver cannot be told "no GPUs" (it pairs every task
        # with GPUs). Let it lay the tasks out with a placeholder GPU each, touching no
        # CUDA_VISIBLE_DEVICES, and keep only that layout.
        tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS", 1))
        slurm = resolvers.SlurmClusterResolver(
            port_base=job_port_base(cluster.port_base), gpus_per_node=tasks, gpus_per_task=1,
            auto_set_gpu=False)
        return resolvers.SimpleClusterResolver(
            slurm.cluster_spec(), task_type=slurm.task_type, task_id=slurm.task_id,
            num_accelerators={})
    if cluster.name == "slurm":
        return resolvers.SlurmClusterResolver(
            port_base=job_port_base(cluster.port_base), gpus_per_node=cluster.gpus_per_node)
    # cluster=local: the runner set TF_CONFIG for each worker; tf_config: an orchestrator did.
    return resolvers.TFConfigClusterResolver()


class ClusterMixup(RuntimeError):
    """A worker of another job joined this job's cluster (or this worker joined another's)."""


class ClusterStartTimeout(RuntimeError):
    """The cluster did not come together within cluster.startup_timeout_s."""


def failure_error(failure: str) -> RuntimeError:
    """The exception a job's result records for what `supervise` reported."""
    if failure.startswith(STARTUP_FAILURE):
        return ClusterStartTimeout(failure[len(STARTUP_FAILURE):])
    return WorkerFailed(failure)


def identity(cluster: Any, environ: Mapping[str, str] = os.environ) -> int | None:
    """What every worker of one job shares and a worker of another job does not: the SLURM job
    id, or a digest of TF_CONFIG's cluster; None for cluster=local (the runner starts the
    workers itself, on ports it just found free)."""
    if cluster.name == "slurm":
        return int(environ.get("SLURM_JOB_ID") or 0)
    if cluster.name == "tf_config":
        spec = json.dumps(json.loads(environ.get("TF_CONFIG") or "{}").get("cluster", {}),
                          sort_keys=True)
        return int.from_bytes(hashlib.sha256(spec.encode()).digest()[:4], "big")
    return None


def check_port_free(address: str) -> None:
    """This worker's own address (host:port) can be listened on: another job's worker on this
    node would otherwise take it, or be joined by mistake."""
    port = int(address.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            raise ClusterMixup(
                f"port {port} of this worker ({address}) is in use on this node ({e.strerror}): "
                "another job's worker holds it; choose another cluster.port_base") from e


def chief_address(spec: Mapping[str, list[str]]) -> str:
    return (spec.get("chief") or spec.get("worker") or ["?"])[0]


def task(cluster: Any, environ: Mapping[str, str] = os.environ) -> tuple[str, int]:
    """This process's task in the cluster, as (type, index): ("worker", 1), ("chief", 0)."""
    if cluster.name == "slurm":
        return "worker", int(environ.get("SLURM_PROCID", "0"))
    if cluster.name == "tf_config":
        spec = json.loads(environ.get("TF_CONFIG") or "{}").get("task", {})
        return spec.get("type", "worker"), int(spec.get("index", 0))
    return "worker", 0  # local: this process is the chief's, and starts the others


def is_chief(cluster: Any, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process's worker records the job (result.json, MLflow): the `chief` task of
    a TF_CONFIG cluster that has one, else worker 0. For tf_config and slurm an orchestrator
    starts the runner once per worker."""
    has_chief = cluster.name == "tf_config" and "chief" in json.loads(
        environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return task(cluster, environ) == (("chief", 0) if has_chief else ("worker", 0))


def scheduled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a job a scheduler started (SLURM through submitit): a SIGTERM
    then means the job was cancelled or reached its time limit, not that a sweep must stop."""
    return environ.get("SUBMITIT_EXECUTOR") == "slurm"


# ---- the job's processes: its one process, or a local cluster's workers ---------------------

PARENT_ENV = "RUNNER_PARENT_PID"  # set for every job process the Hydra task starts
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a job process, first thing: ask Linux for SIGKILL when the runner that started it
    dies, however it dies (SIGKILL included), so that no job process is left behind: not a
    training nobody records, not a worker waiting on a collective.
    (Done here rather than in Popen's preexec_fn, which is unsafe in a threaded launcher.)"""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the runner's own cleanup still applies
        return
    if os.getppid() != int(parent):  # the runner died before the request took effect
        os._exit(1)


class WorkerFailed(RuntimeError):
    """A worker of a multi-worker job died, failed or hung; the others were stopped."""


@dataclass
class Worker:
    index: int
    output_dir: Path  # the chief's: the job's output dir; the others': temporary
    log: Path
    process: Any = None  # a subprocess.Popen, or what answers like one (fork_server)


# Starts one job process: (command, env) -> a Popen or what answers like one (its pid is its
# process group, as with start_new_session=True). None: subprocess.Popen, `new_process`.
Spawn = Callable[[list[str], Mapping[str, str]], Any] | None


def new_process(command: list[str], env: Mapping[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def local_workers(cfg: Any, output_dir: Path) -> Iterator[list[Worker]]:
    """The job's workers for cluster=local ([] otherwise): the chief writes into `output_dir`,
    the others into temporary directories removed afterwards (they save too: saving is a
    collective), their logs kept as worker-<i>.log."""
    if not (multi_worker(cfg) and cfg.cluster.name == "local"):
        yield []
        return
    workers = [Worker(0, output_dir, output_dir / "job.log")]
    try:
        for i in range(1, cfg.cluster.workers):
            temporary = Path(tempfile.mkdtemp(prefix=f"runner-worker{i}-"))
            workers.append(Worker(i, temporary, output_dir / f"worker-{i}.log"))
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
              quiet: bool = True, spawn: Spawn = None) -> tuple[int, str | None]:
    """Run `command` (without --output-dir) as every worker, each with its TF_CONFIG on a free
    port; workers.json lists them. See `supervise` for how they are watched and stopped."""
    ports = free_ports(len(workers))
    return supervise(
        workers, command, env, chief_env, timeout_s=cluster.timeout_s, grace_s=cluster.grace_s,
        worker_env=lambda w: {"TF_CONFIG": tf_config(ports, w.index)}, quiet=quiet,
        startup_timeout_s=cluster.startup_timeout_s, spawn=spawn,
        on_start=lambda: (workers[0].output_dir / "workers.json").write_text(json.dumps([
            {"index": w.index, "pid": w.process.pid, "port": port, "log": str(w.log),
             "output_dir": str(w.output_dir)} for w, port in zip(workers, ports, strict=True)],
            indent=2) + "\n"))


def supervise(workers: list[Worker], command: list[str], env: Mapping[str, str],
              chief_env: Mapping[str, str], timeout_s: float | None, grace_s: float,
              worker_env: Callable[[Worker], Mapping[str, str]] = lambda w: {},
              on_start: Callable[[], Any] = lambda: None,
              quiet: bool = True,
              startup_timeout_s: float | None = None,
              spawn: Spawn = None) -> tuple[int, str | None]:
    """Run `command --output-dir DIR` as each worker (a job's one process, or its local
    cluster), each in its own process group and set to die with this process.

    The chief's output goes to the console and its job.log, each other worker's to its
    worker-<i>.log. When one worker fails, the others get `grace_s` to record their own error,
    then all are stopped; so are workers still running after `timeout_s`. A SIGINT/SIGTERM this
    process noted (runner.interrupt) is passed on to every worker, which records it, with the
    same grace. A multi-worker job whose first process has not seen its cluster come together
    within `startup_timeout_s` (its result.json's `cluster_start`) is stopped too: TensorFlow
    would wait an hour. No worker outlives this call. `spawn` starts each process (a new one, or
    one forked by runner.fork_server). Returns the chief's exit code and, if a worker failed or
    hung, what happened."""
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
        failure = _watch(workers, timeout_s, grace_s, startup_timeout_s)
    finally:
        for w in workers:
            _stop(w)
        for copier in copiers:
            copier.join(timeout=5)
    return workers[0].process.returncode, failure


STARTUP_FAILURE = "ClusterStartTimeout: "


def _watch(workers: list[Worker], timeout_s: float | None, grace_s: float,
           startup_timeout_s: float | None = None) -> str | None:
    """Wait for every worker; the first failure (or the timeout, the startup timeout, or an
    interruption), and stop waiting after grace."""
    deadline = time.monotonic() + timeout_s if timeout_s is not None else float("inf")
    # The startup window opens when the chief's job process starts forming the cluster (its
    # result.json's cluster_start), not at its launch: importing TensorFlow on a busy machine
    # can take longer than a short window (cluster.timeout_s bounds that part).
    watch_startup, startup, looked = bool(startup_timeout_s), None, 0.0
    stop_at, failure, forwarded = None, None, False
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
                failure = (f"worker(s) {running} still running after cluster.timeout_s="
                           f"{timeout_s:g} s: a hung worker; stopped")
                stop_at = now
            elif watch_startup and now - looked >= 0.5:
                looked = now
                waiting = _still_waiting(workers[0], startup_timeout_s)
                if waiting is None:
                    watch_startup = False  # joined: nothing more to watch for
                elif waiting != NOT_FORMING:
                    startup = startup or now + startup_timeout_s
                    if now > startup:
                        failure, stop_at = STARTUP_FAILURE + waiting, now
        if stop_at is not None and now >= stop_at:
            running = [w.index for w in workers if w.process.poll() is None]
            if running and failure and "still running" not in failure and not failure.startswith(
                    STARTUP_FAILURE):
                failure += f"; worker(s) {running} still running {grace_s:g} s later: stopped"
            break
        time.sleep(0.1)
    if failure is None and interrupt.received() is None:
        failure = _failed(workers)  # all ended between two looks: one may have died first
    return failure


NOT_FORMING = "not forming the cluster yet"


def _still_waiting(worker: Worker, seconds: float) -> str | None:
    """What the worker's job process still waits for after `seconds`, from its result.json; None
    once its cluster came together."""
    try:
        start = json.loads((worker.output_dir / "result.json").read_text()).get("cluster_start")
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


def _failed(workers: list[Worker]) -> str | None:
    """Which workers exited with an error; one killed by a signal first, the likely cause."""
    failed = sorted((w for w in workers if w.process.poll() not in (None, 0)),
                    key=lambda w: (w.process.returncode >= 0, w.index))
    return "; ".join(
        f"worker {w.index}{' (chief)' if w.index == 0 else ''} exited with code "
        f"{w.process.returncode}; see {w.log.name}" for w in failed) or None


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
    the console (quiet: without TensorFlow's repeated start-up noise, runner.console)."""
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
