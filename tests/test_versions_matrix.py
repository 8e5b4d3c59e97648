"""experiment=versions and experiment=versions_keras3, every cell as docs/versions.md gives it:
saved in one TensorFlow/Keras release, loaded in another, both directions. A release that
changes a cell shows up here. Slow (80 and 45 jobs, each release's environment built once):
run with -m slow."""

from __future__ import annotations

import pytest
from helpers.run import experiment_results

pytestmark = pytest.mark.slow
OLD_KERAS_3 = "v2.16-keras3.3.3"


def outcome(r: dict) -> tuple[str, str | None]:
    if r["status"] == "failed":
        return r["error"]["phase"], r["error"]["type"]
    assert r["max_abs_diff"] <= r["tolerance"], r["output_dir"]
    return r["resume"]["outcome"], r["resume"].get("cause")


def test_tf_keras_across_releases(tmp_path):
    for r in experiment_results("versions", tmp_path / "sweep", 80):
        cell = (r["tf"], r["load_tf"], r["load_api"])
        # tf-keras 2.21 writes `optional` into InputLayer's config; 2.15 to 2.19 refuse it.
        newer_keras_file = r["load_api"] == "keras" and r["tf"] is None and r["load_tf"]
        want = {"keras": ("load", "TypeError") if newer_keras_file else ("exact", None),
                "saved_model": ("n/a", None), "hub": ("drifted", "new optimizer"),
                "checkpoint": ("exact", None), "weights": ("exact", None)}[r["load_api"]]
        assert outcome(r) == want, (cell, r.get("error"))
        if newer_keras_file:
            assert "InputLayer" in r["error"]["message"]
            assert r["error"]["hint"].startswith("written by tf-keras 2.21"), cell
            assert r["error"]["release"].startswith(f"load_tf={r['load_tf']}: tensorflow")


def test_keras_3_across_releases(tmp_path):
    for r in experiment_results("versions_keras3", tmp_path / "sweep", 45):
        cell = (r["tf"], r["load_tf"], r["load_api"])
        old_reads_new = (r["load_api"] == "keras" and r["load_tf"] == OLD_KERAS_3
                         and r["tf"] != OLD_KERAS_3)
        want = {"keras": ("load", "TypeError") if old_reads_new else ("exact", None),
                "saved_model": ("n/a", None),
                # Keras 3.15: "'…_kernel:0_momentum' is not a valid scope name"; 3.3.3:
                # "'UninitializedVariable' object has no attribute 'regularizer'"
                "tfsm_layer": ("continue", "AttributeError" if r["load_tf"] == OLD_KERAS_3
                               else "ValueError"),
                "checkpoint": ("exact", None), "weights": ("exact", None)}[r["load_api"]]
        assert outcome(r) == want, (cell, r.get("error"))
        if old_reads_new:
            assert r["error"]["hint"].startswith("written by keras 3.15.1, read by keras 3.3.3")
