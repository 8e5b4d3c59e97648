"""The model families (runner/job/families): each preset's default job as users run it
(`python -m runner model=NAME`, which brings its own data), and one cross-strategy cell each,
where the family breaks differently from the tutorial's CNN."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.run import FAST, read_result, runner

FAMILIES = {"text": "sentences", "mobilenet_v2": "colour_digits",
            "transformer": "token_sequences", "stateful_custom": "features"}


def job(tmp_path, *args: str) -> tuple[object, dict]:
    out = tmp_path / "run"
    proc = runner(f"hydra.run.dir={out}", *FAST, *args)
    assert (out / "result.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, read_result(out)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_alone_brings_its_data_and_resumes_exactly(tmp_path, family):
    proc, result = job(tmp_path, f"model={family}")
    assert proc.returncode == 0, (result.get("error"), proc.stdout[-2000:])
    assert (result["model"], result["data"]) == (family, FAMILIES[family])
    assert result["max_abs_diff"] == 0.0
    assert result["resume"]["outcome"] == "exact", result["resume"]
    assert result["accuracy"]["after_load"] == result["accuracy"]["after_train"]
    saved_with = json.loads((tmp_path / "run" / "saved_model" / "saved_with.json").read_text())
    assert saved_with["model_options"]["_target_"].startswith(f"runner.job.families.{family}.")


def test_text_strings_travel_through_a_savedmodel_and_its_lookup_table_is_trusted(tmp_path):
    """String inputs: probe.npz keeps them as bytes (read without pickle), the SavedModel's
    string and lookup-table ops pass the trust scan, and serving gives the saved logits."""
    proc, result = job(tmp_path, "model=text", "load_api=saved_model")
    assert proc.returncode == 0, (result.get("error"), proc.stdout[-2000:])
    assert result["max_abs_diff"] <= 1e-5 and result["resume"]["outcome"] == "n/a"
    with np.load(tmp_path / "run" / "saved_model" / "probe.npz") as probe:
        assert probe["images"].dtype.kind == "S" and len(probe["images"]) == 64
    saved_with = json.loads((tmp_path / "run" / "saved_model" / "saved_with.json").read_text())
    assert (saved_with["input_shape"], saved_with["input_dtype"]) == ([], "string")


def test_text_under_keras_3_mirrored_fails_in_train_with_the_reason(tmp_path):
    proc, result = job(tmp_path, "model=text", "strategy=mirrored", "load_strategy=default")
    assert proc.returncode == 1 and result["error"]["phase"] == "train"
    assert "AddN" in result["error"]["message"]
    assert "keras=legacy trains it" in result["error"]["hint"]


def test_mobilenet_v2_trained_on_two_replicas_resumes_on_one_with_per_replica_batchnorm(tmp_path):
    proc, result = job(tmp_path, "model=mobilenet_v2", "strategy=mirrored",
                       "load_strategy=default", "load_api=checkpoint")
    assert proc.returncode == 0, (result.get("error"), proc.stdout[-2000:])
    assert result["max_abs_diff"] <= 1e-5
    assert result["resume"]["outcome"] == "drifted"
    assert result["resume"]["cause"] == "per-replica batchnorm", result["resume"]


def test_transformer_on_two_replicas_each_side_in_its_own_process(run_sweep):
    """mirrored -> mirrored runs each side in a process of its own: in one process the load
    side's sparse embedding gradients met the train side's collective instances ('Shape
    mismatch in the collective instance'). MultiHeadAttention's Dropout of rate 0 is no random
    layer."""
    _, results = run_sweep("model=transformer", "strategy=default,mirrored",
                           "load_strategy=mirrored", "load_api=keras")
    by_train = {r["strategy"]: r for r in results}
    for r in results:
        assert r["status"] == "passed", r.get("error")
        assert r["random_layers"] == []
    assert by_train["mirrored"]["resume"]["outcome"] == "exact", by_train["mirrored"]["resume"]
    assert by_train["default"]["resume"]["cause"] in (None, "replica count")


def test_stateful_custom_state_survives_two_replicas_to_one(tmp_path):
    """The custom layer's running mean (a non-trainable variable updated in call, averaged over
    replicas) and its nested model come back through save_weights, rebuilt from the target."""
    proc, result = job(tmp_path, "model=stateful_custom", "strategy=mirrored",
                       "load_strategy=default", "load_api=weights")
    assert proc.returncode == 0, (result.get("error"), proc.stdout[-2000:])
    assert result["max_abs_diff"] == 0.0
    assert result["resume"]["outcome"] == "exact", result["resume"]


def test_a_family_with_another_data_option_takes_the_one_given():
    proc = runner("model=stateful_custom", "data=digits", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "name: digits" in proc.stdout and "stateful_custom.features" not in proc.stdout
