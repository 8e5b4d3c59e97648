"""Run the runner the way users do: `python -m runner` in a subprocess, from the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Tiny but real: digits, one epoch each side, quiet Keras. MLflow tracking is tested on its own
# (tests/test_tracking.py) and off elsewhere, so that tests never write the repository's store.
FAST = ["train.epochs=1", "continue_epochs=1", "verbose=0", "mlflow.enabled=false"]

# What MLflow reads as "a CI or a test": with any of them set it turns its telemetry off
# (mlflow/telemetry/utils.py). pytest sets PYTEST_CURRENT_TEST, which every `python -m runner`
# a test starts inherits; as_users_run() leaves them out, so that telemetry runs as users have it.
CI_VARIABLES = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "CIRCLECI", "GITLAB_CI",
                "JENKINS_URL", "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER",
                "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION",
                "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID",
                "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def as_users_run(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell: os.environ without what marks a test or a CI."""
    return {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in CI_VARIABLES}


# RUNNER_TESTS_FORK_SERVER=false: every job the tests start that does not choose for itself
# runs in a new process (runner.fork_server=false), e.g. to run the scenario tests as before
# the fork server: RUNNER_TESTS_FORK_SERVER=false python -m pytest -n 2 tests/test_scenario.py
FORK_SERVER = os.environ.get("RUNNER_TESTS_FORK_SERVER")


def runner(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
           users_env: bool = False, cwd: Path = ROOT, raw: bool = False):
    """`python -m runner ARGS` from the repository root (or `cwd`: a user's own project);
    returns the CompletedProcess. users_env=True: with MLflow's telemetry on, as in a user's
    shell (see as_users_run). raw=True: its output as bytes, '\\r' kept (text mode makes each
    rewrite of a progress bar a line of its own)."""
    chosen = any(a.startswith("runner.fork_server=") for a in args)
    forced = [f"runner.fork_server={FORK_SERVER}"] if FORK_SERVER and not chosen else []
    return subprocess.run(
        [sys.executable, "-m", "runner", *args, *forced],
        cwd=cwd, env=as_users_run(env) if users_env else {**os.environ, **(env or {})},
        capture_output=True, text=not raw, timeout=timeout,
    )


def read_result(job_dir: Path) -> dict:
    return json.loads((job_dir / "result.json").read_text())


def fitting(job_dir: Path) -> bool:
    """Whether the job's process is past its data and in `train` again (building and fitting
    the model): a signal now lands in phase `train`. (Its first phase is `train` too, before the
    data: a signal sent then may land in `data`.)"""
    if not (job_dir / "result.json").exists():
        return False
    result = read_result(job_dir)
    return result.get("phase") == "train" and bool(result.get("data_sizes"))


def sweep_results(sweep_dir: Path) -> list[dict]:
    """Every job's result of a multirun, in job order."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [read_result(job) for job in jobs]


# A broad sweep as its docs give it: joblib, 2 at a time, untracked (tests/test_*_matrix.py).
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "mlflow.enabled=false"]


def experiment_results(experiment: str, sweep_dir: Path, jobs: int,
                       timeout: float = 3 * 3600) -> list[dict]:
    """Run `-m experiment=NAME` in parallel into sweep_dir; its results, `jobs` of them."""
    proc = runner("-m", f"hydra.sweep.dir={sweep_dir}", f"experiment={experiment}", *PARALLEL,
                  timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sweep_results(sweep_dir)
    assert len(results) == jobs
    return results
