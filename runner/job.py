"""`python -m runner.job CONFIG --output-dir DIR`: one job in this fresh process.

The Hydra task starts it; it prepares the TensorFlow runtime for the job's Keras generation and
devices, runs the scenario, and writes result.json. Exit 0 when passed, 1 when failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from runner import hints, runtime
from runner import result as results

GROUPS = ("strategy", "load_strategy", "save_api", "load_api", "model", "data", "keras")
MESSAGE_LIMIT = 2000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.job")
    parser.add_argument("config", type=Path, help="resolved job config (YAML)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--override", action="append", default=[], help="Hydra override, kept")
    args = parser.parse_args(argv)
    cfg = OmegaConf.load(args.config)
    out = args.output_dir.resolve()
    result = new_result(cfg, out, args.override)
    results.write(out, result)
    try:
        runtime.prepare(cfg)
        from runner import scenario  # imports TensorFlow: only after prepare()

        scenario.run(cfg, out, result)
    except BaseException as e:  # noqa: BLE001 - every failure is data, Ctrl-C included
        record_failure(result, e, out, cfg)
        if not isinstance(e, Exception):
            results.write(out, result)
            raise
    result.pop("phase", None) if result["status"] == "passed" else None
    results.write(out, result)
    return 0 if result["status"] == "passed" else 1


def new_result(cfg: Any, out: Path, overrides: list[str]) -> dict[str, Any]:
    """The result before anything ran: the combination, empty measurements."""
    return {
        "status": "running",
        "phase": "train",
        **{group: cfg[group].name for group in GROUPS},
        "replicas": {"train": None, "load": None},
        "error": None,
        "max_abs_diff": None,
        "tolerance": cfg.verify.tolerance,
        "accuracy": {"after_train": None, "after_load": None, "after_continue": None},
        "timings": {"train_s": None, "save_s": None, "load_s": None, "continue_s": None},
        "artifact": None,
        "artifact_bytes": None,
        "io_device": cfg.io_device,
        "notes": [],
        "overrides": overrides,
        "output_dir": str(out),
        "devices": None,
        "keras_module": None,
        "versions": runtime.versions(),
    }


def record_failure(result: dict[str, Any], e: BaseException, out: Path, cfg: Any) -> None:
    """Record the real exception, the phase it happened in, and a hint when one is known."""
    phase = result.get("phase", "train")
    message = str(e) or repr(e)
    result["status"] = "failed" if isinstance(e, Exception) else "interrupted"
    result["error"] = {
        "type": type(e).__name__,
        "message": message[:MESSAGE_LIMIT],
        "phase": phase,
        "hint": hints.hint_for(e, phase),
    }
    (out / "traceback.txt").write_text("".join(traceback.format_exception(e)))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # result.json is complete; skip TensorFlow's slow interpreter teardown (about 1.5 s a job).
    os._exit(code)
