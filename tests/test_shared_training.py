"""A sweep's cells with the same training side share one training (runner.share_training): the
same numbers as every cell training its own, a failed training failing its cells with its
error, parallel cells waiting for the one training they need."""

from __future__ import annotations

from pathlib import Path

from helpers.run import runner, sweep_results
from mlflow.tracking import MlflowClient

from runner.core import trainings

QUIET = ["train.epochs=1", "continue_epochs=1", "verbose=0"]
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
# What describes how a job ran, not what it measured. artifact_bytes: a SavedModel's size
# moves by a byte with the length of the staging folder's name, which holds the pid.
HOW_IT_RAN = ("timings", "throughput", "clock", "process", "output_dir", "overrides",
              "mlflow_run_id", "mlflow_run_url", "tracking", "trained_by", "artifact",
              "artifact_bytes", "mlflow_model", "devices", "notes", "metrics_logged_live")


def measured(result: dict) -> dict:
    found = {k: v for k, v in result.items() if k not in HOW_IT_RAN}
    if found.get("resume"):
        found["resume"] = {k: v for k, v in found["resume"].items() if k != "seconds"}
    if found.get("error"):  # its message names the job's folder
        found["error"] = {k: v for k, v in found["error"].items() if k != "message"}
    return found


def sweep(tmp_path: Path, name: str, *overrides: str) -> tuple[object, list[dict]]:
    sweep_dir = tmp_path / name
    proc = runner("-m", f"hydra.sweep.dir={sweep_dir}", *overrides)
    assert (sweep_dir / "matrix.md").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, sweep_results(sweep_dir)


def test_a_shared_sweep_gives_every_number_of_the_unshared_one(tmp_path):
    """One training saved with two save APIs for 8 cells that load them under both Keras
    generations, on one replica and on two. The cell that trains is one whose own save fails,
    after the whole training (Keras 3 writes no SavedModel with Model.save): the other save's
    cells still load theirs. Tracked, as users run: the cells that loaded another's training
    have their full record in MLflow, the training's curve and the logged model included."""
    cells = ["keras=v3", "load_keras=v3,legacy", "strategy=mirrored",
             "load_strategy=default,mirrored", "save_api=keras_saved_model,keras",
             "load_api=keras", *QUIET]
    _, shared = sweep(tmp_path, "shared", *cells, f"mlflow.store_dir={tmp_path / 'store'}")
    _, alone = sweep(tmp_path, "alone", *cells, "runner.share_training=false",
                     "mlflow.enabled=false")
    assert len(shared) == len(alone) == 8
    assert {r["status"] for r in shared} == {"passed", "failed"}  # both kinds of cell
    assert any((r.get("resume") or {}).get("outcome") == "exact" for r in shared)
    for one, other in zip(shared, alone, strict=True):
        assert measured(one) == measured(other), one["output_dir"]
    assert any(r["status"] == "failed" and r["error"]["phase"] == "save"
               and r["history"]["train"] and "trained_by" in r for r in shared)
    owners = [r for r in shared if "trained_by" not in r]
    assert [(r["save_api"], r["status"]) for r in owners] == [("keras_saved_model", "failed")]
    assert len(list((tmp_path / "shared" / trainings.FOLDER).iterdir())) == 1
    assert all("trained_by" not in r for r in alone)
    client = MlflowClient(f"sqlite:///{tmp_path / 'store'}/mlflow.db")
    for r in shared[1:]:
        assert r["trained_by"]["output_dir"] == owners[0]["output_dir"]
        assert r["history"]["train"] == owners[0]["history"]["train"]
        run = client.get_run(r["tracking"]["run_id"])
        assert r["mlflow_run_url"] == f"runs:/{run.info.run_id}"  # its summary line names it
        assert run.data.tags["trained_by"].startswith(f"job {r['trained_by']['job']} (run ")
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
        assert steps[:1] == [0]  # training's epoch, logged into this cell's run too
        if r["status"] == "passed":
            assert r["save_api"] == "keras"
            assert r["mlflow_model"]["logged"] is True, r["mlflow_model"]
            assert (Path(r["output_dir"]) / "saved_model" / "probe.npz").is_file()
        elif r["error"]["phase"] == "save":
            assert r["save_api"] == "keras_saved_model"
            assert "saving the shared training" in r["error"]["message"]


def test_a_failed_shared_training_fails_its_cells_with_its_error(tmp_path):
    """model=text cannot train under Keras 3's MirroredStrategy: the cell that trained fails with
    the reason, the cell that waited for it (in parallel, joblib) fails with the same error,
    naming whose training it was; nothing looks like a saved model."""
    proc, results = sweep(tmp_path, "sweep", "model=text", "strategy=mirrored",
                          "load_strategy=default,one_device", *QUIET, *PARALLEL,
                          "mlflow.enabled=false")
    assert proc.stdout.count("failed in train") == 2, proc.stdout[-3000:]
    owner, waiter = sorted(results, key=lambda r: "trained_by" in r)
    assert owner["status"] == waiter["status"] == "failed"
    assert owner["error"]["phase"] == waiter["error"]["phase"] == "train"
    assert waiter["error"]["type"] == owner["error"]["type"]
    assert "AddN" in owner["error"]["message"] and "AddN" in waiter["error"]["message"]
    assert f"shared training (job {waiter['trained_by']['job']}" in waiter["error"]["message"]
    assert waiter["error"]["hint"] == owner["error"]["hint"]
    assert not (Path(waiter["output_dir"]) / "saved_model").exists()


def test_parallel_cells_wait_for_one_training_and_do_not_train_twice(tmp_path):
    """joblib, 2 at a time: 4 cells of one training side; one trains, the three others load its
    model (the first of them while it still trains), each in its own process."""
    proc, results = sweep(tmp_path, "sweep", "load_strategy=default,one_device,none,mirrored",
                          *QUIET, *PARALLEL, "mlflow.enabled=false")
    assert proc.returncode == 0, proc.stdout[-3000:]
    owners = [r for r in results if "trained_by" not in r]
    assert len(owners) == 1 and all(r["status"] == "passed" for r in results)
    assert len(list((tmp_path / "sweep" / trainings.FOLDER).iterdir())) == 1
    for r in results:
        if r is not owners[0]:
            assert r["trained_by"]["output_dir"] == owners[0]["output_dir"]
            assert r["accuracy"]["after_train"] == owners[0]["accuracy"]["after_train"]
            assert r["process"]["pid"] != owners[0]["process"]["pid"]
            log = (Path(r["output_dir"]) / "job.log").read_text()
            assert "train: shared with job" in log


def test_share_training_false_trains_every_cell(tmp_path):
    _, results = sweep(tmp_path, "sweep", "load_strategy=default,none", *QUIET,
                       "runner.share_training=false", "mlflow.enabled=false")
    assert [r.get("trained_by") for r in results] == [None, None]
    assert not (tmp_path / "sweep" / trainings.FOLDER).exists()
