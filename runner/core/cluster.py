"""A multi-worker job's cluster as its config and environment describe it: which worker this
process is, whether it is the chief, what identifies its job. Both processes read it: the Hydra
process to know its part, the job process to build the cluster (runner.job.runtime)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.core.schema import Config

MULTI_WORKER = "multi_worker_mirrored"


def multi_worker(cfg: Config) -> bool:
    """Whether either side of the job trains or loads under MultiWorkerMirroredStrategy."""
    return MULTI_WORKER in (cfg.strategy.name, cfg.load_strategy.name)


# A SLURM job's tasks listen on job_port_base(...) + their index on the node: a stride per job
# (room for this many tasks on one node), cycling over this many strides.
PORT_STRIDE, PORT_SLOTS = 64, 500


def job_port_base(port_base: int, environ: Mapping[str, str] = os.environ) -> int:
    """The first port of this SLURM job's tasks on each node: port_base moved by the job's id,
    so that two jobs on one node (array tasks, a sweep's jobs) never share ports; every task of
    the job computes the same one without talking to the others."""
    job_id = int(environ.get("SLURM_JOB_ID") or 0)
    return port_base + (job_id % PORT_SLOTS) * PORT_STRIDE


def identity(cluster: Any, environ: Mapping[str, str] = os.environ) -> int | None:
    """What every worker of one job shares and a worker of another job does not: the SLURM job
    id, or a digest of TF_CONFIG's cluster; None for cluster=local (the runner starts the
    workers itself, on ports it just found free)."""
    if cluster.name == "slurm":
        return int(environ.get("SLURM_JOB_ID") or 0)
    if cluster.name == "tf_config":
        spec = json.dumps(json.loads(environ.get("TF_CONFIG") or "{}").get("cluster", {}),
                          sort_keys=True)
        return int.from_bytes(hashlib.sha256(spec.encode()).digest()[:4], "big")
    return None


def chief_address(spec: Mapping[str, list[str]]) -> str:
    return (spec.get("chief") or spec.get("worker") or ["?"])[0]


def task(cluster: Any, environ: Mapping[str, str] = os.environ) -> tuple[str, int]:
    """This process's task in the cluster, as (type, index): ("worker", 1), ("chief", 0)."""
    if cluster.name == "slurm":
        return "worker", int(environ.get("SLURM_PROCID", "0"))
    if cluster.name == "tf_config":
        spec = json.loads(environ.get("TF_CONFIG") or "{}").get("task", {})
        return spec.get("type", "worker"), int(spec.get("index", 0))
    return "worker", 0  # local: this process is the chief's, and starts the others


def is_chief(cluster: Any, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process's worker records the job (result.json, MLflow): the `chief` task of
    a TF_CONFIG cluster that has one, else worker 0. For tf_config and slurm an orchestrator
    starts the runner once per worker."""
    has_chief = cluster.name == "tf_config" and "chief" in json.loads(
        environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return task(cluster, environ) == (("chief", 0) if has_chief else ("worker", 0))


def non_chief(cfg: Config) -> bool:
    """Whether this process is a non-chief worker of a cluster an orchestrator started: it
    takes part in the job but records nothing of it."""
    return multi_worker(cfg) and not is_chief(cfg.cluster)


def scheduled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a job a scheduler started (SLURM through submitit): a SIGTERM
    then means the job was cancelled or reached its time limit, not that a sweep must stop."""
    return environ.get("SUBMITIT_EXECUTOR") == "slurm"
