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

from runner import cluster, hints, interrupt, redact
from runner import result as results
from runner.schema import ConfigError, validate, validate_sweep

# How long an interrupted job's process gets to record the interruption before it is killed.
INTERRUPT_GRACE_S = 10.0
# This process's part of the job's result["clock"] (results.stamp): the job's own process adds
# its part.
clock: dict[str, float] = {}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job of the scenario for `cfg`; return its result (also in result.json).

    Ctrl-C or SIGTERM: the job's processes are told and record it, the job is closed (result.json
    `interrupted`, its MLflow run KILLED), then Interrupted is raised, which stops a sweep. Under
    a scheduler (SLURM through submitit) SIGTERM means this job was cancelled or ran out of
    time: it returns its interrupted result instead, so that submitit records a result and the
    sweep's other jobs and its matrix go on."""
    check_config(cfg)  # again: a sweep's jobs differ from the config Preflight saw
    choose_save_api(cfg)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = list(HydraConfig.get().overrides.task)
    clock.clear()
    results.stamp({"clock": clock}, "job_start")
    result: dict[str, Any] | None = None
    try:
        with interrupt.deferred():
            warm_fork_servers(cfg)
            if cluster.multi_worker(cfg) and not cluster.is_chief(cfg.cluster):
                result = run_as_worker(cfg, output_dir, overrides)
            elif cfg.mlflow.enabled:
                result = run_tracked(cfg, output_dir, overrides)
            else:
                result = run_in_subprocess(cfg, output_dir, overrides)
            sweep_progress()
    except interrupt.Interrupted as e:
        if result is None or not cluster.scheduled():
            raise
        print(f"{e}: the scheduler stopped this job; recorded as interrupted", flush=True)
    assert result is not None
    return result


def choose_save_api(cfg: DictConfig) -> None:
    """save_api=auto becomes the save API the seed pairs with the load API; an explicit save API
    known not to write what the load API reads gets a one-line warning before any training
    (the job still runs: its failure is data)."""
    if cfg.load_from:
        return
    if cfg.save_api.name == "auto":
        cfg.save_api.name = hints.PAIRED_SAVE_API[cfg.load_api.name]
        cfg.save_api.paired_with = cfg.load_api.name
        return
    expected = hints.expected_failure(cfg.save_api.name, cfg.load_api.name, cfg.keras.name,
                                      cfg.load_keras.name)
    if expected:
        print(f"Warning: save_api={cfg.save_api.name} load_api={cfg.load_api.name} "
              f"(keras={cfg.keras.name}) is {expected}.", file=sys.stderr, flush=True)


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
    """The job inside an MLflow run that is always closed: FINISHED, FAILED or KILLED.

    A store that is away when a single job starts fails it at once (a wrong URI, most likely).
    One that goes away after a sweep or the job started costs no work (mlflow.on_lost=continue):
    the job runs (on) untracked, its result.json says `tracking: pending`, and
    `python -m runner.sync` brings the store up to date once it is back."""
    from runner import tracking  # MLflow costs seconds to import: job time, not config time

    job = sweep_parent()
    try:
        run = tracking.start(cfg, output_dir, overrides, job,
                             brief=job is not None and job.store_lost)
    except tracking.TrackingUnavailableError as e:
        if job is None or cfg.mlflow.on_lost != "continue":
            return not_tracked(cfg, output_dir, overrides, e)
        result = run_in_subprocess(cfg, output_dir, overrides, reporting=False)
        return tracking_lost(cfg, result, output_dir, None, e)
    except Exception as e:  # any other failure, too: recorded, not raised
        return not_tracked(cfg, output_dir, overrides, e)
    tracking.warm_finish()
    results.stamp({"clock": clock}, "run_opened")
    try:
        with tempfile.TemporaryDirectory(prefix="runner-relay-") as handover, \
                tracking.JobRelay(run, Path(handover)) as relay, \
                tracking.system_metrics(run, cfg.mlflow.system_metrics):
            result = run_in_subprocess(cfg, output_dir, overrides,
                                       {**tracking.job_env(run), **relay.env()}, reporting=False)
        relay.apply(result)
    except BaseException:  # a bug of the runner's own: the run must still end
        with contextlib.suppress(Exception):
            tracking.abort(run)
        raise
    # Said before finishing, so that the result.json the run holds is the one on disk; if the
    # store goes away meanwhile, `pending` replaces it on disk and runner.sync uploads that.
    result["tracking"] = {"status": "recorded", "run_id": run.run_id}
    results.write(output_dir, result)
    try:
        tracking.finish(run, result, output_dir)
    except Exception as e:  # the store went away while the job ran: its record is on disk
        return tracking_lost(cfg, result, output_dir, run, e)
    report(result, output_dir)
    print(f"MLflow run: {run.open_with()}", flush=True)
    return result


def tracking_lost(cfg: DictConfig, result: dict[str, Any], output_dir: Path, run: Any,
                  e: Exception) -> dict[str, Any]:
    """The store is away, the job's work is done and on disk: `tracking: pending` (or, with
    mlflow.on_lost=fail, a failure in phase `tracking`), and the command that syncs it."""
    from runner import tracking

    # A failed start already says why, naming the URI (tracking.unavailable); a failed finish
    # is said here.
    reason = str(e) if run is None else tracking.unavailable(run.uri, e)
    result["tracking"] = {"status": "pending", "run_id": run.run_id if run else None,
                          "reason": reason}
    if cfg.mlflow.on_lost == "fail" and result["status"] == "passed":
        results.set_error(result, tracking.TrackingUnavailableError(reason), "tracking", None)
    results.write(output_dir, result)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        from runner import sweep

        sweep.note_lost(Path(HydraConfig.get().sweep.dir))
    report(result, output_dir)
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


def sweep_parent() -> Any:
    """In a multirun: this job as its MLflow run needs it (runner.sweep.Job: the parent run the
    launching process opened, the job's number, the swept keys); None otherwise."""
    from runner import sweep

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return sweep.job(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num)


def sweep_progress() -> None:
    """In a multirun, after each job: how far the sweep is."""
    from runner import sweep

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        line = sweep.progress(Path(hydra_cfg.sweep.dir))
        if line:
            print(line, flush=True)


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
                      extra_env: dict[str, str] | None = None,
                      reporting: bool = True) -> dict[str, Any]:
    """Run `python -m runner.job` on the resolved config, once per side (and, for cluster=local,
    as every worker), its output teed into job.log. reporting=False: the caller prints the
    summary (once the MLflow run is closed)."""
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
            spawner = spawner_for(cfg, side)
            returncode, failure = (None, None) if stopped else run_side(
                cfg, workers, output_dir, [*command, "--side", side, *(["--resume"] if i else [])],
                env, extra_env or {}, spawner)
            stopped = interrupt.received()
            worker_failed = cluster.failure_error(failure) if failure and not stopped else None
            result = results.read_or_crashed(
                output_dir, returncode, final=i == len(sides) - 1,
                failure=stopped or worker_failed)
            if worker_failed and (result.get("error") or {}).get("type") != type(
                    worker_failed).__name__:
                result["notes"].append(f"cluster: {failure}")  # beside the chief's own error
                results.write(output_dir, result)
            if spawner is not None and spawner.notes:
                result["notes"] += spawner.notes
            result["clock"] = {**clock, **result.get("clock", {})}
            results.write(output_dir, result)
            if result["status"] != "running":
                break
    if reporting:
        report(result, output_dir)
    return result


def side_generation(cfg: DictConfig, side: str) -> str:
    """The Keras generation a job process of this side imports."""
    return cfg.load_keras.name if side == "load" else cfg.keras.name


def spawner_for(cfg: DictConfig, side: str) -> Any:
    """What starts the side's processes: forked by the generation's fork server
    (runner.fork_server=true, where supported), else None: a new process each."""
    if not use_fork_server(cfg):
        return None
    from runner import fork_server

    return fork_server.Spawner(side_generation(cfg, side), server_imports(cfg))


def use_fork_server(cfg: DictConfig) -> bool:
    from runner import fork_server

    return bool(cfg.runner.fork_server) and fork_server.supported()


def warm_fork_servers(cfg: DictConfig, sweep: bool | None = None) -> None:
    """Start the fork servers of the job, and of the other jobs of its sweep, now: they import
    TensorFlow while this process imports MLflow and opens the job's run (or the sweep's parent
    run)."""
    if use_fork_server(cfg):
        from runner import fork_server
        from runner.sweep import GENERATIONS_ENV

        generations = {side_generation(cfg, side) for side in job_sides(cfg)}
        generations.update(filter(None, os.environ.get(GENERATIONS_ENV, "").split(",")))
        fork_server.warm(sorted(generations), server_imports(cfg, sweep))


def server_imports(cfg: DictConfig, sweep: bool | None = None) -> list[str]:
    """What the fork server imports for its jobs beyond TensorFlow and the scenario: the digits'
    loader (tf_keras, unlike Keras 3, imports none of scikit-learn: 1.8 s a job); and, for a
    tracked sweep's jobs, which share it, what saves the MLflow model. A single job's server
    does not import MLflow (2-3 s before its one job could start): its job process imports it
    only to save the MLflow model (runner.live). Nor does a non-chief worker's: it records
    nothing in MLflow."""
    extra = ["sklearn.datasets"] if cfg.data.name == "digits" else []
    worker = cluster.multi_worker(cfg) and not cluster.is_chief(cfg.cluster)
    if sweep is None:
        sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    if cfg.mlflow.enabled and not worker and sweep:
        # mlflow.pyfunc: imported lazily by mlflow.tensorflow.save_model
        extra += ["mlflow.models", "mlflow.pyfunc", "mlflow.tensorflow"]
    return extra


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
             chief_env: dict[str, str], spawn: cluster.Spawn = None) -> tuple[int, str | None]:
    """One side's processes: the local cluster's workers, or the job's one process (whose
    failure is its own to record: no worker failure to report). Exit code, worker failure."""
    quiet = cfg.verbose < 2  # verbose=2: TensorFlow's start-up lines too, every one
    if workers:
        return cluster.run_local(workers, command, env, chief_env, cfg.cluster, quiet, spawn)
    job = cluster.Worker(0, output_dir, output_dir / "job.log")
    startup = cfg.cluster.get("startup_timeout_s") if cluster.multi_worker(cfg) else None
    returncode, failure = cluster.supervise([job], command, env, chief_env, timeout_s=None,
                                            grace_s=INTERRUPT_GRACE_S, quiet=quiet,
                                            startup_timeout_s=startup, spawn=spawn)
    # The job's one process records its own failures; not reaching its cluster, it cannot.
    return returncode, failure if failure and failure.startswith(cluster.STARTUP_FAILURE) else None


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
