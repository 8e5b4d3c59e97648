"""A sweep's bookends, as a Hydra callback in the launching process.

Before any job starts: create the MLflow store, experiment and one parent run (so that parallel
jobs never race to create the sqlite schema), and leave its id in the sweep dir for the jobs.
After the last job: build the compatibility matrix from the jobs' result.json files, write it
into the sweep dir, print it, log it to the parent run and close that run.

A sweep that ends early (Ctrl-C, SIGTERM, a launcher error) never reaches on_multirun_end: then
`close_unfinished`, called by `python -m runner` on its way out, closes it the same way with the
jobs that finished, after marking the interrupted ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner import interrupt, redact
from runner import result as results

SWEEP_FILE = "sweep.json"
GENERATIONS_ENV = "RUNNER_SWEEP_GENERATIONS"  # the Keras generations a local sweep's jobs import
# The sweep this process launched and has not closed yet (see close_unfinished), and whether
# its jobs run here (basic, joblib launchers), where they end with it: not on a SLURM cluster.
_open: list[tuple[Path, bool]] = []


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        swept, jobs = sweep_plan(config)
        info: dict[str, Any] = {"parent_run_id": None, "tracking_uri": None,
                                "experiment_id": None, "swept": swept, "jobs": jobs,
                                "name": parent_name(config, sweep_dir, swept, jobs),
                                "started": time.time(),
                                # what runner.sync needs to reach the store again (masked)
                                "mlflow": redact.tree(OmegaConf.to_container(
                                    config.mlflow, resolve=True))}
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if "submitit" not in launcher:
            # Every job's process (joblib's workers too) starts the fork servers of all the
            # sweep's Keras generations at its first job, not one by one as jobs need them.
            os.environ[GENERATIONS_ENV] = ",".join(swept_generations(config))
        if "BasicLauncher" in launcher:
            from runner import app  # the jobs run in this process: their servers can start now

            app.warm_fork_servers(config, sweep=True)
        with interrupt.deferred():  # a parent run created must be recorded, to be closed
            if config.mlflow.enabled:
                from runner import tracking

                try:
                    parent = tracking.start_parent(config, sweep_dir, info["name"])
                except tracking.TrackingUnavailableError as e:
                    # Not a warning (what Hydra makes of a callback's exception): every job
                    # would fail the same way, unlinked to any sweep.
                    print(f"Sweep not started: {e}", file=sys.stderr)
                    raise SystemExit(1) from None
                info.update(parent_run_id=parent.run_id, tracking_uri=parent.uri,
                            experiment_id=parent.experiment_id)
            results.write_atomic(sweep_dir / SWEEP_FILE, json.dumps(info, indent=2) + "\n")
            local = "submitit" not in str(config.hydra.launcher.get("_target_", ""))
            _open[:] = [(sweep_dir, local)]
        if not local:
            start_pending_watch(Path(str(config.hydra.launcher.get("submitit_folder", "")))
                                .parent if config.hydra.launcher.get("submitit_folder")
                                else sweep_dir / ".submitit")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close(Path(config.hydra.sweep.dir).resolve(), "finished")


def parent_name(config: DictConfig, sweep_dir: Path, swept: list[str], jobs: int | None) -> str:
    """The parent run's name, short enough for the runs table and saying what the sweep
    compares: 'sweep 01-36-47: experiment=matrix (32 jobs)', 'sweep 01-36-47: load_api ×
    save_api (4 jobs)'."""
    preset = (config.hydra.runtime.get("choices") or {}).get("experiment")
    what = f"experiment={preset}" if preset else " × ".join(swept) or "one job"
    return f"sweep {sweep_dir.name}: {what}" + (f" ({jobs} jobs)" if jobs else "")


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


def sweep_overrides(config: DictConfig) -> list[Any]:
    """The sweep's overrides (its sweeper's params, then the command line's), parsed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    given = [*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task]
    return OverridesParser.create().parse_overrides(given)


def swept_generations(config: DictConfig) -> list[str]:
    """The Keras generations the sweep's jobs import: its config's, and every value it gives
    keras or load_keras."""
    generations = {config.keras.name, config.load_keras.name}
    for o in sweep_overrides(config):
        if o.get_key_element() in ("keras", "load_keras"):
            values = o.sweep_iterator() if o.is_sweep_override() else [o.value()]
            generations.update(str(v) for v in values)
    return sorted(generations)


@dataclass(frozen=True)
class Job:
    """A sweep's job as its MLflow run needs it: the parent run, its number, the swept keys."""

    parent_run_id: str
    num: int
    swept: list[str]
    store_lost: bool = False  # an earlier job found the store gone (LOST_MARK)


def progress(sweep_dir: Path) -> str | None:
    """After a job: 'sweep: 5/32 jobs done (4 passed, 1 failed), 41 s, about 3 min left'."""
    info = sweep_info(sweep_dir)
    done = [r for r in job_results(sweep_dir) if r.get("status") != "running"]
    if not done:
        return None
    passed = sum(r["status"] == "passed" for r in done)
    elapsed = time.time() - info.get("started", time.time())
    total = info.get("jobs")
    line = (f"sweep: {len(done)}/{total or '?'} jobs done ({passed} passed, "
            f"{len(done) - passed} failed), {_duration(elapsed)}")
    if total and len(done) < total:
        line += f", about {_duration(elapsed / len(done) * (total - len(done)))} left"
    return line


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


# SLURM's reasons for a pending job that no wait will ever satisfy (squeue's %r).
NEVER_SCHEDULED = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
                   "ReqNodeNotAvail", "InvalidQOS", "QOSMaxCpuPerJobLimit", "AssocMaxJobsLimit"}
PENDING_WATCH_S = 10


def start_pending_watch(submitit_dir: Path) -> threading.Thread:
    """While a SLURM sweep runs, say which of its jobs SLURM keeps pending and why (the launcher
    itself waits silently, forever for a job that asks for more than the cluster has)."""
    watch = threading.Thread(target=_watch_pending, args=(submitit_dir,), daemon=True,
                             name="runner-pending-watch")
    watch.start()
    return watch


def _watch_pending(submitit_dir: Path) -> None:
    told: set[tuple[str, str]] = set()
    while True:
        time.sleep(PENDING_WATCH_S)
        for job_id, reason in pending_jobs(submitit_dir):
            if (job_id, reason) in told:
                continue
            told.add((job_id, reason))
            print(pending_message(job_id, reason), file=sys.stderr, flush=True)


def pending_jobs(submitit_dir: Path) -> list[tuple[str, str]]:
    """(SLURM job id, reason) of this sweep's jobs that are PENDING, from squeue."""
    ids = [p.name for p in submitit_dir.glob("*") if p.is_dir() and p.name.split("_")[0].isdigit()]
    if not ids or shutil.which("squeue") is None:
        return []
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [(job, reason) for job, state, reason in
            (line.split("|", 2) for line in out.splitlines() if line.count("|") == 2)
            if state == "PENDING"]


def pending_message(job_id: str, reason: str) -> str:
    if reason in NEVER_SCHEDULED:
        return (f"SLURM job {job_id} of this sweep is PENDING ({reason}): it asks for more than "
                "the partition offers and will never start (e.g. hydra.launcher.nodes larger "
                "than the partition's nodes; on one node: hydra.launcher.nodes=1 "
                "hydra.launcher.tasks_per_node=2). Stop the sweep (Ctrl-C), scancel "
                f"{job_id}, and choose what the cluster has (sinfo).")
    return f"SLURM job {job_id} of this sweep is PENDING ({reason}): waiting to be scheduled."


def close_unfinished(e: BaseException) -> None:
    """Close the sweep this process started, if it ended early: every job still `running` is
    marked interrupted (its MLflow run KILLED, with what it left), then the matrix of the jobs
    that ran is written and the parent run closed KILLED (interrupted) or FAILED."""
    if not _open:
        return
    sweep_dir, local = _open[0]
    if local:  # jobs on a cluster go on without the launching process: not ours to close
        for job_dir in job_dirs(sweep_dir):
            if (job_dir / results.FILENAME).exists():  # the job had started: how it ended
                results.read_or_crashed(job_dir, None, failure=e)
    close(sweep_dir, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
          e if local else None)


def close(sweep_dir: Path, status: str, e: BaseException | None = None) -> None:
    """The sweep's matrix from its jobs' results, printed and written; the parent run closed.
    e: what stopped the sweep early; its jobs' runs still RUNNING are closed with it."""
    from runner import matrix

    _open.clear()
    os.environ.pop(GENERATIONS_ENV, None)
    done = job_results(sweep_dir)
    records = [matrix.record_from_result(r) for r in done]
    info = sweep_info(sweep_dir)
    paths = {}
    compare = None  # the UI page comparing the sweep's runs
    if records:  # a sweep stopped before its first job wrote anything has no matrix
        m = matrix.build(records)
        href = None
        if info.get("parent_run_id"):
            from runner import tracking

            def href(run_id: str) -> str:
                return tracking.TrackedRun(info["tracking_uri"], run_id,
                                           info.get("experiment_id")).href

            run_ids = [r["mlflow_run_id"] for r in done if r.get("mlflow_run_id")]
            compare = tracking.compare_page(info.get("experiment_id"), run_ids) \
                if run_ids else None
        paths = matrix.write(m, sweep_dir, href, compare and tracking.href(
            info["tracking_uri"], compare))
        print(f"\nCompatibility matrix ({sweep_dir}"
              f"{'' if status == 'finished' else ', ' + status}):\n\n"
              f"{matrix.to_markdown(m)}", flush=True)
    if (sweep_dir / "multirun.yaml").exists():
        redact.file(sweep_dir / "multirun.yaml")
    if info.get("parent_run_id"):
        from runner import tracking

        parent = tracking.TrackedRun(info["tracking_uri"], info["parent_run_id"],
                                     info.get("experiment_id"))
        try:
            if e is not None:
                tracking.close_running_children(parent, e)
            tracking.finish_parent(parent, paths, sweep_dir, status)
            parent.client.set_tag(parent.run_id, tracking.RECORD_TAG, tracking.sweep_digest(done))
        except Exception as lost:  # the store went away: the record is on disk
            print(f"Could not close the sweep's parent run: "
                  f"{tracking.unavailable(parent.uri, lost)}", file=sys.stderr, flush=True)
            note_parent(sweep_dir, "pending")
        pending = [r for r in done if (r.get("tracking") or {}).get("status") == "pending"]
        if pending or sweep_info(sweep_dir).get("parent_status") == "pending":
            sync_once(sweep_dir, info)
        else:
            print(f"MLflow parent run (matrix.html links every cell to its run): "
                  f"{parent.open_with()}", flush=True)
            if compare:
                print(f"Its runs side by side: {tracking.open_with(parent.uri, compare)}",
                      flush=True)


def sync_once(sweep_dir: Path, info: dict[str, Any]) -> None:
    """Try once (bounded by the HTTP settings) to bring the store up to date with the sweep's
    pending records; say what remains pending and how to sync it later."""
    from runner import sync

    print(f"MLflow was unreachable during the sweep: syncing {sweep_dir} once ...", flush=True)
    outcomes = sync.sync([sweep_dir], OmegaConf.create(info["mlflow"]))
    left = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.what != "up to date":
            print(f"  {o.line()}", flush=True)
    if left:
        print(f"{len(left)} record(s) still pending; when the store is back: "
              f"python -m runner.sync {sweep_dir}", flush=True)


def note_parent(sweep_dir: Path, status: str) -> None:
    """sweep.json says whether the parent run holds the sweep's record (recorded/pending)."""
    info = sweep_info(sweep_dir)
    if info and info.get("parent_status") != status:
        info["parent_status"] = status
        results.write_atomic(sweep_dir / SWEEP_FILE, json.dumps(info, indent=2) + "\n")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The jobs' output directories (0, 1, ...), in job order."""
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def job_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """The result.json of every job of a sweep that wrote one, in job order."""
    return [results.read(d) for d in job_dirs(sweep_dir) if (d / results.FILENAME).exists()]


# A file, not a sweep.json field: jobs running at once under joblib would race on sweep.json.
LOST_MARK = ".tracking-lost"


def sweep_info(sweep_dir: Path) -> dict[str, Any]:
    """What the launching process left for the jobs: the MLflow parent run, if it opened one."""
    try:
        return json.loads((sweep_dir / SWEEP_FILE).read_text())
    except FileNotFoundError:
        return {}


def parent_run_id(sweep_dir: Path) -> str | None:
    return sweep_info(sweep_dir).get("parent_run_id")


def job(sweep_dir: Path, num: int) -> Job | None:
    """This job of the sweep in `sweep_dir`, if the sweep has a parent run."""
    info = sweep_info(sweep_dir)
    if not info.get("parent_run_id"):
        return None
    return Job(info["parent_run_id"], num, list(info.get("swept") or []),
               (sweep_dir / LOST_MARK).exists())


def note_lost(sweep_dir: Path) -> None:
    """A job of the sweep found its store gone: the next jobs look for it with one try only."""
    (sweep_dir / LOST_MARK).touch()
