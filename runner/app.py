"""The Hydra task: validate, run the job in a fresh process, report.

Each job gets its own Python process (two, when its sides use different Keras generations)
because the Keras generation (TF_USE_LEGACY_KERAS) and the logical-device layout are fixed for a
process once TensorFlow is initialised.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import cluster, interrupt, redact
from runner import result as results
from runner.schema import ConfigError, validate, validate_sweep

# How long an interrupted job's process gets to record the interruption before it is killed.
INTERRUPT_GRACE_S = 10.0


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job of the scenario for `cfg`; return its result (also in result.json).

    Ctrl-C or SIGTERM: the job's processes are told and record it, the job is closed (result.json
    `interrupted`, its MLflow run KILLED), then Interrupted is raised, which stops a sweep."""
    check_config(cfg)  # again: a sweep's jobs differ from the config Preflight saw
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = list(HydraConfig.get().overrides.task)
    with interrupt.deferred():
        if cluster.multi_worker(cfg) and not cluster.is_chief(cfg.cluster):
            return run_as_worker(cfg, output_dir, overrides)
        if cfg.mlflow.enabled:
            return run_tracked(cfg, output_dir, overrides)
        return run_in_subprocess(cfg, output_dir, overrides)


class Preflight(Callback):
    """Before Hydra creates anything: the config's ranges and the output directory, each failing
    with one message and exit code 2, so a bad value never leaves a half-made job behind."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_config(config)
        worker = cluster.multi_worker(config) and not cluster.is_chief(config.cluster)
        check_output_dir(Path(config.hydra.run.dir), "hydra.run.dir", fresh=not worker)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_config(config, list(config.hydra.overrides.task))
        check_output_dir(Path(config.hydra.sweep.dir), "hydra.sweep.dir", fresh=False)


def check_config(cfg: DictConfig, sweep_overrides: list[str] | None = None) -> None:
    """The config's ranges (and, for a sweep, those of every value it sweeps): exit 2 if not."""
    try:
        validate(cfg)
        if sweep_overrides:
            validate_sweep(sweep_overrides)
    except ConfigError as e:
        print(f"Config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def check_output_dir(directory: Path, key: str, fresh: bool) -> None:
    """`directory` can be created and written; fresh=True: it holds no earlier job's result."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        print(f"Output directory error: cannot write to {directory} ({type(e).__name__}: "
              f"{e.strerror or e}). Choose another with {key}=DIR.", file=sys.stderr)
        raise SystemExit(2) from None
    if fresh and (directory / results.FILENAME).exists():
        print(f"Output directory error: {directory} already holds a job ({results.FILENAME}); "
              f"choose another with {key}=DIR, or remove it.", file=sys.stderr)
        raise SystemExit(2)


def run_tracked(cfg: DictConfig, output_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """The job inside an MLflow run that is always closed: FINISHED, FAILED or KILLED."""
    from runner import tracking  # MLflow costs seconds to import: job time, not config time

    try:
        run = tracking.start(cfg, output_dir, overrides, sweep_parent())
    except Exception as e:  # any failure, not only an unreachable store: recorded, not raised
        return not_tracked(cfg, output_dir, overrides, e)
    try:
        result = run_in_subprocess(cfg, output_dir, overrides, tracking.job_env(run))
    except BaseException:  # a bug of the runner's own: the run must still end
        tracking.abort(run)
        raise
    tracking.finish(run, result, output_dir)
    return result


def not_tracked(cfg: DictConfig, output_dir: Path, overrides: list[str],
                e: Exception) -> dict[str, Any]:
    """The job could not start its MLflow run: a failed result in phase `tracking`, and the run,
    if it was created before the failure, closed FAILED with that result."""
    from runner import tracking

    run, error = (e.run, e.error) if isinstance(e, tracking.StartFailed) else (None, e)
    result = results.not_started(cfg, output_dir, overrides, error, phase="tracking")
    if run is not None:
        result["mlflow_run_id"] = run.run_id
    output_dir.mkdir(parents=True, exist_ok=True)
    results.write(output_dir, result)
    if not isinstance(error, tracking.TrackingUnavailableError):
        (output_dir / "traceback.txt").write_text(redact.text("".join(
            traceback.format_exception(error))))
    report(result, output_dir)
    if run is not None:
        try:
            tracking.finish(run, result, output_dir)
        except Exception as close_error:  # the store itself may be the problem
            print(f"Could not close MLflow run {run.run_id}: {close_error!r}", file=sys.stderr)
    return result


def sweep_parent() -> tuple[str, int] | None:
    """In a multirun: the MLflow parent run the launching process opened (see runner.sweep),
    and this job's number."""
    from runner.sweep import parent_run_id

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    parent = parent_run_id(Path(hydra_cfg.sweep.dir))
    return (parent, hydra_cfg.job.num) if parent else None


def report(result: dict[str, Any], output_dir: Path) -> None:
    """Print the summary and append it to job.log."""
    summary = results.summary(result)
    print(summary, flush=True)
    with open(output_dir / "job.log", "a") as log:
        log.write(summary + "\n")


def job_sides(cfg: DictConfig) -> list[str]:
    """The job's processes: one, unless its sides need different Keras generations (fixed per
    process); a `load_from` job has only a load side."""
    if cfg.load_from:
        return ["load"]
    if cfg.load_keras.name != cfg.keras.name:
        return ["train", "load"]
    return ["both"]


def run_in_subprocess(cfg: DictConfig, output_dir: Path, overrides: list[str],
                      extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m runner.job` on the resolved config, once per side (and, for cluster=local,
    as every worker), its output teed into job.log."""
    output_dir.mkdir(parents=True, exist_ok=True)
    keep_secrets_out(cfg, output_dir)
    env = {**redact.environ(), "PYTHONUNBUFFERED": "1"}
    sides = job_sides(cfg)
    with job_config(cfg) as config_path, cluster.local_workers(cfg, output_dir) as workers:
        command = [sys.executable, "-m", "runner.job", str(config_path)]
        for override in overrides:
            command += ["--override", override]
        for i, side in enumerate(sides):
            stopped = interrupt.received()
            if stopped is not None and i == 0:  # the signal came before the job started
                result = results.not_started(cfg, output_dir, overrides, stopped, phase="start")
                results.write(output_dir, result)
                break
            returncode, failure = (None, None) if stopped else run_side(
                cfg, workers, output_dir, [*command, "--side", side, *(["--resume"] if i else [])],
                env, extra_env or {})
            stopped = interrupt.received()
            worker_failed = cluster.WorkerFailed(failure) if failure and not stopped else None
            result = results.read_or_crashed(
                output_dir, returncode, final=i == len(sides) - 1,
                failure=stopped or worker_failed)
            if worker_failed and (result.get("error") or {}).get("type") != "WorkerFailed":
                result["notes"].append(f"cluster: {failure}")  # beside the chief's own error
                results.write(output_dir, result)
            if result["status"] != "running":
                break
    report(result, output_dir)
    return result


def keep_secrets_out(cfg: DictConfig, output_dir: Path) -> None:
    """The configs Hydra saved, and the resolved one, with secrets masked (runner.redact)."""
    hydra_dir = output_dir / ".hydra"
    hydra_dir.mkdir(exist_ok=True)
    for path in hydra_dir.glob("*.yaml"):
        redact.file(path)
    (hydra_dir / "resolved.yaml").write_text(redact.text(OmegaConf.to_yaml(cfg, resolve=True)))


@contextlib.contextmanager
def job_config(cfg: DictConfig) -> Iterator[Path]:
    """The resolved config the job's processes read, secrets included (a credential in
    mlflow.tracking_uri must work): a private temporary file, never in the output directory."""
    fd, name = tempfile.mkstemp(prefix="runner-job-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(OmegaConf.to_yaml(cfg, resolve=True))
        yield Path(name)
    finally:
        os.unlink(name)


def run_side(cfg: DictConfig, workers: list[cluster.Worker], output_dir: Path,
             command: list[str], env: dict[str, str],
             chief_env: dict[str, str]) -> tuple[int, str | None]:
    """One side's processes: the local cluster's workers, or the job's one process (whose
    failure is its own to record: no worker failure to report). Exit code, worker failure."""
    if workers:
        return cluster.run_local(workers, command, env, chief_env, cfg.cluster)
    job = cluster.Worker(0, output_dir, output_dir / "job.log")
    returncode, _ = cluster.supervise([job], command, env, chief_env, timeout_s=None,
                                      grace_s=INTERRUPT_GRACE_S)
    return returncode, None


def run_as_worker(cfg: DictConfig, output_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """A non-chief worker of a cluster an orchestrator started (tf_config, slurm): it takes part
    in every collective, saving included, into a temporary directory; it records nothing in
    MLflow or the output directory but its log, e.g. worker-1.log."""
    kind, index = cluster.task(cfg.cluster)
    with tempfile.TemporaryDirectory(prefix="runner-worker") as temporary:
        result = run_in_subprocess(cfg, Path(temporary), overrides)
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(temporary) / "job.log", output_dir / f"{kind}-{index}.log")
    return result
