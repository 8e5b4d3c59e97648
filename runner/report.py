"""`python -m runner.report [PARENT_RUN_ID]`: rebuild a sweep's compatibility matrix from MLflow.

Without an id, the latest sweep of the experiment. Reads the child runs' tags only, so any past
sweep's matrix comes back without rerunning it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runner import matrix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__)
    parser.add_argument("parent_run_id", nargs="?", help="the sweep's parent run (default: latest)")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the embedded "
                        "store (see --store-dir)")
    parser.add_argument("--store-dir", help="the embedded store's folder (default: outputs/mlflow)")
    parser.add_argument("--experiment", default="runner-save-load")
    parser.add_argument("--out", type=Path, help="also write matrix.md/.csv/.png here")
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from runner import tracking

    uri, _ = tracking.configure(OmegaConf.create({
        "tracking_uri": args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
        "store_dir": args.store_dir, "http_timeout_s": 5, "http_max_retries": 3}))
    client = tracking.MlflowClient(uri)  # not mlflow.set_tracking_uri: see tracking.configure
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"No experiment {args.experiment!r} at {uri}.", file=sys.stderr)
        return 1
    parent = args.parent_run_id or latest_sweep(client, experiment.experiment_id)
    if parent is None:
        print(f"No sweep in experiment {args.experiment!r} at {uri}.", file=sys.stderr)
        return 1
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        max_results=10000)
    children.sort(key=lambda run: int(run.data.tags.get("job_num", 0)))  # the sweep's order
    if not children:
        print(f"Run {parent} has no child runs at {uri}.", file=sys.stderr)
        return 1
    m = matrix.build(matrix.record_from_tags(run.data.tags) for run in children)
    print(f"Sweep {parent} ({len(children)} jobs):\n\n{matrix.to_markdown(m)}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        matrix.write(m, args.out)
    return 0


def latest_sweep(client, experiment_id: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string="tags.`runner.sweep` = 'true'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


if __name__ == "__main__":
    raise SystemExit(main())
