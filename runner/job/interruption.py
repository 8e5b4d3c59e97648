"""save_api=backup_and_restore's real interruption: the training is killed in the middle of an
epoch and started again, and BackupAndRestore takes over, as it does for users whose job was
preempted.

The train side starts the training in a process of its own (`python -m runner.job.interruption`,
the same config, seed, data and model), which kills itself with SIGKILL at a fixed batch of the
last epoch: no cleanup, no flush, as a preemption or the OOM killer ends a process. The train
side then runs its own fit with the same BackupAndRestore folder, which restores what the
backup holds and trains the rest. `compare` trains the same model once more, uninterrupted,
and measures what the interruption changed: weights, optimizer steps, the epoch fit restarted
at, and whether the restarted epochs saw the uninterrupted run's data order.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.resume import DRIFTED, EXACT

if TYPE_CHECKING:
    from runner.core.schema import Config

KILLED = "killed.json"  # in callback/: where the killed process stood when it died


class InterruptionFailed(RuntimeError):
    """The training process to be killed did not die as planned."""


def kill_point(cfg: Config, n_train: int, global_batch: int) -> tuple[int, int]:
    """(epoch, batch), zero-based: the middle of the last epoch (save_api.kill_at of its
    batches)."""
    batches = -(-n_train // global_batch)
    return cfg.train.epochs - 1, min(batches - 1, int(batches * cfg.save_api.kill_at))


def run_killed(cfg: Config, out: Path, point: tuple[int, int]) -> dict[str, Any]:
    """Train in a new process that kills itself at `point`; what it left in callback/."""
    from omegaconf import OmegaConf

    from runner.core.lifetime import PARENT_ENV
    from runner.job.callbacks import folder
    from runner.tracking.handover import EPOCHS_ENV

    start = time.perf_counter()
    folder(out).mkdir(parents=True, exist_ok=True)  # a kill before the first backup: no folder
    env = {k: v for k, v in os.environ.items() if k != EPOCHS_ENV}  # its epochs are not the run's
    env[PARENT_ENV] = str(os.getpid())  # it dies with this job process (die_with_parent)
    # The config on stdin, not in a file: it may hold a tracking URI's credentials.
    proc = subprocess.run(
        [sys.executable, "-m", "runner.job.interruption", "--output-dir", str(out),
         "--epoch", str(point[0]), "--batch", str(point[1])],
        input=OmegaConf.to_yaml(cfg), text=True, env=env, check=False,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(proc.stdout, end="", flush=True)  # into this job's log
    killed = folder(out) / KILLED
    if proc.returncode != -signal.SIGKILL or not killed.is_file():
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise InterruptionFailed(
            f"the training process to be killed at epoch {point[0]}, batch {point[1]} ended "
            f"with exit code {proc.returncode} instead: {last}")
    return {**json.loads(killed.read_text()),
            "killed_process_s": round(time.perf_counter() - start, 2)}


def compare(cfg: Config, strategy: Any, resumed: Any, history: dict[str, list[float]],
            killed: dict[str, Any], global_batch: int) -> dict[str, Any]:
    """The resumed training against the same training uninterrupted (a new model from the same
    seed, on the same data as a new process sees it)."""
    import tensorflow as tf

    from runner.job import data as datasets
    from runner.job import nested
    from runner.job.training import build_model, train

    epochs = cfg.train.epochs
    restarted_at = epochs - len(next(iter(history.values()), []))
    tf.keras.utils.set_random_seed(cfg.seed)
    data = datasets.load(cfg, global_batch)  # afresh: the shuffle order of a new process
    reference, _ = build_model(cfg, strategy)
    train(reference, data.train, epochs, cfg, "uninterrupted", hand_over=False)
    weights = [nested.max_abs_diff(a.numpy(), b.numpy())
               for a, b in zip(resumed.weights, reference.weights, strict=True)]
    steps = {"resumed": int(resumed.optimizer.iterations.numpy()),
             "uninterrupted": int(reference.optimizer.iterations.numpy())}
    order_kept = same_order(cfg, global_batch, restarted_at)
    diff = max(weights, default=0.0)
    found = {"killed_at": {"epoch": killed["epoch"], "batch": killed["batch"]},
             "restarted_at_epoch": restarted_at, "epochs_after_restart": epochs - restarted_at,
             "optimizer_steps": steps, "max_abs_diff": diff,
             "tolerance": cfg.verify.resume_tolerance, "data_order_kept": order_kept,
             "killed_process_s": killed.get("killed_process_s")}
    exact = diff <= cfg.verify.resume_tolerance and steps["resumed"] == steps["uninterrupted"]
    found["outcome"] = EXACT if exact else DRIFTED
    found["cause"], found["hint"] = (None, None) if exact else cause(found, killed["epoch"])
    return found


def same_order(cfg: Config, global_batch: int, restarted_at: int) -> bool:
    """Whether a new process's first pass over the training data (what fit's first epoch after
    the restart reads) is the order an uninterrupted run reads in epoch `restarted_at`: compared
    on the labels of the first batch."""
    import numpy as np
    import tensorflow as tf

    from runner.job import data as datasets

    tf.keras.utils.set_random_seed(cfg.seed)
    train = datasets.load(cfg, global_batch).train
    passes = [next(iter(train))[1] for _ in range(restarted_at + 1)]
    return bool(np.array_equal(np.asarray(passes[0]), np.asarray(passes[-1])))


def cause(found: dict[str, Any], killed_epoch: int) -> tuple[str, str]:
    """Why the resumed training is not the uninterrupted one, from what was measured."""
    steps = found["optimizer_steps"]
    if found["restarted_at_epoch"] == 0 and killed_epoch > 0:
        return "epoch counter reset", (
            f"fit started again at epoch 0, not at the epoch the backup had reached: the whole "
            f"training ran again on restored weights ({steps['resumed']} optimizer steps "
            f"against {steps['uninterrupted']}; keras-team/keras#19179)")
    if steps["resumed"] > steps["uninterrupted"]:
        return "batches repeated", (
            f"the backup was taken in the middle of epoch {found['restarted_at_epoch']}, and "
            f"fit restarted that epoch from its first batch: {steps['resumed']} optimizer "
            f"steps against {steps['uninterrupted']}. Keras 3's BackupAndRestore restores the "
            "epoch, not the batch: save_freq='epoch' resumes at an epoch's start")
    if steps["resumed"] < steps["uninterrupted"]:
        return "optimizer steps lost", (
            f"{steps['resumed']} optimizer steps against {steps['uninterrupted']}: the "
            "restored optimizer did not count the steps before the interruption")
    if not found["data_order_kept"]:
        return "data order", (
            f"the restarted process read its first epoch (epoch {found['restarted_at_epoch']}) "
            "in the order an uninterrupted run reads epoch 0: tf.data's shuffle draws a new "
            "order per pass over the data, counted from the start of each process, and fit "
            "does not skip passes on restart. Same weights, steps and epochs, other batches")
    return "unknown", None  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """The training to be killed: the train side's own steps (seed, strategy, data, model), then
    fit with BackupAndRestore until the kill point."""
    parser = argparse.ArgumentParser(prog="python -m runner.job.interruption")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--epoch", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from runner.core.lifetime import die_with_parent
    from runner.job import runtime

    die_with_parent()
    cfg = OmegaConf.create(sys.stdin.read())
    tf = runtime.prepare(cfg, "train")
    from runner.job import callbacks, training
    from runner.job import data as datasets

    tf.keras.utils.set_random_seed(cfg.seed)
    strategy = runtime.make_strategy(cfg.strategy, cfg.cluster)
    data = datasets.load(cfg, cfg.train.batch_size_per_replica * runtime.replicas(strategy))
    model, _ = training.build_model(cfg, strategy)
    print(f"backup_and_restore: training in process {os.getpid()}, to be killed at epoch "
          f"{args.epoch}, batch {args.batch}", flush=True)
    killer = kill_at(args.epoch, args.batch, callbacks.folder(args.output_dir) / KILLED)
    model.fit(data.train, epochs=cfg.train.epochs, verbose=cfg.verbose, shuffle=False,
              callbacks=[*callbacks.for_fit(cfg, args.output_dir), killer])
    return 3  # not killed: the kill point was never reached


def kill_at(epoch: int, batch: int, record: Path) -> Any:
    """A callback that, after the batch at (epoch, batch) and the backup's own step, notes where
    it stands and kills its process with SIGKILL."""
    import tensorflow as tf

    class KillAt(tf.keras.callbacks.Callback):
        epoch_now = 0

        def on_epoch_begin(self, epoch_now: int, logs: Any = None) -> None:
            self.epoch_now = epoch_now

        def on_train_batch_end(self, batch_now: int, logs: Any = None) -> None:
            if (self.epoch_now, batch_now) == (epoch, batch):
                record.write_text(json.dumps({"epoch": epoch, "batch": batch,
                                              "pid": os.getpid()}) + "\n")
                print(f"backup_and_restore: killing the training process {os.getpid()} at "
                      f"epoch {epoch}, batch {batch} (SIGKILL)", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    return KillAt()


if __name__ == "__main__":
    raise SystemExit(main())
