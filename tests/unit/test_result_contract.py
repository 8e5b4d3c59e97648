"""result.json's contract: every field declared once, the format version written and checked,
a crashed job's result, and the summary line a user reads."""

from __future__ import annotations

import json
import typing

import pytest
from omegaconf import OmegaConf

from runner.core import result as results
from runner.core.summary import (
    outcome_code,
    resume_words,
    summary,
    summary_line,
    sweep_counts,
    sweep_words,
    verdict,
)

CFG = OmegaConf.create({
    **{group: {"name": f"{group}-choice"} for group in results.GROUPS},
    "save_api": {"name": "keras", "paired_with": "keras"},
    "load_from": None, "tutorial_step": None, "verify": {"tolerance": 1e-5}, "io_device": None})


def test_a_new_result_holds_exactly_the_fields_every_result_has():
    result = results.new_result(CFG, "/out", ["a=b"])
    always = set(typing.get_type_hints(results._Always))
    assert set(result) - {"phase"} == always
    assert set(typing.get_type_hints(results.Result)) >= set(result)
    assert result["format_version"] == results.FORMAT_VERSION
    assert result["notes"] == ["save_api=auto: saved with keras, the save API the seed pairs "
                               "with load_api=keras"]
    assert result["versions"]["python"]


def test_every_field_the_job_adds_is_declared():
    """What the job process and the Hydra process set besides new_result's fields (each set by
    name in runner/; a new one must be declared in results.Result, the contract)."""
    declared = set(typing.get_type_hints(results.Result))
    added = {"phase", "clock", "data_sizes", "caveat", "saved_with", "cluster", "cluster_start",
             "mlflow_model", "metrics_logged_live", "tracking", "metrics", "interruption",
             "continue_from_step", "fit_params", "trained_by"}
    assert added <= declared
    assert declared - set(typing.get_type_hints(results._Always)) == added


def test_a_result_is_written_whole_and_read_back(tmp_path):
    result = results.new_result(CFG, tmp_path, [])
    results.write(tmp_path, result)
    assert results.read(tmp_path) == json.loads(json.dumps(result))
    assert not [p for p in tmp_path.iterdir() if p.name != "result.json"]  # no temporary left


def test_a_result_of_a_newer_contract_is_refused_one_of_an_older_runner_read(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"status": "passed"}))
    assert results.read(tmp_path)["status"] == "passed"  # written before format_version
    (tmp_path / "result.json").write_text(json.dumps({"status": "passed", "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99; this runner reads up to 1"):
        results.read(tmp_path)


def test_a_process_that_died_leaves_a_failure_naming_its_phase(tmp_path):
    r = results.read_or_crashed(tmp_path, -9)
    assert (r["status"], r["error"]["type"], r["error"]["phase"]) == ("failed", "JobCrashed",
                                                                      "data")
    results.write(tmp_path, {"status": "running", "phase": "save", "error": None})
    r = results.read_or_crashed(tmp_path, -9)
    assert r["error"]["message"].startswith("the job process exited with code -9 during phase "
                                            "'save'")
    results.write(tmp_path, {"status": "running", "phase": "load", "error": None})
    assert results.read_or_crashed(tmp_path, 0, final=False)["status"] == "running"
    r = results.read_or_crashed(tmp_path, None, failure=KeyboardInterrupt("stop"))
    assert (r["status"], r["error"]["phase"]) == ("interrupted", "load")
    assert results.read_or_crashed(tmp_path, 1)["status"] == "interrupted"  # ended: as it is


def test_the_summary_line_says_outcome_combination_numbers_and_where():
    result = results.new_result(CFG, "/out/job", [])
    result.update(status="passed", max_abs_diff=0.0,
                  accuracy={"after_train": 0.9, "after_load": 0.9, "after_continue": 0.95},
                  resume={"outcome": "drifted", "max_abs_diff": 0.0091, "cause": "new optimizer"})
    line = summary_line(result)
    assert line.startswith("PASSED — loads and serves the same logits; resume drifted 0.0091 "
                           "(new optimizer): training does not continue where it stopped | "
                           "strategy=strategy-choice ")
    assert "| acc train/load/continue 0.900/0.900/0.950 | max|Δ| 0.0e+00 | /out/job" in line
    result["tracking"] = {"status": "pending", "reason": "away"}
    assert summary_line(result).endswith("| MLflow unreachable, record pending: python -m "
                                         "runner.sync /out/job")


def test_a_failure_summary_gives_the_whole_error_the_hint_and_the_traceback():
    result = results.new_result(CFG, "/out/job", [])
    results.set_error(result, ValueError("first line\nsecond"), "load", "use load_api=keras")
    text = summary(result).splitlines()
    assert text[0].startswith("FAILED — does not load | ")
    assert "| load: ValueError: first line (hint: use" in text[0]
    assert text[1:] == ["  ValueError in phase 'load': first line", "second",
                        "  hint: use load_api=keras",
                        "  traceback and log: /out/job/traceback.txt, job.log"]


def test_resume_in_a_few_words():
    assert resume_words({"outcome": "exact"}) == "resume exact"
    assert resume_words({"outcome": "error", "cause": None}) == "resume error (unknown)"
    assert resume_words({"outcome": "n/a", "reason": "inference only: x"}) == "inference only"
    assert resume_words({"outcome": "n/a", "reason": "verify.resume_steps=0"}) is None
    assert resume_words(None) is None


def test_the_options_that_make_another_cell_are_its_variants():
    plain = OmegaConf.create({"train": {"precision": "float32"},
                              "save_api": {"name": "backup_and_restore", "save_freq": "epoch",
                                           "interrupt": True},
                              "load_api": {"name": "weights", "build_first": True}})
    assert results.variants(plain) == {"train_variant": None, "load_variant": None}
    changed = OmegaConf.merge(plain, {"train": {"precision": "mixed_float16"},
                                      "save_api": {"save_freq": 5, "interrupt": False},
                                      "load_api": {"build_first": False}})
    assert results.variants(changed) == {
        "train_variant": "mixed_float16 save_freq=5 uninterrupted",
        "load_variant": "build_first=false"}


@pytest.mark.parametrize(("status", "phase", "resume", "code", "words"), [
    ("passed", None, {"outcome": "exact"}, 3,
     "loads and serves the same logits; resumes exactly: training continues where it stopped"),
    ("passed", None, {"outcome": "drifted", "max_abs_diff": 1.6, "cause": "new optimizer"}, 2,
     "loads and serves the same logits; resume drifted 1.6 (new optimizer): training does not "
     "continue where it stopped"),
    ("passed", None, {"outcome": "n/a", "reason": "inference only: load_api=saved_model"}, 1,
     "loads and serves the same logits; inference only: it cannot be trained further"),
    ("passed", None, None, 3, "loads and serves the same logits"),
    ("failed", "load", None, 0, "does not load"),
    ("failed", "verify", None, 0, "loads, but does not serve the same logits"),
    ("failed", "continue", None, 0,
     "loads and serves the same logits, but training cannot continue"),
    ("interrupted", "save", None, 0, "interrupted in save"),
])
def test_the_verdict_in_words_and_as_the_outcome_metric(status, phase, resume, code, words):
    result = {"status": status, "resume": resume,
              "error": {"phase": phase} if phase else None}
    assert (outcome_code(result), verdict(result)) == (code, words)


def test_a_sweeps_counts_and_summary_say_how_it_came_out():
    done = [{"status": "passed", "resume": {"outcome": "exact"}},
            {"status": "passed", "resume": {"outcome": "n/a", "reason": "inference only: x"}},
            {"status": "passed", "resume": {"outcome": "drifted", "cause": "new optimizer"}},
            {"status": "failed", "error": {"phase": "load"}},
            {"status": "interrupted", "error": {"phase": "train"}}]
    counts = sweep_counts(done)
    assert counts == {"jobs": 5, "passed": 3, "failed": 2, "resume_exact": 1,
                      "resume_drifted": 1, "inference_only": 1}
    assert sweep_words(counts) == (
        "3/5 passed: 1 resume exactly, 1 resume drifted, 1 inference only; 2 failed")
    assert sweep_words(sweep_counts(done[:1])) == "1/1 passed: 1 resume exactly"
    assert sweep_words(sweep_counts(done[3:4])) == "0/1 passed; 1 failed"
