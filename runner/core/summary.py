"""The one-line summary of a job, as the console, job.log and the sweep's progress show it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from runner.core.result import DIMENSIONS, Result
from runner.core.resume import DRIFTED, ERROR, EXACT, INFERENCE_ONLY, inference_only
from runner.core.text import clip, first_line


def summary(result: Result) -> str:
    """The one-line summary; for a failed job, the whole error and where the traceback is."""
    text = summary_line(result)
    if result["status"] != "passed":
        err = result["error"]
        text += f"\n  {err['type']} in phase '{err['phase']}': {err['message']}"
        if err.get("release"):
            text += f"\n  raised in {err['release']}"
        if err.get("hint"):
            text += f"\n  hint: {err['hint']}"
        text += f"\n  traceback and log: {result.get('output_dir', '.')}/traceback.txt, job.log"
    return text


def summary_line(result: Result) -> str:
    """One line: outcome, the combination, and the numbers that matter."""
    combo = " ".join(f"{k}={result.get(k)}" for k in DIMENSIONS if result.get(k) is not None)
    acc = result.get("accuracy") or {}
    accs = "/".join(_fmt(acc.get(k), ".3f") for k in ("after_train", "after_load",
                                                       "after_continue"))
    releases = release_words(result)
    if releases:
        combo += f" ({releases})"
    status = f"{result['status'].upper()} — {verdict(result)} |"
    head = f"{status} {combo} | acc train/load/continue {accs}"
    metrics = result.get("metrics") or {}
    if metrics and not any(acc.values()):  # the model's own loss where argmax does not fit
        losses = "/".join(_fmt((metrics.get(k) or {}).get("loss"), ".3f")
                          for k in ("after_train", "after_load", "after_continue"))
        head = f"{status} {combo} | loss train/load/continue {losses}"
    diff = result.get("max_abs_diff")
    if result["status"] == "passed" or diff is None:
        head += f" | max|Δ| {_fmt(diff, '.1e')}"
    else:  # measured before the failure, within the tolerance: not what failed
        head += f" | probe logits matched (max|Δ| {diff:.1e})"
    restart = restart_words(result.get("interruption"))
    if restart:
        head += f" | {restart}"
    if result["status"] != "passed":
        err = result["error"]
        head += f" | {err['phase']}: {err['type']}: {clip(first_line(err['message']))}"
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


# What a failure in each phase means for the question the job asks, in words.
FAILED_IN = {
    "train": "does not train", "data": "its data could not be prepared",
    "save": "does not save", "mlflow_model": "does not save as an MLflow model",
    "reference": "its reference could not be computed", "load": "does not load",
    "verify": "loads, but does not serve the same logits",
    "continue": "loads and serves the same logits, but training cannot continue",
    "resume": "loads and serves the same logits, but resuming is not exact "
              "(verify.resume=require)",
    "resave": "loads and serves the same logits, but does not save again",
}

# The outcome metric of a job's MLflow run (and the order of its colours in the compare page's
# plots): higher is better.
OUTCOME_CODES = {"failed": 0, "inference only": 1, "resume not exact": 2, "resume exact": 3}


def outcome_code(result: Result) -> int:
    """0 failed (or interrupted), 1 passed for inference only, 2 passed but resuming was not
    exact (drifted, or the check failed), 3 passed and resumes exactly (or was not checked)."""
    if result["status"] != "passed":
        return OUTCOME_CODES["failed"]
    resume = result.get("resume") or {}
    if resume.get("outcome") in (DRIFTED, ERROR):
        return OUTCOME_CODES["resume not exact"]
    if inference_only(resume):
        return OUTCOME_CODES["inference only"]
    return OUTCOME_CODES["resume exact"]


def verdict(result: Result) -> str:
    """What the outcome means, in words: 'loads and serves the same logits; resume drifted 1.6
    (new optimizer): training does not continue where it stopped'."""
    if result["status"] == "interrupted":
        return f"interrupted in {(result.get('error') or {}).get('phase') or 'its run'}"
    if result["status"] != "passed":
        phase = (result.get("error") or {}).get("phase") or ""
        return FAILED_IN.get(phase, f"fails in {phase or 'an unknown phase'}")
    head = "loads and serves the same logits"
    resume = result.get("resume") or {}
    outcome = resume.get("outcome")
    if outcome == EXACT:
        return f"{head}; resumes exactly: training continues where it stopped"
    if outcome == DRIFTED:
        return (f"{head}; resume drifted {_fmt(resume.get('max_abs_diff'), '.2g')} "
                f"({resume.get('cause') or 'unknown'}): training does not continue where it "
                "stopped")
    if outcome == ERROR:
        return (f"{head}; the resume check failed ({resume.get('cause') or 'unknown'}): "
                "whether training continues where it stopped is not known")
    if inference_only(resume):
        return f"{head}; inference only: it cannot be trained further"
    return head


# A sweep's counts, as its parent run's metrics: how many jobs came out which way.
COUNT_KEYS = ("jobs", "passed", "failed", "resume_exact", "resume_drifted", "inference_only")


def sweep_counts(done: Iterable[Result]) -> dict[str, int]:
    """How a sweep's jobs came out: jobs, passed, failed (interrupted and still running ones
    included: they did not pass), and of the passed ones how many resume exactly (or were not
    checked), drifted (or the check failed), serve for inference only."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    by_code = {OUTCOME_CODES["resume exact"]: "resume_exact",
               OUTCOME_CODES["resume not exact"]: "resume_drifted",
               OUTCOME_CODES["inference only"]: "inference_only"}
    for result in done:
        counts["jobs"] += 1
        if result.get("status") != "passed":
            counts["failed"] += 1
            continue
        counts["passed"] += 1
        counts[by_code[outcome_code(result)]] += 1
    return counts


def sweep_words(counts: Mapping[str, int]) -> str:
    """A sweep's outcome in one short line: '2/4 passed: 1 resumes exactly, 1 inference only;
    2 failed'."""
    parts = [f"{counts[key]} {words}" for key, words in (
        ("resume_exact", "resume exactly"), ("resume_drifted", "resume drifted"),
        ("inference_only", "inference only")) if counts.get(key)]
    line = f"{counts['passed']}/{counts['jobs']} passed"
    if parts:
        line += ": " + ", ".join(parts)
    if counts["failed"]:
        line += f"; {counts['failed']} failed"
    return line


def release_words(result: Result) -> str | None:
    """Both sides' exact libraries where a side ran in another release's environment:
    'tensorflow 2.15.1, tf-keras 2.15.1 → tensorflow 2.21.0, keras 3.15.1'."""
    if not (result.get("tf") or result.get("load_tf")):
        return None

    def side(versions: dict[str, Any] | None, generation: str | None) -> str:
        found = versions or {}
        keras = "tf-keras" if generation == "legacy" else "keras"
        return f"tensorflow {found.get('tensorflow')}, {keras} {found.get(keras)}"

    loaded = side(result.get("load_versions"), result.get("load_keras"))
    if result.get("load_from"):  # no training side ran: its versions are the file's to say
        return f"loaded with {loaded}"
    return f"{side(result.get('versions'), result.get('keras'))} → {loaded}"


def resume_words(resume: Any) -> str | None:
    """The resume check in a few words: 'resume exact', 'resume drifted 9.1e-03 (iterations
    reset)', 'inference only'; None when it was not made."""
    if not resume:
        return None
    outcome = resume.get("outcome")
    if outcome == EXACT:
        return "resume exact"
    if outcome == DRIFTED:
        return (f"resume drifted {_fmt(resume.get('max_abs_diff'), '.1e')} "
                f"({resume.get('cause') or 'unknown'})")
    if outcome == ERROR:
        return f"resume error ({resume.get('cause') or 'unknown'})"
    if inference_only(resume):
        return INFERENCE_ONLY
    return None


def restart_words(interruption: Any) -> str | None:
    """save_api=backup_and_restore: 'killed at epoch 1 batch 11, restarted exact' or '...,
    restarted drifted 2.1e-02 (data order)' against the same training uninterrupted."""
    if not interruption:
        return None
    where = interruption.get("killed_at") or {}
    head = f"killed at epoch {where.get('epoch')} batch {where.get('batch')}, restarted"
    if interruption.get("outcome") == EXACT:
        return f"{head} exact"
    return (f"{head} drifted {_fmt(interruption.get('max_abs_diff'), '.1e')} "
            f"({interruption.get('cause') or 'unknown'})")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)
