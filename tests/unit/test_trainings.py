"""Which sweep cells share a training (runner.core.trainings): the key, and the result a cell
starts from when it loads another cell's training."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.core import trainings
from runner.core.compose import compose
from runner.core.result import new_result
from runner.launcher.preflight import choose_save_api


def key(*overrides: str) -> str | None:
    cfg = compose(list(overrides))
    choose_save_api(cfg)
    return trainings.key(cfg)


@pytest.mark.parametrize("other", [
    "load_api=saved_model", "load_strategy=mirrored", "load_keras=legacy", "continue_epochs=5",
    "verify.tolerance=0.1", "verify.resume=require", "verify.resave=true", "verbose=0",
    "runner.fork_server=false", "mlflow.register_model=m", "load.trust=true",
])
def test_what_reaches_only_the_load_side_shares_the_training(other):
    assert key("save_api=keras") == key("save_api=keras", other) is not None


@pytest.mark.parametrize("other", [
    "save_api=saved_model", "strategy=mirrored", "keras=legacy", "seed=1", "train.epochs=3",
    "data=synthetic", "model.batchnorm=true", "train.precision=mixed_float16",
    "verify.resume_steps=2", "verify.probe_size=32", "tf=v2.15", "io_device=/job:localhost",
])
def test_what_reaches_the_training_side_trains_again(other):
    assert key("save_api=keras") != key("save_api=keras", other)


def test_save_api_auto_pairs_the_same_save_api_for_two_load_apis_into_one_training():
    # The seed pairs saved_model with both load APIs: which one it was paired with is a label.
    assert key("load_api=saved_model") == key("load_api=hub") != key("load_api=keras")
    assert key("load_api=keras") == key("save_api=keras", "load_api=keras")


@pytest.mark.parametrize("overrides", [
    ["runner.share_training=false"], ["load_from=/somewhere"],
    ["strategy=multi_worker_mirrored"], ["load_strategy=multi_worker_mirrored"],
])
def test_some_cells_always_train_their_own(overrides):
    assert key(*overrides) is None


def test_a_cell_keeps_its_identity_and_takes_the_trainings_record(tmp_path):
    owner_cfg, cell_cfg = compose(["load_api=keras"]), compose(["load_api=saved_model",
                                                               "save_api=keras",
                                                               "load_strategy=mirrored"])
    choose_save_api(owner_cfg)
    owner = new_result(owner_cfg, tmp_path / "0", ["load_api=keras"], "run0")
    owner["history"] = {"train": {"loss": [1.0, 0.5]}}
    owner["accuracy"]["after_train"] = 0.9
    owner["artifact"] = str(tmp_path / "0" / "saved_model" / "model.keras")
    published = {"status": "trained", "job": 0, "output_dir": str(tmp_path / "0"),
                 "result": owner}
    mine = trainings.adopted_result(cell_cfg, tmp_path / "3", ["x"], published, "run3")
    assert (mine["load_api"], mine["load_strategy"]) == ("saved_model", "mirrored")
    assert (mine["output_dir"], mine["mlflow_run_id"], mine["overrides"]) == (
        str(tmp_path / "3"), "run3", ["x"])
    assert mine["history"] == {"train": {"loss": [1.0, 0.5]}}
    assert mine["accuracy"]["after_train"] == 0.9
    assert mine["artifact"] == str(tmp_path / "3" / "saved_model" / "model.keras")
    assert mine["trained_by"] == {"job": 0, "output_dir": str(tmp_path / "0"),
                                  "mlflow_run_id": "run0"}
    assert not any("pairs with load_api=keras" in n for n in mine["notes"])
    assert (mine["status"], mine["phase"]) == ("running", "load")


def test_a_failed_training_fails_the_cell_with_its_error_named(tmp_path: Path):
    published = {"status": "failed", "job": 2, "output_dir": "/s/2",
                 "error": {"type": "ValueError", "message": "bad", "phase": "train",
                           "hint": "do this", "release": None}}
    result = trainings.failed_result(compose([]), tmp_path, [], published, None)
    assert result["status"] == "failed" and result["phase"] == "train"
    assert result["error"]["type"] == "ValueError" and result["error"]["hint"] == "do this"
    assert result["error"]["message"] == (
        "the shared training (job 2, /s/2) failed: ValueError: bad")


def test_a_training_that_failed_after_training_gives_the_cell_its_curves(tmp_path: Path):
    """A save that fails after the whole training: the cell records the training's curve and
    accuracy, as it would have training its own, and the error."""
    owner = new_result(compose([]), tmp_path / "0", [], None)
    owner["history"] = {"train": {"loss": [1.0]}}
    owner["accuracy"]["after_train"] = 0.5
    owner.update(status="failed", phase="save", mlflow_model={"saved": True})
    owner["error"] = {"type": "ValueError", "message": "no", "phase": "save", "hint": None,
                      "release": None}
    folder = tmp_path / "t"
    trainings.claim(folder, 0, tmp_path / "0")
    trainings.publish_failure(folder, owner)
    published = trainings.trained(folder)
    result = trainings.failed_result(compose(["load_strategy=mirrored"]), tmp_path / "1", [],
                                     published, None)
    assert result["history"] == {"train": {"loss": [1.0]}}
    assert result["accuracy"]["after_train"] == 0.5
    assert (result["status"], result["phase"], result["load_strategy"]) == (
        "failed", "save", "mirrored")
    assert "mlflow_model" not in result and result["artifact"] is None
    assert result["trained_by"] == {"job": 0, "output_dir": str(tmp_path / "0"),
                                    "mlflow_run_id": None}
    trainings.publish_failure(folder, {"status": "failed"})  # published once: kept
    assert trainings.trained(folder) == published


def test_one_claim_wins(tmp_path):
    folder = tmp_path / "t"
    assert trainings.claim(folder, 0, tmp_path / "0")
    assert not trainings.claim(folder, 1, tmp_path / "1")
    assert trainings.claimed_by(folder) == {"job": 0, "output_dir": str(tmp_path / "0")}
