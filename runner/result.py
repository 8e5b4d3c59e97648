"""result.json: the contract later tools and users' scripts read.

Written atomically (temporary name, then rename). While a job runs it holds `status: running`
and the current `phase`, so a crashed job still says where it died.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from runner import redact

FILENAME = "result.json"
# The user's choices, one per config group, as result.json and MLflow tags name them.
GROUPS = ("strategy", "load_strategy", "save_api", "load_api", "model", "data", "keras",
          "load_keras")
# The choices a `load_from` job takes from the model it loads, not from its config.
TRAIN_SIDE = ("strategy", "save_api", "model", "keras")
# Top-level choices besides the groups, null unless set: where the model came from, the step.
EXTRA_DIMENSIONS = ("load_from", "tutorial_step")
# Every dimension a job differs by.
DIMENSIONS = (*GROUPS, *EXTRA_DIMENSIONS)
MESSAGE_LIMIT = 2000


STARTED_ENV = "RUNNER_JOB_PROCESS_START"  # set to "forked" by runner.fork_server


def this_process() -> dict[str, Any]:
    """The job process (the last one, for a job whose sides run in two): its pid, and how it
    started: "forked" from runner.fork_server's process (TensorFlow imported, its runtime fresh)
    or "new" (a new Python process)."""
    return {"pid": os.getpid(), "start": os.environ.get(STARTED_ENV, "new")}


def new_result(cfg: Any, out: Path, overrides: list[str],
               mlflow_run_id: str | None = None) -> dict[str, Any]:
    """The result before anything ran: the combination, empty measurements."""
    return {
        "status": "running",
        "phase": "train",
        **{group: cfg[group].name for group in GROUPS},
        **{key: cfg[key] for key in EXTRA_DIMENSIONS},
        "replicas": {"train": None, "load": None},
        "error": None,
        "max_abs_diff": None,
        "tolerance": cfg.verify.tolerance,
        "accuracy": {"after_train": None, "after_load": None, "after_continue": None},
        "timings": {"train_s": None, "save_s": None, "load_s": None, "continue_s": None,
                    "resume_s": None},
        "throughput": {"train_examples_per_s": None, "continue_examples_per_s": None},
        "history": {},
        # Can it keep training with the same numbers? (runner.verify)
        "resume": None,
        "optimizer": {"saved": None, "loaded": None, "new_optimizer": None},
        "random_layers": None,
        "distributed_variables": None,
        "pinned_devices": None,
        "resave": None,
        "artifact": None,
        "artifact_bytes": None,
        "io_device": cfg.io_device,
        "notes": [f"save_api=auto: saved with {cfg.save_api.name}, the save API the seed "
                  f"pairs with load_api={cfg.save_api.paired_with}"]
                 if cfg.save_api.get("paired_with") else [],
        "overrides": overrides,
        "output_dir": str(out),
        "mlflow_run_id": mlflow_run_id,
        "mlflow_run_url": os.environ.get("RUNNER_MLFLOW_RUN_URL") if mlflow_run_id else None,
        "devices": None,
        "process": this_process(),
        "keras_module": None,
        "load_keras_module": None,
        "versions": versions(),
    }


def set_error(result: dict[str, Any], e: BaseException, phase: str, hint: str | None) -> None:
    """Mark the result failed (or interrupted, for Ctrl-C) by `e` in `phase`."""
    result["status"] = "failed" if isinstance(e, Exception) else "interrupted"
    result["error"] = {
        "type": type(e).__name__,
        "message": (str(e) or repr(e))[:MESSAGE_LIMIT],
        "phase": phase,
        "hint": hint,
    }


def not_started(cfg: Any, out: Path, overrides: list[str], e: BaseException,
                phase: str) -> dict[str, Any]:
    """A failed result for a job that could not start (e.g. its tracking server is down)."""
    result = new_result(cfg, out, overrides)
    result.pop("phase")
    set_error(result, e, phase, None)
    return result


def versions() -> dict[str, str | None]:
    """Python's and the libraries' versions, from package metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for dist in ("tensorflow", "keras", "tf-keras", "tensorflow-hub", "tensorflow-datasets",
                 "numpy", "hydra-core", "omegaconf", "mlflow"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


def stamp(result: dict[str, Any], event: str, keep: bool = False) -> None:
    """When `event` happened (Unix seconds) in result["clock"], which says where a job's wall
    time went besides its timed phases: `job_start` (the Hydra task began), `run_opened`
    (its MLflow run), `process_start` and `prepared` (the job process began; its runtime was
    ready), `process_end` (it wrote its last result). keep: the first time only."""
    clock = result.setdefault("clock", {})
    if not (keep and event in clock):
        clock[event] = round(time.time(), 3)


def write(output_dir: Path, result: dict[str, Any]) -> None:
    write_atomic(Path(output_dir) / FILENAME, json.dumps(redact.tree(result), indent=2) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary name beside `path`, then rename it into place: a reader sees
    the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read(output_dir: Path) -> dict[str, Any]:
    return json.loads((Path(output_dir) / FILENAME).read_text())


class JobCrashed(RuntimeError):
    """The job process ended without writing its result."""


def read_or_crashed(output_dir: Path, returncode: int, final: bool = True,
                    failure: BaseException | None = None) -> dict[str, Any]:
    """The job's result; if its process ended before finishing it, a failed one saying why:
    `failure` when given (e.g. another worker of the job failed), else JobCrashed.
    final=False: a job's train-side process, which ends with its result still running."""
    try:
        result = read(output_dir)
    except (FileNotFoundError, json.JSONDecodeError):
        result = {"status": "running", "phase": "data"}
    if result.get("status") in ("passed", "failed", "interrupted"):
        return result
    if failure is None and not final and returncode == 0:
        return result
    phase = result.get("phase", "data")
    if failure is None:
        failure = JobCrashed(f"the job process exited with code {returncode} during phase "
                             f"'{phase}' before writing its result; see job.log")
    set_error(result, failure, phase, None)
    write(output_dir, result)
    return result


def summary(result: dict[str, Any]) -> str:
    """The one-line summary; for a failed job, the whole error and where the traceback is."""
    text = summary_line(result)
    if result["status"] != "passed":
        err = result["error"]
        text += f"\n  {err['type']} in phase '{err['phase']}': {err['message']}"
        if err.get("hint"):
            text += f"\n  hint: {err['hint']}"
        text += f"\n  traceback and log: {result.get('output_dir', '.')}/traceback.txt, job.log"
    return text


def summary_line(result: dict[str, Any]) -> str:
    """One line: outcome, the combination, and the numbers that matter."""
    combo = " ".join(f"{k}={result.get(k)}" for k in DIMENSIONS if result.get(k) is not None)
    acc = result.get("accuracy") or {}
    accs = "/".join(_fmt(acc.get(k), ".3f") for k in ("after_train", "after_load",
                                                       "after_continue"))
    head = f"{result['status'].upper()} {combo} | acc train/load/continue {accs}"
    head += f" | max|Δ| {_fmt(result.get('max_abs_diff'), '.1e')}"
    resume = resume_words(result.get("resume"))
    if resume:
        head += f" | {resume}"
    if result["status"] != "passed":
        err = result["error"]
        head += f" | {err['phase']}: {err['type']}: {_clip(first_line(err['message']))}"
        if err.get("hint"):
            head += f" (hint: {err['hint']})"
    head += f" | {result.get('output_dir', '')}"
    tracking = result.get("tracking") or {}
    if tracking.get("status") == "pending":
        head += (f" | MLflow unreachable, record pending: python -m runner.sync "
                 f"{result.get('output_dir', '')}")
    elif result.get("mlflow_run_url"):
        head += f" | {result['mlflow_run_url']}"
    return head


def resume_words(resume: Any) -> str | None:
    """The resume check in a few words: 'resume exact', 'resume drifted 9.1e-03 (iterations
    reset)', 'inference only'; None when it was not made."""
    if not resume:
        return None
    outcome = resume.get("outcome")
    if outcome == "exact":
        return "resume exact"
    if outcome == "drifted":
        return (f"resume drifted {_fmt(resume.get('max_abs_diff'), '.1e')} "
                f"({resume.get('cause') or 'unknown'})")
    if outcome == "error":
        return f"resume error ({resume.get('cause') or 'unknown'})"
    if str(resume.get("reason", "")).startswith("inference only"):
        return "inference only"
    return None


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def first_line(text: object) -> str:
    """The first line of a message (of an exception's text, too)."""
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def _clip(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"
