"""experiment=families and experiment=families_resume, every cell as docs/families.md gives it:
a library upgrade that changes one shows up here. Slow (96 and 54 jobs): run with -m slow."""

from __future__ import annotations

import pytest
from helpers.run import experiment_results

pytestmark = pytest.mark.slow
KEEPS_OPTIMIZER = ("keras", "checkpoint", "weights")


def expected(model: str, keras: str, pair: str, load_api: str) -> tuple[str, str | None]:
    """(the failed phase, or the resume outcome; the resume cause) of one families cell."""
    mirrored_train, v3 = pair == "mirrored_default", keras == "v3"
    if model == "text" and v3 and (mirrored_train or load_api not in ("saved_model", "hub")):
        return ("train" if mirrored_train else "continue"), None  # AddN of strings
    if load_api == "saved_model":
        return "n/a", None
    if load_api == "hub":
        return ("load", None) if v3 or model == "text" else ("drifted", "new optimizer")
    if load_api == "tfsm_layer":
        if not v3:
            return "load", None  # no TFSMLayer in tf_keras
        return ("continue", None) if mirrored_train else ("drifted", "new optimizer")
    if model == "mobilenet_v2":
        return "drifted", "per-replica batchnorm"
    if model == "transformer" and v3:
        return "drifted", "replica count"
    return "exact", None


def test_the_families_matrix(tmp_path):
    for r in experiment_results("families", tmp_path / "sweep", 96):
        pair = f"{r['strategy']}_{r['load_strategy']}"
        want = expected(r["model"], r["keras"], pair, r["load_api"])
        if r["status"] == "failed":
            got = (r["error"]["phase"], None)
        else:
            assert r["max_abs_diff"] == 0.0, r["output_dir"]
            got = (r["resume"]["outcome"], r["resume"].get("cause"))
        assert got == want, (r["model"], r["keras"], pair, r["load_api"], r.get("error"))


def test_the_families_resume_paths(tmp_path):
    for r in experiment_results("families_resume", tmp_path / "sweep", 54):
        cell = (r["model"], r["keras"], r["save_api"], r["load_api"], r["train_variant"],
                r["load_variant"])
        restart = r.get("interruption")
        if r["save_api"] == "backup_and_restore":
            assert restart["killed_at"]["epoch"] == 1, cell
            assert restart["cause"] in ("data order", None), (cell, restart)
            native = "weights" if r["keras"] == "v3" else "checkpoint"
            assert (r["status"] == "passed") == (r["load_api"] == native), (cell, r.get("error"))
        if r["status"] == "passed" and r["model"] == "mobilenet_v2":
            assert r["resume"]["outcome"] == "drifted", cell  # 2 replicas -> 1: batchnorm
