"""Sweeps: each job in its own fresh TensorFlow runtime."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # default run: test_cross mixes generations in one sweep, test_scenario replicas
def test_multirun_mixes_keras_generations_and_replica_counts(run_sweep):
    proc, results = run_sweep("strategy=mirrored", "strategy.replicas=2,3",
                              "keras=v3,legacy", "load_strategy=mirrored",
                              "load_strategy.replicas=1")
    # Hydra's order interleaves them: (2, v3), (2, legacy), (3, v3), (3, legacy).
    seen = [(r["replicas"]["train"], r["keras"], r["keras_module"]) for r in results]
    assert seen == [(2, "v3", "keras"), (2, "legacy", "tf_keras"),
                    (3, "v3", "keras"), (3, "legacy", "tf_keras")]
    for r in results:
        assert r["status"] == "passed", r["error"]
        assert sum("CPU" in d for d in r["devices"]) == r["replicas"]["train"]
        assert r["replicas"]["load"] == 1


@pytest.mark.slow  # the default run: test_sweep's failing cells do not stop its sweep
def test_one_failed_job_does_not_stop_the_sweep(run_sweep):
    proc, results = run_sweep("save_api=keras_saved_model,keras")
    assert [r["status"] for r in results] == ["failed", "passed"]
    assert proc.stdout.count("FAILED ") == 1 and proc.stdout.count("PASSED ") == 1
