"""`python -m runner.job CONFIG --output-dir DIR [--side S]`: a job (or one side of it) in this
fresh process.

The Hydra task starts it; it prepares the TensorFlow runtime for the side's Keras generation and
devices, runs the scenario, and writes result.json. Exit 0 when passed (or, for --side train,
saved), 1 when failed, 130/143 when interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from runner.core import interrupt
from runner.core import result as results
from runner.core.lifetime import die_with_parent
from runner.core.text import first_line
from runner.job import failure, runtime
from runner.tracking.handover import RUN_ID_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.job")
    parser.add_argument("config", type=Path, help="resolved job config (YAML)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--override", action="append", default=[],
                        help=f"a Hydra override, kept in the result (default: the JSON list "
                             f"in ${results.OVERRIDES_ENV})")
    parser.add_argument("--side", choices=("both", "train", "load"), default="both",
                        help="train and load in this process, or only one side")
    parser.add_argument("--resume", action="store_true",
                        help="continue the result.json an earlier side's process left")
    args = parser.parse_args(argv)
    die_with_parent()
    interrupt.raise_on_signals(once=True)  # Ctrl-C/SIGTERM: recorded below with the phase
    cfg = OmegaConf.load(args.config)
    out = args.output_dir.resolve()
    overrides = args.override or json.loads(os.environ.get(results.OVERRIDES_ENV) or "[]")
    result = (results.read(out) if args.resume
              else results.new_result(cfg, out, overrides, os.environ.get(RUN_ID_ENV)))
    result["process"] = results.this_process()
    # Each side's libraries, read in the process (the environment) that runs it.
    if args.side != "load" or not args.resume:
        result["versions"] = results.versions()
    if args.side != "train":
        result["load_versions"] = results.versions()
    results.stamp(result, "process_start", keep=True)
    results.write(out, result)

    def cluster_start(spec: dict[str, Any], me: str, joined: bool) -> None:
        result["cluster_start"] = {"spec": spec, "me": me, "joined": joined}
        results.write(out, result)

    runtime.on_cluster.append(cluster_start)
    try:
        runtime.prepare(cfg, args.side)
        from runner.job import scenario  # imports TensorFlow: only after prepare()

        results.stamp(result, "prepared", keep=True)
        scenario.run(cfg, out, result, args.side)
    except BaseException as raised:  # noqa: BLE001 - every failure is data, Ctrl-C included
        e = interrupt.as_interruption(raised)
        if e is not raised:
            result["notes"].append(f"the interruption surfaced as {type(raised).__name__} "
                                   f"from library code: {first_line(raised)}")
        failure.record(result, e, out, cfg, args.side)
        if isinstance(e, interrupt.Interrupted):
            results.write(out, result)
            return e.exit_code
        if not isinstance(e, Exception):
            results.write(out, result)
            raise
    if result["status"] == "passed":
        result.pop("phase", None)
    results.stamp(result, "process_end")
    results.write(out, result)
    return 0 if result["status"] in ("passed", "running") else 1
