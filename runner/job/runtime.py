"""One job's TensorFlow runtime: the Keras generation and the devices, fixed before TF starts,
and the strategies of its two sides (a multi-worker one's cluster built from its resolver).

Both are per-process facts: TF reads TF_USE_LEGACY_KERAS while it is imported, and logical
devices cannot be changed once the runtime is initialised. Hence one process per job.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from runner.core import cluster

if TYPE_CHECKING:
    from runner.core.schema import Config


def prepare(cfg: Config, side: str = "both") -> Any:
    """Select the side's Keras generation, import TensorFlow, split the CPU as its strategies
    need. side: "both", or "train"/"load" for a process that runs only that side."""
    generation = cfg.load_keras.name if side == "load" else cfg.keras.name
    legacy = generation == "legacy"
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1" if legacy else "0"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's C++ INFO lines; warnings stay
    import tensorflow as tf

    if (keras_generation() == "tf_keras") != legacy:
        raise RuntimeError(
            f"Keras {generation} asked for, but TensorFlow was imported earlier in this "
            "process with the other Keras generation; run each side in a fresh process")

    if cfg.speed.threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.speed.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.speed.threads)
    gpus = tf.config.list_physical_devices("GPU")
    cpu_replicas = [
        strategy.replicas
        for strategy in STRATEGIES[side](cfg)
        if strategy.name == "mirrored" and len(gpus) < strategy.replicas
    ]
    if max(cpu_replicas, default=1) > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * max(cpu_replicas)
        tf.config.set_logical_device_configuration(cpu, logical)
    if any(s.name == cluster.MULTI_WORKER for s in STRATEGIES[side](cfg)):
        multi_worker_strategy(cfg.cluster)  # before any op starts the runtime without it
    return tf


STRATEGIES = {
    "both": lambda cfg: (cfg.strategy, cfg.load_strategy),
    "train": lambda cfg: (cfg.strategy,),
    "load": lambda cfg: (cfg.load_strategy,),
}


def make_strategy(side: Any, cluster_cfg: Any = None) -> Any:
    """The tf.distribute strategy a `strategy`/`load_strategy` group describes; None for `none`.
    `cluster_cfg`: where a multi_worker_mirrored strategy finds its workers."""
    import tensorflow as tf

    if side.name == "none":
        return None
    if side.name == "default":
        return tf.distribute.get_strategy()
    if side.name == "one_device":
        return tf.distribute.OneDeviceStrategy(side.device)
    if side.name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=mirrored_devices(side.replicas))
    if side.name == cluster.MULTI_WORKER:
        return multi_worker_strategy(cluster_cfg)
    raise ValueError(f"unknown strategy {side.name!r}")


_multi_worker: list[Any] = []


def multi_worker_strategy(cluster_cfg: Any) -> Any:
    """The process's one MultiWorkerMirroredStrategy: it must be created before the runtime
    starts and only once, so both sides share it. Its workers must all belong to this job (one
    collective compares their cluster.identity)."""
    import tensorflow as tf

    if _multi_worker:
        return _multi_worker[0]
    found = resolver(cluster_cfg)
    spec = found.cluster_spec().as_dict()
    me = spec[found.task_type][found.task_id]
    if cluster_cfg.name != "local":
        check_port_free(me)
    for tell in on_cluster:
        tell(spec, me, False)
    # Waiting for the other workers happens inside TensorFlow, holding the GIL: the process that
    # supervises this one enforces cluster.startup_timeout_s (runner.launcher.supervise).
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=found)
    check_same_job(strategy, cluster.identity(cluster_cfg), me)
    for tell in on_cluster:
        tell(spec, me, True)
    _multi_worker.append(strategy)
    return strategy


# Set by the job process: told (spec, this worker's address, joined?) before and after the
# workers come together, so that its result.json says whom it waits for.
on_cluster: list[Any] = []


def check_same_job(strategy: Any, mine: int | None, me: str) -> None:
    """All workers of the cluster have this worker's job identity: one all-reduce (a sum of
    identities below 2^31 is exact in float64) must give n times its own."""
    if mine is None:
        return
    import tensorflow as tf

    mine %= 2**31
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(
        lambda: tf.constant(float(mine), tf.float64)), axis=None).numpy()
    if total != strategy.num_replicas_in_sync * mine:
        raise ClusterMixup(
            f"worker {me} (job {mine}) is in a cluster with workers of another job: two jobs on "
            "one node share ports; each job derives its own from SLURM_JOB_ID "
            "(cluster.port_base), check that nothing else listens there")


def mirrored_devices(replicas: int) -> list[str]:
    """GPUs when there are enough, else the logical CPUs `prepare` made."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) >= replicas:
        return [d.name for d in gpus[:replicas]]
    return [d.name for d in tf.config.list_logical_devices("CPU")[:replicas]]


def replicas(strategy: Any) -> int:
    return 1 if strategy is None else strategy.num_replicas_in_sync


def keras_generation() -> str:
    """Which Keras `tf.keras` is in this process: 'keras' (3) or 'tf_keras' (2)."""
    import tensorflow as tf

    return tf.keras.Model.__module__.split(".")[0]


# ---- the cluster a multi-worker strategy runs on -----------------------------------------------

def resolver(cluster_cfg: Any) -> Any:
    """The TensorFlow cluster resolver for `cluster_cfg` (in a job process)."""
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver
    if cluster_cfg.name == "slurm" and cluster_cfg.gpus_per_node == 0:
        # tensorflow#56894: SlurmClusterResolver cannot be told "no GPUs" (it pairs every task
        # with GPUs). Let it lay the tasks out with a placeholder GPU each, touching no
        # CUDA_VISIBLE_DEVICES, and keep only that layout.
        tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS", 1))
        slurm = resolvers.SlurmClusterResolver(
            port_base=cluster.job_port_base(cluster_cfg.port_base), gpus_per_node=tasks,
            gpus_per_task=1, auto_set_gpu=False)
        return resolvers.SimpleClusterResolver(
            slurm.cluster_spec(), task_type=slurm.task_type, task_id=slurm.task_id,
            num_accelerators={})
    if cluster_cfg.name == "slurm":
        return resolvers.SlurmClusterResolver(
            port_base=cluster.job_port_base(cluster_cfg.port_base),
            gpus_per_node=cluster_cfg.gpus_per_node)
    # cluster=local: the runner set TF_CONFIG for each worker; tf_config: an orchestrator did.
    return resolvers.TFConfigClusterResolver()


class ClusterMixup(RuntimeError):
    """A worker of another job joined this job's cluster (or this worker joined another's)."""


def check_port_free(address: str) -> None:
    """This worker's own address (host:port) can be listened on: another job's worker on this
    node would otherwise take it, or be joined by mistake."""
    port = int(address.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            raise ClusterMixup(
                f"port {port} of this worker ({address}) is in use on this node ({e.strerror}): "
                "another job's worker holds it; choose another cluster.port_base") from e
