"""A multi-worker job's cluster as its config and environment describe it."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from runner.core import cluster


def test_each_slurm_job_has_its_own_ports_on_a_node():
    assert cluster.job_port_base(8888, {}) == 8888
    assert cluster.job_port_base(8888, {"SLURM_JOB_ID": "3"}) == 8888 + 3 * cluster.PORT_STRIDE
    assert cluster.job_port_base(8888, {"SLURM_JOB_ID": str(cluster.PORT_SLOTS + 3)}) == (
        cluster.job_port_base(8888, {"SLURM_JOB_ID": "3"}))


def test_a_jobs_identity_is_shared_by_its_workers_only():
    tf_config = OmegaConf.create({"name": "tf_config"})
    spec = {"cluster": {"worker": ["a:1", "b:1"]}}
    mine = cluster.identity(tf_config, {"TF_CONFIG": json.dumps({**spec, "task": {"index": 0}})})
    other = cluster.identity(tf_config, {"TF_CONFIG": json.dumps({**spec, "task": {"index": 1}})})
    assert mine == other  # the task differs, the cluster does not
    assert cluster.identity(tf_config, {"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["a:2", "b:1"]}})}) != mine
    assert cluster.identity(OmegaConf.create({"name": "slurm"}), {"SLURM_JOB_ID": "42"}) == 42
    assert cluster.identity(OmegaConf.create({"name": "local"})) is None


@pytest.mark.parametrize("name, environ, task, chief", [
    ("local", {}, ("worker", 0), True),
    ("slurm", {"SLURM_PROCID": "2"}, ("worker", 2), False),
    ("slurm", {"SLURM_PROCID": "0"}, ("worker", 0), True),
    ("tf_config", {"TF_CONFIG": json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                                            "task": {"type": "worker", "index": 0}})},
     ("worker", 0), False),
])
def test_which_task_this_process_is_and_whether_it_records_the_job(name, environ, task, chief):
    cfg = OmegaConf.create({"name": name})
    assert cluster.task(cfg, environ) == task
    assert cluster.is_chief(cfg, environ) == chief


def test_multi_worker_jobs_and_the_scheduler():
    cfg = OmegaConf.create({"strategy": {"name": "default"},
                            "load_strategy": {"name": "multi_worker_mirrored"},
                            "cluster": {"name": "local"}})
    assert cluster.multi_worker(cfg) and not cluster.non_chief(cfg)
    assert cluster.chief_address({"worker": ["w:1"], "chief": ["c:1"]}) == "c:1"
    assert cluster.scheduled({"SUBMITIT_EXECUTOR": "slurm"})
    assert not cluster.scheduled({})
