"""Why a resume drifted, read from what was measured (runner.core.resume.explain), in the order
the docs give: new optimizer, loss scale optimizer lost, optimizer not built, iterations reset,
slots missing, loss scale reset, random layers, uneven split, per-replica batchnorm, replica
count, unknown."""

from __future__ import annotations

import pytest

from runner.core.resume import DRIFTED, ERROR, EXACT, NOT_APPLICABLE, explain, inference_only

SAVED = {"optimizer": {"iterations": 25, "variables": 13}, "random_layers": [],
         "batchnorm_layers": []}
SAME = {"iterations": 25, "variables": 13}


def drifted(batch: int = 64) -> dict:
    return {"outcome": DRIFTED, "max_abs_diff": 0.1, "global_batch": batch}


@pytest.mark.parametrize("saved, loaded, new_optimizer, replicas, batch, cause", [
    (SAVED, SAME, True, (1, 1), 64, "new optimizer"),
    (SAVED, {"iterations": 0, "variables": 1}, False, (1, 1), 64, "iterations reset"),
    (SAVED, {"iterations": 25, "variables": 1}, False, (1, 1), 64, "slots missing"),
    ({**SAVED, "random_layers": ["Dropout"]}, SAME, False, (1, 1), 64, "random layers"),
    (SAVED, SAME, False, (1, 3), 64, "uneven split"),
    ({**SAVED, "batchnorm_layers": ["batch_normalization"]}, SAME, False, (2, 1), 128,
     "per-replica batchnorm"),
    (SAVED, SAME, False, (2, 1), 128, "replica count"),
    (SAVED, SAME, False, (1, 1), 64, "unknown"),
    ({"optimizer": {**SAME, "loss_scale": 32768.0}}, {**SAME, "loss_scale": 65536.0}, False,
     (1, 1), 64, "loss scale reset"),
    ({"optimizer": {**SAME, "loss_scale": 32768.0}}, {"iterations": 0, "variables": 9}, False,
     (1, 1), 64, "loss scale optimizer lost"),
])
def test_the_first_measured_cause_is_named(saved, loaded, new_optimizer, replicas, batch, cause):
    found, hint = explain(drifted(batch), saved, loaded, new_optimizer, replicas)
    assert found == cause
    assert (hint is None) == (cause == "unknown")


def test_a_restore_before_the_optimizer_was_built_is_named_so():
    """load_api.build_first=false: the same reset, named by what the user's code did."""
    loaded = {"iterations": 0, "variables": 13}
    assert explain(drifted(), SAVED, loaded, False, (1, 1), build_first=False)[0] == (
        "optimizer not built")
    assert explain(drifted(), SAVED, loaded, False, (1, 1))[0] == "iterations reset"
    assert explain(drifted(), SAVED, SAME, False, (1, 1), build_first=False)[0] == "unknown"
    # Slots not made yet are no finding then: the next measured cause is named.
    unbuilt = {"iterations": 25, "variables": 1}
    assert explain(drifted(), SAVED, unbuilt, False, (1, 1))[0] == "slots missing"
    assert explain(drifted(128), {**SAVED, "batchnorm_layers": ["bn"]}, unbuilt, False, (2, 1),
                   build_first=False)[0] == "per-replica batchnorm"


def test_the_hint_gives_the_numbers_it_read():
    _, hint = explain(drifted(), SAVED, {"iterations": 0, "variables": 1}, False, (1, 1))
    assert "iterations 25 saved, 0 loaded; variables 13 saved, 1 loaded" in hint
    _, hint = explain(drifted(128), {**SAVED, "batchnorm_layers": ["bn"]}, SAME, False, (2, 1))
    assert "each saw 64 examples a step; resumed on 1, 128" in hint


def test_a_failed_step_is_named_by_its_error_or_by_an_uneven_split():
    error = {"outcome": ERROR, "error": "InvalidArgumentError: shapes", "global_batch": 64}
    assert explain(error, SAVED, None, False, (1, 1)) == ("InvalidArgumentError", None)
    cause, hint = explain(error, SAVED, None, False, (1, 3))
    assert cause == "uneven split" and hint.endswith("here the training step itself failed on it")


@pytest.mark.parametrize("outcome", [EXACT, NOT_APPLICABLE])
def test_what_did_not_drift_has_no_cause(outcome):
    assert explain({"outcome": outcome}, SAVED, SAME, True, (1, 2)) == (None, None)


def test_inference_only_is_an_n_a_whose_reason_says_so():
    assert inference_only({"outcome": NOT_APPLICABLE, "reason": "inference only: load_api=x"})
    assert not inference_only({"outcome": NOT_APPLICABLE, "reason": "verify.resume_steps=0"})
    assert not inference_only(None)


def restarted(resumed: int, uninterrupted: int, at: int = 1, order_kept: bool = True) -> dict:
    return {"optimizer_steps": {"resumed": resumed, "uninterrupted": uninterrupted},
            "restarted_at_epoch": at, "data_order_kept": order_kept}


@pytest.mark.parametrize("found, killed_epoch, cause", [
    (restarted(70, 46, at=0), 1, "epoch counter reset"),
    (restarted(58, 46), 1, "batches repeated"),
    (restarted(40, 46), 1, "optimizer steps lost"),
    (restarted(46, 46, order_kept=False), 1, "data order"),
    (restarted(46, 46), 1, "unknown"),
])
def test_a_restart_after_a_kill_is_explained_by_what_was_counted(found, killed_epoch, cause):
    """BackupAndRestore's restart against the same training uninterrupted
    (runner.job.interruption, importable without TensorFlow)."""
    from runner.job.interruption import cause as restart_cause

    assert restart_cause(found, killed_epoch)[0] == cause
