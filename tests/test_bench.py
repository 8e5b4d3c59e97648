"""The benchmark's smoke mode: every section runs and is reported. Nothing about speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.run import ROOT

SECTIONS = {"overhead", "startup", "throughput", "save_load", "sweeps", "speed_options",
            "resume_check", "fork_server", "tracking", "accuracy", "shared_training"}


@pytest.mark.slow  # about 35 runner jobs and bare scripts
def test_bench_smoke_runs_every_section(tmp_path):
    proc = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["mode"] == "smoke" and set(report["sections"]) == SECTIONS
    assert report["machine"]["cores"] >= 1 and report["machine"]["versions"]["tensorflow"]
    markdown = (tmp_path / "bench.md").read_text()
    assert all(f"## {name}" in markdown for name in SECTIONS)
    sections = report["sections"]
    assert [row["workload"] for row in sections["overhead"]] == ["digits", "synthetic"]
    assert all(row["bare_script_s"] > 0 and row["runner_tracked_s"] > 0
               for row in sections["overhead"])
    assert [row["strategy"] for row in sections["throughput"]] == [
        "default", "one_device", "mirrored"]
    assert all(row["plain_fit_examples_per_s"] > 0 and row["runner_examples_per_s"] > 0
               for row in sections["throughput"])
    assert {row["save_api"] for row in sections["save_load"]} == {
        "keras", "saved_model", "keras_saved_model", "export", "checkpoint", "weights"}
    assert all(row["bytes"] > 0 for row in sections["save_load"])
    assert sections["sweeps"][0]["jobs"] == 2
    assert [row["option"].split("=")[0] for row in sections["speed_options"]] == [
        "speed.prefetch", "speed.parallel_map", "speed.jit_compile", "speed.threads"]
    assert [row["job"] for row in sections["resume_check"]] == [
        "default", "mirrored->default, batchnorm"]
    assert all(row["check_on_s"] > 0 and row["check_off_s"] > 0
               for row in sections["resume_check"])
    assert [row["launcher"] for row in sections["fork_server"]] == ["basic", "joblib n_jobs=2"]
    assert all(row["same_numbers"] and row["forked_jobs"] == row["jobs"] == 2
               for row in sections["fork_server"])
    whole, *items = sections["tracking"]
    assert whole["tracked_s"] > 0 and whole["untracked_s"] > 0 and whole["largest"]
    # Every second of the tracked job is in one item or another.
    assert sum(row["tracked_s"] for row in items) == pytest.approx(whole["tracked_s"], rel=0.2)
    assert {"runner_start_s", "to_job_process_s", "train_s", "after_job_s"} <= {
        row["item"] for row in items}
    assert all(row["same_accuracy"] for row in sections["accuracy"])
    timed, *counted = sections["shared_training"]
    assert (timed["jobs"], timed["trainings"], timed["saves"], timed["same_numbers"]) == (
        2, 1, 2, True)  # save_api=auto: one training saved with keras and saved_model
    assert [(row["sweep"], row["jobs"]) for row in counted] == [
        ("experiment=matrix", 32), ("experiment=resume_matrix", 48), ("experiment=families", 96)]
    assert [(row["trainings"], row["saves"]) for row in counted] == [(2, 8), (2, 8), (16, 80)]
