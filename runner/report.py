"""`python -m runner.report [PARENT_RUN_ID]`: rebuild a sweep's compatibility matrix from MLflow.

Without an id, the latest sweep of the experiment. Reads the child runs' tags only, so any past
sweep's matrix comes back without rerunning it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from runner.core.compose import mlflow_config
from runner.core.files import DEFAULT_STORE_DIR, STORE_DB, sqlite_path
from runner.tracking import matrix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__)
    parser.add_argument("parent_run_id", nargs="?", help="the sweep's parent run (default: latest)")
    parser.add_argument("--tracking-uri", help="default: as the runner's config says "
                        "(MLFLOW_TRACKING_URI, else the embedded store)")
    parser.add_argument("--store-dir", help="the embedded store's folder (default: outputs/mlflow)")
    parser.add_argument("--experiment", help="default: the runner's mlflow.experiment_name")
    parser.add_argument("--out", type=Path, help="also write matrix.md/.csv/.png/.html here")
    args = parser.parse_args(argv)

    mcfg = mlflow_config(args.tracking_uri, args.store_dir, args.experiment)
    store = Path(mcfg.store_dir or DEFAULT_STORE_DIR)
    database = sqlite_path(mcfg.tracking_uri) if mcfg.tracking_uri else store / STORE_DB
    if database is not None and not database.is_file():  # MlflowClient would make an empty one
        where = database if mcfg.tracking_uri else f"{store} (no {STORE_DB})"
        print(f"No MLflow store at {where}: run a sweep first, or give --store-dir or "
              "--tracking-uri.", file=sys.stderr)
        return 1

    # MLflow: not for --help, nor for a store that is not there.
    from mlflow.tracking import MlflowClient

    from runner.tracking.runs import TrackedRun
    from runner.tracking.store import configure

    uri, _ = configure(mcfg)
    client = MlflowClient(uri)  # not mlflow.set_tracking_uri: see runner.tracking.store
    experiment = client.get_experiment_by_name(mcfg.experiment_name)
    if experiment is None:
        print(f"No experiment {mcfg.experiment_name!r} at {uri}.", file=sys.stderr)
        return 1
    parent = args.parent_run_id or latest_sweep(client, experiment.experiment_id)
    if parent is None:
        print(f"No sweep in experiment {mcfg.experiment_name!r} at {uri}.", file=sys.stderr)
        return 1
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        max_results=10000)
    children.sort(key=lambda run: int(run.data.tags.get("job_num", 0)))  # the sweep's order
    if not children:
        print(f"Run {parent} has no child runs at {uri}.", file=sys.stderr)
        return 1
    m = matrix.build(matrix.record_from_run(run.data.tags, run.data.metrics, run.info.run_id)
                     for run in children)
    print(f"Sweep {parent} ({len(children)} jobs):\n\n{matrix.to_markdown(m)}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        matrix.write(m, args.out, lambda run_id: TrackedRun(
            uri, run_id, experiment.experiment_id).href)
    return 0


def latest_sweep(client: Any, experiment_id: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string="tags.`runner.sweep` = 'true'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


if __name__ == "__main__":
    raise SystemExit(main())
