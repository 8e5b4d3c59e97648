"""A sweep's directory as its jobs and runner.sync read it, and what the launching process
plans from a sweep's overrides."""

from __future__ import annotations

import json
import time

import pytest
from helpers.run import ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from runner.core import schema, sweep_file
from runner.launcher import sweep


def job(directory, num, status):
    (directory / str(num)).mkdir()
    (directory / str(num) / "result.json").write_text(json.dumps({"status": status}))


def test_jobs_in_job_order_and_how_far_the_sweep_is(tmp_path):
    for num, status in ((10, "passed"), (2, "failed"), (1, "running")):
        job(tmp_path, num, status)
    (tmp_path / "notes").mkdir()  # not a job
    assert [p.name for p in sweep_file.job_dirs(tmp_path)] == ["1", "2", "10"]
    assert [r["status"] for r in sweep_file.job_results(tmp_path)] == [
        "running", "failed", "passed"]
    sweep_file.write_info(tmp_path, {"jobs": 4, "started": time.time() - 30})
    line = sweep_file.progress(tmp_path)
    assert line.startswith("sweep: 2/4 jobs done (1 passed, 1 failed), 30 s, about ")


def test_a_job_of_a_tracked_sweep_knows_its_parent_and_whether_the_store_went_away(tmp_path):
    assert sweep_file.job(tmp_path, 0) is None  # no sweep.json: untracked
    sweep_file.write_info(tmp_path, {"parent_run_id": "p1", "swept": ["save_api"]})
    assert sweep_file.job(tmp_path, 3) == sweep_file.Job("p1", 3, ["save_api"], False)
    sweep_file.note_lost(tmp_path)
    assert sweep_file.job(tmp_path, 3).store_lost
    sweep_file.note_parent(tmp_path, "pending")
    assert sweep_file.sweep_info(tmp_path)["parent_status"] == "pending"


@pytest.fixture(scope="module")
def compose_sweep():
    schema.register()

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides),
                           return_hydra_config=True)

    return _compose


def test_a_sweep_plans_its_keys_jobs_and_name(compose_sweep, tmp_path):
    cfg = compose_sweep()
    OmegaConf.set_readonly(cfg, False)  # what `-m` gives the launching process
    cfg.hydra.overrides.task = ["save_api=keras,export", "load_api=keras,saved_model,hub",
                                "seed=1"]
    assert sweep.sweep_plan(cfg) == (["load_api", "save_api"], 6)
    assert sweep.parent_name(cfg, ["load_api", "save_api"], 6) == "6 jobs: load_api × save_api"
    preset = compose_sweep("experiment=matrix")
    swept, jobs = sweep.sweep_plan(preset)
    assert (swept, jobs) == (["keras", "load_api", "save_api"], 32)
    assert sweep.parent_name(preset, swept, jobs) == "32 jobs: experiment=matrix"
