"""The seed tutorial's scenario as a bare script: no Hydra, no MLflow, no result bookkeeping.

build (in the strategy's scope) → fit → Model.save('.keras') → load_model → fit again, on the
runner's own data pipeline and model (so both do the same work). Prints one JSON line:
the wall time of each step and the training throughput of the first fit.

    python bench/seed_script.py --data digits --epochs 2 --strategy default
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from omegaconf import OmegaConf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="digits", choices=("digits", "synthetic"))
    parser.add_argument("--n-train", type=int, default=60000, help="synthetic only")
    parser.add_argument("--n-test", type=int, default=10000, help="synthetic only")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--continue-epochs", type=int, default=2)
    parser.add_argument("--strategy", default="default",
                        choices=("default", "one_device", "mirrored"))
    parser.add_argument("--keras", default="v3", choices=("v3", "legacy"))
    args = parser.parse_args()
    start = time.perf_counter()
    os.environ["TF_USE_LEGACY_KERAS"] = "1" if args.keras == "legacy" else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as tf

    from runner.job import data as datasets
    from runner.job import models

    if args.strategy == "mirrored":  # two replicas on a CPU-only machine, as the runner does
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)
        strategy = tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("CPU")[:2]])
    elif args.strategy == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    else:
        strategy = tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(0)
    data_cfg = {"digits": {"name": "digits", "test_fraction": 0.2, "shuffle_buffer": 10000},
                "synthetic": {"name": "synthetic", "n_train": args.n_train,
                              "n_test": args.n_test, "shuffle_buffer": 10000}}[args.data]
    cfg = OmegaConf.create({"data": data_cfg, "seed": 0, "verify": {"probe_size": 64},
                            "speed": {"prefetch": False, "parallel_map": False}})  # the seed's
    data = datasets.load(cfg, 64 * strategy.num_replicas_in_sync)

    timings = {}
    with strategy.scope():
        model = models.build("sequential")
        models.compile_model(model)
    t = time.perf_counter()
    model.fit(data.train, epochs=args.epochs, verbose=0)
    timings["fit_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        t = time.perf_counter()
        model.save(path)
        timings["save_s"] = time.perf_counter() - t
        t = time.perf_counter()
        restored = tf.keras.models.load_model(path)
        timings["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        restored.fit(data.train, epochs=args.continue_epochs, verbose=0)
        timings["continue_s"] = time.perf_counter() - t
    timings["train_examples_per_s"] = data.n_train * args.epochs / timings["fit_s"]
    timings["script_s"] = time.perf_counter() - start
    print(json.dumps(timings), flush=True)


if __name__ == "__main__":
    main()  # and exits as a user's script does, TensorFlow's teardown included
