"""Every save_api x load_api under both Keras generations, asserting the outcomes measured on
the pinned versions (see the README's table). A change of outcome is a finding: re-measure."""

from __future__ import annotations

import pytest
from helpers.run import FAST, runner, sweep_results

pytestmark = pytest.mark.slow  # 32 jobs: run with -m slow

SAVE_APIS = ("keras", "saved_model", "keras_saved_model", "export")
LOAD_APIS = ("keras", "saved_model", "hub", "tfsm_layer")

PASSED = "passed"
# A passed cell's resume check (runner.job.resume): exact, drifted with its cause, or n/a.
EXACT = (PASSED, "exact", None)
INFERENCE_ONLY = (PASSED, "n/a", None)
NEW_OPTIMIZER = (PASSED, "drifted", "new optimizer")  # hub: a new model, a new Adam
ITERATIONS_RESET = (PASSED, "drifted", "iterations reset")  # tf_keras SavedModel: Adam restarts
NO_SAVEDMODEL = ("load", "OSError", "SavedModel file does not exist")
NO_TFSMLAYER = ("load", "AttributeError", "has no attribute 'TFSMLayer'")
KERAS3_LOADS_KERAS_FILES_ONLY = ("load", "ValueError", "File format not supported")
NOT_CALLABLE_FOR_HUB = ("load", "ValueError", "Expected a string, got")
TFSM_ADAM_SCOPE = ("continue", "ValueError", "is not a valid scope name")
KERAS3_SAVE_NEEDS_EXTENSION = ("save", "ValueError", "Invalid filepath extension for saving")

# (save_api, load_api) -> {keras generation: outcome}
EXPECTED = {
    ("keras", "keras"): {"v3": EXACT, "legacy": EXACT},
    ("keras", "saved_model"): {"v3": NO_SAVEDMODEL, "legacy": NO_SAVEDMODEL},
    ("keras", "hub"): {"v3": NO_SAVEDMODEL, "legacy": NO_SAVEDMODEL},
    ("keras", "tfsm_layer"): {"v3": NO_SAVEDMODEL, "legacy": NO_TFSMLAYER},
    ("saved_model", "keras"): {
        "v3": KERAS3_LOADS_KERAS_FILES_ONLY,
        "legacy": ("load", "ValueError", "lacks the TF-Keras metadata"),
    },
    ("saved_model", "saved_model"): {"v3": INFERENCE_ONLY, "legacy": INFERENCE_ONLY},
    ("saved_model", "hub"): {"v3": NOT_CALLABLE_FOR_HUB, "legacy": NEW_OPTIMIZER},
    ("saved_model", "tfsm_layer"): {"v3": TFSM_ADAM_SCOPE, "legacy": NO_TFSMLAYER},
    ("keras_saved_model", "keras"): {"v3": KERAS3_SAVE_NEEDS_EXTENSION,
                                     "legacy": ITERATIONS_RESET},
    ("keras_saved_model", "saved_model"): {"v3": KERAS3_SAVE_NEEDS_EXTENSION,
                                           "legacy": INFERENCE_ONLY},
    ("keras_saved_model", "hub"): {"v3": KERAS3_SAVE_NEEDS_EXTENSION, "legacy": NEW_OPTIMIZER},
    ("keras_saved_model", "tfsm_layer"): {"v3": KERAS3_SAVE_NEEDS_EXTENSION,
                                          "legacy": NO_TFSMLAYER},
    ("export", "keras"): {
        "v3": KERAS3_LOADS_KERAS_FILES_ONLY,
        "legacy": ("load", "TypeError", "load_model returned a _UserObject, not a Keras model"),
    },
    ("export", "saved_model"): {"v3": INFERENCE_ONLY, "legacy": INFERENCE_ONLY},
    ("export", "hub"): {"v3": NOT_CALLABLE_FOR_HUB, "legacy": NOT_CALLABLE_FOR_HUB},
    ("export", "tfsm_layer"): {"v3": TFSM_ADAM_SCOPE, "legacy": NO_TFSMLAYER},
}


@pytest.fixture(scope="module")
def matrix_results(tmp_path_factory):
    """experiment=matrix as `python -m runner --help` shows it, with tiny epochs: 32 jobs, each
    in its own process, every passed cell saved and loaded a second time (verify.resave)."""
    sweep_dir = tmp_path_factory.mktemp("matrix") / "sweep"
    proc = runner("-m", "experiment=matrix", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  f"hydra.sweep.dir={sweep_dir}", *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sweep_results(sweep_dir)
    assert len(results) == 32
    return {(r["save_api"], r["load_api"], r["keras"]): r for r in results}


@pytest.mark.parametrize("keras", ["v3", "legacy"])
@pytest.mark.parametrize("save_api", SAVE_APIS)
def test_every_load_api(matrix_results, save_api, keras):
    for load_api in LOAD_APIS:
        r = matrix_results[(save_api, load_api, keras)]
        expected = EXPECTED[(save_api, load_api)][keras]
        where = f"{save_api} -> {load_api} under {keras}: {r['error']}"
        assert r["keras_module"] == ("tf_keras" if keras == "legacy" else "keras"), where
        if expected[0] == PASSED:
            _, resume, cause = expected
            assert r["status"] == "passed", where
            assert (r["resume"]["outcome"], r["resume"]["cause"]) == (resume, cause), (
                where, r["resume"])
            if resume == "drifted":
                assert r["resume"]["max_abs_diff"] > r["resume"]["tolerance"], where
                assert r["resume"]["hint"], where
            if cause == "iterations reset":  # measured, not guessed: Adam came back empty
                saved, loaded = r["optimizer"]["saved"], r["optimizer"]["loaded"]
                assert saved["iterations"] > 0 and loaded["iterations"] == 0, where
                assert loaded["variables"] < saved["variables"], where
            assert r["error"] is None
            assert r["max_abs_diff"] <= r["tolerance"], where
            assert r["accuracy"]["after_load"] == r["accuracy"]["after_train"], where
            assert r["accuracy"]["after_continue"] is not None, where
            assert all(r["timings"][k] is not None for k in ("train_s", "save_s", "load_s",
                                                             "continue_s")), where
            assert r["artifact_bytes"] > 0
            # Saved and loaded again with the same APIs, it computes what it computed.
            assert r["resave"] == RESAVED.get((save_api, load_api, keras),
                                              {"max_abs_diff": 0.0}), where
        else:
            phase, error_type, words = expected
            assert r["status"] == "failed", where
            assert (r["error"]["phase"], r["error"]["type"]) == (phase, error_type), where
            assert words in r["error"]["message"], where
            assert r["error"]["hint"], f"no hint for a known failure: {where}"
            assert r["resave"] is None, where


# Passed cells whose second save -> load is not max |Δ| = 0 (measured): what
# tf.saved_model.load gives is no Keras model, so Model.save and Model.export cannot save it.
NO_SAVE = {"max_abs_diff": None, "error": "AttributeError: '_UserObject' object has no "
                                          "attribute 'save'"}
NO_EXPORT = {"max_abs_diff": None, "error": "AttributeError: '_UserObject' object has no "
                                            "attribute 'export'"}
RESAVED: dict[tuple[str, str, str], dict] = {
    ("keras_saved_model", "saved_model", "legacy"): NO_SAVE,
    ("export", "saved_model", "v3"): NO_EXPORT,
    ("export", "saved_model", "legacy"): NO_EXPORT,
}
