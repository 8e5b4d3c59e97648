"""Which sweep cells share a training (runner.core.trainings): the key, and the result a cell
starts from when it loads another cell's training."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.core import trainings
from runner.core.compose import compose
from runner.core.result import new_result
from runner.core.schema import Config
from runner.launcher.preflight import choose_save_api


def configured(*overrides: str) -> Config:
    cfg = compose(list(overrides))
    choose_save_api(cfg)
    return cfg


def key(*overrides: str, with_save: bool = True) -> str | None:
    return trainings.key(configured(*overrides), with_save)


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


@pytest.mark.parametrize("other", ["save_api=saved_model", "save_api=export",
                                   "save_api.in_scope=true", "io_device=/job:localhost"])
def test_a_save_made_after_training_is_not_part_of_a_plans_training(other):
    assert key("save_api=keras", with_save=False) == key("save_api=keras", other,
                                                          with_save=False)


@pytest.mark.parametrize("save", [["save_api=model_checkpoint"], ["save_api=backup_and_restore"],
                                  ["save_api=weights", "model.save_before_fit=true"]])
def test_a_save_during_or_before_fit_stays_part_of_the_training(save):
    assert key(*save, with_save=False) == key(*save)
    assert key(*save, with_save=False) != key("save_api=keras", with_save=False)


def test_the_save_side_of_save_api_auto_is_the_api_it_pairs():
    auto, keras = configured("load_api=keras"), configured("save_api=keras", "load_api=hub")
    assert trainings.save_side(auto) == trainings.save_side(keras)
    assert "paired_with" not in trainings.save_side(auto)["save_api"]
    assert trainings.save_key(trainings.save_side(auto)) != trainings.save_key(
        trainings.save_side(configured("save_api=weights")))


def test_a_plan_shares_one_training_among_the_saves_its_cells_need(tmp_path):
    cells = [configured(f"save_api={api}", f"load_api={load}")
             for api in ("keras", "saved_model", "model_checkpoint") for load in ("keras", "hub")]
    cells.append(configured("save_api=keras", "keras=legacy"))
    assert trainings.plan(tmp_path, cells) == 1  # keras + saved_model, v3
    keras, saved_model, callback, legacy = (cells[0], cells[2], cells[4], cells[6])
    where, mine = trainings.locate(keras, tmp_path)
    assert trainings.locate(saved_model, tmp_path)[0] == where
    assert mine != trainings.locate(saved_model, tmp_path)[1]
    assert sorted(trainings.planned(where)) == sorted(
        trainings.save_key(trainings.save_side(c)) for c in (keras, saved_model))
    assert trainings.locate(callback, tmp_path)[0] == trainings.folder(tmp_path,
                                                                       trainings.key(callback))
    assert trainings.locate(legacy, tmp_path)[0] not in (where, trainings.locate(callback,
                                                                                 tmp_path)[0])
    # A save the plan does not list (its cell composed otherwise): that save side's own training.
    unplanned = configured("save_api=weights")
    assert trainings.locate(unplanned, tmp_path)[0] == trainings.folder(
        tmp_path, trainings.key(unplanned))


def test_a_failed_training_fails_every_save_of_its_plan(tmp_path):
    cells = [configured(f"save_api={api}") for api in ("keras", "weights")]
    trainings.plan(tmp_path, cells)
    where, mine = trainings.locate(cells[0], tmp_path)
    trainings.claim(where, 0, tmp_path / "0")
    trainings.publish_failure(where, mine, {"status": "failed", "output_dir": str(tmp_path / "0"),
                                            "phase": "train"})
    for save in trainings.planned(where):
        assert trainings.trained(where, save)["error"]["type"] == "JobCrashed"


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
    published["error"]["phase"] = "save"  # the training's process saved for this cell
    result = trainings.failed_result(compose([]), tmp_path, [], published, None)
    assert result["error"]["message"] == ("saving the shared training (job 2, /s/2) with this "
                                          "cell's save API failed: ValueError: bad")


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
    trainings.publish_failure(folder, "s", owner)
    published = trainings.trained(folder, "s")
    result = trainings.failed_result(compose(["load_strategy=mirrored"]), tmp_path / "1", [],
                                     published, None)
    assert result["history"] == {"train": {"loss": [1.0]}}
    assert result["accuracy"]["after_train"] == 0.5
    assert (result["status"], result["phase"], result["load_strategy"]) == (
        "failed", "save", "mirrored")
    assert "mlflow_model" not in result and result["artifact"] is None
    assert result["trained_by"] == {"job": 0, "output_dir": str(tmp_path / "0"),
                                    "mlflow_run_id": None}
    trainings.publish_failure(folder, "s", {"status": "failed"})  # published once: kept
    assert trainings.trained(folder, "s") == published


def test_one_claim_wins(tmp_path):
    folder = tmp_path / "t"
    assert trainings.claim(folder, 0, tmp_path / "0")
    assert not trainings.claim(folder, 1, tmp_path / "1")
    assert trainings.claimed_by(folder) == {"job": 0, "output_dir": str(tmp_path / "0")}
