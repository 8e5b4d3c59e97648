"""`python bench/run.py [--smoke] [--pairs N] [--out DIR]`: what the runner costs and how fast it
trains, measured side by side in one run.

Every comparison alternates fresh processes (A, B, A, B, ...), so that whatever else the shared
machine does hits both sides alike, and reports medians and ratios:

1. overhead: the seed's scenario as a bare script (bench/seed_script.py) against
   `python -m runner` doing the same work with tracking on, on digits and on MNIST-sized data;
2. startup: `python -m runner --cfg job` and a config error;
3. training throughput: the runner's training phase against plain `model.fit`, per strategy;
4. save and load: seconds and bytes per save_api, seconds per load_api;
5. sweeps: an 8-job sweep with the basic launcher and with joblib n_jobs=2;
6. speed options: each opt-in speed-up (`speed.*`) against the defaults, and whether it changed
   any number;
7. the resume check: a job with `verify.resume_steps=3` (the default) against the same job with
   the check off, on one replica and on mirrored -> default with BatchNormalization.
8. the fork server: `experiment=matrix` (32 jobs, tracking on) with `runner.fork_server=true`
   against false, basic launcher and joblib n_jobs=2, and whether every number stayed the same;
9. tracking: the default job tracked against untracked, and its wall time phase by phase;
10. accuracy: one pass over the test set, the runner's compiled accuracy against an eager loop;
11. shared training: `experiment=matrix` (tracking on) with `runner.share_training=true` against
    false (every cell training its own, the forked sweep before #28), basic launcher and joblib
    n_jobs=2, then `experiment=resume_matrix` (joblib), and whether every number stayed the
    same; and, for every experiment, how many distinct trainings and saves its cells have.

Writes bench.json and bench.md (with the machine's cores, memory and library versions) into
--out (default bench/results). --smoke: tiny sizes and one pair, to keep the script working
(CI runs it); it says nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@dataclass
class Sizes:
    pairs: int = 5
    digits_epochs: int = 2  # the runner's defaults: 2 + 2 epochs
    synthetic_train: int = 60000  # MNIST's sizes
    synthetic_test: int = 10000
    synthetic_epochs: int = 1
    throughput_train: int = 20000
    sweep_pairs: int = 2
    sweep: tuple[str, ...] = ("save_api=keras,saved_model", "load_api=keras,saved_model",
                              "keras=v3,legacy")  # 8 jobs
    fork_sweep: tuple[str, ...] = ("experiment=matrix",)  # 32 jobs, 2 + 2 epochs
    fork_pairs: int = 1
    # section 11: (experiment overrides, launcher) pairs timed shared against unshared
    shared_sweeps: tuple[tuple[tuple[str, ...], str], ...] = (
        (("experiment=matrix",), "basic"), (("experiment=matrix",), "joblib"),
        (("experiment=resume_matrix",), "joblib"))


SMOKE = Sizes(pairs=1, digits_epochs=1, synthetic_train=512, synthetic_test=128,
              synthetic_epochs=1, throughput_train=512, sweep_pairs=1,
              sweep=("save_api=keras,saved_model",),
              fork_sweep=("save_api=keras,saved_model", "train.epochs=1", "continue_epochs=1"),
              shared_sweeps=((("load_api=keras,saved_model", "train.epochs=1",
                               "continue_epochs=1"), "joblib"),))


# ---- running and timing processes ------------------------------------------------------------

def timed(command: list[str]) -> tuple[float, str]:
    """Run `command` from the repository root; its wall time and output (callers check it)."""
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, proc.stdout + proc.stderr


def alternate(pairs: int, a: Callable[[int], Any], b: Callable[[int], Any]) -> tuple[list, list]:
    """a(0), b(0), a(1), b(1), ...: both sides see the same machine."""
    first, second = [], []
    for i in range(pairs):
        first.append(a(i))
        second.append(b(i))
    return first, second


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def runner_job(work: Path, name: str, *overrides: str) -> tuple[float, dict[str, Any]]:
    """`python -m runner OVERRIDES` into work/name; its wall time and result.json."""
    out = work / name
    started = time.time()
    seconds, output = timed([PYTHON, "-m", "runner", f"hydra.run.dir={out}", "verbose=0",
                             *overrides])
    try:
        result = {**json.loads((out / "result.json").read_text()), "bench_start": started}
    except FileNotFoundError:
        raise RuntimeError(f"runner wrote no result.json:\n{output[-3000:]}") from None
    if result["status"] != "passed":
        raise RuntimeError(f"runner job failed: {result['error']}")
    return seconds, result


def seed_script(*args: str) -> tuple[float, dict[str, float]]:
    seconds, output = timed([PYTHON, "bench/seed_script.py", *args])
    lines = [ln for ln in output.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"seed_script printed no result:\n{output[-3000:]}")
    return seconds, json.loads(lines[-1])


def _seed_script_s(args: list[str], i: int) -> float:
    return seed_script(*args)[0]


def _seed_script_rate(args: list[str], i: int) -> float:
    return seed_script(*args)[1]["train_examples_per_s"]


def _runner_s(work: Path, name: str, overrides: list[str], i: int) -> float:
    return runner_job(work, f"{name}-{i}", *overrides)[0]


def _runner_rate(work: Path, name: str, overrides: list[str], i: int) -> float:
    return runner_job(work, f"{name}-{i}", *overrides)[1]["throughput"]["train_examples_per_s"]


# ---- the measurements ---------------------------------------------------------------------

def overhead(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """The bare seed script against the runner with tracking on (fresh store per workload)."""
    workloads = {
        "digits": ([f"--epochs={sizes.digits_epochs}"], ["data=digits"], sizes.digits_epochs),
        "synthetic": (
            ["--data=synthetic", f"--n-train={sizes.synthetic_train}",
             f"--n-test={sizes.synthetic_test}", f"--epochs={sizes.synthetic_epochs}"],
            ["data=synthetic", f"data.n_train={sizes.synthetic_train}",
             f"data.n_test={sizes.synthetic_test}"], sizes.synthetic_epochs),
    }
    rows = []
    for name, (script_args, data_overrides, epochs) in workloads.items():
        tracked_job = [*data_overrides, f"train.epochs={epochs}", f"continue_epochs={epochs}",
                       f"mlflow.store_dir={work / f'mlflow-{name}'}"]
        bare, tracked = alternate(
            sizes.pairs,
            partial(_seed_script_s, [*script_args, f"--continue-epochs={epochs}"]),
            partial(_runner_s, work, f"overhead-{name}", tracked_job))
        rows.append({"workload": name, "epochs": f"{epochs} + {epochs}",
                     "bare_script_s": median(bare), "runner_tracked_s": median(tracked),
                     "extra_s": round(median(tracked) - median(bare), 2),
                     "ratio": round(median(tracked) / median(bare), 3),
                     "bare_runs": bare, "runner_runs": tracked})
    return rows


def startup(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    config, error = alternate(
        max(sizes.pairs, 3),
        lambda i: timed([PYTHON, "-m", "runner", "--cfg", "job"])[0],
        lambda i: timed([PYTHON, "-m", "runner", f"hydra.run.dir={work}/error",
                         "train.epochs=0"])[0])
    return [{"command": "python -m runner --cfg job", "median_s": median(config), "runs": config},
            {"command": "python -m runner train.epochs=0 (config error)",
             "median_s": median(error), "runs": error}]


def throughput(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """Examples/s of the runner's training phase against plain model.fit, per strategy."""
    data = ["--data=synthetic", f"--n-train={sizes.throughput_train}",
            f"--n-test={sizes.synthetic_test}", "--epochs=1", "--continue-epochs=0"]
    rows = []
    for strategy in ("default", "one_device", "mirrored"):
        job = [f"strategy={strategy}", "data=synthetic", f"data.n_train={sizes.throughput_train}",
               f"data.n_test={sizes.synthetic_test}", "train.epochs=1", "continue_epochs=0",
               "mlflow.enabled=false"]
        plain, ours = alternate(
            sizes.pairs, partial(_seed_script_rate, [*data, f"--strategy={strategy}"]),
            partial(_runner_rate, work, f"throughput-{strategy}", job))
        rows.append({"strategy": strategy, "plain_fit_examples_per_s": median(plain),
                     "runner_examples_per_s": median(ours),
                     "ratio": round(median(ours) / median(plain), 3),
                     "plain_runs": plain, "runner_runs": ours})
    return rows


# (save_api, load_api, keras, extra overrides): each API once, in a combination that passes.
SAVE_LOAD = [
    ("keras", "keras", "v3", []),
    ("saved_model", "saved_model", "v3", []),
    ("export", "tfsm_layer", "v3", ["load_api.optimizer=sgd"]),
    ("keras_saved_model", "hub", "legacy", []),
    ("checkpoint", "checkpoint", "v3", []),
    ("weights", "weights", "v3", []),
    ("weights", "weights", "legacy", []),
]


def save_load(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    rows = []
    for save_api, load_api, keras, extra in SAVE_LOAD:
        results = [runner_job(work, f"saveload-{save_api}-{i}", f"save_api={save_api}",
                              f"load_api={load_api}", f"keras={keras}", "train.epochs=1",
                              "continue_epochs=0", "mlflow.enabled=false", *extra)[1]
                   for i in range(sizes.pairs)]
        rows.append({"save_api": save_api, "load_api": load_api, "keras": keras,
                     "save_s": median([r["timings"]["save_s"] for r in results]),
                     "bytes": results[0]["artifact_bytes"],
                     "load_s": median([r["timings"]["load_s"] for r in results])})
    return rows


def sweeps(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """The same sweep with each launcher, tracking on, each time into a fresh store."""
    common = [*sizes.sweep, "train.epochs=1", "continue_epochs=1", "verbose=0"]

    def sweep(launcher: list[str], name: str) -> Callable[[int], float]:
        def run(i: int) -> float:
            seconds, output = timed([
                PYTHON, "-m", "runner", "-m", f"hydra.sweep.dir={work}/{name}-{i}",
                f"mlflow.store_dir={work}/{name}-{i}-mlflow", *launcher, *common])
            if not (work / f"{name}-{i}" / "matrix.md").exists():
                raise RuntimeError(f"the {name} sweep wrote no matrix:\n{output[-3000:]}")
            return seconds
        return run

    basic, joblib = alternate(
        sizes.sweep_pairs, sweep([], "sweep-basic"),
        sweep(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "sweep-joblib"))
    jobs = 1
    for override in sizes.sweep:
        jobs *= len(override.split("=", 1)[1].split(","))
    return [{"sweep": " ".join(common), "jobs": jobs, "basic_s": median(basic),
             "joblib_n_jobs_2_s": median(joblib), "speedup": round(median(basic) /
                                                                    median(joblib), 3),
             "basic_runs": basic, "joblib_runs": joblib}]


# Opt-in speed-ups (the `speed` config): (without, with), on the throughput workload.
SPEED_OPTIONS = (("speed.prefetch=false", "speed.prefetch=true"),
                 ("speed.parallel_map=false", "speed.parallel_map=true"),
                 ("speed.jit_compile=false", "speed.jit_compile=true"),
                 ("speed.threads=0", "speed.threads=1"))


def speed_options(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """Examples/s with each option against without, and whether the numbers stayed the same
    (training loss per epoch and test accuracy, exactly)."""
    base = ["data=synthetic", f"data.n_train={sizes.throughput_train}",
            f"data.n_test={sizes.synthetic_test}", "train.epochs=1", "continue_epochs=0",
            "mlflow.enabled=false"]
    rows = []
    for without, with_ in SPEED_OPTIONS:
        name = without.split("=")[0].split(".")[1]
        off, on = alternate(sizes.pairs, partial(_runner_result, work, f"{name}-off",
                                                 [*base, without]),
                            partial(_runner_result, work, f"{name}-on", [*base, with_]))
        rate = [median([r["throughput"]["train_examples_per_s"] for r in side])
                for side in (off, on)]
        same = all(_numbers(a) == _numbers(b) for a, b in zip(off, on, strict=True))
        rows.append({"option": with_, "without_examples_per_s": rate[0],
                     "with_examples_per_s": rate[1], "ratio": round(rate[1] / rate[0], 3),
                     "same_numbers": same})
    return rows


# (name, overrides): the default job, and a multi-replica one with stateful layers.
RESUME_JOBS = (("default", []),
               ("mirrored->default, batchnorm",
                ["strategy=mirrored", "load_strategy=default", "model.batchnorm=true"]))


def resume_check(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """Whole-job seconds with the resume check (3 steps, the default) against without it."""
    rows = []
    for name, overrides in RESUME_JOBS:
        job = [f"train.epochs={sizes.digits_epochs}", f"continue_epochs={sizes.digits_epochs}",
               "mlflow.enabled=false", *overrides]
        slug = f"resume-{len(rows)}"  # the names hold characters Hydra's overrides refuse
        off, on = alternate(
            sizes.pairs, partial(_runner_s, work, f"{slug}-off", [*job, "verify.resume_steps=0"]),
            partial(_runner_s, work, f"{slug}-on", job))
        rows.append({"job": name, "check_off_s": median(off), "check_on_s": median(on),
                     "extra_s": round(median(on) - median(off), 2),
                     "ratio": round(median(on) / median(off), 3),
                     "off_runs": off, "on_runs": on})
    return rows


def _runner_result(work: Path, name: str, overrides: list[str], i: int) -> dict[str, Any]:
    return runner_job(work, f"{name}-{i}", *overrides)[1]


def _numbers(result: dict[str, Any]) -> tuple:
    return (result["history"]["train"]["loss"], result["accuracy"]["after_train"],
            result["accuracy"]["after_load"])


JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def timed_sweep(work: Path, name: str, overrides: list[str]) -> Callable[[int], tuple]:
    """A tracked sweep run i: its seconds and its jobs' results, in job order."""
    def run(i: int) -> tuple[float, list[dict[str, Any]]]:
        sweep_dir = work / f"{name}-{i}"
        seconds, output = timed([
            PYTHON, "-m", "runner", "-m", f"hydra.sweep.dir={sweep_dir}",
            f"mlflow.store_dir={sweep_dir}-mlflow", "verbose=0", *overrides])
        if not (sweep_dir / "matrix.md").exists():
            raise RuntimeError(f"the {name} sweep wrote no matrix:\n{output[-3000:]}")
        results = [json.loads(p.read_text()) for p in sorted(
            sweep_dir.glob("*/result.json"), key=lambda p: int(p.parent.name))]
        return seconds, results
    return run


def same_numbers(a: list[tuple], b: list[tuple]) -> bool:
    """Every job of every pair measured the same on both sides."""
    return all(_measured(x) == _measured(y) for (_, xs), (_, ys) in zip(a, b, strict=True)
               for x, y in zip(xs, ys, strict=True))


def fork_server(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """A sweep (experiment=matrix, tracking on) with runner.fork_server=true against false, with
    the basic launcher and with joblib n_jobs=2; and whether every job's numbers stayed the
    same."""
    def sweep(launcher: list[str], name: str, value: str) -> Callable[[int], tuple]:
        return timed_sweep(work, f"{name}-{value}",
                           [*launcher, *sizes.fork_sweep, f"runner.fork_server={value}"])

    rows = []
    for name, launcher in (("basic", []), ("joblib n_jobs=2", JOBLIB)):
        slug = name.split()[0]
        on, off = alternate(sizes.fork_pairs, sweep(launcher, slug, "true"),
                            sweep(launcher, slug, "false"))
        same = same_numbers(on, off)
        on_s, off_s = median([t for t, _ in on]), median([t for t, _ in off])
        rows.append({"sweep": " ".join(sizes.fork_sweep), "launcher": name,
                     "jobs": len(on[0][1]), "fork_server_on_s": on_s, "off_s": off_s,
                     "ratio": round(on_s / off_s, 3), "same_numbers": same,
                     "forked_jobs": sum(r["process"]["start"] == "forked" for r in on[0][1])})
    return rows


def _measured(result: dict[str, Any]) -> tuple:
    """What a job measures (not how long it took)."""
    resume = {k: v for k, v in (result["resume"] or {}).items() if k != "seconds"}
    return (result["status"], result["accuracy"], result["max_abs_diff"], result["history"],
            resume, (result.get("error") or {}).get("type"))


def tracking(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """The default job with tracking on against the same job with mlflow.enabled=false (fork
    server on, the default), and where each one's wall time goes, item by item (medians)."""
    tracked, untracked = alternate(
        sizes.pairs, partial(_runner_timed, work, "tracked", []),
        partial(_runner_timed, work, "untracked", ["mlflow.enabled=false"]))
    on, off = median([t for t, _ in tracked]), median([t for t, _ in untracked])
    rows: list[dict[str, Any]] = [{"item": "whole job (default: digits, 2 + 2 epochs)",
                                   "tracked_s": on, "untracked_s": off,
                                   "difference_s": round(on - off, 3),
                                   "ratio": round(on / off, 3), "what": ""}]
    items_on = [fixed_costs(*run) for run in tracked]
    items_off = [fixed_costs(*run) for run in untracked]
    for item in items_on[0]:
        a = median([i[item] for i in items_on])
        b = median([i.get(item, 0.0) for i in items_off])
        rows.append({"item": item, "tracked_s": a, "untracked_s": b,
                     "difference_s": round(a - b, 3), "ratio": "",
                     "what": COST_ITEMS.get(item, "a timed phase of the job")})
    largest = max(rows[1:], key=lambda r: r["tracked_s"])
    rows[0]["largest"] = largest["item"]
    for row in rows[1:]:
        row["largest"] = ""
    return rows


# What each item of a job's wall time is (fixed_costs); the timed phases are the job's own.
COST_ITEMS = {
    "runner_start_s": "interpreter, Hydra, the config composed and checked",
    "to_job_process_s": "until the job process runs: the fork server imports TensorFlow "
                        "while the MLflow run opens",
    "runtime_s": "the job process's runtime prepared (devices, Keras generation)",
    "untimed_in_job_s": "in the job process between its timed phases: data, model built, "
                        "accuracies, logits checked",
    "after_job_s": "after the job process's last result: its exit, the MLflow run closed, "
                   "the summary",
}


def fixed_costs(seconds: float, result: dict[str, Any]) -> dict[str, float]:
    """A job's wall time item by item, from result.json's clock (runner.core.result.stamp) and
    timings, and the wall-clock start bench_start that runner_job adds."""
    clock, started = result["clock"], result["bench_start"]
    timings = {k: v for k, v in result["timings"].items() if v is not None}
    items = {
        "runner_start_s": clock["job_start"] - started,
        "to_job_process_s": clock["process_start"] - clock["job_start"],
        "runtime_s": clock["prepared"] - clock["process_start"],
        **timings,
        "untimed_in_job_s": clock["process_end"] - clock["prepared"] - sum(timings.values()),
        "after_job_s": started + seconds - clock["process_end"],
    }
    return {k: round(v, 3) for k, v in items.items()}


def _runner_timed(work: Path, name: str, overrides: list[str], i: int) -> tuple:
    return runner_job(work, f"{name}-{i}", *overrides,
                      f"mlflow.store_dir={work / f'mlflow-{name}'}")


# One pass over a test set with the runner's accuracy (compiled after the first batch) against
# the eager loop it replaced, in one fresh process: seconds per pass, alternating, and counts.
ACCURACY_PASS = """
import json, sys, time
import numpy as np, tensorflow as tf, keras
from runner.job.accuracy import accuracy, _hits
n, pairs = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (n, 28, 28, 1)).astype("float32") / 255
y = rng.integers(0, 10, (n,)).astype("int64")
test = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).cache()
for _ in test:
    pass
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                          keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                          keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
predict = lambda images: model(images, training=False)
def eager():
    correct = total = 0
    for images, labels in test:
        correct += int(_hits(predict(images), labels))
        total += int(labels.shape[0])
    return correct / total
rows = {"eager": [], "compiled": []}
values = set()
for _ in range(pairs):
    for name, f in (("eager", eager), ("compiled", lambda: accuracy(predict, test))):
        t = time.perf_counter()
        values.add(f())
        rows[name].append(time.perf_counter() - t)
print(json.dumps({**rows, "same": len(values) == 1}))
"""


def accuracy_pass(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """Seconds per pass over the test set (MNIST-sized and digits-sized): the compiled accuracy
    against the eager loop, and whether they counted the same."""
    rows = []
    for n in (sizes.synthetic_test, 359):
        proc = subprocess.run([PYTHON, "-c", ACCURACY_PASS, str(n), str(sizes.pairs)],
                              cwd=ROOT, capture_output=True, text=True, check=True)
        found = json.loads(proc.stdout.strip().splitlines()[-1])
        eager, compiled = median(found["eager"]), median(found["compiled"])
        rows.append({"test_images": n, "eager_s": round(eager, 3),
                     "compiled_s": round(compiled, 3), "ratio": round(compiled / eager, 3),
                     "same_accuracy": found["same"]})
    return rows


def shared_training(sizes: Sizes, work: Path) -> list[dict[str, Any]]:
    """Sweeps (tracking on) with runner.share_training=true against false, and whether every
    job's numbers stayed the same; then each experiment's cells, distinct trainings and
    distinct saves (runner.core.trainings), which bound what sharing can save."""
    rows: list[dict[str, Any]] = []
    for overrides, launcher in sizes.shared_sweeps:
        chosen = JOBLIB if launcher == "joblib" else []
        slug = f"{overrides[0].split('=')[-1].split(',')[0]}-{launcher}"
        on, off = alternate(
            sizes.fork_pairs,
            timed_sweep(work, f"shared-{slug}", [*chosen, *overrides]),
            timed_sweep(work, f"unshared-{slug}",
                        [*chosen, *overrides, "runner.share_training=false"]))
        on_s, off_s = median([t for t, _ in on]), median([t for t, _ in off])
        rows.append({"sweep": " ".join(overrides), "launcher": launcher,
                     "jobs": len(on[0][1]), "trainings": sum("trained_by" not in r
                                                             for r in on[0][1]),
                     "saves": len({((r.get("trained_by") or {}).get("output_dir")
                                    or r["output_dir"], r["save_api"]) for r in on[0][1]}),
                     "shared_s": on_s, "unshared_s": off_s, "ratio": round(on_s / off_s, 3),
                     "same_numbers": same_numbers(on, off)})
    for experiment in ("matrix", "resume_matrix", "families"):
        cells, distinct, saves = trainings_of(experiment)
        rows.append({"sweep": f"experiment={experiment}", "launcher": "(counted, not run)",
                     "jobs": cells, "trainings": distinct, "saves": saves, "shared_s": "",
                     "unshared_s": "", "ratio": "", "same_numbers": ""})
    return rows


def trainings_of(experiment: str) -> tuple[int, int, int]:
    """An experiment's cells, its distinct trainings and its distinct saves, from its composed
    configs, keyed as a sweep's plan keys them (runner.core.trainings)."""
    import itertools

    from omegaconf import OmegaConf

    from runner.core import trainings
    from runner.core.compose import compose
    from runner.launcher.preflight import choose_save_api

    params = OmegaConf.load(ROOT / "conf" / "experiment" / f"{experiment}.yaml").hydra.sweeper
    keys = list(params.params)
    values = [str(params.params[k]).split(",") for k in keys]
    found, saves = set(), set()
    cells = 0
    for combination in itertools.product(*values):
        with contextlib.redirect_stderr(io.StringIO()):  # its expected-failure warnings
            cfg = compose([f"experiment={experiment}",
                           *(f"{k}={v}" for k, v in zip(keys, combination, strict=True))])
            choose_save_api(cfg)
        training = trainings.key(cfg, with_save=False)
        found.add(training)
        saves.add((training, trainings.save_key(trainings.save_side(cfg))))
        cells += 1
    return cells, len(found), len(saves)


SECTIONS = {"overhead": overhead, "startup": startup, "throughput": throughput,
            "save_load": save_load, "sweeps": sweeps, "speed_options": speed_options,
            "resume_check": resume_check, "fork_server": fork_server, "tracking": tracking,
            "accuracy": accuracy_pass, "shared_training": shared_training}


# ---- the report --------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    from runner.core.result import versions

    memory = None
    if Path("/proc/meminfo").exists():
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{total_kb / 2**20:.1f} GiB"
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                 .splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cores": os.cpu_count(), "memory": memory, "cpu": cpu,
            "platform": platform.platform(), "versions": versions()}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Benchmark ({report['mode']}, {report['date']})", "",
             f"Machine: {report['machine']['cores']} cores, {report['machine']['memory']}, "
             f"{report['machine']['cpu']}; " + ", ".join(
                 f"{k} {v}" for k, v in report["machine"]["versions"].items() if v), "",
             f"Command: `{report['command']}`; {report['sizes']['pairs']} alternating pairs, "
             f"medians; wall time {report['wall_s']:.0f} s.", ""]
    for name, rows in report["sections"].items():
        columns = [c for c in rows[0] if not c.endswith("_runs") and c != "runs"]
        lines += [f"## {name}", "", "| " + " | ".join(columns) + " |",
                  "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one pair")
    parser.add_argument("--pairs", type=int, help="alternating pairs (default 5; smoke 1)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="some sections only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    if args.pairs:
        sizes = replace(sizes, pairs=args.pairs)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "smoke" if args.smoke else "full",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python bench/run.py", *(argv or sys.argv[1:])]),
        "machine": machine(), "sizes": asdict(sizes), "sections": {}}
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as work:
        for name in args.only or SECTIONS:
            print(f"[bench] {name} ...", flush=True)
            report["sections"][name] = SECTIONS[name](sizes, Path(work))
            print(json.dumps(report["sections"][name], indent=1), flush=True)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
