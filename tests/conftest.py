"""The suite's fixtures and scheduling; what tests import lives in tests/helpers/."""

from __future__ import annotations

import pytest
from helpers.mlflow_server import MlflowServer
from helpers.run import FAST, read_result, runner, sweep_results

# Test files whose tests must all run on one xdist worker: test_slurm.py's module fixture starts
# and stops one SLURM cluster, which a second worker's copy of the fixture would stop under the
# first one's jobs (CI once failed so).
ONE_WORKER = ("tests/test_slurm.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """ONE_WORKER's files first: their tests run one after another on one worker, which should
    not be the last thing the suite waits for."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in ONE_WORKER)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` with ONE_WORKER's files as groups. The `xdist_group` mark would say it,
    but pytest-xdist 3.8 marks a group by rewriting node ids, which pytest 9.2 no longer allows:
    the mark groups nothing (pytest-dev/pytest-xdist#1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FilesOnOneWorker(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return path if path in ONE_WORKER else super()._split_scope(nodeid)

    return FilesOnOneWorker(config, log)


@pytest.fixture
def run_job(tmp_path):
    """Run one job into tmp_path/run; return (CompletedProcess, result)."""

    def _run(*overrides: str, env: dict[str, str] | None = None):
        job_dir = tmp_path / "run"
        proc = runner(f"hydra.run.dir={job_dir}", *FAST, *overrides, env=env)
        assert (job_dir / "result.json").exists(), proc.stdout + proc.stderr
        return proc, read_result(job_dir)

    return _run


@pytest.fixture
def run_sweep(tmp_path):
    """Run a multirun into tmp_path/sweep; return (CompletedProcess, [result per job])."""

    def _run(*overrides: str):
        sweep_dir = tmp_path / "sweep"
        proc = runner("-m", f"hydra.sweep.dir={sweep_dir}", *FAST, *overrides)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc, sweep_results(sweep_dir)

    return _run


@pytest.fixture
def server(tmp_path):
    """A running MlflowServer, stopped at the end."""
    s = MlflowServer(tmp_path)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def mlflow_server(tmp_path):
    """(url, artifacts dir) of a running real `mlflow server`, started as users start it."""
    s = MlflowServer(tmp_path, jobs=True)
    s.start()
    yield s.url, s.artifacts
    s.stop()
