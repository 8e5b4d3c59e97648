"""Links to the MLflow UI's pages: a run, the comparison of a sweep's runs; and how to open
them (a server's URL, or the `mlflow ui` command for the embedded store)."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from runner.core import redact

# The MLflow UI mode in which runs show as training runs (see runs.TrackedRun.page).
WORKFLOW = "workflowType=machine_learning"


def href(uri: str, page: str) -> str:
    """A link to a UI page from a page the same UI shows: absolute on a server, from the UI's
    root for `mlflow ui` on the embedded store."""
    if uri.startswith(("http://", "https://")):
        return redact.text(f"{uri.rstrip('/')}/{page}")
    return f"/{page}"


def open_with(uri: str, page: str) -> str:
    """How to see a UI page of the store at `uri` in a browser, in one line."""
    if uri.startswith(("http://", "https://")):
        return href(uri, page)
    return f"mlflow ui --backend-store-uri {uri} --port 5000, then http://127.0.0.1:5000/{page}"


def compare_page(experiment_id: str | None, run_ids: list[str]) -> str:
    """The UI's side-by-side comparison of these runs: their params (the differing ones first
    in its parallel-coordinates plot), metrics and tags in one table."""
    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = quote(json.dumps([experiment_id]))
    return f"#/compare-runs?runs={runs}&experiments={experiments}&{WORKFLOW}"


def runs_page(experiment_id: str | None, parent_run_id: str) -> str:
    """The experiment's runs list showing only this sweep's jobs, unfolded: MLflow 3.17's UI
    folds child runs under their parent (collapsed) while the list is sorted by date, its
    default, filter or not; sorted by outcome, the jobs are rows of their own."""
    query = urlencode({"searchFilter": sweep_filter(parent_run_id),
                       "orderByKey": "metrics.`outcome`", "orderByAsc": "false"},
                      quote_via=quote)
    return f"#/experiments/{experiment_id}/runs?{query}&{WORKFLOW}"


def sweep_filter(parent_run_id: str) -> str:
    """MLflow's search filter for a sweep's jobs (the runs whose parent is its parent run)."""
    return f"tags.mlflow.parentRunId = '{parent_run_id}'"
