"""The paths users resume training with beyond save/load calls: Keras' ModelCheckpoint (whole
model and weights only) and BackupAndRestore with a real kill and restart of the training
process; mixed precision's LossScaleOptimizer through a save and load; and checkpoints and
weights restored as most code restores them (load_api.build_first=false). Each chosen through
the `resume_path` group, as experiment=families_resume does."""

from __future__ import annotations

import json
import os

import pytest
from helpers.run import FAST, read_result, runner, sweep_results

TWO_EPOCHS = ["train.epochs=2"]  # BackupAndRestore's kill falls in the middle of the last one


def sweep(tmp_path, *args: str) -> dict[tuple[str, str], dict]:
    out = tmp_path / "sweep"
    proc = runner("-m", f"hydra.sweep.dir={out}", *FAST, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {(r["keras"], r["save_api"] + (f" {r['train_variant']}" if r["train_variant"] else "")
             + (f" {r['load_variant']}" if r["load_variant"] else "")): r
            for r in sweep_results(out)}


def test_model_checkpoint_whole_model_and_weights_only_resume_exactly(tmp_path):
    results = sweep(tmp_path, "resume_path=model_checkpoint,model_checkpoint_weights",
                    "keras=v3,legacy")
    assert len(results) == 4
    for (keras, cell), r in results.items():
        assert r["status"] == "passed", (keras, cell, r.get("error"))
        assert r["resume"]["outcome"] == "exact", (keras, cell, r["resume"])
        assert any(n.startswith("ModelCheckpoint wrote") for n in r["notes"])
    artifact = {key: os.path.basename(r["artifact"]) for key, r in results.items()}
    assert artifact == {("v3", "model_checkpoint"): "model.keras",
                        ("legacy", "model_checkpoint"): "model.keras",
                        ("v3", "model_checkpoint weights_only"): "model.weights.h5",
                        ("legacy", "model_checkpoint weights_only"): "model"}


def test_backup_and_restore_survives_a_real_kill_and_says_what_the_restart_changed(tmp_path):
    """The training process dies by SIGKILL in the middle of the last epoch; the restarted fit
    picks up at that epoch with the optimizer's steps of an uninterrupted run, and the one
    difference left is measured: the restarted process reads that epoch in another order."""
    out = tmp_path / "run"
    proc = runner(f"hydra.run.dir={out}", *FAST, *TWO_EPOCHS,
                  "resume_path=backup_and_restore_weights", "keras=v3")
    result = read_result(out)
    assert proc.returncode == 0, (result.get("error"), proc.stdout[-2000:])
    restart = result["interruption"]
    killed = json.loads((out / "callback" / "killed.json").read_text())
    assert killed["pid"] != result["process"]["pid"]  # another process, and it is gone
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert restart["killed_at"] == {"epoch": 1, "batch": 11}  # 23 batches of 64 digits
    assert (restart["restarted_at_epoch"], restart["epochs_after_restart"]) == (1, 1)
    assert restart["optimizer_steps"] == {"resumed": 46, "uninterrupted": 46}
    assert restart["data_order_kept"] is False
    assert (restart["outcome"], restart["cause"]) == ("drifted", "data order")
    assert 0 < restart["max_abs_diff"] < 1
    assert "killing the training process" in (out / "job.log").read_text()
    assert "killed at epoch 1 batch 11, restarted drifted" in proc.stdout
    # What it left loads: the final backup is the trained model, optimizer and all.
    assert result["max_abs_diff"] == 0.0 and result["resume"]["outcome"] == "exact"
    assert any("model._initial_epoch=1" in n for n in result["notes"])  # Keras 3 keeps it


def test_backup_and_restore_under_each_generation_and_save_freq(tmp_path):
    """tf_keras' backup is a TensorFlow checkpoint with BackupAndRestore's counters; a backup
    every 5 batches brings Keras 3 back at the start of the epoch it was taken in (batches
    repeated), tf_keras at the batch (the same steps)."""
    results = sweep(tmp_path, *TWO_EPOCHS, "resume_path=backup_and_restore_checkpoint",
                    "keras=v3,legacy", "save_api.save_freq=epoch,5")
    legacy = results[("legacy", "backup_and_restore")]
    assert legacy["status"] == "passed" and legacy["resume"]["outcome"] == "exact"
    assert any("counters in the checkpoint: epoch 1" in n for n in legacy["notes"])
    assert any("deleted model._training_state" in n for n in legacy["notes"])
    v3 = results[("v3", "backup_and_restore")]  # Keras 3 writes a .weights.h5 instead
    assert v3["status"] == "failed" and v3["error"]["phase"] == "load"
    repeated = results[("v3", "backup_and_restore save_freq=5")]["interruption"]
    assert repeated["cause"] == "batches repeated"
    assert repeated["optimizer_steps"]["resumed"] > repeated["optimizer_steps"]["uninterrupted"]
    skipped = results[("legacy", "backup_and_restore save_freq=5")]["interruption"]
    assert skipped["optimizer_steps"]["resumed"] == skipped["optimizer_steps"]["uninterrupted"]
    # A backup in the middle of the last epoch is not the trained model: verify says so.
    late = results[("legacy", "backup_and_restore save_freq=5")]
    assert late["status"] == "failed" and late["error"]["phase"] == "verify"


def test_mixed_float16_keeps_its_loss_scale_where_the_optimizer_is_restored(tmp_path):
    results = sweep(tmp_path, "resume_path=mixed_float16_keras,mixed_float16_weights",
                    "keras=v3,legacy")
    for keras in ("v3", "legacy"):
        weights = results[(keras, "weights mixed_float16")]
        assert weights["resume"]["outcome"] == "exact", weights["resume"]
        saved, loaded = weights["optimizer"]["saved"], weights["optimizer"]["loaded"]
        # Keras 3: LossScaleOptimizer; tf_keras: LossScaleOptimizerV3
        assert saved["class"].startswith("LossScaleOptimizer") and saved["loss_scale"] > 1
        assert (loaded["loss_scale"], loaded["iterations"]) == (saved["loss_scale"],
                                                                saved["iterations"])
        # load_model of a mixed_float16 .keras file brings back a plain Adam, in both.
        keras_file = results[(keras, "keras mixed_float16")]
        assert keras_file["max_abs_diff"] == 0.0
        assert keras_file["resume"]["cause"] == "loss scale optimizer lost", keras_file["resume"]
        assert "loss_scale" not in keras_file["optimizer"]["loaded"]


def test_weights_loaded_as_most_code_does_drift_under_keras_3_and_say_why(tmp_path):
    """compile, then load_weights, without building the optimizer: Keras 3 skips the
    optimizer's saved variables; tf_keras' checkpoint format restores them when they are made;
    tf.train.Checkpoint does in both (deferred restoration)."""
    results = sweep(tmp_path, "resume_path=weights_as_users,checkpoint_as_users",
                    "keras=v3,legacy")
    v3 = results[("v3", "weights build_first=false")]
    assert v3["status"] == "passed" and v3["max_abs_diff"] == 0.0
    assert v3["resume"]["outcome"] == "drifted"
    assert v3["resume"]["cause"] == "optimizer not built", v3["resume"]
    assert v3["optimizer"]["loaded"]["iterations"] == 0
    for key in [("legacy", "weights build_first=false"), ("v3", "checkpoint build_first=false"),
                ("legacy", "checkpoint build_first=false")]:
        assert results[key]["resume"]["outcome"] == "exact", (key, results[key]["resume"])
