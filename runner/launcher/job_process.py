"""The job's processes: its config handed over, each side run in a fresh process of its Keras
generation (forked from a fork server, or new), watched, and their results merged.

A job runs in one process, or two when its sides need different Keras generations (fixed per
process once TensorFlow is imported): `python -m runner.job CONFIG --side S` for each side,
the second continuing the result.json the first left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from runner.core import cluster, interrupt, redact, releases, trainings
from runner.core.files import HYDRA_DIR, JOB_LOG, RESOLVED, worker_log
from runner.core.releases import LibrarySet
from runner.core.result import (
    OVERRIDES_ENV,
    Result,
    not_started,
    read_or_crashed,
    release,
    write,
)
from runner.core.summary import summary
from runner.launcher import environments, fork_client, shared_training
from runner.launcher.fork_client import GENERATIONS_ENV, JOB_MODULE
from runner.launcher.local_cluster import local_workers, run_local
from runner.launcher.supervise import Failure, FailureKind, Spawn, Worker, supervise

if TYPE_CHECKING:
    from runner.core.schema import Config

# How long an interrupted job's process gets to record the interruption before it is killed.
INTERRUPT_GRACE_S = 10.0
# This process's part of the job's result["clock"] (runner.core.result.stamp): the job's own
# process adds its part.
clock: dict[str, float] = {}


def report(result: Result, output_dir: Path) -> None:
    """Print the summary and append it to job.log."""
    text = summary(result)
    print(text, flush=True)
    with open(output_dir / JOB_LOG, "a") as log:
        log.write(text + "\n")


def job_sides(cfg: Config) -> list[str]:
    """The job's processes: one, unless its sides need different Keras generations (fixed per
    process) or are both MirroredStrategy; a `load_from` job has only a load side.

    Two MirroredStrategy objects in one process share TensorFlow's collective instance keys, and
    the runtime remembers each instance's shapes: measured, model=transformer's sparse embedding
    gradients (gathered, of varying size) failed on the load side with 'Shape mismatch in the
    collective instance'; its load side in a process of its own resumed exactly."""
    if cfg.load_from:
        return ["load"]
    if cfg.load_keras.name != cfg.keras.name or release(cfg, "tf") != release(cfg, "load_tf") or (
            cfg.strategy.name == cfg.load_strategy.name == "mirrored"):
        return ["train", "load"]
    return ["both"]


def side_release(cfg: Config, side: str) -> LibrarySet | None:
    """The library set the side runs in; None: this environment's."""
    return releases.of_option(cfg.load_tf if side == "load" else cfg.tf)


def side_python(cfg: Config, side: str) -> str:
    """The side's interpreter: this one, or its release's environment's (built if missing)."""
    found = side_release(cfg, side)
    if found is None:
        return sys.executable
    return str(environments.ensure(found, cfg.runner.envs_dir))


def side_env(cfg: Config, side: str, env: dict[str, str]) -> dict[str, str]:
    """The side's environment variables: another release's interpreter finds the runner's code
    (and only it) through PYTHONPATH."""
    if side_release(cfg, side) is None:
        return env
    parts = [str(environments.code_path()),
             *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(parts)}


def run_in_subprocess(cfg: Config, output_dir: Path, overrides: list[str],
                      extra_env: dict[str, str] | None = None,
                      reporting: bool = True, sweep: Path | None = None) -> Result:
    """Run `python -m runner.job` on the resolved config, once per side (and, for cluster=local,
    as every worker), its output teed into job.log. reporting=False: the caller prints the
    summary (once the MLflow run is closed). sweep: the sweep's directory, where cells with the
    same training side share one (runner.launcher.shared_training)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    # The overrides (a credential in mlflow.tracking_uri, say) in the environment, readable by
    # this user alone, not in the command line, which every local user can read.
    env = {**redact.environ(), "PYTHONUNBUFFERED": "1", OVERRIDES_ENV: json.dumps(overrides)}
    sides = job_sides(cfg)
    share = shared_training.join(cfg, sweep, output_dir)
    adopted = share is not None and not share.trains
    if adopted:
        result = shared_training.adopt(share, cfg, output_dir, overrides, extra_env or {})
        sides = ["load"] if result["status"] == "running" else []
    elif share is not None:  # this cell trains: its job process publishes the training
        env[trainings.FOLDER_ENV] = str(share.folder)
        env[trainings.SAVE_ENV] = share.save
    with job_config(cfg) as config_path, local_workers(cfg, output_dir) as workers:
        for i, side in enumerate(sides):
            command = [side_python(cfg, side), "-m", JOB_MODULE, str(config_path)]
            stopped = interrupt.received()
            if stopped is not None and i == 0 and not adopted:  # before the job started
                result = not_started(cfg, output_dir, overrides, stopped, phase="start")
                write(output_dir, result)
                break
            spawner = spawner_for(cfg, side)
            resume = ["--resume"] if i or adopted else []
            returncode, failure = (None, None) if stopped else run_side(
                cfg, workers, output_dir, [*command, "--side", side, *resume],
                side_env(cfg, side, env), extra_env or {}, spawner)
            stopped = interrupt.received()
            worker_failed = failure.error() if failure and not stopped else None
            result = read_or_crashed(
                output_dir, returncode, final=i == len(sides) - 1,
                failure=stopped or worker_failed)
            if worker_failed and (result.get("error") or {}).get("type") != type(
                    worker_failed).__name__:
                result["notes"].append(f"cluster: {failure}")  # beside the chief's own error
                write(output_dir, result)
            if spawner is not None and spawner.notes:
                result["notes"] += spawner.notes
            result["clock"] = {**clock, **result.get("clock", {})}
            write(output_dir, result)
            if result["status"] != "running":
                break
    if share is not None and share.trains:  # a training that never published: its error
        trainings.publish_failure(share.folder, share.save, result)
    if reporting:
        report(result, output_dir)
    return result


def side_generation(cfg: Config, side: str) -> str:
    """The Keras generation a job process of this side imports."""
    return cfg.load_keras.name if side == "load" else cfg.keras.name


def spawner_for(cfg: Config, side: str,
                sweep: bool | None = None) -> fork_client.Spawner | None:
    """What starts the side's processes: forked by the generation's fork server
    (runner.fork_server=true, where supported), else None: a new process each."""
    if not use_fork_server(cfg):
        return None
    imports = server_imports(cfg, sweep)
    if side_release(cfg, side) is None:
        return fork_client.Spawner(side_generation(cfg, side), imports)
    # Another release's server: MLflow is not in its environment (runner.core.releases.JOB_SIDE).
    return fork_client.Spawner(
        side_generation(cfg, side), [m for m in imports if not m.startswith("mlflow")],
        python=side_python(cfg, side), env=side_env(cfg, side, {}))


def use_fork_server(cfg: Config) -> bool:
    return bool(cfg.runner.fork_server) and fork_client.supported()


def warm_fork_servers(cfg: Config, sweep: bool | None = None) -> None:
    """Start the fork servers of the job, and of the other jobs of its sweep, now: they import
    TensorFlow while this process imports MLflow and opens the job's run (or the sweep's parent
    run)."""
    if use_fork_server(cfg):
        sides = job_sides(cfg)
        generations = {side_generation(cfg, s) for s in sides if side_release(cfg, s) is None}
        generations.update(filter(None, os.environ.get(GENERATIONS_ENV, "").split(",")))
        fork_client.warm(sorted(generations), server_imports(cfg, sweep))
        for side in sides:  # another release's: its environment's interpreter
            spawner = spawner_for(cfg, side, sweep)
            if spawner is not None and side_release(cfg, side) is not None:
                fork_client.warm([spawner.generation], spawner.extra, spawner.kind[1],
                                 spawner.env)


def server_imports(cfg: Config, sweep: bool | None = None) -> list[str]:
    """What the fork server imports for its jobs beyond TensorFlow and the scenario: the digits'
    loader (tf_keras, unlike Keras 3, imports none of scikit-learn: 1.8 s a job); and, for a
    tracked sweep's jobs, which share it, what saves the MLflow model. A single job's server
    does not import MLflow (2-3 s before its one job could start): its job process imports it
    only to save the MLflow model (runner.tracking.handover). Nor does a non-chief worker's: it
    records nothing in MLflow."""
    extra = ["sklearn.datasets"] if cfg.data.name == "digits" else []
    worker = cluster.non_chief(cfg)
    if sweep is None:
        sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    if cfg.mlflow.enabled and not worker and sweep:
        # mlflow.pyfunc: imported lazily by mlflow.tensorflow.save_model
        extra += ["mlflow.models", "mlflow.pyfunc", "mlflow.tensorflow"]
    return extra


def keep_secrets_out(cfg: Config, output_dir: Path) -> None:
    """The configs Hydra saved, and the resolved one, with secrets masked (runner.core.redact)."""
    hydra_dir = output_dir / HYDRA_DIR
    hydra_dir.mkdir(parents=True, exist_ok=True)
    for path in hydra_dir.glob("*.yaml"):
        redact.file(path)
    (hydra_dir / RESOLVED).write_text(redact.text(OmegaConf.to_yaml(cfg, resolve=True)))


CONFIG_PREFIX = "runner-job-"  # runner-job-<pid of the runner>-<random>.yaml


def remove_stale_configs(directory: Path | None = None) -> list[Path]:
    """The private job configs of runners that are gone (killed with SIGKILL: nothing of theirs
    ran after), removed: each holds a config with its secrets."""
    removed = []
    for path in Path(directory or tempfile.gettempdir()).glob(f"{CONFIG_PREFIX}*-*.yaml"):
        pid = path.name[len(CONFIG_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid() or _alive(int(pid)):
                continue
            path.unlink()
        except OSError:  # removed meanwhile, or not ours to remove
            continue
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def job_config(cfg: Config) -> Iterator[Path]:
    """The resolved config the job's processes read, secrets included (a credential in
    mlflow.tracking_uri must work): a private (0600) temporary file, never in the output
    directory, named after this process so that one a killed runner left is removed by the
    next (`remove_stale_configs`)."""
    remove_stale_configs()
    fd, name = tempfile.mkstemp(prefix=f"{CONFIG_PREFIX}{os.getpid()}-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(OmegaConf.to_yaml(cfg, resolve=True))
        yield Path(name)
    finally:
        os.unlink(name)


def run_side(cfg: Config, workers: list[Worker], output_dir: Path,
             command: list[str], env: dict[str, str],
             chief_env: dict[str, str], spawn: Spawn = None) -> tuple[int, Failure | None]:
    """One side's processes: the local cluster's workers, or the job's one process (whose
    failure is its own to record: no worker failure to report). Exit code, worker failure."""
    quiet = cfg.verbose < 2  # verbose=2: TensorFlow's start-up lines too, every one
    if workers:
        return run_local(workers, command, env, chief_env, cfg.cluster, quiet, spawn)
    job = Worker(0, output_dir, output_dir / JOB_LOG)
    startup = cfg.cluster.get("startup_timeout_s") if cluster.multi_worker(cfg) else None
    returncode, failure = supervise([job], command, env, chief_env, timeout_s=None,
                                    grace_s=INTERRUPT_GRACE_S, quiet=quiet,
                                    startup_timeout_s=startup, spawn=spawn)
    # The job's one process records its own failures; not reaching its cluster, it cannot.
    return returncode, failure if failure and failure.kind is FailureKind.STARTUP else None


def run_as_worker(cfg: Config, output_dir: Path, overrides: list[str]) -> Result:
    """A non-chief worker of a cluster an orchestrator started (tf_config, slurm): it takes part
    in every collective, saving included, into a temporary directory; it records nothing in
    MLflow or the output directory but its log, e.g. worker-1.log."""
    kind, index = cluster.task(cfg.cluster)
    with tempfile.TemporaryDirectory(prefix="runner-worker") as temporary:
        result = run_in_subprocess(cfg, Path(temporary), overrides)
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(temporary) / JOB_LOG, output_dir / worker_log(index, kind))
    return result
