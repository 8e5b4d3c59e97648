"""`python -m runner.sync [PATH ...]`: bring an MLflow store up to date with what is on disk.

A job's output directory is the record of truth (result.json, job.log, saved_model/, the
configs). For every job under PATH (job dirs, sweep dirs; default outputs/) this creates the
run of a job that has none in the store, completes a run that is RUNNING or lacks part of the
record, sets its final status, and does the same for a sweep's parent run with its matrix.
Idempotent: a run that holds its job's record (its `runner.record` tag) is left alone.

With --tracking-uri (or --store-dir) the target is another store: runs recorded in one store
(say, a laptop's embedded sqlite) are pushed into another (a team server), each found again by
its job's output directory, so a run is never pushed twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.core.compose import mlflow_config
from runner.core.files import OUTPUTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="job or sweep directories "
                        "(default: outputs/)")
    parser.add_argument("--tracking-uri", help="the store to bring up to date (default: as "
                        "the runner's config says: MLFLOW_TRACKING_URI, else the embedded store)")
    parser.add_argument("--store-dir", help="an embedded store's folder instead")
    parser.add_argument("--experiment", help="default: the runner's mlflow.experiment_name")
    args = parser.parse_args(argv)

    from runner.tracking.sync import sync  # MLflow: not for --help

    mcfg = mlflow_config(args.tracking_uri, args.store_dir, args.experiment)
    outcomes = sync(args.paths or [OUTPUTS], mcfg)
    for outcome in outcomes:
        print(outcome.line(), flush=True)
    failed = [o for o in outcomes if not o.ok]
    changed = [o for o in outcomes if o.what in ("created", "completed")]
    print(f"{len(outcomes)} records: {len(changed)} synced, {len(failed)} could not be, "
          f"{len(outcomes) - len(changed) - len(failed)} unchanged"
          f"{' (nothing to do)' if not changed and not failed else ''}.", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
