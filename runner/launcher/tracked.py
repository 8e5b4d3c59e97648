"""A tracked job: its processes run inside an MLflow run that is always closed, FINISHED,
FAILED or KILLED, and a store that goes away costs no work (mlflow.on_lost).

Imported only for a job with mlflow.enabled=true: it imports MLflow (seconds), which an
untracked job, `--help` and a config error never pay.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core import redact, sweep_file
from runner.core import result as results
from runner.core.files import TRACEBACK
from runner.core.result import Result
from runner.core.sweep_file import Job
from runner.launcher.job_process import clock, report, run_in_subprocess
from runner.tracking import runs, store
from runner.tracking.curves import warm_finish
from runner.tracking.relay import JobRelay

if TYPE_CHECKING:
    from runner.core.schema import Config


def run_tracked(cfg: Config, output_dir: Path, overrides: list[str], job: Job | None,
                sweep: Path | None) -> Result:
    """The job inside its MLflow run. `job`: its place in a sweep that has a parent run;
    `sweep`: the sweep's directory (None for a single job).

    A store that is away when a single job starts fails it at once (a wrong URI, most likely).
    One that goes away after a sweep or the job started costs no work (mlflow.on_lost=continue):
    the job runs (on) untracked, its result.json says `tracking: pending`, and
    `python -m runner.sync` brings the store up to date once it is back."""
    try:
        run = runs.start(cfg, output_dir, overrides, job,
                         brief=job is not None and job.store_lost)
    except store.TrackingUnavailableError as e:
        if job is None or cfg.mlflow.on_lost != "continue":
            return not_tracked(cfg, output_dir, overrides, e)
        result = run_in_subprocess(cfg, output_dir, overrides, reporting=False, sweep=sweep)
        return tracking_lost(cfg, result, output_dir, None, e, sweep)
    except Exception as e:  # any other failure, too: recorded, not raised
        return not_tracked(cfg, output_dir, overrides, e)
    warm_finish()
    results.stamp({"clock": clock}, "run_opened")
    try:
        with tempfile.TemporaryDirectory(prefix="runner-relay-") as handover, \
                JobRelay(run, Path(handover)) as relay, \
                runs.system_metrics(run, cfg.mlflow.system_metrics):
            result = run_in_subprocess(cfg, output_dir, overrides,
                                       {**runs.job_env(run), **relay.env()}, reporting=False,
                                       sweep=sweep)
        relay.apply(result)
    except BaseException:  # a bug of the runner's own: the run must still end
        with contextlib.suppress(Exception):
            runs.abort(run)
        raise
    # Said before finishing, so that the result.json the run holds is the one on disk; if the
    # store goes away meanwhile, `pending` replaces it on disk and runner.sync uploads that.
    result["tracking"] = {"status": "recorded", "run_id": run.run_id}
    if cfg.mlflow.register_model:
        runs.register(run, result, cfg.mlflow.register_model)
    results.write(output_dir, result)
    try:
        runs.finish(run, result, output_dir)
    except Exception as e:  # the store went away while the job ran: its record is on disk
        return tracking_lost(cfg, result, output_dir, run, e, sweep)
    report(result, output_dir)
    print(f"MLflow run: {run.open_with()}", flush=True)
    registered = (result.get("mlflow_model") or {}).get("registered")
    if registered:
        print(f"Model Registry: {registered['name']} version {registered['version']}"
              if "version" in registered else
              f"Model Registry: not registered as {registered['name']}: {registered['error']}",
              flush=True)
    return result


def tracking_lost(cfg: Config, result: Result, output_dir: Path, run: runs.TrackedRun | None,
                  e: Exception, sweep: Path | None) -> Result:
    """The store is away, the job's work is done and on disk: `tracking: pending` (or, with
    mlflow.on_lost=fail, a failure in phase `tracking`), and the command that syncs it."""
    # A failed start already says why, naming the URI (store.unavailable); a failed finish
    # is said here.
    reason = str(e) if run is None else store.unavailable(run.uri, e)
    result["tracking"] = {"status": "pending", "run_id": run.run_id if run else None,
                          "reason": reason}
    if cfg.mlflow.on_lost == "fail" and result["status"] == "passed":
        results.set_error(result, store.TrackingUnavailableError(reason), "tracking", None)
    results.write(output_dir, result)
    if sweep is not None:
        sweep_file.note_lost(sweep)
    report(result, output_dir)
    return result


def not_tracked(cfg: Config, output_dir: Path, overrides: list[str],
                e: Exception) -> Result:
    """The job could not start its MLflow run: a failed result in phase `tracking`, and the run,
    if it was created before the failure, closed FAILED with that result."""
    run, error = (e.run, e.error) if isinstance(e, runs.StartFailed) else (None, e)
    result = results.not_started(cfg, output_dir, overrides, error, phase="tracking")
    if run is not None:
        result["mlflow_run_id"] = run.run_id
    output_dir.mkdir(parents=True, exist_ok=True)
    results.write(output_dir, result)
    if not isinstance(error, store.TrackingUnavailableError):
        (output_dir / TRACEBACK).write_text(redact.text("".join(
            traceback.format_exception(error))))
    report(result, output_dir)
    if run is not None:
        try:
            runs.finish(run, result, output_dir)
        except Exception as close_error:  # the store itself may be the problem
            print(f"Could not close MLflow run {run.run_id}: {close_error!r}", file=sys.stderr)
    return result
