"""The golden corpus (tests/golden, `python -m runner.golden make`): models saved by older
TensorFlow/Keras releases, each loaded by the installed release as a `load_from` job, one sweep
for all: the logits must match the ones stored with it, and where the path keeps the optimizer
(keras, checkpoint, weights) three more training steps must give the saving release's own."""

from __future__ import annotations

import json

from helpers.run import ROOT, runner, sweep_results

from runner.core.files import SAVED_WITH

GOLDEN = ROOT / "tests" / "golden"
ENTRIES = sorted(p.stem for p in (GOLDEN / "conf" / "golden").glob("*.yaml"))
KEEPS_OPTIMIZER = ("keras", "checkpoint", "weights")


def test_the_corpus_spans_releases_and_both_generations():
    written = {json.loads((GOLDEN / e / SAVED_WITH).read_text())["versions"]["tensorflow"]
               for e in ENTRIES}
    assert len(ENTRIES) >= 10 and len(written) >= 3, (ENTRIES, written)
    assert {e.split("-")[-2] for e in ENTRIES} >= {"legacy", "v3"}
    for entry in ENTRIES:
        assert sum(p.stat().st_size for p in (GOLDEN / entry).rglob("*")
                   if p.is_file()) < 400_000, entry


def test_the_installed_release_loads_every_older_file(tmp_path):
    sweep = tmp_path / "sweep"
    proc = runner("--config-dir", str(GOLDEN / "conf"), "-m", f"hydra.sweep.dir={sweep}",
                  "+golden=glob(*)", "continue_epochs=1", "verbose=0", "mlflow.enabled=false",
                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sweep_results(sweep)
    assert sorted(r["load_from"].rsplit("/", 1)[-1] for r in results) == ENTRIES
    for r in results:
        entry = r["load_from"].rsplit("/", 1)[-1]
        assert r["status"] == "passed", (entry, r["error"])
        assert r["max_abs_diff"] <= r["tolerance"], entry
        saved = r["saved_with"]["versions"]
        assert saved["tensorflow"] != r["load_versions"]["tensorflow"], entry  # really older
        if r["load_api"] in KEEPS_OPTIMIZER:
            assert r["resume"]["outcome"] == "exact", (entry, r["resume"])
        else:
            assert r["resume"]["outcome"] == "n/a", entry  # inference only: a SavedModel
