"""A sweep's bookends, as a Hydra callback in the launching process.

Before any job starts: sweep.json in the sweep directory (what the jobs and runner.sync read),
and, tracked, the MLflow store, experiment and one parent run (so that parallel jobs never race
to create the sqlite schema: runner.launcher.sweep_parent). After the last job: the
compatibility matrix from the jobs' result.json files, written into the sweep directory,
printed, logged to the parent run, which is then closed.

A sweep that ends early (Ctrl-C, SIGTERM, a launcher error) never reaches on_multirun_end: then
`close_unfinished`, called by `python -m runner` on its way out, closes it the same way with the
jobs that finished, after marking the interrupted ones.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.core import console, interrupt, redact, sweep_file, trainings
from runner.core import result as results
from runner.core.files import MULTIRUN_YAML
from runner.launcher import job_process, shared_training
from runner.launcher.cells import compose_all, sweep_cells
from runner.launcher.fork_client import GENERATIONS_ENV
from runner.launcher.slurm_watch import start_pending_watch
from runner.tracking import matrix

# The sweep this process launched and has not closed yet (see close_unfinished), and whether
# its jobs run here (basic, joblib launchers), where they end with it: not on a SLURM cluster.
_open: list[tuple[Path, bool]] = []


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # An earlier sweep's trainings in a reused folder are not this sweep's to share.
        shutil.rmtree(sweep_dir / trainings.FOLDER, ignore_errors=True)
        swept, jobs = sweep_plan(config)
        if jobs is not None:  # the basic sweeper's: its cells are known before any starts
            cells = sweep_cells(sweep_override_texts(config))
            shared_training.plan(sweep_dir, compose_all(config, cells))
        info: dict[str, Any] = {"parent_run_id": None, "tracking_uri": None,
                                "experiment_id": None, "swept": swept, "jobs": jobs,
                                "what": sweep_what(config, swept),
                                "name": parent_name(config, swept, jobs),
                                "overrides": " ".join(sweep_override_texts(config)),
                                "started": time.time(),
                                # what runner.sync needs to reach the store again (masked)
                                "mlflow": redact.tree(OmegaConf.to_container(
                                    config.mlflow, resolve=True))}
        launcher = str(config.hydra.launcher.get("_target_", ""))
        local = "submitit" not in launcher
        if local:
            # Every job's process (joblib's workers too) starts the fork servers of all the
            # sweep's Keras generations at its first job, not one by one as jobs need them.
            os.environ[GENERATIONS_ENV] = ",".join(swept_generations(config))
            # TensorFlow's start-up lines and each warning once per sweep, not once per job.
            os.environ[console.SEEN_DIR_ENV] = str(sweep_dir / ".console-seen")
        if "BasicLauncher" in launcher:  # the jobs run in this process: their servers can start
            job_process.warm_fork_servers(config, sweep=True)
        with interrupt.deferred():  # a parent run created must be recorded, to be closed
            if config.mlflow.enabled:
                from runner.launcher import sweep_parent  # MLflow: a tracked sweep's only

                info.update(sweep_parent.open_parent(config, sweep_dir, info["name"]))
            sweep_file.write_info(sweep_dir, info)
            _open[:] = [(sweep_dir, local)]
        if not local:
            start_pending_watch(Path(str(config.hydra.launcher.get("submitit_folder", "")))
                                .parent if config.hydra.launcher.get("submitit_folder")
                                else sweep_dir / ".submitit")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close(Path(config.hydra.sweep.dir).resolve(), "finished")


def sweep_what(config: DictConfig, swept: list[str]) -> str:
    """What a sweep compares, in a few words: 'experiment=matrix', 'load_api × save_api'."""
    preset = (config.hydra.runtime.get("choices") or {}).get("experiment")
    return f"experiment={preset}" if preset else " × ".join(swept) or "one job"


def parent_name(config: DictConfig, swept: list[str], jobs: int | None) -> str:
    """The parent run's name while the sweep runs, its news first, as the runs list's narrow
    column cuts it: '4 jobs: load_api × save_api' (at the end '3/4 passed: load_api ×
    save_api', runs.finish_parent). When and where it ran: the Created column, the run's
    description."""
    return (f"{jobs} jobs" if jobs else "jobs") + f": {sweep_what(config, swept)}"


def sweep_plan(config: DictConfig) -> tuple[list[str], int | None]:
    """The keys a sweep varies (its sweep overrides and its sweeper's params) and how many jobs
    it has (None when the sweeper is not the basic one, which alone makes the product)."""
    parsed = sweep_overrides(config)
    counts = {o.get_key_element(): len(list(o.sweep_iterator()))
              for o in parsed if o.is_sweep_override()}
    jobs: int | None = 1
    for n in counts.values():
        jobs *= n
    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        jobs = None
    return sorted(counts), jobs


def sweep_override_texts(config: DictConfig) -> list[str]:
    """The sweep's overrides as written: its sweeper's params (experiment presets set them),
    then the command line's."""
    params = config.hydra.sweeper.get("params") or {}
    return [*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task]


def sweep_overrides(config: DictConfig) -> list[Any]:
    """The sweep's overrides (`sweep_override_texts`), parsed."""
    return OverridesParser.create().parse_overrides(sweep_override_texts(config))


def swept_generations(config: DictConfig) -> list[str]:
    """The Keras generations the sweep's jobs import: its config's, and every value it gives
    keras or load_keras."""
    generations = {config.keras.name, config.load_keras.name}
    for o in sweep_overrides(config):
        if o.get_key_element() in ("keras", "load_keras"):
            values = o.sweep_iterator() if o.is_sweep_override() else [o.value()]
            generations.update(str(v) for v in values)
    return sorted(generations)


def close_unfinished(e: BaseException) -> None:
    """Close the sweep this process started, if it ended early: every job still `running` is
    marked interrupted (its MLflow run KILLED, with what it left), then the matrix of the jobs
    that ran is written and the parent run closed KILLED (interrupted) or FAILED."""
    if not _open:
        return
    sweep_dir, local = _open[0]
    if local:  # jobs on a cluster go on without the launching process: not ours to close
        for job_dir in sweep_file.job_dirs(sweep_dir):
            if (job_dir / results.FILENAME).exists():  # the job had started: how it ended
                results.read_or_crashed(job_dir, None, failure=e)
    close(sweep_dir, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
          e if local else None)


def close(sweep_dir: Path, status: str, e: BaseException | None = None) -> None:
    """The sweep's matrix from its jobs' results, printed and written; the parent run closed.
    e: what stopped the sweep early; its jobs' runs still RUNNING are closed with it."""
    _open.clear()
    os.environ.pop(GENERATIONS_ENV, None)
    done = sweep_file.job_results(sweep_dir)
    info = sweep_file.sweep_info(sweep_dir)
    parent = None
    if info.get("parent_run_id"):
        from runner.launcher import sweep_parent  # MLflow: a tracked sweep's only

        parent = sweep_parent.Parent(info, done)
    paths = {}
    if done:  # a sweep stopped before its first job wrote anything has no matrix
        m = matrix.build(matrix.record_from_result(r) for r in done)
        paths = matrix.write(m, sweep_dir, parent and parent.run_link,
                             parent and parent.compare_link, parent and parent.runs_link)
        print(f"\nCompatibility matrix ({sweep_dir}"
              f"{'' if status == 'finished' else ', ' + status}):\n\n"
              f"{matrix.to_markdown(m)}", flush=True)
    if (sweep_dir / MULTIRUN_YAML).exists():
        redact.file(sweep_dir / MULTIRUN_YAML)
    if parent is not None:
        parent.close(paths, sweep_dir, status, e)
