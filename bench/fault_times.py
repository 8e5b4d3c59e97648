"""How long each error path takes to answer, end to end: `python bench/fault_times.py`.

Each case runs `python -m runner` for real (as tests/test_faults.py does, one of each kind) and
prints the seconds from start (or, for a signal, from the signal) to the runner's exit, and the
slowest. Tracking is off but where the case is about MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.epochs=1", "continue_epochs=1", "verbose=0", "mlflow.enabled=false"]
STALL = "RUNNER_STALL_AT_PHASE"


def runner(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def timed(*args: str, env: dict[str, str] | None = None) -> tuple[float, int]:
    start = time.monotonic()
    proc = runner(*args, env=env)
    code = proc.wait()
    return time.monotonic() - start, code


def interrupted(phase: str, sig: int, run_dir: Path, *args: str) -> tuple[float, int]:
    """Seconds from the signal (sent once the job stalls in `phase`) to the runner's exit."""
    proc = runner(f"hydra.run.dir={run_dir}", *FAST, *args, env={STALL: phase})
    while f"{STALL}={phase}: stalled" not in _read(run_dir / "job.log"):
        time.sleep(0.1)
    start = time.monotonic()
    os.killpg(proc.pid, sig)
    code = proc.wait()
    return time.monotonic() - start, code


def mid_fit(sig: int, run_dir: Path, *args: str) -> tuple[float, int]:
    """Seconds from the signal, sent 3 s into a long model.fit, to the runner's exit."""
    proc = runner(f"hydra.run.dir={run_dir}", *FAST, "train.epochs=1000", "verbose=2", *args)
    while "Epoch 2/" not in _read(run_dir / "job.log"):
        time.sleep(0.1)
    time.sleep(3)
    start = time.monotonic()
    os.killpg(proc.pid, sig)
    code = proc.wait()
    return time.monotonic() - start, code


def hung_worker(run_dir: Path) -> tuple[float, int]:
    """Seconds from SIGSTOP to worker 1 of 2 (a hang, mid-fit) to the runner's exit."""
    proc = runner(f"hydra.run.dir={run_dir}", *FAST, "train.epochs=1000", "verbose=2",
                  "strategy=multi_worker_mirrored", "keras=legacy")
    while "Epoch 3/" not in _read(run_dir / "job.log"):
        time.sleep(0.1)
    worker = json.loads((run_dir / "workers.json").read_text())[1]["pid"]
    start = time.monotonic()
    os.kill(worker, signal.SIGSTOP)
    code = proc.wait()
    return time.monotonic() - start, code


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fault-times-"))
    saved = tmp / "saved"
    assert timed(f"hydra.run.dir={saved}", *FAST)[1] == 0
    truncated = tmp / "truncated" / "saved_model"
    shutil.copytree(saved / "saved_model", truncated)
    model = truncated / "model.keras"
    model.write_bytes(model.read_bytes()[:1000])
    cases = {
        "config: train.epochs=-1": lambda: timed(f"hydra.run.dir={tmp}/c1", "train.epochs=-1"),
        "config: typo'd key train.epoch=3": lambda: timed(f"hydra.run.dir={tmp}/c2",
                                                         "train.epoch=3"),
        "output dir not writable": lambda: timed(f"hydra.run.dir={tmp / 'file' / 'run'}",
                                                 *FAST),
        "load_from: missing path": lambda: timed(f"hydra.run.dir={tmp}/a1", *FAST,
                                                 f"load_from={tmp}/nowhere"),
        "load_from: truncated .keras": lambda: timed(f"hydra.run.dir={tmp}/a2", *FAST,
                                                     f"load_from={truncated}"),
        "tracking server unreachable": lambda: timed(
            f"hydra.run.dir={tmp}/t1", *FAST[:-1], "mlflow.tracking_uri=http://127.0.0.1:9"),
        "SIGTERM in train": lambda: interrupted("train", signal.SIGTERM, tmp / "s1"),
        "SIGINT in save": lambda: interrupted("save", signal.SIGINT, tmp / "s2"),
        "SIGTERM mid-fit": lambda: mid_fit(signal.SIGTERM, tmp / "f1"),
        "SIGINT mid-fit, 2 local workers": lambda: mid_fit(
            signal.SIGINT, tmp / "f2", "strategy=multi_worker_mirrored", "keras=legacy"),
        "worker 1 of 2 hung (SIGSTOP) mid-fit": lambda: hung_worker(tmp / "h1"),
        "SIGINT in save, 2 local workers": lambda: interrupted(
            "save", signal.SIGINT, tmp / "s3", "strategy=multi_worker_mirrored",
            "keras=legacy"),
    }
    (tmp / "file").write_text("")
    times = {}
    for name, case in cases.items():
        seconds, code = case()
        times[name] = seconds
        print(f"{seconds:6.2f} s  exit {code:3d}  {name}", flush=True)
    slowest = max(times, key=times.get)
    print(f"\nslowest: {slowest} ({times[slowest]:.2f} s)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
