"""The Hydra task: one job of the scenario, run in processes of its own, then reported.

Each job gets its own Python process (two, when its sides use different Keras generations)
because the Keras generation (TF_USE_LEGACY_KERAS) and the logical-device layout are fixed for a
process once TensorFlow is initialised (runner.launcher.job_process).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from runner.core import cluster, interrupt, sweep_file
from runner.core.result import Result, stamp
from runner.launcher import job_process
from runner.launcher.job_process import clock, run_as_worker, run_in_subprocess
from runner.launcher.preflight import check_config, choose_load_keras, choose_save_api

if TYPE_CHECKING:
    from runner.core.schema import Config


def run(cfg: Config) -> Result:
    """Run one job of the scenario for `cfg`; return its result (also in result.json).

    Ctrl-C or SIGTERM: the job's processes are told and record it, the job is closed (result.json
    `interrupted`, its MLflow run KILLED), then Interrupted is raised, which stops a sweep. Under
    a scheduler (SLURM through submitit) SIGTERM means this job was cancelled or ran out of
    time: it returns its interrupted result instead, so that submitit records a result and the
    sweep's other jobs and its matrix go on."""
    choose_load_keras(cfg, list(HydraConfig.get().overrides.task))  # before the release check
    check_config(cfg)  # again: a sweep's jobs differ from the config Preflight saw
    choose_save_api(cfg)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    # First, whatever happens next: Hydra's own .hydra/*.yaml hold the overrides as given.
    job_process.keep_secrets_out(cfg, output_dir)
    overrides = list(HydraConfig.get().overrides.task)
    clock.clear()
    stamp({"clock": clock}, "job_start")
    result: Result | None = None
    try:
        with interrupt.deferred():
            job_process.warm_fork_servers(cfg)
            if cluster.non_chief(cfg):
                result = run_as_worker(cfg, output_dir, overrides)
            elif cfg.mlflow.enabled:
                # MLflow costs seconds to import: job time, not config time.
                from runner.launcher import tracked

                result = tracked.run_tracked(cfg, output_dir, overrides, sweep_job(), sweep_dir())
            else:
                result = run_in_subprocess(cfg, output_dir, overrides, sweep=sweep_dir())
            sweep_progress()
    except interrupt.Interrupted as e:
        if result is None or not cluster.scheduled():
            raise
        print(f"{e}: the scheduler stopped this job; recorded as interrupted", flush=True)
    assert result is not None
    return result


def sweep_dir() -> Path | None:
    """In a multirun: its directory; None otherwise."""
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def sweep_job() -> sweep_file.Job | None:
    """In a multirun: this job as its MLflow run needs it (the parent run the launching process
    opened, the job's number, the swept keys); None otherwise."""
    directory = sweep_dir()
    return sweep_file.job(directory, HydraConfig.get().job.num) if directory else None


def sweep_progress() -> None:
    """In a multirun, after each job: how far the sweep is."""
    directory = sweep_dir()
    line = sweep_file.progress(directory) if directory else None
    if line:
        print(line, flush=True)
