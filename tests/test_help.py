"""Every example `python -m runner --help` shows runs as written (tiny epochs, a temporary
store) and ends as the help says: single jobs pass, sweeps write their matrix."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers.data import PREPARE_MNIST
from helpers.run import ROOT, read_result, runner, sweep_results

TINY = ["train.epochs=1", "continue_epochs=1", "verbose=0"]


def help_examples() -> list[str]:
    """The example lines of --help (without `python -m runner`), comments cut off."""
    text = runner("--help").stdout
    block = text.split("Examples", 1)[1].split("Use --hydra-help", 1)[0]
    found = []
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("python -m runner"):
            found.append(re.sub(r"\s+\(.*\)$", "", line)[len("python -m "):])
    return found


EXAMPLES = help_examples()


# The single jobs run here; of the sweeps, the matrix is what tests/test_matrix.py runs (the
# same command), tutorial_all and runner.report run here.
SINGLE = [e for e in EXAMPLES if e.startswith("runner ") and not e.startswith("runner -m")]
SWEEPS = [e for e in EXAMPLES if e.startswith("runner -m")]


def test_every_example_is_run_by_one_of_these_tests():
    assert len(SINGLE) >= 6, EXAMPLES
    assert [("experiment=matrix" in e, "experiment=tutorial_all" in e) for e in SWEEPS] == [
        (True, False), (False, True)]
    assert [e for e in EXAMPLES if e not in SINGLE + SWEEPS] == ["runner.report"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A tracked job whose run the load_from example loads (its RUN_ID)."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("source")
    proc = runner(f"hydra.run.dir={tmp}/run", *TINY, f"mlflow.store_dir={tmp}/mlflow",
                  "mlflow.log_model=false", "save_api=saved_model", "load_api=saved_model")
    assert proc.returncode == 0, proc.stdout[-2000:]
    client = MlflowClient(f"sqlite:///{tmp}/mlflow/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("runner-save-load").experiment_id])
    return tmp / "mlflow", run.info.run_id


@pytest.mark.slow  # 7 jobs; each example's behaviour also has a default-run test of its own
@pytest.mark.parametrize("example", SINGLE)
def test_single_job_example_passes(example, tmp_path, saved_run):
    store, run_id = saved_run
    words = example.split()[1:]
    if any(w.startswith("data.data_dir=DIR") for w in words):
        data_dir = tmp_path / "tfds"
        subprocess.run([sys.executable, "-c", PREPARE_MNIST, str(data_dir)], check=True,
                       capture_output=True, timeout=300)
        words = [w.replace("DIR", str(data_dir)) for w in words]
    words = [w.replace("RUN_ID", run_id) for w in words]
    job = tmp_path / "job"
    proc = runner(f"hydra.run.dir={job}", *words, *TINY, f"mlflow.store_dir={store}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert read_result(job)["status"] == "passed"
    assert "Warning:" not in proc.stderr  # no example is a combination known to fail


def test_matrix_example_is_the_sweep_test_matrix_runs():
    (example,) = [e for e in EXAMPLES if "experiment=matrix" in e]
    as_args = ", ".join(f'"{w}"' for w in example.split()[1:])
    assert as_args in (ROOT / "tests" / "test_matrix.py").read_text()


@pytest.mark.slow  # 16 jobs
def test_tutorial_all_example_and_report(tmp_path):
    (example,) = [e for e in EXAMPLES if "experiment=tutorial_all" in e]
    sweep_dir, store = tmp_path / "sweep", tmp_path / "mlflow"
    proc = runner(*example.split()[1:], f"hydra.sweep.dir={sweep_dir}", *TINY,
                  f"mlflow.store_dir={store}", "mlflow.log_model=false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sweep_results(sweep_dir)
    assert len(results) == 16 and (sweep_dir / "matrix.md").exists()
    # Under tf_keras every seed step passes; under Keras 3 the last four fail, each with a hint.
    for r in results:
        assert (r["status"] == "passed") == (
            r["keras"] == "legacy" or r["tutorial_step"] in (
                "keras_load", "keras_load_one_device", "saved_model_load",
                "saved_model_load_mirrored")), (r["tutorial_step"], r["keras"], r["error"])
    (report,) = [e for e in EXAMPLES if e.startswith("runner.report")]
    proc = subprocess.run([sys.executable, "-m", *report.split(), "--store-dir", str(store)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (sweep_dir / "matrix.md").read_text() in proc.stdout
